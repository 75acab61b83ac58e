//! The HTTP suite through the tower layer, in an axum app, over real sockets.

use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::{get, post};
use sessionkit_conformance::http::TestServer;
use sessionkit_core::{FlashLevel, Flashes, Session, SessionManager};
use sessionkit_tower::{CsrfConfig, CsrfLayer, SessionError, SessionLayer, WebConfig};

async fn read(
    session: Session,
    Path(key): Path<String>,
) -> Result<(StatusCode, String), SessionError> {
    Ok(match session.get::<String>(&key).await? {
        Some(value) => (StatusCode::OK, value),
        None => (StatusCode::NOT_FOUND, String::new()),
    })
}

async fn write(
    session: Session,
    Path((key, value)): Path<(String, String)>,
) -> Result<&'static str, SessionError> {
    session.insert(&key, &value).await?;
    Ok("ok")
}

async fn fill(
    session: Session,
    Path((key, bytes)): Path<(String, usize)>,
) -> Result<&'static str, SessionError> {
    session.insert(&key, &"x".repeat(bytes)).await?;
    Ok("ok")
}

async fn slow_write(
    session: Session,
    Path((key, value, ms)): Path<(String, String, u64)>,
) -> Result<&'static str, SessionError> {
    let _ = session.keys().await?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    session.insert(&key, &value).await?;
    Ok("ok")
}

async fn login(session: Session, Path(user): Path<String>) -> Result<&'static str, SessionError> {
    session.cycle_id().await?;
    session.set_owner(Some(&user)).await?;
    session.insert("user", &user).await?;
    Ok("ok")
}

async fn logout(session: Session) -> Result<&'static str, SessionError> {
    session.destroy().await?;
    Ok("ok")
}

async fn keys(session: Session) -> Result<String, SessionError> {
    Ok(session.keys().await?.join(","))
}

async fn push(
    session: Session,
    Path((key, value)): Path<(String, String)>,
) -> Result<&'static str, SessionError> {
    session
        .update(&key, move |list: &mut Vec<String>| list.push(value.clone()))
        .await?;
    Ok("ok")
}

async fn list(session: Session, Path(key): Path<String>) -> Result<String, SessionError> {
    let list: Vec<String> = session.get(&key).await?.unwrap_or_default();
    Ok(list.join(","))
}

async fn flash(
    session: Session,
    Path((level, message)): Path<(FlashLevel, String)>,
) -> Result<&'static str, SessionError> {
    session.flash(level, message).await?;
    Ok("ok")
}

async fn flashes(Flashes(flashes): Flashes) -> String {
    let shown: Vec<String> = flashes
        .iter()
        .map(|f| format!("{}:{}", f.level.as_str(), f.message))
        .collect();
    shown.join(",")
}

async fn csrf_token(session: Session) -> Result<String, SessionError> {
    Ok(session.csrf_token().await?)
}

async fn serve(manager: SessionManager) -> TestServer {
    serve_with(manager, WebConfig::default()).await
}

async fn serve_with(manager: SessionManager, web: WebConfig) -> TestServer {
    let app = Router::new()
        .route("/none", get(|| async { "none" }))
        .route("/get/{key}", get(read))
        .route("/set/{key}/{value}", get(write))
        .route("/slow-set/{key}/{value}/{ms}", get(slow_write))
        .route("/login/{user}", get(login))
        .route("/logout", get(logout))
        .route("/keys", get(keys))
        .route("/push/{key}/{value}", get(push))
        .route("/list/{key}", get(list))
        .route("/flash/{level}/{message}", get(flash))
        .route("/flashes", get(flashes))
        .route("/csrf-token", get(csrf_token))
        .route("/post/{key}/{value}", post(write))
        .route("/fill/{key}/{bytes}", get(fill))
        .layer(CsrfLayer::new(CsrfConfig::default()).expect("valid config"))
        .layer(SessionLayer::with_config(manager.clone(), web).expect("valid config"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    TestServer { base, manager }
}

sessionkit_testkit::web_integration_tests!(axum_http, serve, serve_with);

/// Redis behind Sentinel: the master is killed under load, the Sentinels promote the replica,
/// and the store finds it by itself (no restart); some requests get 503 meanwhile, reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn axum_redis_sentinel_failover_gives_503s_then_recovers() {
    use sessionkit_testkit::sentinel;
    let Some(store) = sessionkit_testkit::redis_sentinel().await else {
        return;
    };
    // Sessions must outlive the outage: a longer idle timeout than the suite's.
    let manager = SessionManager::builder(store)
        .idle_timeout(Duration::from_secs(300))
        .build()
        .expect("manager");
    let server = serve(manager).await;
    let mut killed = None;
    let report = sessionkit_conformance::http::a_failover_gives_503s_then_recovers(
        &server,
        async { killed = Some(sentinel::kill_master().await) },
        Duration::from_secs(60),
    )
    .await;
    let promoted = sentinel::current_master().await;
    assert_ne!(
        Some(promoted),
        killed,
        "the Sentinels promoted another server"
    );
    eprintln!(
        "Sentinel failover: {} of {} requests got 503, back after {:?}",
        report.unavailable, report.requests, report.outage
    );
}
