//! The demo app: login with id rotation, a visit counter, a cart, flash messages, "your
//! sessions" with revoke, and an admin page with purge. Server-rendered HTML, no external assets.
//! `sessionkit demo` serves it; [`app`] builds it for tests.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use sessionkit::tower::{CookieConfig, SessionError, SessionLayer, WebConfig};
use sessionkit::{
    CleanupPolicy, ListFilter, ListState, PageRequest, Session, SessionKey, SessionManager, Store,
    Timestamp, codec,
};
use tokio::net::TcpListener;

use crate::CliError;
use crate::format;

const CATALOG: [(&str, &str, u32); 4] = [
    ("tea", "Green tea", 450),
    ("coffee", "Coffee beans", 1200),
    ("cake", "Cheesecake", 600),
    ("scone", "Scone", 300),
];

/// Serves the demo on `addr` over the store at `store_url` until Ctrl-C.
///
/// # Errors
/// The store cannot be opened or set up, or the address cannot be bound.
pub async fn run(store_url: &str, addr: &str) -> Result<(), CliError> {
    let store = sessionkit::open(store_url).await?;
    store.setup().await?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| CliError(format!("listening on {addr}: {e}")))?;
    let local = listener.local_addr()?;
    println!(
        "sessionkit demo: http://{local}/  (store: {}, Ctrl-C to stop)",
        sessionkit::backend::redacted_url(store_url)
    );
    let secure = local.ip().is_loopback();
    if !secure {
        eprintln!(
            "warning: serving plain HTTP on a non-loopback address; the cookie is not marked Secure"
        );
    }
    let app = app(store, secure)?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// The demo app over `store`. `secure_cookies` marks the cookie `Secure` (browsers accept that
/// on `http://127.0.0.1` and `http://localhost`, not on other plain-HTTP hosts).
///
/// # Errors
/// A manager or cookie configuration error.
pub fn app(store: Arc<dyn Store>, secure_cookies: bool) -> Result<Router, CliError> {
    let manager = SessionManager::builder(store)
        .cleanup(CleanupPolicy::Probabilistic { one_in: 200 })
        .build()?;
    let layer = SessionLayer::with_config(
        manager.clone(),
        WebConfig::default().with_cookie(
            CookieConfig::default()
                .with_name("sessionkit_demo")
                .with_secure(secure_cookies),
        ),
    )?;
    Ok(Router::new()
        .route("/", get(home))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/cart/add", post(cart_add))
        .route("/cart/remove", post(cart_remove))
        .route("/sessions", get(sessions))
        .route("/sessions/revoke", post(revoke))
        .route("/sessions/revoke-others", post(revoke_others))
        .route("/admin", get(admin))
        .route("/admin/purge", post(purge))
        .layer(layer)
        .with_state(manager))
}

type Page = Result<Response, SessionError>;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn see_other(to: &str) -> Page {
    Ok(Redirect::to(to).into_response())
}

/// How many flash messages a session keeps: the oldest go first.
const MAX_FLASHES: usize = 5;

/// Queues a message for the next page. An `update`, so messages queued by concurrent
/// requests are all kept.
async fn flash(session: &Session, message: impl Into<String>) -> Result<(), SessionError> {
    let message = message.into();
    session
        .update("flash", move |flashes: &mut Vec<String>| {
            flashes.push(message.clone());
            let over = flashes.len().saturating_sub(MAX_FLASHES);
            flashes.drain(..over);
        })
        .await?;
    Ok(())
}

/// Reads the queued flash messages and removes exactly those (one occurrence each), so a
/// message a concurrent request queues meanwhile stays for the next page.
async fn take_flashes(session: &Session) -> Result<Vec<String>, SessionError> {
    let shown: Vec<String> = session.get("flash").await?.unwrap_or_default();
    if !shown.is_empty() {
        let seen = shown.clone();
        session
            .update("flash", move |flashes: &mut Vec<String>| {
                for message in &seen {
                    if let Some(at) = flashes.iter().position(|m| m == message) {
                        flashes.remove(at);
                    }
                }
            })
            .await?;
    }
    Ok(shown)
}

/// The page frame: header with the user, the flash messages (shown once), then `body`.
async fn layout(session: &Session, title: &str, body: &str) -> Page {
    let user: Option<String> = session.get("user").await?;
    let flashes = take_flashes(session).await?;
    let who = match &user {
        Some(user) => format!(
            "Signed in as <b id=\"user\">{}</b> · <a href=\"/sessions\">your sessions</a> · \
             <form method=\"post\" action=\"/logout\" class=\"inline\"><button id=\"logout\">Sign out</button></form>",
            escape(user)
        ),
        None => "Not signed in".to_owned(),
    };
    let flashes: String = flashes
        .iter()
        .map(|f| format!("<p class=\"flash\">{}</p>", escape(f)))
        .collect();
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title} · sessionkit demo</title>\
         <style>body{{font:15px/1.5 system-ui,sans-serif;max-width:56rem;margin:2rem auto;padding:0 1rem;color:#222}}\
         header{{display:flex;justify-content:space-between;border-bottom:1px solid #ddd;padding-bottom:.5rem}}\
         nav a{{margin-right:1rem}} table{{border-collapse:collapse;width:100%}} td,th{{border-bottom:1px solid #eee;padding:.3rem;text-align:left}}\
         .flash{{background:#eef6ee;border:1px solid #9c9;padding:.4rem .8rem}} .inline{{display:inline}} .current{{font-weight:bold}}\
         button{{cursor:pointer}} code{{background:#f4f4f4;padding:0 .2rem}}</style></head><body>\
         <header><nav><a href=\"/\">Home</a><a href=\"/sessions\">Your sessions</a><a href=\"/admin\">Admin</a></nav><div>{who}</div></header>\
         {flashes}<h1>{title}</h1>{body}\
         <footer><p><small>Sessions are stored server-side; the cookie holds only a random id.</small></p></footer></body></html>"
    );
    Ok(Html(html).into_response())
}

async fn home(session: Session) -> Page {
    let visits = session
        .update("visits", |n: &mut u64| {
            *n += 1;
            *n
        })
        .await?;
    let user: Option<String> = session.get("user").await?;
    let cart: Vec<String> = session.get("cart").await?.unwrap_or_default();
    let mut body = format!(
        "<p id=\"visits\">You have loaded this page <b>{visits}</b> time(s) in this session.</p>"
    );
    if user.is_none() {
        body.push_str(
            "<h2>Sign in</h2><form method=\"post\" action=\"/login\">\
             <label>User name <input name=\"username\" id=\"username\" required maxlength=\"32\" pattern=\"[A-Za-z0-9_.-]+\"></label> \
             <button id=\"login\">Sign in</button></form><p><small>Any name works: this is a demo.</small></p>",
        );
    }
    body.push_str("<h2>Shop</h2><table><tr><th>Item</th><th>Price</th><th></th></tr>");
    for (id, name, cents) in CATALOG {
        body.push_str(&format!(
            "<tr><td>{name}</td><td>€{}.{:02}</td><td><form method=\"post\" action=\"/cart/add\">\
             <input type=\"hidden\" name=\"item\" value=\"{id}\"><button id=\"add-{id}\">Add to cart</button></form></td></tr>",
            cents / 100,
            cents % 100
        ));
    }
    body.push_str("</table><h2>Cart</h2>");
    if cart.is_empty() {
        body.push_str("<p id=\"cart\">Your cart is empty.</p>");
    } else {
        body.push_str("<table id=\"cart\">");
        let mut total = 0;
        for (id, name, cents) in CATALOG {
            let count = cart.iter().filter(|c| *c == id).count();
            if count > 0 {
                total += cents * u32::try_from(count).unwrap_or(0);
                body.push_str(&format!(
                    "<tr><td>{count} × {name}</td><td><form method=\"post\" action=\"/cart/remove\">\
                     <input type=\"hidden\" name=\"item\" value=\"{id}\"><button>Remove one</button></form></td></tr>"
                ));
            }
        }
        body.push_str(&format!(
            "<tr><th>Total</th><th>€{}.{:02}</th></tr></table>",
            total / 100,
            total % 100
        ));
    }
    layout(&session, "sessionkit demo", &body).await
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
}

async fn login(session: Session, headers: HeaderMap, Form(form): Form<LoginForm>) -> Page {
    let name = form.username.trim();
    if name.is_empty()
        || name.len() > 32
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        flash(
            &session,
            "User names are 1 to 32 letters, digits, '.', '_' or '-'.",
        )
        .await?;
        return see_other("/");
    }
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown device");
    session.cycle_id().await?; // a new id at login: a planted id never becomes a signed-in session
    session.set_owner(Some(name)).await?;
    session.insert("user", name).await?;
    session
        .insert("agent", &agent.chars().take(160).collect::<String>())
        .await?;
    session
        .insert("signed_in_at", &Timestamp::now().as_millis())
        .await?;
    flash(
        &session,
        format!("Welcome, {name}. Your session id was replaced at sign-in."),
    )
    .await?;
    see_other("/")
}

async fn logout(session: Session) -> Page {
    session.destroy().await?;
    flash(
        &session,
        "You are signed out; that session is gone from the server.",
    )
    .await?;
    see_other("/")
}

#[derive(Deserialize)]
struct ItemForm {
    item: String,
}

async fn cart_add(session: Session, Form(form): Form<ItemForm>) -> Page {
    if let Some((id, name, _)) = CATALOG.iter().find(|(id, _, _)| *id == form.item) {
        session
            .update("cart", move |cart: &mut Vec<String>| {
                cart.push((*id).to_owned())
            })
            .await?;
        flash(&session, format!("Added {name} to your cart.")).await?;
    }
    see_other("/")
}

async fn cart_remove(session: Session, Form(form): Form<ItemForm>) -> Page {
    session
        .update("cart", move |cart: &mut Vec<String>| {
            if let Some(at) = cart.iter().position(|c| *c == form.item) {
                cart.remove(at);
            }
        })
        .await?;
    see_other("/")
}

fn stored_string(record: &sessionkit::Record, key: &str) -> Option<String> {
    record
        .data
        .get(key)
        .and_then(|bytes| codec::decode_value(key, bytes).ok())
}

async fn sessions(State(manager): State<SessionManager>, session: Session) -> Page {
    let Some(user) = session.get::<String>("user").await? else {
        flash(&session, "Sign in to see your sessions.").await?;
        return see_other("/");
    };
    let current = session.key().await?;
    let mine = manager.sessions_of(&user).await?;
    let mut body = format!(
        "<p>Every live session of <b>{}</b>, on every device. Revoking one signs that device out at once.</p>\
         <table id=\"sessions\"><tr><th>Device</th><th>Signed in</th><th>Expires</th><th></th></tr>",
        escape(&user)
    );
    for other in &mine {
        let agent =
            stored_string(&other.record, "agent").unwrap_or_else(|| "unknown device".into());
        let signed_in = other
            .record
            .data
            .get("signed_in_at")
            .and_then(|b| codec::decode_value::<i64>("signed_in_at", b).ok())
            .map_or_else(|| "-".into(), |ms| format::time(Timestamp::from_millis(ms)));
        let is_current = Some(other.key) == current;
        let action = if is_current {
            "<span class=\"current\">this device</span>".to_owned()
        } else {
            format!(
                "<form method=\"post\" action=\"/sessions/revoke\"><input type=\"hidden\" name=\"key\" value=\"{}\">\
                 <button class=\"revoke\">Revoke</button></form>",
                other.key.to_hex()
            )
        };
        body.push_str(&format!(
            "<tr class=\"{}\"><td>{}</td><td>{signed_in}</td><td>{}</td><td>{action}</td></tr>",
            if is_current { "current" } else { "other" },
            escape(&agent),
            format::time(other.record.expires_at)
        ));
    }
    body.push_str(&format!(
        "</table><p id=\"count\">{} session(s).</p><form method=\"post\" action=\"/sessions/revoke-others\">\
         <button id=\"revoke-others\">Sign out every other session</button></form>",
        mine.len()
    ));
    layout(&session, "Your sessions", &body).await
}

#[derive(Deserialize)]
struct KeyForm {
    key: String,
}

async fn revoke(
    State(manager): State<SessionManager>,
    session: Session,
    Form(form): Form<KeyForm>,
) -> Page {
    let Some(user) = session.get::<String>("user").await? else {
        return see_other("/");
    };
    let Ok(key) = SessionKey::from_hex(&form.key) else {
        return see_other("/sessions");
    };
    // Only the user's own sessions: the key must be in their list.
    if manager
        .sessions_of(&user)
        .await?
        .iter()
        .any(|s| s.key == key)
        && Some(key) != session.key().await?
    {
        manager.revoke(&key).await?;
        flash(&session, "That session is signed out.").await?;
    }
    see_other("/sessions")
}

async fn revoke_others(State(manager): State<SessionManager>, session: Session) -> Page {
    let (Some(user), Some(current)) = (session.get::<String>("user").await?, session.key().await?)
    else {
        return see_other("/");
    };
    let ended = manager.revoke_others(&user, &current).await?;
    flash(&session, format!("Signed out {ended} other session(s).")).await?;
    see_other("/sessions")
}

async fn admin(State(manager): State<SessionManager>, session: Session) -> Page {
    let store = manager.store();
    if !store.capabilities().iterable {
        return layout(
            &session,
            "Admin",
            &format!("<p>The {} store cannot list sessions.</p>", store.name()),
        )
        .await;
    }
    let live = store
        .list(&ListFilter::default(), PageRequest::first(100))
        .await?;
    let expired = store
        .list(
            &ListFilter {
                owner: None,
                state: ListState::Expired,
            },
            PageRequest::first(1000),
        )
        .await?;
    let mut body = format!(
        "<p>Store: <code>{}</code>. Showing up to 100 live sessions; {} expired session(s) waiting for cleanup.</p>\
         <form method=\"post\" action=\"/admin/purge\"><button id=\"purge\">Purge expired sessions</button></form>\
         <table id=\"all\"><tr><th>Key</th><th>Owner</th><th>Created</th><th>Expires</th><th>Keys</th><th>Size</th></tr>",
        store.name(),
        expired.sessions.len()
    );
    for s in &live.sessions {
        body.push_str(&format!(
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            s.key.short(),
            escape(s.record.owner.as_deref().unwrap_or("-")),
            format::time(s.record.created_at),
            format::time(s.record.expires_at),
            escape(&s.record.data.keys().cloned().collect::<Vec<_>>().join(", ")),
            format::bytes(s.record.size_bytes())
        ));
    }
    body.push_str("</table>");
    layout(&session, "Admin", &body).await
}

async fn purge(State(manager): State<SessionManager>, session: Session) -> Page {
    let purged = manager.purge_expired().await?;
    flash(&session, format!("Purged {purged} expired session(s).")).await?;
    see_other("/admin")
}
