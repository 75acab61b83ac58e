//! The conformance suite against the file store, one directory per test.

use sessionkit_file::FileStore;

async fn fresh_store() -> Option<FileStore> {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    Some(FileStore::open(dir.keep()).await.expect("open file store"))
}

sessionkit_conformance::conformance_suite!(fresh_store());
