//! The benchmark's app on tower-sessions: the same routes as sessionkit's (`/read`, `/incr`,
//! `/add/{k}`, `/count/{n}`, `/logout`, `/slow-add/{k}/{ms}`, `/push/{k}`, `/pushed`,
//! `/fill/{n}`, `/blob/{kib}`) on each
//! store tower-sessions has. Started by `sessionkit-bench` (`serve --lib tower-sessions`, and
//! `layer-worker` under valgrind); see `docs/BENCHMARKS.md`.

use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use bench_harness::{PROFILE, blob_value, distinct, fill_values};
use tower_sessions::{Session, SessionManagerLayer, SessionStore};
use tower_sessions_sqlx_store::sqlx;

type Failure = (axum::http::StatusCode, String);
fn fail(e: impl std::fmt::Display) -> Failure {
    (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

async fn read(s: Session) -> Result<String, Failure> {
    Ok(s.get::<i64>("counter")
        .await
        .map_err(fail)?
        .unwrap_or(0)
        .to_string())
}
async fn incr(s: Session) -> Result<String, Failure> {
    let n = s.get::<i64>("counter").await.map_err(fail)?;
    if n.is_none() {
        s.insert("profile", PROFILE).await.map_err(fail)?;
    }
    let n = n.unwrap_or(0) + 1;
    s.insert("counter", n).await.map_err(fail)?;
    Ok(n.to_string())
}
async fn add(s: Session, Path(k): Path<String>) -> Result<&'static str, Failure> {
    s.insert(&k, true).await.map_err(fail)?;
    Ok("ok")
}
async fn count(s: Session, Path(n): Path<usize>) -> Result<String, Failure> {
    let mut found = 0;
    for i in 0..n {
        if s.get::<bool>(&format!("k{i}"))
            .await
            .map_err(fail)?
            .is_some()
        {
            found += 1;
        }
    }
    Ok(found.to_string())
}
async fn logout(s: Session) -> Result<&'static str, Failure> {
    s.flush().await.map_err(fail)?;
    Ok("ok")
}
/// tower-sessions has no read-modify-write: a read, then an insert of the whole list.
async fn push(s: Session, Path(k): Path<String>) -> Result<&'static str, Failure> {
    let mut list: Vec<String> = s.get("list").await.map_err(fail)?.unwrap_or_default();
    list.push(k);
    s.insert("list", list).await.map_err(fail)?;
    Ok("ok")
}
async fn pushed(s: Session) -> Result<String, Failure> {
    let list: Vec<String> = s.get("list").await.map_err(fail)?.unwrap_or_default();
    Ok(distinct(list).to_string())
}
async fn slow_add(s: Session, Path((k, ms)): Path<(String, u64)>) -> Result<&'static str, Failure> {
    let _ = s.get::<i64>("counter").await.map_err(fail)?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    s.insert(&k, true).await.map_err(fail)?;
    Ok("ok")
}

/// Makes the session large: `n` values of about 1 MiB in other keys than `counter`.
async fn fill(s: Session, Path(n): Path<usize>) -> Result<&'static str, Failure> {
    for (key, value) in fill_values(n) {
        s.insert(&key, value).await.map_err(fail)?;
    }
    Ok("ok")
}

/// One value of `kib` KiB under `blob` (`scale values`).
async fn blob(s: Session, Path(kib): Path<usize>) -> Result<&'static str, Failure> {
    s.insert("blob", blob_value(kib)).await.map_err(fail)?;
    Ok("ok")
}

fn routes<S: SessionStore + Clone>(store: S) -> Router {
    Router::new()
        .route("/read", get(read))
        .route("/incr", get(incr))
        .route("/add/{k}", get(add))
        .route("/count/{n}", get(count))
        .route("/logout", get(logout))
        .route("/slow-add/{k}/{ms}", get(slow_add))
        .route("/push/{k}", get(push))
        .route("/pushed", get(pushed))
        .route("/fill/{n}", get(fill))
        .route("/blob/{kib}", get(blob))
        .layer(SessionManagerLayer::new(store).with_secure(false))
}

/// The CA of the TLS test servers `.ci/services` starts.
const TLS_CA: &str = "/tmp/sessionkit-tls/ca.pem";

/// A rustls configuration that trusts the test CA alone.
fn verifying_test_ca() -> rustls::ClientConfig {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(TLS_CA).expect("the test CA") {
        roots.add(cert.expect("a CA certificate")).expect("a root");
    }
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth()
}

async fn app(store: &str) -> Router {
    match store {
        "memory" => routes(tower_sessions::MemoryStore::default()),
        "sqlite" => {
            let _ = std::fs::remove_file("bench-tower-sessions.db");
            let pool = sqlx::SqlitePool::connect("sqlite://bench-tower-sessions.db?mode=rwc")
                .await
                .expect("sqlite");
            let store = tower_sessions_sqlx_store::SqliteStore::new(pool);
            store.migrate().await.expect("migrate");
            routes(store)
        }
        "postgres" => {
            let pool = sqlx::PgPool::connect("postgres://root@127.0.0.1:5432/test")
                .await
                .expect("postgres");
            let store = tower_sessions_sqlx_store::PostgresStore::new(pool);
            store.migrate().await.expect("migrate");
            routes(store)
        }
        "mysql" => {
            let pool = sqlx::MySqlPool::connect("mysql://root@127.0.0.1:3306/test")
                .await
                .expect("mysql");
            let store = tower_sessions_sqlx_store::MySqlStore::new(pool);
            store.migrate().await.expect("migrate");
            routes(store)
        }
        "postgres-tls" => {
            // The TLS-only login of `.ci/services`, verifying the server's certificate.
            let url = format!(
                "postgres://sktest_scram:scram-secret-1@localhost:5432/test?sslmode=verify-full&sslrootcert={TLS_CA}"
            );
            let pool = sqlx::PgPool::connect(&url)
                .await
                .expect("postgres over TLS");
            let store = tower_sessions_sqlx_store::PostgresStore::new(pool);
            store.migrate().await.expect("migrate");
            routes(store)
        }
        "redis" => {
            use tower_sessions_redis_store::fred::prelude::*;
            let pool = Pool::new(Config::default(), None, None, None, 6).expect("fred pool");
            pool.init().await.expect("redis");
            routes(tower_sessions_redis_store::RedisStore::new(pool))
        }
        "redis-tls" => {
            use tower_sessions_redis_store::fred::prelude::*;
            let mut config = Config::from_url("rediss://sessionkit:acl-secret-1@localhost:6380")
                .expect("redis URL");
            config.tls = Some(fred::types::config::TlsConnector::from(verifying_test_ca()).into());
            let pool = Pool::new(config, None, None, None, 6).expect("fred pool");
            pool.init().await.expect("redis over TLS");
            routes(tower_sessions_redis_store::RedisStore::new(pool))
        }
        other => panic!("unknown store {other}"),
    }
}

fn main() {
    bench_harness::main(|lib, store| async move {
        assert_eq!(
            lib, "tower-sessions",
            "this binary serves tower-sessions only"
        );
        app(&store).await
    });
}
