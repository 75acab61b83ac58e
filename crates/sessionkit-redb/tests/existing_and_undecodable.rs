//! Opening without creating (`OpenMode::Existing`), and listing a file with a record that does
//! not decode.

use redb::{Database, TableDefinition};
use sessionkit_conformance::{fresh_key, record_with};
use sessionkit_core::{ErrorKind, ListFilter, ListState, OpenMode, PageRequest, Store};
use sessionkit_redb::RedbStore;

const SESSIONS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("sessions");

#[tokio::test]
async fn existing_mode_creates_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    for path in [
        dir.path().join("missing.redb"),
        dir.path().join("nodir").join("missing.redb"),
    ] {
        let err = RedbStore::open_with_mode(&path, OpenMode::Existing)
            .await
            .expect_err("a missing file");
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(err.to_string().contains("sessionkit setup"), "{err}");
        assert!(!path.exists());
    }
    assert!(!dir.path().join("nodir").exists());

    // A redb file without the session tables gets none.
    let bare = dir.path().join("bare.redb");
    drop(Database::create(&bare).expect("a bare redb file"));
    let err = RedbStore::open_with_mode(&bare, OpenMode::Existing)
        .await
        .expect_err("no tables");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("no session tables"), "{err}");
    let err = RedbStore::open_with_mode(&bare, OpenMode::Existing)
        .await
        .expect_err("still no tables");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");

    // A store's own file opens.
    let made = dir.path().join("made.redb");
    drop(RedbStore::open(&made).await.expect("create"));
    RedbStore::open_url_with_mode(&format!("redb://{}", made.display()), OpenMode::Existing)
        .await
        .expect("an existing store opens");
}

#[tokio::test]
async fn a_record_that_does_not_decode_is_reported_by_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.redb");
    let store = RedbStore::open(&path).await.expect("open");
    let mut good = vec![fresh_key(), fresh_key()];
    for key in &good {
        store
            .create(key, &record_with(&[("k", b"v")]))
            .await
            .expect("create");
    }
    drop(store);
    let bad = fresh_key();
    {
        let db = Database::open(&path).expect("reopen");
        let txn = db.begin_write().expect("write");
        {
            let mut sessions = txn.open_table(SESSIONS).expect("table");
            sessions
                .insert(bad.as_bytes(), &b"\xffnot a record"[..])
                .expect("insert");
        }
        txn.commit().expect("commit");
    }
    let store = RedbStore::open(&path).await.expect("open again");
    let filter = ListFilter {
        state: ListState::All,
        ..ListFilter::default()
    };
    let page = store
        .list(&filter, PageRequest::first(10))
        .await
        .expect("a listing, not an error");
    assert_eq!(page.undecodable, vec![bad]);
    let mut listed: Vec<_> = page.sessions.iter().map(|s| s.key).collect();
    listed.sort();
    good.sort();
    assert_eq!(listed, good);

    // Page by page, each record is seen once, the undecodable one included.
    let (mut seen, mut undecodable, mut after) = (Vec::new(), Vec::new(), None);
    loop {
        let page = store
            .list(&filter, PageRequest { after, limit: 1 })
            .await
            .expect("page");
        seen.extend(page.sessions.iter().map(|s| s.key));
        undecodable.extend(page.undecodable);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    seen.sort();
    assert_eq!((seen, undecodable), (good, vec![bad]));
}
