//! The reporting cleanup against a session that a request extends at its deadline, in a
//! transaction the cleanup must wait for: the session is neither deleted nor reported.

use std::time::Duration;

use sessionkit_conformance::{fresh_key, record_with};
use sessionkit_core::{Record, SessionKey, Store, Timestamp};
use sessionkit_testkit::{mysql_servers, mysql_url, scratch_table};
use sqlx::{AssertSqlSafe, Connection, Executor};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_extended_while_the_cleanup_waits_is_neither_deleted_nor_reported() {
    let table = scratch_table();
    let Some(mut servers) = mysql_servers(&mysql_url(), &table, "", 1).await else {
        return;
    };
    let store = servers.pop().expect("a store");
    let doomed = fresh_key();
    let past = Timestamp::now().saturating_sub(Duration::from_secs(60));
    let record = Record {
        owner: Some("alice".into()),
        expires_at: past,
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

    // A request extends the session before its deadline and commits only after the cleanup
    // has picked its batch (the session still expired in what was committed then).
    let mut conn = sqlx::MySqlConnection::connect(&mysql_url())
        .await
        .expect("connect");
    conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await
        .expect("isolation");
    let mut tx = conn.begin().await.expect("begin");
    let later = Timestamp::now().saturating_add(Duration::from_secs(3600));
    let touched = sqlx::query(AssertSqlSafe(format!(
        "UPDATE {table} SET expires_at = ?, version = version + 1 WHERE `key` = ? AND expires_at > ?"
    )))
    .bind(later.as_millis())
    .bind(extended.as_bytes().as_slice())
    .bind(Timestamp::now().as_millis())
    .execute(&mut *tx)
    .await
    .expect("extend");
    assert_eq!(touched.rows_affected(), 1, "extended before its deadline");
    tokio::time::sleep(deadline.duration_since(Timestamp::now()) + Duration::from_millis(50)).await;

    let step = {
        let store = std::sync::Arc::clone(&store);
        tokio::spawn(async move { store.delete_expired_batch_reporting(10).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !step.is_finished(),
        "the cleanup picked the session and waits for the request's lock"
    );
    tx.commit().await.expect("commit the extension");
    let report = step.await.expect("task").expect("reporting step");

    let listed: Vec<(SessionKey, Option<&str>)> = report
        .sessions
        .iter()
        .map(|s| (s.key, s.owner.as_deref()))
        .collect();
    assert_eq!(listed, vec![(doomed, Some("alice"))]);
    assert_eq!(report.deleted, 1, "the extended session was not deleted");
    let kept = store
        .load(&extended)
        .await
        .expect("load")
        .expect("the extended session lives on");
    assert_eq!(kept.expires_at, later);
    assert_eq!(store.load(&doomed).await.expect("load"), None);
}
