//! A small actix-web app with sessions: a visit counter, sign-in and sign-out forms protected
//! by the CSRF middleware, and flash messages.
//!
//! Run:  `cargo run -p sessionkit-actix --example actix_app`, then open http://127.0.0.1:3001/.
//! From a shell: `curl -c jar -b jar http://127.0.0.1:3001/` shows the page and its token;
//! `curl -c jar -b jar -d "csrf_token=TOKEN&user=alice" http://127.0.0.1:3001/login` signs in
//! (without the token, or from another origin, the middleware answers 403).
//! Sessions are kept in `actix_app.db` (SQLite) in the working directory.

use actix_web::http::header;
use actix_web::{App, HttpResponse, HttpServer, web};
use serde::Deserialize;
use sessionkit::{FlashLevel, Flashes, SessionManager};
use sessionkit_actix::{CsrfConfig, CsrfMiddleware, Session, SessionError, SessionMiddleware};

async fn home(session: Session, Flashes(flashes): Flashes) -> Result<HttpResponse, SessionError> {
    let visits = session
        .update("visits", |n: &mut u64| {
            *n += 1;
            *n
        })
        .await?;
    let token = session.csrf_token().await?; // a fresh masked token for this page's forms
    let hidden = format!("<input type=\"hidden\" name=\"csrf_token\" value=\"{token}\">");
    let mut page = String::from("<!doctype html><title>actix_app</title>");
    for flash in &flashes {
        let text = flash.message.replace('&', "&amp;").replace('<', "&lt;");
        page.push_str(&format!("<p class=\"{}\">{text}</p>", flash.level.as_str()));
    }
    page.push_str(&format!("<p>Visit {visits}.</p>"));
    // User names are validated at sign-in (letters, digits, '.', '_', '-'): safe in HTML.
    match session.get::<String>("user").await? {
        Some(user) => page.push_str(&format!(
            "<p>Signed in as {user}.</p><form method=\"post\" action=\"/logout\">{hidden}<button>Sign out</button></form>"
        )),
        None => page.push_str(&format!(
            "<form method=\"post\" action=\"/login\">{hidden}<input name=\"user\"><button>Sign in</button></form>"
        )),
    }
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(page))
}

fn home_again() -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/"))
        .finish()
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
}

/// The CSRF middleware has checked the token and origin before this runs.
async fn login(session: Session, form: web::Form<LoginForm>) -> Result<HttpResponse, SessionError> {
    if !valid_user_name(&form.user) {
        let message = "User names are 1 to 32 letters, digits, '.', '_' or '-'.";
        session.flash(FlashLevel::Error, message).await?;
        return Ok(home_again());
    }
    session.cycle_id().await?; // a new id (and CSRF secret) at every privilege change
    session.set_owner(Some(&form.user)).await?;
    session.insert("user", &form.user).await?;
    session
        .flash(FlashLevel::Success, format!("Welcome, {}.", form.user))
        .await?;
    Ok(home_again())
}

/// User names a client may choose: 1 to 32 letters, digits, '.', '_' or '-'. Validate what a
/// client sends before it reaches the session: an over-long owner or value would otherwise be
/// a session error (a 500), and nothing would bound what a client makes the store keep.
fn valid_user_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

async fn logout(session: Session) -> Result<HttpResponse, SessionError> {
    session.destroy().await?; // and the cookie is removed
    Ok(home_again())
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = sessionkit::open("sqlite://actix_app.db").await?;
    let manager = SessionManager::builder(store).build()?;
    let csrf = CsrfMiddleware::new(CsrfConfig::default())?;
    println!("listening on http://127.0.0.1:3001");
    HttpServer::new(move || {
        App::new()
            .wrap(csrf.clone()) // runs inside the session middleware (the last wrap runs first)
            .wrap(SessionMiddleware::new(manager.clone()))
            .route("/", web::get().to(home))
            .route("/login", web::post().to(login))
            .route("/logout", web::post().to(logout))
    })
    .bind(("127.0.0.1", 3001))?
    .run()
    .await?;
    Ok(())
}
