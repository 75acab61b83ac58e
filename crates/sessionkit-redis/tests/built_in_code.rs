//! Stores built in code from redis-rs's own types rather than a URL: a TLS connection with an
//! ACL user (`ConnectionInfo` and a rustls configuration), a cluster connection
//! (`ClusterClient`), and a Sentinel client. Each stores and loads a session. And what the
//! connection does when a replica answers `READONLY`. Required under CI=true (the servers of
//! `.ci/services`).

use std::sync::Arc;
use std::time::Duration;

use sessionkit_conformance::create_then_load;
use sessionkit_core::backend::tls::{TlsFiles, Verify, client_config};
use sessionkit_core::{ErrorKind, Store};
use sessionkit_redis::redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use sessionkit_redis::redis::{self, ConnectionAddr, RedisConnectionInfo};
use sessionkit_redis::{Multiplexed, RedisStore};
use sessionkit_testkit::{scratch_table, sentinel, tls};

const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_tls_connection_built_in_code() {
    // Skips (or fails under CI=true) when the server is down.
    let Some(_) = sessionkit_testkit::redis_tls().await else {
        return;
    };
    let (user, password) = tls::REDIS_TLS_USER;
    let info = redis::Client::open(format!("rediss://{user}:{password}@localhost:6380"))
        .expect("address")
        .get_connection_info()
        .clone();
    let files = TlsFiles {
        ca: Some(tls::file("ca.pem").into()),
        ..TlsFiles::default()
    };
    let config = client_config(&files, Verify::Full).expect("TLS configuration");
    let conn = Multiplexed::with_tls(&info, TIMEOUT, config).expect("connection");
    let store = RedisStore::with_connection(conn.clone(), &scratch_table())
        .await
        .expect("open");
    create_then_load(Arc::new(store)).await;
    let bad = RedisStore::with_connection(conn, "no{braces}").await;
    assert_eq!(bad.err().map(|e| e.kind()), Some(ErrorKind::Config));
}

#[tokio::test]
async fn a_cluster_client_built_in_code() {
    // Skips (or fails under CI=true) when the server is down.
    let Some(_) = sessionkit_testkit::redis_cluster().await else {
        return;
    };
    let client = redis::cluster::ClusterClient::builder(["redis://127.0.0.1:7001"])
        .connection_timeout(TIMEOUT)
        .build()
        .expect("cluster client");
    let conn = client.get_async_connection().await.expect("cluster");
    let store = RedisStore::with_cluster(conn, &scratch_table()).expect("store");
    create_then_load(Arc::new(store)).await;
}

#[tokio::test]
async fn a_sentinel_client_built_in_code() {
    // Skips (or fails under CI=true) when the server is down.
    let Some(_) = sessionkit_testkit::redis_sentinel().await else {
        return;
    };
    let sentinels = sentinel::SENTINELS.iter().map(|address| {
        let (host, port) = address.split_once(':').expect("host:port");
        ConnectionAddr::Tcp(host.into(), port.parse().expect("port"))
    });
    let client =
        SentinelClientBuilder::new(sentinels, sentinel::MASTER_NAME, SentinelServerType::Master)
            .expect("builder")
            .set_client_to_redis_password(sentinel::PASSWORD)
            .build()
            .expect("Sentinel client");
    let settings = RedisConnectionInfo::default().set_password(sentinel::PASSWORD);
    let conn = Multiplexed::with_sentinel(client, &settings, TIMEOUT, None);
    let store = RedisStore::with_connection(conn, &scratch_table())
        .await
        .expect("open");
    create_then_load(Arc::new(store)).await;
}

/// A server that answers `READONLY` (a replica: after a failover, the old master) breaks the
/// connection, so the next request starts afresh (behind Sentinel, at the new master); the
/// store reports the write as `Unavailable` (a 503), not as a backend fault.
#[tokio::test]
async fn a_readonly_reply_starts_a_new_connection() {
    let Some(_) = sessionkit_testkit::redis_sentinel().await else {
        return;
    };
    let (host, port) = sentinel::replica_address().await;
    let url = format!("redis://:{}@{host}:{port}", sentinel::PASSWORD);
    let info = redis::Client::open(url.as_str())
        .expect("address")
        .get_connection_info()
        .clone();
    let mut conn = Multiplexed::new(&info, TIMEOUT).expect("connection");
    let client_id = async |conn: &mut Multiplexed| -> i64 {
        redis::cmd("CLIENT")
            .arg("ID")
            .query_async(conn)
            .await
            .expect("CLIENT ID")
    };
    let before = client_id(&mut conn).await;
    let write: redis::RedisResult<()> = redis::cmd("SET")
        .arg("sessionkit-readonly-probe")
        .arg("1")
        .query_async(&mut conn)
        .await;
    assert_eq!(
        write
            .err()
            .and_then(|e| e.code().map(str::to_owned))
            .as_deref(),
        Some("READONLY")
    );
    let after = client_id(&mut conn).await;
    assert_ne!(before, after, "a new connection after READONLY");
    let store = RedisStore::with_connection(conn, &scratch_table())
        .await
        .expect("open");
    let created = store
        .create(
            &sessionkit_conformance::fresh_key(),
            &sessionkit_conformance::record_with(&[("a", b"1")]),
        )
        .await;
    assert_eq!(
        created.err().map(|e| e.kind()),
        Some(ErrorKind::Unavailable)
    );
}
