//! The HTTP suite through the Rocket fairings, over real sockets.

mod common;

use std::time::Duration;

use rocket::http::Status;
use rocket::{Build, Rocket, get, post, routes};
use sessionkit_conformance::http::TestServer;
use sessionkit_core::{FlashLevel, Flashes, Session, SessionManager};
use sessionkit_rocket::{CsrfConfig, CsrfFairing, SessionError, SessionFairing, WebConfig};

#[get("/none")]
fn none() -> &'static str {
    "none"
}

#[get("/get/<key>")]
async fn read(session: Session, key: &str) -> Result<(Status, String), SessionError> {
    Ok(match session.get::<String>(key).await? {
        Some(value) => (Status::Ok, value),
        None => (Status::NotFound, String::new()),
    })
}

#[get("/set/<key>/<value>")]
async fn write(session: Session, key: &str, value: &str) -> Result<&'static str, SessionError> {
    session.insert(key, &value).await?;
    Ok("ok")
}

#[post("/post/<key>/<value>")]
async fn post_write(
    session: Session,
    key: &str,
    value: &str,
) -> Result<&'static str, SessionError> {
    write(session, key, value).await
}

#[get("/fill/<key>/<bytes>")]
async fn fill(session: Session, key: &str, bytes: usize) -> Result<&'static str, SessionError> {
    session.insert(key, &"x".repeat(bytes)).await?;
    Ok("ok")
}

#[get("/slow-set/<key>/<value>/<ms>")]
async fn slow_write(
    session: Session,
    key: &str,
    value: &str,
    ms: u64,
) -> Result<&'static str, SessionError> {
    let _ = session.keys().await?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    session.insert(key, &value).await?;
    Ok("ok")
}

#[get("/login/<user>")]
async fn login(session: Session, user: &str) -> Result<&'static str, SessionError> {
    session.cycle_id().await?;
    session.set_owner(Some(user)).await?;
    session.insert("user", &user).await?;
    Ok("ok")
}

#[get("/logout")]
async fn logout(session: Session) -> Result<&'static str, SessionError> {
    session.destroy().await?;
    Ok("ok")
}

#[get("/keys")]
async fn keys(session: Session) -> Result<String, SessionError> {
    Ok(session.keys().await?.join(","))
}

#[get("/push/<key>/<value>")]
async fn push(session: Session, key: &str, value: &str) -> Result<&'static str, SessionError> {
    let value = value.to_owned();
    session
        .update(key, move |list: &mut Vec<String>| list.push(value.clone()))
        .await?;
    Ok("ok")
}

#[get("/list/<key>")]
async fn list(session: Session, key: &str) -> Result<String, SessionError> {
    let list: Vec<String> = session.get(key).await?.unwrap_or_default();
    Ok(list.join(","))
}

#[get("/flash/<level>/<message>")]
async fn flash(
    session: Session,
    level: FlashLevel,
    message: &str,
) -> Result<&'static str, SessionError> {
    session.flash(level, message).await?;
    Ok("ok")
}

#[get("/flashes")]
fn flashes(flashes: Flashes) -> String {
    let shown: Vec<String> = flashes
        .0
        .iter()
        .map(|f| format!("{}:{}", f.level.as_str(), f.message))
        .collect();
    shown.join(",")
}

#[get("/csrf-token")]
async fn csrf_token(session: Session) -> Result<String, SessionError> {
    Ok(session.csrf_token().await?)
}

/// The test app.
fn app(manager: SessionManager, web: WebConfig) -> Rocket<Build> {
    rocket::custom(common::config())
        .attach(SessionFairing::with_config(manager, web).expect("valid config"))
        .attach(CsrfFairing::new(CsrfConfig::default()).expect("valid config"))
        .mount(
            "/",
            routes![
                none, read, write, slow_write, login, logout, keys, push, list, flash, flashes,
                csrf_token, post_write, fill
            ],
        )
}

async fn serve(manager: SessionManager) -> TestServer {
    serve_with(manager, WebConfig::default()).await
}

async fn serve_with(manager: SessionManager, web: WebConfig) -> TestServer {
    let port = common::launch(app(manager.clone(), web)).await;
    let base = format!("http://127.0.0.1:{port}");
    TestServer { base, manager }
}

sessionkit_testkit::web_integration_tests!(rocket_http, serve, serve_with);
