//! Opening without creating (`OpenMode::Existing`), and listing a file with a record that does
//! not decode.

use std::time::Duration;

use redb::{Database, TableDefinition};
use sessionkit_conformance::{fresh_key, record_with};
use sessionkit_core::{
    ErrorKind, ListFilter, ListState, OpenMode, PageRequest, Record, Store, Timestamp,
};
use sessionkit_redb::RedbStore;

const SESSIONS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("sessions");
const VALUES: TableDefinition<(&[u8; 32], &str), &[u8]> = TableDefinition::new("session_values");
const EXPIRY: TableDefinition<(i64, &[u8; 32]), ()> = TableDefinition::new("session_expiry");
const OWNERS: TableDefinition<(&str, &[u8; 32]), ()> = TableDefinition::new("session_owners");

/// Writes a record that does not decode under `key`, with a value, an owner entry and a
/// deadline in the past, as a damaged file might hold.
fn plant_undecodable(path: &std::path::Path, key: &sessionkit_core::SessionKey) {
    let db = Database::open(path).expect("reopen");
    let txn = db.begin_write().expect("write");
    {
        let bytes = key.as_bytes();
        let mut sessions = txn.open_table(SESSIONS).expect("sessions");
        sessions
            .insert(bytes, &b"\xffnot a record"[..])
            .expect("insert");
        let mut values = txn.open_table(VALUES).expect("values");
        values.insert((bytes, "k"), &b"v"[..]).expect("value");
        let mut expiry = txn.open_table(EXPIRY).expect("expiry");
        expiry.insert((1, bytes), ()).expect("deadline");
        let mut owners = txn.open_table(OWNERS).expect("owners");
        owners.insert(("mallory", bytes), ()).expect("owner");
    }
    txn.commit().expect("commit");
}

#[tokio::test]
async fn a_record_that_does_not_decode_can_be_deleted_and_purged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.redb");
    let store = RedbStore::open(&path).await.expect("open");
    let live = fresh_key();
    store
        .create(&live, &record_with(&[("k", b"v")]))
        .await
        .expect("create");
    drop(store);
    let (deleted, purged) = (fresh_key(), fresh_key());
    plant_undecodable(&path, &deleted);
    plant_undecodable(&path, &purged);
    let store = RedbStore::open(&path).await.expect("open again");

    assert!(
        store.delete(&deleted).await.expect("delete"),
        "it was there"
    );
    assert_eq!(store.count_expired().await.expect("count"), 1);
    assert_eq!(store.delete_expired().await.expect("purge"), 1);
    assert_eq!(store.count_expired().await.expect("count again"), 0);
    let filter = ListFilter {
        state: ListState::All,
        ..ListFilter::default()
    };
    let page = store
        .list(&filter, PageRequest::first(10))
        .await
        .expect("list");
    assert!(page.undecodable.is_empty(), "{:?}", page.undecodable);
    assert_eq!(
        page.sessions.iter().map(|s| s.key).collect::<Vec<_>>(),
        vec![live]
    );
    assert!(store.by_owner("mallory").await.expect("owner").is_empty());
    assert!(store.delete(&live).await.expect("delete the live one"));
}

#[tokio::test]
async fn a_record_that_does_not_decode_is_purged_and_counted_but_not_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.redb");
    let store = RedbStore::open(&path).await.expect("open");
    let expired = fresh_key();
    let record = Record {
        owner: Some("alice".into()),
        expires_at: Timestamp::now().saturating_sub(Duration::from_secs(60)),
        ..record_with(&[("k", b"v")])
    };
    store.create(&expired, &record).await.expect("create");
    drop(store);
    let damaged = fresh_key();
    plant_undecodable(&path, &damaged);
    let store = RedbStore::open(&path).await.expect("open again");
    let report = store
        .delete_expired_batch_reporting(10)
        .await
        .expect("a record that does not decode does not stop the cleanup");
    assert_eq!(report.deleted, 2, "both records deleted");
    assert_eq!(
        report
            .sessions
            .iter()
            .map(|s| (s.key, s.owner.as_deref()))
            .collect::<Vec<_>>(),
        vec![(expired, Some("alice"))],
        "only the session that decodes is listed"
    );
    assert!(store.by_owner("mallory").await.expect("owner").is_empty());
    assert_eq!(store.count_expired().await.expect("count"), 0);
    assert_eq!(
        store
            .delete_expired_batch_reporting(10)
            .await
            .expect("again")
            .deleted,
        0
    );
}

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
    plant_undecodable(&path, &bad);
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
