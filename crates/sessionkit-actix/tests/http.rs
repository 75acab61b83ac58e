//! The HTTP suite through the actix-web middleware, over real sockets.

use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use sessionkit_actix::{CsrfConfig, CsrfMiddleware, SessionError, SessionMiddleware, WebConfig};
use sessionkit_conformance::http::TestServer;
use sessionkit_core::{FlashLevel, Flashes, Session, SessionManager};

async fn read(session: Session, key: web::Path<String>) -> Result<HttpResponse, SessionError> {
    Ok(match session.get::<String>(&key).await? {
        Some(value) => HttpResponse::Ok().body(value),
        None => HttpResponse::NotFound().finish(),
    })
}

async fn write(
    session: Session,
    path: web::Path<(String, String)>,
) -> Result<&'static str, SessionError> {
    let (key, value) = path.into_inner();
    session.insert(&key, &value).await?;
    Ok("ok")
}

async fn fill(
    session: Session,
    path: web::Path<(String, usize)>,
) -> Result<&'static str, SessionError> {
    let (key, bytes) = path.into_inner();
    session.insert(&key, &"x".repeat(bytes)).await?;
    Ok("ok")
}

async fn slow_write(
    session: Session,
    path: web::Path<(String, String, u64)>,
) -> Result<&'static str, SessionError> {
    let (key, value, ms) = path.into_inner();
    let _ = session.keys().await?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    session.insert(&key, &value).await?;
    Ok("ok")
}

async fn login(session: Session, user: web::Path<String>) -> Result<&'static str, SessionError> {
    session.cycle_id().await?;
    session.set_owner(Some(&user)).await?;
    session.insert("user", &*user).await?;
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
    path: web::Path<(String, String)>,
) -> Result<&'static str, SessionError> {
    let (key, value) = path.into_inner();
    session
        .update(&key, move |list: &mut Vec<String>| list.push(value.clone()))
        .await?;
    Ok("ok")
}

async fn list(session: Session, key: web::Path<String>) -> Result<String, SessionError> {
    let list: Vec<String> = session.get(&key).await?.unwrap_or_default();
    Ok(list.join(","))
}

async fn flash(
    session: Session,
    path: web::Path<(FlashLevel, String)>,
) -> Result<&'static str, SessionError> {
    let (level, message) = path.into_inner();
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
    let middleware = SessionMiddleware::with_config(manager.clone(), web).expect("valid config");
    let csrf = CsrfMiddleware::new(CsrfConfig::default()).expect("valid config");
    let server = HttpServer::new(move || {
        App::new()
            .wrap(csrf.clone())
            .wrap(middleware.clone())
            .route("/none", web::get().to(|| async { "none" }))
            .route("/get/{key}", web::get().to(read))
            .route("/set/{key}/{value}", web::get().to(write))
            .route("/slow-set/{key}/{value}/{ms}", web::get().to(slow_write))
            .route("/login/{user}", web::get().to(login))
            .route("/logout", web::get().to(logout))
            .route("/keys", web::get().to(keys))
            .route("/push/{key}/{value}", web::get().to(push))
            .route("/list/{key}", web::get().to(list))
            .route("/flash/{level}/{message}", web::get().to(flash))
            .route("/flashes", web::get().to(flashes))
            .route("/csrf-token", web::get().to(csrf_token))
            .route("/post/{key}/{value}", web::post().to(write))
            .route("/fill/{key}/{bytes}", web::get().to(fill))
    })
    .workers(2)
    .disable_signals()
    .bind(("127.0.0.1", 0))
    .expect("bind");
    let base = format!("http://{}", server.addrs()[0]);
    tokio::spawn(server.run());
    TestServer { base, manager }
}

sessionkit_testkit::web_integration_tests!(actix_http, serve, serve_with);
