//! The file store's session files: the input is the content of one session file, which the
//! store then loads, lists, finds by owner, changes, cycles, cleans up and deletes (each
//! reading the file back through `Record::from_blob`), in a scratch directory under the
//! system's temp directory (`fuzz/run` points `TMPDIR` at one it removes afterwards).

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sessionkit_core::{
    Change, ErrorKind, ListFilter, ListState, PageRequest, Record, Result, SessionKey, Store,
    Timestamp,
};
use sessionkit_file::FileStore;
use sha2::{Digest, Sha256};

struct Scratch {
    runtime: tokio::runtime::Runtime,
    store: FileStore,
    root: PathBuf,
}

fn scratch() -> &'static Scratch {
    static SCRATCH: OnceLock<Scratch> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        let root = std::env::temp_dir().join(format!("sessionkit-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let store = runtime
            .block_on(FileStore::open(&root))
            .expect("a scratch store");
        Scratch {
            runtime,
            store,
            root,
        }
    })
}

const KEY: SessionKey = SessionKey::from_bytes([0x5a; 32]);
const NEW_KEY: SessionKey = SessionKey::from_bytes([0xa5; 32]);

/// A stored file is read or refused as corrupt (`Codec`); nothing else goes wrong here.
fn ok_or_corrupt<T>(result: Result<T>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(err) => {
            assert_eq!(err.kind(), ErrorKind::Codec, "{err}");
            None
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Scratch {
        runtime,
        store,
        root,
    } = scratch();
    let hex = KEY.to_hex();
    let shard = root.join("sessions").join(&hex[..2]);
    std::fs::create_dir_all(&shard).expect("shard directory");
    std::fs::write(shard.join(&hex), data).expect("session file");
    let decoded = Record::from_blob(data).ok();
    // The owner index marker, so `by_owner` reads the file too.
    let owner = decoded
        .as_ref()
        .and_then(|r| r.owner.clone())
        .unwrap_or_else(|| "owner".into());
    let owner_hex = SessionKey::from_bytes(Sha256::digest(owner.as_bytes()).into()).to_hex();
    let markers = root.join("owners").join(owner_hex);
    std::fs::create_dir_all(&markers).expect("owner index directory");
    std::fs::write(markers.join(&hex), b"").expect("owner index marker");
    runtime.block_on(async {
        let now = Timestamp::now();
        match ok_or_corrupt(store.load(&KEY).await) {
            Some(Some(loaded)) => assert_eq!(Some(&loaded), decoded.as_ref()),
            Some(None) => assert!(decoded.is_some_and(|r| r.is_expired(Timestamp::now()))),
            None => assert!(decoded.is_none(), "a file that decodes is not corrupt"),
        }
        let filter = ListFilter {
            owner: None,
            state: ListState::All,
        };
        ok_or_corrupt(store.list(&filter, PageRequest::first(10)).await);
        ok_or_corrupt(store.by_owner(&owner).await);
        let mut change = Change::default();
        change.set("n".into(), vec![0x2a]);
        change.expect("cart", None);
        ok_or_corrupt(store.apply(&KEY, &change).await);
        ok_or_corrupt(
            store
                .cycle(
                    &KEY,
                    &NEW_KEY,
                    Some(now.saturating_add(Duration::from_secs(1))),
                )
                .await,
        );
        ok_or_corrupt(store.load(&NEW_KEY).await);
        ok_or_corrupt(store.delete_expired().await);
        ok_or_corrupt(store.delete(&KEY).await);
        ok_or_corrupt(store.delete(&NEW_KEY).await);
    });
    // Owner index directories would pile up, one per owner seen.
    let _ = std::fs::remove_dir_all(root.join("owners"));
});
