//! What only the Rocket integration has: the launch-time check of its guards, forms longer
//! than Rocket's peek window, what an error page keeps of the replaced response, the
//! configured error page and the CSRF refusal as a response fairing sees it. Over real
//! sockets, with a plain HTTP/1.1 exchange.

mod common;

use common::{config, launch};
use rocket::fairing::AdHoc;
use rocket::http::Header;
use rocket::response::Redirect;
use rocket::{Build, Rocket, get, post, routes};
use sessionkit_conformance::http::Outage as _;
use sessionkit_core::web::ErrorPage;
use sessionkit_core::{Session, SessionManager};
use sessionkit_rocket::{CsrfConfig, CsrfFairing, SessionError, SessionFairing, WebConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

async fn manager() -> SessionManager {
    let store = sessionkit_testkit::memory().await.expect("memory store");
    sessionkit_conformance::http::test_manager(store)
}

#[get("/set/<value>")]
async fn set(session: Session, value: &str) -> Result<&'static str, SessionError> {
    session.insert("a", &value).await?;
    Ok("ok")
}

#[get("/token")]
async fn token(session: Session) -> Result<String, SessionError> {
    Ok(session.csrf_token().await?)
}

#[post("/post")]
fn posted() -> &'static str {
    "posted"
}

/// Fails on its session: an over-long owner.
#[get("/fail")]
async fn fail(session: Session) -> Result<&'static str, SessionError> {
    let owner = "o".repeat(sessionkit_core::MAX_OWNER_LEN + 1);
    session.set_owner(Some(&owner)).await?;
    Ok("never")
}

/// An app with both fairings and a response fairing that reports the CSRF refusal.
fn app(manager: SessionManager, web: WebConfig) -> Rocket<Build> {
    rocket::custom(config())
        .attach(SessionFairing::with_config(manager, web).expect("valid config"))
        .attach(CsrfFairing::new(CsrfConfig::default()).expect("valid config"))
        .attach(AdHoc::on_response("refusal", |request, response| {
            Box::pin(async move {
                if let Some(refusal) = CsrfFairing::refusal(request) {
                    response.set_header(Header::new("x-refusal", format!("{refusal:?}")));
                }
            })
        }))
        .mount("/", routes![set, token, posted, fail])
}

/// A response: status, headers (lower-case names), body.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn cookie(&self) -> Option<&str> {
        let set = self.header("set-cookie")?;
        set.split(';').next()?.strip_prefix("sessionkit=")
    }
}

/// Sends one request (`Connection: close`) and reads the whole response.
async fn exchange(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Raw {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .expect("read response");
    let response = String::from_utf8(response).expect("a text response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Raw {
        status,
        headers,
        body: body.to_owned(),
    }
}

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_taking_session_without_the_fairing_does_not_launch() {
    let rocket = rocket::custom(config()).mount("/", routes![set]);
    let err = rocket.ignite().await.expect_err("the sentinel stops it");
    assert!(
        format!("{err:?}").contains("Sentinel"),
        "a sentinel error: {err:?}"
    );
    let rocket = rocket::custom(config())
        .attach(SessionFairing::new(manager().await))
        .mount("/", routes![set]);
    rocket.ignite().await.expect("launches with the fairing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_forms_need_the_token_field_in_their_first_512_bytes() {
    let port = launch(app(manager().await, WebConfig::default())).await;
    let started = exchange(port, "GET", "/set/1", &[], "").await;
    let cookie = started.cookie().expect("a session").to_owned();
    let cookie = format!("sessionkit={cookie}");
    let token = exchange(port, "GET", "/token", &[("Cookie", &cookie)], "").await;
    assert_eq!(token.status, 200, "{token:?}");
    let field = format!("csrf_token={}", token.body);
    let padding = format!("text={}", "x".repeat(2000));
    let headers = [FORM, ("Cookie", cookie.as_str())];

    // The token field cut by the window's end is not taken for a whole one.
    let cut = format!("{}&{field}&{padding}", "y".repeat(512 - field.len() / 2));
    let huge = "z".repeat(CsrfConfig::default().max_form_bytes + 1);
    let cases = [
        (
            "first in a long form",
            format!("{field}&{padding}"),
            200,
            "posted",
            None,
        ),
        (
            "last in a long form",
            format!("{padding}&{field}"),
            403,
            "must come first",
            Some("TokenNotFirst"),
        ),
        (
            "last in a short form",
            format!("item=tea&{field}"),
            200,
            "posted",
            None,
        ),
        (
            "cut by the window",
            cut,
            403,
            "must come first",
            Some("TokenNotFirst"),
        ),
        // Refused without reading: a declared length over the limit.
        (
            "over the limit",
            huge,
            413,
            "too large",
            Some("FormTooLarge"),
        ),
    ];
    for (what, body, status, says, refusal) in cases {
        let reply = exchange(port, "POST", "/post", &headers, &body).await;
        assert_eq!(reply.status, status, "{what}: {reply:?}");
        assert!(reply.body.contains(says), "{what}: {reply:?}");
        assert_eq!(reply.header("x-refusal"), refusal, "{what}: {reply:?}");
    }
}

/// An error page of the app's own, for [`WebConfig::with_error_page`].
fn our_pages() -> WebConfig {
    WebConfig::default().with_error_page(|err| ErrorPage {
        status: sessionkit_core::web::default_error_page(err).status,
        content_type: "text/plain; charset=utf-8",
        body: format!("our page: {}\n", err.kind()),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handlers_session_error_renders_the_configured_page() {
    let port = launch(app(manager().await, our_pages())).await;
    let started = exchange(port, "GET", "/set/1", &[], "").await;
    let cookie = format!("sessionkit={}", started.cookie().expect("a session"));
    let reply = exchange(port, "GET", "/fail", &[("Cookie", &cookie)], "").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (500, "our page: configuration error\n"),
        "the configured page: {reply:?}"
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("set-cookie"), None, "{reply:?}");
}

/// Inserts a value, then redirects: a response with a header of the handler's own.
#[get("/moved/<value>")]
async fn moved(session: Session, value: &str) -> Result<Redirect, SessionError> {
    session.insert("a", &value).await?;
    Ok(Redirect::to("/elsewhere"))
}

/// When the commit fails after the handler answered (the store went away), the error page
/// replaces the handler's response and its headers, but keeps `Server` and the security
/// headers Rocket's Shield set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_replaces_the_response_but_keeps_security_headers() {
    let stores = sessionkit_testkit::stores_through_proxy().await;
    for (store, outage) in stores {
        let manager = sessionkit_conformance::http::test_manager(store);
        let rocket = app(manager, our_pages()).mount("/", routes![moved]);
        let port = launch(rocket).await;
        let reply = exchange(port, "GET", "/moved/1", &[], "").await;
        assert_eq!(reply.status, 303, "the store is up: {reply:?}");
        outage.set_down(true);
        let reply = exchange(port, "GET", "/moved/2", &[], "").await;
        outage.set_down(false);
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (503, "our page: store unavailable\n"),
            "{reply:?}"
        );
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        assert_eq!(
            reply.header("location"),
            None,
            "the handler's headers go: {reply:?}"
        );
        assert_eq!(
            reply.header("set-cookie"),
            None,
            "nothing was saved: {reply:?}"
        );
        assert_eq!(
            reply.header("x-content-type-options"),
            Some("nosniff"),
            "Shield's headers stay: {reply:?}"
        );
        assert_eq!(reply.header("server"), Some("Rocket"), "{reply:?}");
    }
}
