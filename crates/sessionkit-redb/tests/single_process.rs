//! redb locks its file to one process: a second process gets a clear error at once, not a hang.

use std::time::{Duration, Instant};

use sessionkit_conformance::multiprocess;
use sessionkit_core::{ErrorKind, Store};
use sessionkit_redb::RedbStore;

const PATH: &str = "SESSIONKIT_REDB_PATH";

#[test]
fn a_second_process_gets_a_clear_error_not_a_hang() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("held.redb");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let store = runtime
        .block_on(RedbStore::open(&path))
        .expect("the first process opens the file");
    assert!(!store.capabilities().multiprocess_safe);

    let started = Instant::now();
    let mut child =
        multiprocess::spawn_child("second_opener", &[(PATH, path.display().to_string())]);
    loop {
        if let Some(status) = child.try_wait().expect("child status") {
            assert!(
                status.success(),
                "the second opener saw the wrong error: {status}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the second open hung"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(store);
}

#[test]
#[ignore = "a child process of a_second_process_gets_a_clear_error_not_a_hang"]
fn second_opener() {
    let Ok(path) = std::env::var(PATH) else {
        eprintln!("not started by the single-process test; nothing to do");
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let err = runtime
        .block_on(RedbStore::open(&path))
        .expect_err("the file is held by the parent");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("another process"), "{err}");
}
