//! A small Rocket app with sessions: a visit counter, sign-in and sign-out forms protected by
//! the CSRF fairing, and flash messages.
//!
//! Run:  `cargo run -p sessionkit-rocket --example rocket_app`, then open http://127.0.0.1:3002/.
//! From a shell: `curl -c jar -b jar http://127.0.0.1:3002/` shows the page and its token;
//! `curl -c jar -b jar -d "csrf_token=TOKEN&user=alice" http://127.0.0.1:3002/login` signs in
//! (without the token, or from another origin, the fairing answers 403).
//! Sessions are kept in `rocket_app.db` (SQLite) in the working directory. Rocket's own
//! settings (`Rocket.toml`, `ROCKET_*` variables) apply, but for the port: 3002.

use std::fmt;

use rocket::form::{Errors, Form, FromForm};
use rocket::response::Redirect;
use rocket::response::content::RawHtml;
use rocket::{get, post, routes};
use sessionkit::{FlashLevel, Flashes, SessionManager};
use sessionkit_rocket::{CsrfConfig, CsrfFairing, Session, SessionError, SessionFairing};

/// Text made safe to put between HTML tags and in quoted attributes.
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '&' => f.write_str("&amp;")?,
                '<' => f.write_str("&lt;")?,
                '>' => f.write_str("&gt;")?,
                '"' => f.write_str("&quot;")?,
                _ => fmt::Write::write_char(f, c)?,
            }
        }
        Ok(())
    }
}

#[get("/")]
async fn home(session: Session, flashes: Flashes) -> Result<RawHtml<String>, SessionError> {
    let visits = session
        .update("visits", |n: &mut u64| {
            *n += 1;
            *n
        })
        .await?;
    let user: Option<String> = session.get("user").await?;
    // A fresh masked token for this page's forms. The field comes first in each form: in a
    // form over 512 bytes, Rocket's CSRF check only sees that far.
    let token = session.csrf_token().await?;
    let hidden = format!("<input type=\"hidden\" name=\"csrf_token\" value=\"{token}\">");
    let mut page = String::from("<!doctype html><title>rocket_app</title>");
    for flash in &flashes.0 {
        let (class, text) = (flash.level.as_str(), Escaped(&flash.message));
        page += &format!("<p class=\"{class}\">{text}</p>");
    }
    page += &format!("<p>Visit {visits}.</p>");
    page += &match user {
        Some(user) => format!(
            "<p>Signed in as {}.</p><form method=\"post\" action=\"/logout\">{hidden}\
             <button>Sign out</button></form>",
            Escaped(&user)
        ),
        None => format!(
            "<form method=\"post\" action=\"/login\">{hidden}\
             <input name=\"user\" placeholder=\"user name\"><button>Sign in</button></form>"
        ),
    };
    Ok(RawHtml(page))
}

/// The sign-in form. Rocket checks the name before the handler runs: an over-long owner or
/// value would otherwise be a session error (a 500), and nothing would bound what a client
/// makes the store keep. The form's `csrf_token` field is the CSRF fairing's; a `Form` ignores
/// fields it does not declare.
#[derive(FromForm)]
struct SignIn<'r> {
    #[field(validate = len(1..=32))]
    #[field(validate = with(|name: &&str| name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)), "letters, digits, '.', '_' or '-'"))]
    user: &'r str,
}

/// The CSRF fairing has checked the token and origin before this runs.
#[post("/login", data = "<form>")]
async fn login(
    session: Session,
    form: Result<Form<SignIn<'_>>, Errors<'_>>,
) -> Result<Redirect, SessionError> {
    let Ok(form) = form else {
        let message = "User names are 1 to 32 letters, digits, '.', '_' or '-'.";
        session.flash(FlashLevel::Error, message).await?;
        return Ok(Redirect::to("/"));
    };
    session.cycle_id().await?; // a new id (and CSRF secret) at every privilege change
    session.set_owner(Some(form.user)).await?;
    session.insert("user", &form.user).await?;
    let welcome = format!("Welcome, {}.", form.user);
    session.flash(FlashLevel::Success, welcome).await?;
    Ok(Redirect::to("/"))
}

#[post("/logout")]
async fn logout(session: Session) -> Result<Redirect, SessionError> {
    session.destroy().await?; // and the cookie is removed
    Ok(Redirect::to("/"))
}

#[rocket::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = sessionkit::open("sqlite://rocket_app.db").await?;
    let manager = SessionManager::builder(store).build()?;
    let figment = rocket::Config::figment().merge(("port", 3002));
    rocket::custom(figment)
        .attach(SessionFairing::new(manager))
        .attach(CsrfFairing::new(CsrfConfig::default())?)
        .mount("/", routes![home, login, logout])
        .launch()
        .await?;
    Ok(())
}
