//! The reporting cleanup against a session that a request is extending at its deadline, in a
//! transaction not yet committed: the cleanup skips the locked row (`SKIP LOCKED`), so the
//! session is neither deleted nor reported, and survives the commit.

use std::time::Duration;

use sessionkit_conformance::{fresh_key, record_with};
use sessionkit_core::{Record, SessionKey, Store, Timestamp};
use sessionkit_postgres::tokio_postgres;
use sessionkit_testkit::{postgres_servers, postgres_url, scratch_table};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_being_extended_at_its_deadline_is_neither_deleted_nor_reported() {
    let table = scratch_table();
    let Some(mut servers) = postgres_servers(&postgres_url(), &table, "", 1).await else {
        return;
    };
    let store = servers.pop().expect("a store");
    let doomed = fresh_key();
    let record = Record {
        owner: Some("alice".into()),
        expires_at: Timestamp::now().saturating_sub(Duration::from_secs(60)),
        ..record_with(&[("k", b"v")])
    };
    store.create(&doomed, &record).await.expect("create");
    let extended = fresh_key();
    let deadline = Timestamp::now().saturating_add(Duration::from_millis(400));
    let record = Record {
        expires_at: deadline,
        ..record_with(&[("k", b"v")])
    };
    store.create(&extended, &record).await.expect("create");

    let (mut client, connection) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    let driver = tokio::spawn(connection);
    let tx = client.transaction().await.expect("begin");
    let later = Timestamp::now().saturating_add(Duration::from_secs(3600));
    let touched = tx
        .execute(
            &format!(
                "UPDATE {table} SET expires_at = $1, version = version + 1 \
                 WHERE key = $2 AND expires_at > $3"
            ),
            &[
                &later.as_millis(),
                &extended.as_bytes().as_slice(),
                &Timestamp::now().as_millis(),
            ],
        )
        .await
        .expect("extend");
    assert_eq!(touched, 1, "extended before its deadline");
    tokio::time::sleep(deadline.duration_since(Timestamp::now()) + Duration::from_millis(50)).await;

    let report = tokio::time::timeout(
        Duration::from_secs(5),
        store.delete_expired_batch_reporting(10),
    )
    .await
    .expect("the cleanup does not wait for the request's lock")
    .expect("reporting step");
    let listed: Vec<(SessionKey, Option<&str>)> = report
        .sessions
        .iter()
        .map(|s| (s.key, s.owner.as_deref()))
        .collect();
    assert_eq!(listed, vec![(doomed, Some("alice"))]);
    assert_eq!(report.deleted, 1, "the session being extended was skipped");

    tx.commit().await.expect("commit the extension");
    drop(client);
    let _ = driver.await;
    assert_eq!(
        store
            .delete_expired_batch_reporting(10)
            .await
            .expect("again")
            .deleted,
        0
    );
    let kept = store
        .load(&extended)
        .await
        .expect("load")
        .expect("the extended session lives on");
    assert_eq!(kept.expires_at, later);
}
