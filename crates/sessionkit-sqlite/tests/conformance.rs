//! The conformance suite against the SQLite store, one database file per test.

use sessionkit_sqlite::SqliteStore;

async fn fresh_store() -> Option<SqliteStore> {
    // Kept under target/ (cargo's scratch dir for tests) so the file outlives the store.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let path = dir.keep().join("sessions.db");
    Some(SqliteStore::open(path).await.expect("open sqlite"))
}

sessionkit_conformance::conformance_suite!(fresh_store());
