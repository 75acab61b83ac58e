//! The demo app: login with id rotation, a visit counter, a cart, flash messages, "your
//! sessions" with revoke, and an admin page with purge (off unless enabled, behind a password).
//! Server-rendered HTML, no external assets. `sessionkit demo` serves it; [`app`] and
//! [`app_with`] build it for tests.
//!
//! It is meant to be copied, so it does what a real app must:
//! - every state-changing form carries a per-session CSRF token (the library's: masked, fresh
//!   per page, checked in constant time by its `CsrfLayer`, new at every sign-in), and a request
//!   whose `Origin` (or `Referer`) is another site is refused with a 403 page;
//! - what a client can make it store is bounded (user names, cart items, flash messages, form
//!   size, sessions per user), with a message to the user rather than an error;
//! - signed-in pages are `Cache-Control: no-store`; logout removes the cookie; a device whose
//!   session was revoked or expired is told why it is signed out;
//! - every expired session a cleanup deletes gets an audit line on the console (key hash and
//!   owner, through `SessionHooks::purged_sessions`);
//! - `GET /metrics` answers the library's metrics (store call latency, errors, sessions
//!   created, destroyed, cycled and purged, conflicts, cleanups) in Prometheus text format,
//!   from the recorder [`install_metrics`] installs; no label holds a session's id, key hash
//!   or owner.

mod device;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Form, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use sessionkit::csrf::Refusal;
use sessionkit::tower::{
    CookieConfig, CsrfConfig, CsrfLayer, SessionError, SessionLayer, WebConfig,
};
use sessionkit::web::{ErrorPage, default_error_page};
use sessionkit::{
    CleanupPolicy, ErrorKind, FlashLevel, ListFilter, ListState, PageRequest, PurgedSession,
    Session, SessionHooks, SessionKey, SessionManager, Store, Timestamp, codec,
};
use subtle::ConstantTimeEq as _;
use tokio::net::TcpListener;

use crate::CliError;
use crate::format;

const CATALOG: [(&str, &str, u32); 4] = [
    ("tea", "Green tea", 450),
    ("coffee", "Coffee beans", 1200),
    ("cake", "Cheesecake", 600),
    ("scone", "Scone", 300),
];

/// The session cookie's name.
const COOKIE: &str = "sessionkit_demo";
/// User names: 1 to this many letters, digits, '.', '_' or '-'.
pub const MAX_NAME_LEN: usize = 32;
/// Items a cart holds at most.
pub const MAX_CART_ITEMS: usize = 100;
/// Live sessions per user at most (signing in once more ends the oldest).
pub const MAX_SESSIONS_PER_USER: usize = 10;
/// The largest form body accepted; a larger one gets a 413 page.
pub const MAX_FORM_BYTES: usize = 4096;
/// The form field carrying the CSRF token.
const CSRF_FIELD: &str = "csrf";
/// The largest value the demo's manager stores under one key.
const MAX_VALUE_BYTES: usize = 16 * 1024;

/// How the demo is served.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Mark the cookie `Secure` (browsers accept that on `http://127.0.0.1` and
    /// `http://localhost`, not on other plain-HTTP hosts).
    pub secure_cookies: bool,
    /// Enables the admin page (list every session, purge expired ones) behind this password;
    /// `None`: the admin page is off.
    pub admin_password: Option<String>,
    /// Serves `GET /metrics` from this recorder (see [`install_metrics`]); `None`: no
    /// `/metrics` route.
    pub metrics: Option<PrometheusHandle>,
}

/// The upper bounds of the latency histograms' buckets, in seconds: 50 µs (a memory store
/// call) to 5 s (a store that hangs).
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    5.0,
];

/// How often the metrics recorder folds the histograms' samples into their buckets when
/// nobody scrapes `/metrics` (without it they would pile up).
const METRICS_UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs a Prometheus recorder as the process's `metrics` recorder, with buckets for the
/// latency histograms and the library's metrics described ([`sessionkit::metrics::describe`]),
/// and returns the handle `GET /metrics` renders. Once per process; the caller runs
/// [`PrometheusHandle::run_upkeep`] now and then (`sessionkit demo` does every 5 s).
///
/// # Errors
/// A recorder is already installed.
pub fn install_metrics() -> Result<PrometheusHandle, CliError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &LATENCY_BUCKETS)
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| CliError(format!("installing the metrics recorder: {e}")))?;
    sessionkit::metrics::describe();
    handle.run_upkeep();
    Ok(handle)
}

#[derive(Clone)]
struct Demo {
    manager: SessionManager,
    cookie: CookieConfig,
    admin_password: Option<Arc<str>>,
}

/// Serves the demo on `addr` over the store at `store_url` until Ctrl-C. With `admin`, the
/// admin page is on, behind a random password printed at start.
///
/// # Errors
/// The store cannot be opened or set up, or the address cannot be bound.
pub async fn run(store_url: &str, addr: &str, admin: bool) -> Result<(), CliError> {
    let store = sessionkit::open(store_url).await?;
    store.setup().await?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| CliError(format!("listening on {addr}: {e}")))?;
    let local = listener.local_addr()?;
    say(format_args!(
        "sessionkit demo: http://{local}/  (store: {}, Ctrl-C to stop)",
        sessionkit::backend::redacted_url(store_url)
    ));
    let secure = local.ip().is_loopback();
    if !secure {
        eprintln!(
            "warning: serving plain HTTP on a non-loopback address; the cookie is not marked Secure"
        );
    }
    let admin_password = admin.then(|| random_text(16));
    if let Some(password) = &admin_password {
        say(format_args!(
            "admin page: http://{local}/admin  (password: {password})"
        ));
    }
    let metrics = install_metrics()?;
    say(format_args!(
        "metrics: http://{local}/metrics  (Prometheus text format)"
    ));
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(METRICS_UPKEEP);
        loop {
            ticks.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = app_with(
        store,
        Options {
            secure_cookies: secure,
            admin_password,
            metrics: Some(metrics),
        },
    )?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// The demo app over `store`, admin page off. `secure_cookies` marks the cookie `Secure`
/// (browsers accept that on `http://127.0.0.1` and `http://localhost`, not on other
/// plain-HTTP hosts).
///
/// # Errors
/// A manager or cookie configuration error.
pub fn app(store: Arc<dyn Store>, secure_cookies: bool) -> Result<Router, CliError> {
    app_with(
        store,
        Options {
            secure_cookies,
            admin_password: None,
            metrics: None,
        },
    )
}

/// The demo app over `store` with `options`.
///
/// # Errors
/// A manager or cookie configuration error.
pub fn app_with(store: Arc<dyn Store>, options: Options) -> Result<Router, CliError> {
    let manager = SessionManager::builder(store)
        .hooks(AuditLog)
        .cleanup(CleanupPolicy::Probabilistic { one_in: 200 })
        .max_sessions_per_owner(Some(MAX_SESSIONS_PER_USER))
        .max_value_bytes(MAX_VALUE_BYTES)
        .build()?;
    let cookie = CookieConfig::default()
        .with_name(COOKIE)
        .with_secure(options.secure_cookies);
    let layer = SessionLayer::with_config(
        manager.clone(),
        WebConfig::default()
            .with_cookie(cookie.clone())
            .with_no_store_when_signed_in(true)
            .with_error_page(error_page),
    )?;
    let csrf = CsrfLayer::new(
        CsrfConfig::default()
            .with_field(CSRF_FIELD)
            .with_max_form_bytes(MAX_FORM_BYTES),
    )?;
    let demo = Demo {
        manager,
        cookie,
        admin_password: options.admin_password.map(Arc::from),
    };
    let app = Router::new()
        .route("/", get(home))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/cart/add", post(cart_add))
        .route("/cart/remove", post(cart_remove))
        .route("/sessions", get(sessions))
        .route("/sessions/revoke", post(revoke))
        .route("/sessions/revoke-others", post(revoke_others))
        .route("/admin", get(admin))
        .route("/admin/login", post(admin_login))
        .route("/admin/purge", post(purge))
        .layer(csrf)
        .layer(middleware::from_fn_with_state(demo.clone(), refusal_pages))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(layer)
        .with_state(demo);
    // Outside the session layer: a scrape neither reads nor starts a session.
    Ok(match options.metrics {
        Some(handle) => app.route("/metrics", get(metrics).with_state(handle)),
        None => app,
    })
}

/// `GET /metrics`: the recorder's metrics in Prometheus text format.
async fn metrics(State(handle): State<PrometheusHandle>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

/// Prints a line on stdout. A closed stdout (the demo piped into `head`, a test that read only
/// the banner) must not stop the server, so a failed write is ignored.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// Prints an audit line for every expired session a cleanup deletes (its key's short hash and
/// owner, never the id), on the stores that report them (`Capabilities::reports_purged`).
struct AuditLog;

impl SessionHooks for AuditLog {
    fn wants_purged_sessions(&self) -> bool {
        true
    }

    fn purged_sessions(&self, batch: &[PurgedSession]) {
        for session in batch {
            say(format_args!(
                "cleanup: expired session {} of {} (deadline {}) deleted",
                session.key.short(),
                session.owner.as_deref().unwrap_or("no one"),
                utc(session.expires_at)
            ));
        }
    }
}

type Page = Result<Response, SessionError>;

/// Session failures a client can cause get a page that says what happened; the rest keep
/// the library's default (503, 409, 500).
fn error_page(err: &sessionkit::Error) -> ErrorPage {
    let body = match err.kind() {
        ErrorKind::TooLarge => (
            413,
            "Too much data",
            "That would make your session larger than this demo allows. Nothing was saved.",
        ),
        ErrorKind::Superseded => (
            409,
            "Already signed in",
            "This device signed in again meanwhile (a form sent twice?), so this request was not \
             applied. Go to the home page to carry on.",
        ),
        _ => return default_error_page(err),
    };
    ErrorPage {
        status: body.0,
        content_type: "text/html; charset=utf-8",
        body: frame(
            body.1,
            "",
            "",
            &format!("<p>{}</p><p><a href=\"/\">Home</a></p>", body.2),
            false,
        ),
    }
}

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

fn utc(at: Timestamp) -> String {
    format!("{} UTC", format::time(at))
}

/// `bytes` random bytes from a CSPRNG, base64url (the admin password).
fn random_text(bytes: usize) -> String {
    use base64::Engine as _;
    let mut raw = vec![0; bytes];
    rand::fill(&mut raw[..]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// Whether the request presented a well-formed session cookie that names no live session: its
/// session was revoked, ended or expired. Ask before anything writes to the session.
/// `presented`: whether the request carried the session cookie at all
/// ([`session_cookie_presented`]).
async fn session_ended(session: &Session, presented: bool) -> Result<bool, SessionError> {
    if !presented || session.presented_malformed_id() {
        return Ok(false);
    }
    Ok(session.key().await?.is_none())
}

/// Whether the request carries the demo's session cookie.
fn session_cookie_presented(demo: &Demo, headers: &HeaderMap) -> bool {
    let cookies = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok());
    demo.cookie.find(cookies).is_some()
}

const ENDED: &str = "You were signed out (this device's session was ended or expired).";

/// The fixed messages a redirect can ask the home page to show (`/?notice=...`).
fn notice(name: &str) -> Option<&'static str> {
    Some(match name {
        "signed-out" => "You are signed out; that session is gone from the server.",
        "already-signed-in" => "You are already signed in.",
        "ended" => ENDED,
        "sign-in" => "Sign in to see your sessions.",
        _ => return None,
    })
}

/// The HTML page: header (`nav` and `who`), `messages`, title and `body`.
fn frame(title: &str, who: &str, messages: &str, body: &str, admin_link: bool) -> String {
    let head_title = if title == "sessionkit demo" {
        title.to_owned()
    } else {
        format!("{title} · sessionkit demo")
    };
    let admin_link = if admin_link {
        "<a href=\"/admin\">Admin</a>"
    } else {
        ""
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{head_title}</title>\
         <style>body{{font:15px/1.5 system-ui,sans-serif;max-width:56rem;margin:2rem auto;padding:0 1rem;color:#222}}\
         header{{display:flex;flex-wrap:wrap;gap:.5rem;justify-content:space-between;border-bottom:1px solid #ddd;padding-bottom:.5rem}}\
         nav a{{margin-right:1rem}} table{{border-collapse:collapse;width:100%}} td,th{{border-bottom:1px solid #eee;padding:.3rem;text-align:left}}\
         .flash{{background:#eef6ee;border:1px solid #9c9;padding:.4rem .8rem}} .flash.error{{background:#fbeaea;border-color:#d99}} .notice{{background:#fff6e0;border:1px solid #db8;padding:.4rem .8rem}}\
         .inline{{display:inline}} .current{{font-weight:bold}} button{{cursor:pointer}} code{{background:#f4f4f4;padding:0 .2rem}}</style></head><body>\
         <header><nav><a href=\"/\">Home</a><a href=\"/sessions\">Your sessions</a>{admin_link}</nav><div>{who}</div></header>\
         {messages}<h1>{title}</h1>{body}\
         <footer><p><small>Sessions are stored server-side; the cookie holds only a random id. Times are UTC.</small></p></footer></body></html>"
    )
}

/// The hidden form field carrying a fresh CSRF token for this page.
fn token_field(token: &str) -> String {
    format!("<input type=\"hidden\" name=\"{CSRF_FIELD}\" value=\"{token}\">")
}

/// A rendered page of the session: header with the user (and the sign-out form, carrying
/// `csrf_field`, the page's token), `notice` and the flash messages (shown once), then `body`.
async fn layout(
    demo: &Demo,
    session: &Session,
    csrf_field: &str,
    title: &str,
    notice: Option<&str>,
    body: &str,
) -> Page {
    let user: Option<String> = session.get("user").await?;
    let admin = session.get::<bool>("admin").await?.unwrap_or(false);
    let flashes = session.take_flashes().await?;
    let sign_out = format!(
        "<form method=\"post\" action=\"/logout\" class=\"inline\">{csrf_field}<button id=\"logout\">Sign out</button></form>"
    );
    let who = match (&user, admin) {
        (Some(user), _) => format!(
            "Signed in as <b id=\"user\">{}</b>{} · {sign_out}",
            escape(user),
            if admin { " (admin)" } else { "" }
        ),
        (None, true) => format!("Signed in as admin · {sign_out}"),
        (None, false) => "Not signed in".to_owned(),
    };
    let mut messages: String = notice
        .map(|n| format!("<p class=\"notice\" id=\"notice\">{}</p>", escape(n)))
        .unwrap_or_default();
    for f in &flashes {
        messages.push_str(&format!(
            "<p class=\"flash {}\">{}</p>",
            f.level.as_str(),
            escape(&f.message)
        ));
    }
    Ok(Html(frame(
        title,
        &who,
        &messages,
        body,
        demo.admin_password.is_some(),
    ))
    .into_response())
}

/// Renders the demo's own pages for requests the CSRF layer refused (it marks them with the
/// [`Refusal`]), with what the user can do about it.
async fn refusal_pages(
    State(demo): State<Demo>,
    session: Session,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let presented = session_cookie_presented(&demo, request.headers());
    let response = next.run(request).await;
    let Some(&refused) = response.extensions().get::<Refusal>() else {
        return response;
    };
    match refused_page(&session, &path, presented, refused).await {
        Ok(page) => page,
        Err(err) => err.into_response(),
    }
}

async fn refused_page(session: &Session, path: &str, presented: bool, refused: Refusal) -> Page {
    match refused {
        Refusal::CrossOrigin => {
            return Ok(refusal(
                StatusCode::FORBIDDEN,
                "Request refused",
                "This request came from another site: its <code>Origin</code> is not this demo. \
                 Forms of this demo are only accepted from its own pages. Nothing was changed.",
            ));
        }
        Refusal::FormTooLarge => {
            return Ok(refusal(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Form too large",
                &format!(
                    "This demo accepts forms of up to {MAX_FORM_BYTES} bytes. Nothing was changed."
                ),
            ));
        }
        _ => {}
    }
    // A sign-in form sent twice: the first one changed the token; the session is signed in.
    let signed_in = match path {
        "/login" => session.get::<String>("user").await?.is_some(),
        "/admin/login" => session.get::<bool>("admin").await?.unwrap_or(false),
        _ => false,
    };
    if signed_in {
        return see_other("/?notice=already-signed-in");
    }
    let why = if session_ended(session, presented).await? {
        format!("{ENDED} The form you sent belonged to that session.")
    } else {
        "The form's security token is missing or out of date (for example a page opened before \
         you signed in or out)."
            .to_owned()
    };
    Ok(refusal(
        refused_status(refused),
        "Request refused",
        &format!(
            "{} Nothing was changed. <a href=\"/\">Reload the page</a> and try again.",
            escape(&why)
        ),
    ))
}

fn refused_status(refused: Refusal) -> StatusCode {
    StatusCode::from_u16(refused.status()).unwrap_or(StatusCode::FORBIDDEN)
}

/// A page for a refused request (its `body` is HTML); it does not touch the session.
fn refusal(status: StatusCode, title: &str, body: &str) -> Response {
    let mut response = (
        status,
        Html(frame(
            title,
            "",
            "",
            &format!("<p id=\"refused\">{body}</p>"),
            false,
        )),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[derive(Deserialize)]
struct HomeQuery {
    notice: Option<String>,
}

async fn home(
    State(demo): State<Demo>,
    session: Session,
    headers: HeaderMap,
    Query(query): Query<HomeQuery>,
) -> Page {
    let ended = session_ended(&session, session_cookie_presented(&demo, &headers)).await?;
    let notice = if ended {
        Some(ENDED)
    } else {
        query.notice.as_deref().and_then(notice)
    };
    let visits = session
        .update("visits", |n: &mut u64| {
            *n += 1;
            *n
        })
        .await?;
    let csrf = token_field(&session.csrf_token().await?);
    let user: Option<String> = session.get("user").await?;
    let cart: Vec<String> = session.get("cart").await?.unwrap_or_default();
    let mut body = format!(
        "<p id=\"visits\">You have loaded this page <b>{visits}</b> time(s) in this session.</p>"
    );
    if user.is_none() {
        body.push_str(&format!(
            "<h2>Sign in</h2><form method=\"post\" action=\"/login\">{csrf}\
             <label>User name <input name=\"username\" id=\"username\" required maxlength=\"{MAX_NAME_LEN}\" pattern=\"[A-Za-z0-9_.\\-]+\"></label> \
             <button id=\"login\">Sign in</button></form><p><small>Any name works: this is a demo.</small></p>",
        ));
    }
    body.push_str("<h2>Shop</h2><table><tr><th>Item</th><th>Price</th><th></th></tr>");
    for (id, name, cents) in CATALOG {
        body.push_str(&format!(
            "<tr><td>{name}</td><td>€{}.{:02}</td><td><form method=\"post\" action=\"/cart/add\">{csrf}\
             <input type=\"hidden\" name=\"item\" value=\"{id}\"><button id=\"add-{id}\">Add to cart</button></form></td></tr>",
            cents / 100,
            cents % 100
        ));
    }
    body.push_str(&format!(
        "</table><h2>Cart</h2><p><small>Up to {MAX_CART_ITEMS} items.</small></p>"
    ));
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
                    "<tr><td>{count} × {name}</td><td><form method=\"post\" action=\"/cart/remove\">{csrf}\
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
    layout(&demo, &session, &csrf, "sessionkit demo", notice, &body).await
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
}

/// The error of a session call, or `None` if it is [`ErrorKind::Superseded`]: this request
/// came on the id a sign-in just replaced (a form sent twice).
fn superseded(result: Result<(), sessionkit::Error>) -> Result<bool, SessionError> {
    match result {
        Ok(()) => Ok(false),
        Err(err) if err.kind() == ErrorKind::Superseded => Ok(true),
        Err(err) => Err(err.into()),
    }
}

async fn login(session: Session, headers: HeaderMap, Form(form): Form<LoginForm>) -> Page {
    if session.get::<String>("user").await?.is_some() {
        return see_other("/?notice=already-signed-in");
    }
    let name = form.username.trim();
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        session
            .flash(
                FlashLevel::Error,
                format!("User names are 1 to {MAX_NAME_LEN} letters, digits, '.', '_' or '-'."),
            )
            .await?;
        return see_other("/");
    }
    let device = device::name(
        headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default(),
    );
    // A new id at login: a planted id never becomes a signed-in session.
    if superseded(session.cycle_id().await)? || superseded(session.set_owner(Some(name)).await)? {
        return see_other("/?notice=already-signed-in");
    }
    session.insert("user", name).await?;
    session.insert("device", &device).await?;
    session
        .insert("signed_in_at", &Timestamp::now().as_millis())
        .await?;
    session
        .flash(
            FlashLevel::Success,
            format!("Welcome, {name}. Your session id was replaced at sign-in."),
        )
        .await?;
    see_other("/")
}

/// Ends the session and removes the cookie; the message is a fixed one the home page shows
/// for `?notice=signed-out` (a flash would start a new session and set a new cookie).
async fn logout(session: Session) -> Page {
    session.destroy().await?;
    see_other("/?notice=signed-out")
}

#[derive(Deserialize)]
struct ItemForm {
    item: String,
}

async fn cart_add(session: Session, Form(form): Form<ItemForm>) -> Page {
    let Some((id, name, _)) = CATALOG.iter().find(|(id, _, _)| *id == form.item) else {
        session
            .flash(FlashLevel::Error, "There is no such item.")
            .await?;
        return see_other("/");
    };
    let added = session
        .update("cart", move |cart: &mut Vec<String>| {
            let room = cart.len() < MAX_CART_ITEMS;
            if room {
                cart.push((*id).to_owned());
            }
            room
        })
        .await?;
    if added {
        session
            .flash(FlashLevel::Success, format!("Added {name} to your cart."))
            .await?;
    } else {
        session
            .flash(
                FlashLevel::Warning,
                format!("Your cart is full: it holds at most {MAX_CART_ITEMS} items."),
            )
            .await?;
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

fn stored<T: serde::de::DeserializeOwned>(record: &sessionkit::Record, key: &str) -> Option<T> {
    record
        .data
        .get(key)
        .and_then(|bytes| codec::decode_value(key, bytes).ok())
}

async fn sessions(State(demo): State<Demo>, session: Session, headers: HeaderMap) -> Page {
    if session_ended(&session, session_cookie_presented(&demo, &headers)).await? {
        return see_other("/?notice=ended");
    }
    let Some(user) = session.get::<String>("user").await? else {
        return see_other("/?notice=sign-in");
    };
    let csrf = token_field(&session.csrf_token().await?);
    let current = session.key().await?;
    let mine = demo.manager.sessions_of(&user).await?;
    let mut body = format!(
        "<p>Every live session of <b>{}</b>, on every device. Revoking one signs that device out at once. \
         At most {MAX_SESSIONS_PER_USER}: signing in once more ends the oldest.</p>\
         <table id=\"sessions\"><tr><th>Device</th><th>Signed in</th><th>Expires</th><th></th></tr>",
        escape(&user)
    );
    for other in &mine {
        let device = stored::<String>(&other.record, "device")
            .or_else(|| stored::<String>(&other.record, "agent").map(|a| device::name(&a)))
            .unwrap_or_else(|| device::name(""));
        let signed_in = stored::<i64>(&other.record, "signed_in_at")
            .map_or_else(|| "-".into(), |ms| utc(Timestamp::from_millis(ms)));
        let is_current = Some(other.key) == current;
        let action = if is_current {
            "<span class=\"current\">this device</span>".to_owned()
        } else {
            format!(
                "<form method=\"post\" action=\"/sessions/revoke\">{csrf}<input type=\"hidden\" name=\"key\" value=\"{}\">\
                 <button class=\"revoke\">Revoke</button></form>",
                other.key.to_hex()
            )
        };
        body.push_str(&format!(
            "<tr class=\"{}\"><td>{}</td><td>{signed_in}</td><td>{}</td><td>{action}</td></tr>",
            if is_current { "current" } else { "other" },
            escape(&device),
            utc(other.record.expires_at)
        ));
    }
    body.push_str(&format!(
        "</table><p id=\"count\">{} session(s).</p>",
        mine.len()
    ));
    if mine.iter().any(|s| Some(s.key) != current) {
        body.push_str(&format!(
            "<form method=\"post\" action=\"/sessions/revoke-others\">{csrf}\
             <button id=\"revoke-others\">Sign out every other session</button></form>"
        ));
    }
    layout(&demo, &session, &csrf, "Your sessions", None, &body).await
}

#[derive(Deserialize)]
struct KeyForm {
    key: String,
}

async fn revoke(State(demo): State<Demo>, session: Session, Form(form): Form<KeyForm>) -> Page {
    let Some(user) = session.get::<String>("user").await? else {
        return see_other("/?notice=sign-in");
    };
    let Ok(key) = SessionKey::from_hex(&form.key) else {
        return see_other("/sessions");
    };
    // Only the user's own sessions: the key must be in their list.
    if demo
        .manager
        .sessions_of(&user)
        .await?
        .iter()
        .any(|s| s.key == key)
        && Some(key) != session.key().await?
    {
        demo.manager.revoke(&key).await?;
        session
            .flash(FlashLevel::Success, "That session is signed out.")
            .await?;
    }
    see_other("/sessions")
}

async fn revoke_others(State(demo): State<Demo>, session: Session) -> Page {
    let (Some(user), Some(current)) = (session.get::<String>("user").await?, session.key().await?)
    else {
        return see_other("/?notice=sign-in");
    };
    let ended = demo.manager.revoke_others(&user, &current).await?;
    session
        .flash(
            FlashLevel::Success,
            format!("Signed out {ended} other session(s)."),
        )
        .await?;
    see_other("/sessions")
}

/// The admin page is off without a password (404), and asks for it otherwise.
fn admin_off() -> Response {
    refusal(
        StatusCode::NOT_FOUND,
        "Admin page off",
        "The admin page lists every session and can purge; it is off unless the demo runs with \
         <code>sessionkit demo --admin</code>, which prints its password.",
    )
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn admin(State(demo): State<Demo>, session: Session) -> Page {
    if demo.admin_password.is_none() {
        return Ok(admin_off());
    }
    let csrf = token_field(&session.csrf_token().await?);
    if !session.get::<bool>("admin").await?.unwrap_or(false) {
        let body = format!(
            "<form method=\"post\" action=\"/admin/login\">{csrf}\
             <label>Admin password <input type=\"password\" name=\"password\" id=\"password\" required></label> \
             <button id=\"admin-login\">Sign in as admin</button></form>\
             <p><small><code>sessionkit demo --admin</code> printed the password when it started.</small></p>"
        );
        return layout(&demo, &session, &csrf, "Admin", None, &body)
            .await
            .map(no_store);
    }
    let store = demo.manager.store();
    if !store.capabilities().iterable {
        let body = format!("<p>The {} store cannot list sessions.</p>", store.name());
        return layout(&demo, &session, &csrf, "Admin", None, &body)
            .await
            .map(no_store);
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
         <form method=\"post\" action=\"/admin/purge\">{csrf}<button id=\"purge\">Purge expired sessions</button></form>\
         <table id=\"all\"><tr><th>Key</th><th>Owner</th><th>Created</th><th>Expires</th><th>Keys</th><th>Size</th></tr>",
        store.name(),
        expired.sessions.len()
    );
    for s in &live.sessions {
        body.push_str(&format!(
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            s.key.short(),
            escape(s.record.owner.as_deref().unwrap_or("-")),
            utc(s.record.created_at),
            utc(s.record.expires_at),
            escape(&s.record.data.keys().cloned().collect::<Vec<_>>().join(", ")),
            format::bytes(s.record.size_bytes())
        ));
    }
    body.push_str("</table>");
    layout(&demo, &session, &csrf, "Admin", None, &body)
        .await
        .map(no_store)
}

#[derive(Deserialize)]
struct PasswordForm {
    password: String,
}

async fn admin_login(
    State(demo): State<Demo>,
    session: Session,
    Form(form): Form<PasswordForm>,
) -> Page {
    let Some(password) = &demo.admin_password else {
        return Ok(admin_off());
    };
    if session.get::<bool>("admin").await?.unwrap_or(false) {
        return see_other("/admin");
    }
    if !bool::from(form.password.as_bytes().ct_eq(password.as_bytes())) {
        session
            .flash(FlashLevel::Error, "Wrong admin password.")
            .await?;
        return see_other("/admin");
    }
    if superseded(session.cycle_id().await)? {
        return see_other("/?notice=already-signed-in");
    }
    session.insert("admin", &true).await?;
    see_other("/admin")
}

async fn purge(State(demo): State<Demo>, session: Session) -> Page {
    if demo.admin_password.is_none() {
        return Ok(admin_off());
    }
    if !session.get::<bool>("admin").await?.unwrap_or(false) {
        return Ok(refusal(
            StatusCode::FORBIDDEN,
            "Request refused",
            "Only the admin can purge. <a href=\"/admin\">Sign in as admin</a>.",
        ));
    }
    let purged = demo.manager.purge_expired().await?;
    session
        .flash(
            FlashLevel::Success,
            format!("Purged {purged} expired session(s)."),
        )
        .await?;
    see_other("/admin")
}
