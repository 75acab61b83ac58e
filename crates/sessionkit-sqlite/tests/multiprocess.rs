//! Two OS processes hammering one SQLite file: nothing lost, no "database is locked" escapes.

use sessionkit_conformance::multiprocess;
use sessionkit_sqlite::SqliteStore;

async fn open(url: String) -> sessionkit_core::Result<SqliteStore> {
    SqliteStore::open_url(&url).await
}

#[test]
fn two_processes_writing_one_file_lose_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    multiprocess::run_parent("child", &url, 2, open);
}

#[test]
#[ignore = "a child process of two_processes_writing_one_file_lose_nothing"]
fn child() {
    multiprocess::run_child(open);
}
