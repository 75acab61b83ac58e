//! A small axum app with sessions: a visit counter, sign-in and sign-out forms protected by the
//! CSRF layer, and flash messages.
//!
//! Run:  `cargo run -p sessionkit-tower --example axum_app`, then open http://127.0.0.1:3000/.
//! From a shell: `curl -c jar -b jar http://127.0.0.1:3000/` shows the page and its token;
//! `curl -c jar -b jar -d "csrf_token=TOKEN&user=alice" http://127.0.0.1:3000/login` signs in
//! (without the token, or from another origin, the layer answers 403).
//! Sessions are kept in `axum_app.db` (SQLite) in the working directory.

use axum::Router;
use axum::extract::Form;
use axum::response::{Html, Redirect};
use axum::routing::{get, post};
use serde::Deserialize;
use sessionkit::{FlashLevel, Flashes, SessionManager};
use sessionkit_tower::{CsrfConfig, CsrfLayer, Session, SessionError, SessionLayer};

async fn home(session: Session, Flashes(flashes): Flashes) -> Result<Html<String>, SessionError> {
    let visits = session
        .update("visits", |n: &mut u64| {
            *n += 1;
            *n
        })
        .await?;
    let user: Option<String> = session.get("user").await?;
    let token = session.csrf_token().await?; // a fresh masked token for this page's forms
    let messages: String = flashes
        .iter()
        .map(|f| {
            format!(
                "<p class=\"{}\">{}</p>",
                f.level.as_str(),
                escape(&f.message)
            )
        })
        .collect();
    let form = match &user {
        Some(user) => format!(
            "<p>Signed in as {}.</p><form method=\"post\" action=\"/logout\">\
             <input type=\"hidden\" name=\"csrf_token\" value=\"{token}\"><button>Sign out</button></form>",
            escape(user)
        ),
        None => format!(
            "<form method=\"post\" action=\"/login\"><input type=\"hidden\" name=\"csrf_token\" value=\"{token}\">\
             <input name=\"user\" placeholder=\"user name\"><button>Sign in</button></form>"
        ),
    };
    Ok(Html(format!(
        "<!doctype html><title>axum_app</title>{messages}<p>Visit {visits}.</p>{form}"
    )))
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
}

/// The CSRF layer has checked the token and origin before this runs.
async fn login(session: Session, Form(form): Form<LoginForm>) -> Result<Redirect, SessionError> {
    if !valid_user_name(&form.user) {
        let message = "User names are 1 to 32 letters, digits, '.', '_' or '-'.";
        session.flash(FlashLevel::Error, message).await?;
        return Ok(Redirect::to("/"));
    }
    session.cycle_id().await?; // a new id (and CSRF secret) at every privilege change
    session.set_owner(Some(&form.user)).await?;
    session.insert("user", &form.user).await?;
    session
        .flash(FlashLevel::Success, format!("Welcome, {}.", form.user))
        .await?;
    Ok(Redirect::to("/"))
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

async fn logout(session: Session) -> Result<Redirect, SessionError> {
    session.destroy().await?; // and the cookie is removed
    Ok(Redirect::to("/"))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = sessionkit::open("sqlite://axum_app.db").await?;
    let manager = SessionManager::builder(store).build()?;
    let app = Router::new()
        .route("/", get(home))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .layer(CsrfLayer::new(CsrfConfig::default())?) // inside the session layer
        .layer(SessionLayer::new(manager));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
