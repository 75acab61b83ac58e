//! The demo's security behaviour through the real app over HTTP: CSRF tokens and the origin
//! check, the admin page behind a flag and a password, logout removing the cookie, signed-in
//! pages not cached, bounded input, a revoked device told why, a sign-in form sent twice, and
//! `/metrics`.

use std::sync::{Arc, OnceLock};

use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use sessionkit_cli::demo::{self, Options};

const COOKIE: &str = "sessionkit_demo";
const ENDED: &str = "You were signed out (this device&#39;s session was ended or expired).";

/// The demo on SQLite on a free loopback port.
async fn start(admin_password: Option<&str>) -> (String, tempfile::TempDir) {
    serve(Options {
        secure_cookies: false,
        admin_password: admin_password.map(str::to_owned),
        metrics: None,
    })
    .await
}

/// The demo with `options`, on SQLite on a free loopback port.
async fn serve(options: Options) -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let store = sessionkit::SqliteStore::open(dir.path().join("demo.db"))
        .await
        .expect("sqlite");
    let app = demo::app_with(Arc::new(store), options).expect("app");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, dir)
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The `Set-Cookie` headers of the session cookie.
    fn session_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter(|v| v.starts_with(&format!("{COOKIE}=")))
            .map(str::to_owned)
            .collect()
    }

    /// The CSRF token of the page's forms.
    fn token(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no token in {}", self.body))
            + "name=\"csrf\" value=\"".len();
        let end = self.body[at..].find('"').expect("end of token");
        self.body[at..at + end].to_owned()
    }
}

/// One browser: the demo's cookie, kept as a browser would.
struct Client {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
    agent: &'static str,
}

impl Client {
    fn new(base: &str, agent: &'static str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            base: base.to_owned(),
            cookie: None,
            agent,
        }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Reply {
        let mut request = request.header(header::USER_AGENT, self.agent);
        if let Some(cookie) = &self.cookie {
            request = request.header(header::COOKIE, format!("{COOKIE}={cookie}"));
        }
        let response = request.send().await.expect("request");
        let reply = Reply {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.expect("body"),
        };
        for set in reply.session_cookies() {
            let value = set[COOKIE.len() + 1..]
                .split(';')
                .next()
                .unwrap_or_default();
            self.cookie =
                (!value.is_empty() && !set.contains("Max-Age=0")).then(|| value.to_owned());
        }
        assert!(
            reply.status.as_u16() < 500,
            "{} {}",
            reply.status,
            reply.body
        );
        reply
    }

    async fn get(&mut self, path: &str) -> Reply {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Reply {
        self.post_with(path, form, &[]).await
    }

    async fn post_with(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Reply {
        let body: Vec<String> = form.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body.join("&"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request).await
    }

    /// Signs in as `name` from the home page's form; returns the home page after.
    async fn sign_in(&mut self, name: &str) -> Reply {
        let token = self.get("/").await.token();
        let reply = self
            .post("/login", &[("csrf", &token), ("username", name)])
            .await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        let home = self.get("/").await;
        assert!(
            home.body.contains(&format!("id=\"user\">{name}<")),
            "{}",
            home.body
        );
        home
    }
}

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const PHONE: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36";

#[tokio::test]
async fn cross_origin_posts_are_refused() {
    let (base, _dir) = start(None).await;
    let mut browser = Client::new(&base, FIREFOX);
    let token = browser.get("/").await.token();
    let form = [("csrf", token.as_str()), ("item", "tea")];
    for headers in [
        &[("origin", "http://evil.example")][..],
        &[("origin", "null")][..],
        &[("referer", "http://evil.example/page")][..],
        &[
            ("origin", "http://evil.example"),
            ("referer", &format!("{base}/")),
        ][..],
    ] {
        let reply = browser.post_with("/cart/add", &form, headers).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{headers:?}");
        assert!(reply.body.contains("another site"), "{}", reply.body);
    }
    assert!(browser.get("/").await.body.contains("Your cart is empty."));
    // The demo's own origin, or its pages as the referrer, with the token: accepted.
    let origin = [("origin", base.as_str())];
    let reply = browser.post_with("/cart/add", &form, &origin).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    let referer = format!("{base}/");
    let reply = browser
        .post_with("/cart/add", &form, &[("referer", &referer)])
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert!(browser.get("/").await.body.contains("2 × Green tea"));
}

#[tokio::test]
async fn forms_need_this_sessions_token() {
    let (base, _dir) = start(None).await;
    let mut browser = Client::new(&base, FIREFOX);
    let mut other = Client::new(&base, PHONE);
    let first = browser.get("/").await.token();
    let second = browser.get("/").await.token();
    let others = other.get("/").await.token();
    assert_ne!(first, second, "a fresh token per render");
    let forged = "A".repeat(first.len());
    for (what, form) in [
        ("no token", vec![("item", "tea")]),
        (
            "a forged token",
            vec![("csrf", forged.as_str()), ("item", "tea")],
        ),
        ("a short token", vec![("csrf", "abc"), ("item", "tea")]),
        (
            "another session's token",
            vec![("csrf", others.as_str()), ("item", "tea")],
        ),
    ] {
        let reply = browser.post("/cart/add", &form).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{what}");
        assert!(
            reply.body.contains("security token"),
            "{what}: {}",
            reply.body
        );
    }
    let reply = browser.post("/login", &[("username", "mallory")]).await;
    assert_eq!(
        reply.status,
        StatusCode::FORBIDDEN,
        "sign-in needs a token too"
    );
    assert!(browser.get("/").await.body.contains("Your cart is empty."));
    // Both renders' tokens verify.
    for token in [&first, &second] {
        let reply = browser
            .post("/cart/add", &[("csrf", token), ("item", "tea")])
            .await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER);
    }
    assert!(browser.get("/").await.body.contains("2 × Green tea"));
    // A new session (no cookie) has no secret: no token verifies.
    let mut fresh = Client::new(&base, FIREFOX);
    let reply = fresh
        .post("/cart/add", &[("csrf", &first), ("item", "tea")])
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(
        reply.session_cookies().is_empty(),
        "a refused request starts no session"
    );
}

#[tokio::test]
async fn admin_page_is_off_without_the_flag_and_needs_the_password() {
    let (base, _dir) = start(None).await;
    let mut browser = Client::new(&base, FIREFOX);
    browser.sign_in("alice").await;
    let reply = browser.get("/admin").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(!reply.body.contains("alice</td>") && !reply.body.contains("id=\"all\""));
    let token = browser.get("/").await.token();
    let reply = browser.post("/admin/purge", &[("csrf", &token)]).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);

    let (base, _dir) = start(Some("opensesame")).await;
    let mut browser = Client::new(&base, FIREFOX);
    browser.sign_in("alice").await;
    let page = browser.get("/admin").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        !page.body.contains("id=\"all\""),
        "no list before the admin login"
    );
    assert!(page.body.contains("Admin password"));
    let reply = browser
        .post("/admin/purge", &[("csrf", &page.token())])
        .await;
    assert_eq!(
        reply.status,
        StatusCode::FORBIDDEN,
        "no purge before the admin login"
    );
    let reply = browser
        .post(
            "/admin/login",
            &[("csrf", &page.token()), ("password", "opensesamf")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    let page = browser.get("/admin").await;
    assert!(page.body.contains("Wrong admin password."));
    assert!(!page.body.contains("id=\"all\""));
    let reply = browser
        .post(
            "/admin/login",
            &[("csrf", &page.token()), ("password", "opensesame")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    let page = browser.get("/admin").await;
    assert!(page.body.contains("id=\"all\""), "{}", page.body);
    assert!(page.body.contains("<td>alice</td>"));
    assert_eq!(page.headers[header::CACHE_CONTROL], "no-store");
    let reply = browser
        .post("/admin/purge", &[("csrf", &page.token())])
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert!(
        browser
            .get("/admin")
            .await
            .body
            .contains("Purged 0 expired session(s).")
    );
}

#[tokio::test]
async fn logout_removes_the_cookie_and_sets_no_new_one() {
    let (base, _dir) = start(None).await;
    let mut browser = Client::new(&base, FIREFOX);
    let home = browser.sign_in("alice").await;
    let reply = browser.post("/logout", &[("csrf", &home.token())]).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    let cookies = reply.session_cookies();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert!(
        cookies[0].starts_with(&format!("{COOKIE}=;")) && cookies[0].contains("Max-Age=0"),
        "{cookies:?}"
    );
    assert_eq!(browser.cookie, None);
    let page = browser.get(reply.location()).await;
    assert!(page.body.contains("You are signed out"), "{}", page.body);
    assert!(page.body.contains("id=\"username\""));
}

#[tokio::test]
async fn signed_in_pages_are_not_cached() {
    let (base, _dir) = start(None).await;
    let mut browser = Client::new(&base, FIREFOX);
    browser.sign_in("alice").await;
    for path in ["/", "/sessions"] {
        let page = browser.get(path).await;
        assert_eq!(page.status, StatusCode::OK);
        let cache = page
            .headers
            .get(header::CACHE_CONTROL)
            .map(|v| v.to_str().unwrap_or_default());
        assert_eq!(cache, Some("no-store"), "{path}");
    }
}

#[tokio::test]
async fn over_long_input_gets_a_message_not_an_error() {
    let (base, _dir) = start(None).await;
    let mut browser = Client::new(&base, FIREFOX);
    let token = browser.get("/").await.token();
    let long = "a".repeat(1000);
    let reply = browser
        .post("/login", &[("csrf", &token), ("username", &long)])
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    let page = browser.get("/").await;
    assert!(
        page.body.contains("User names are 1 to 32 letters"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("id=\"user\""));

    let huge = "a".repeat(100_000);
    let reply = browser
        .post("/login", &[("csrf", &token), ("username", &huge)])
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(reply.body.contains("Form too large"));

    let reply = browser
        .post("/cart/add", &[("csrf", &token), ("item", &long)])
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert!(
        browser
            .get("/")
            .await
            .body
            .contains("There is no such item.")
    );

    for _ in 0..105 {
        let reply = browser
            .post("/cart/add", &[("csrf", &token), ("item", "tea")])
            .await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER);
    }
    let page = browser.get("/").await;
    assert!(page.body.contains("100 × Green tea"), "{}", page.body);
    assert!(
        page.body
            .contains("Your cart is full: it holds at most 100 items.")
    );
    assert!(page.body.matches("<p class=\"flash ").count() <= sessionkit::MAX_FLASHES);
}

#[tokio::test]
async fn a_revoked_device_is_told_why_it_is_signed_out() {
    let (base, _dir) = start(None).await;
    let mut laptop = Client::new(&base, FIREFOX);
    let mut phone = Client::new(&base, PHONE);
    laptop.sign_in("alice").await;
    let page = laptop.get("/sessions").await;
    assert!(page.body.contains("Firefox on Linux"));
    assert!(
        !page.body.contains("revoke-others"),
        "no one else to sign out"
    );
    phone.sign_in("alice").await;
    let page = laptop.get("/sessions").await;
    assert!(page.body.contains("2 session(s)."));
    assert!(page.body.contains("Chrome on Android"), "{}", page.body);
    assert!(!page.body.contains("Mozilla/5.0"), "no raw user agents");
    assert!(page.body.contains(" UTC</td>"), "times say their zone");
    assert!(page.body.contains("revoke-others"));
    let at = page
        .body
        .find("name=\"key\" value=\"")
        .expect("a revoke form")
        + 18;
    let key = &page.body[at..at + page.body[at..].find('"').expect("end")];
    let reply = laptop
        .post("/sessions/revoke", &[("csrf", &page.token()), ("key", key)])
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    let page = laptop.get("/sessions").await;
    assert!(page.body.contains("1 session(s)."));
    assert!(!page.body.contains("revoke-others"));

    let page = phone.get("/").await;
    assert!(page.body.contains(ENDED), "{}", page.body);
    assert!(page.body.contains("id=\"username\""));
    // Once: the phone now has a new (anonymous) session.
    assert!(!phone.get("/").await.body.contains(ENDED));
}

#[tokio::test]
async fn a_sign_in_form_sent_twice_is_not_an_error() {
    let (base, _dir) = start(None).await;
    let mut first = Client::new(&base, FIREFOX);
    let token = first.get("/").await.token();
    let pre_login = first.cookie.clone();
    let form = [("csrf", token.as_str()), ("username", "alice")];
    let reply = first.post("/login", &form).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    // The same form again, from before the browser saw the new cookie: the old id, in its
    // grace period, and the token of the page before sign-in.
    let mut second = Client::new(&base, FIREFOX);
    second.cookie = pre_login;
    let reply = second.post("/login", &form).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert_eq!(reply.location(), "/?notice=already-signed-in");
    assert!(reply.session_cookies().is_empty());
    let page = second.get(reply.location()).await;
    assert!(
        page.body.contains("You are already signed in."),
        "{}",
        page.body
    );
    // And from the signed-in page's own form (a stale tab): also a redirect.
    let token = first.get("/").await.token();
    let reply = first
        .post("/login", &[("csrf", &token), ("username", "bob")])
        .await;
    assert_eq!(reply.location(), "/?notice=already-signed-in");
    assert!(first.get("/").await.body.contains("id=\"user\">alice<"));
}

#[tokio::test]
async fn metrics_are_served_in_prometheus_text_format() {
    // One recorder per process: the tests of this file share it.
    static METRICS: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    let handle = METRICS.get_or_init(|| demo::install_metrics().expect("recorder"));
    let (base, _dir) = serve(Options {
        metrics: Some(handle.clone()),
        ..Options::default()
    })
    .await;
    let mut browser = Client::new(&base, FIREFOX);
    browser.sign_in("metrics-user").await;
    let cookie = browser.cookie.clone().expect("signed in");

    let mut scraper = Client::new(&base, "prometheus");
    let reply = scraper.get("/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.headers[header::CONTENT_TYPE]
            .to_str()
            .is_ok_and(|v| v.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        reply.headers
    );
    assert!(
        reply.session_cookies().is_empty(),
        "a scrape starts no session"
    );
    for line in [
        "# TYPE sessionkit_sessions_created_total counter",
        "# HELP sessionkit_sessions_created_total",
        "sessionkit_sessions_created_total{store=\"sqlite\"} ",
        "sessionkit_sessions_cycled_total{store=\"sqlite\"} ",
        "sessionkit_store_operation_duration_seconds_bucket{store=\"sqlite\",operation=\"create\",le=\"0.001\"} ",
        "sessionkit_store_operation_duration_seconds_count{store=\"sqlite\",operation=\"load\"} ",
    ] {
        assert!(reply.body.contains(line), "no {line:?} in\n{}", reply.body);
    }
    assert!(!reply.body.contains("metrics-user"), "an owner in a label");
    assert!(!reply.body.contains(&cookie), "a session id in a label");
}
