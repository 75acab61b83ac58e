//! The conformance suite against the redb store, one file per test.

use sessionkit_redb::RedbStore;

async fn fresh_store() -> Option<RedbStore> {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    Some(
        RedbStore::open(dir.keep().join("sessions.redb"))
            .await
            .expect("open redb"),
    )
}

sessionkit_conformance::conformance_suite!(fresh_store());
