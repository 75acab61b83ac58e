//! The demo in a real browser: headless Chromium driven through chromedriver (W3C WebDriver).
//! Two browser profiles sign in as the same user; one sees both sessions on "your sessions" and
//! revokes the other; the other profile is signed out and told why; the admin page needs its
//! password. The forms carry the demo's CSRF token as a browser sends them. Screenshots of every page go to
//! `artifacts/browser/` at the workspace root.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Without them the
//! test skips loudly, and fails under `CI=true`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One WebDriver session: one browser profile with its own cookie jar.
struct Browser {
    http: reqwest::Client,
    session: String,
    name: &'static str,
}

impl Browser {
    async fn start(driver: &str, name: &'static str, profile: &Path) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("http client");
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=1100,900".into(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium_binary(), "args": args}
        }}});
        let reply: Value = http
            .post(format!("{driver}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("new WebDriver session")
            .json()
            .await
            .expect("session reply");
        let session = reply["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {reply}"))
            .to_owned();
        Self {
            http,
            session: format!("{driver}/session/{session}"),
            name,
        }
    }

    async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply: Value = request
            .send()
            .await
            .expect("WebDriver call")
            .json()
            .await
            .expect("WebDriver reply");
        if reply["value"].get("error").is_some() {
            Err(reply["value"].clone())
        } else {
            Ok(reply["value"].clone())
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        match self.try_call(method, path, body).await {
            Ok(value) => value,
            Err(error) => panic!("{}: WebDriver {path}: {error}", self.name),
        }
    }

    /// The text of `css` once it contains `want` (a click's navigation may still be under way).
    async fn wait_text(&self, css: &str, want: &str) -> String {
        let started = Instant::now();
        loop {
            let found = self
                .try_call(
                    reqwest::Method::POST,
                    "/element",
                    Some(json!({"using": "css selector", "value": css})),
                )
                .await;
            if let Ok(element) = found
                && let Some(id) = element[ELEMENT].as_str()
                && let Ok(text) = self
                    .try_call(reqwest::Method::GET, &format!("/element/{id}/text"), None)
                    .await
                && text.as_str().is_some_and(|t| t.contains(want))
            {
                return text.as_str().unwrap_or_default().to_owned();
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{}: {css} never showed {want:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn find(&self, css: &str) -> String {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found[ELEMENT].as_str().expect("element id").to_owned()
    }

    async fn count(&self, css: &str) -> usize {
        let found = self
            .call(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found.as_array().map_or(0, Vec::len)
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        self.call(
            reqwest::Method::GET,
            &format!("/element/{element}/text"),
            None,
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    async fn screenshot(&self, dir: &Path, name: &str) {
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64"))
            .expect("png");
        std::fs::write(dir.join(format!("{name}.png")), bytes).expect("write screenshot");
    }

    async fn quit(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}

fn chromium_binary() -> &'static str {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("/usr/bin/chromium")
}

fn chromedriver() -> Option<PathBuf> {
    ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_driver(binary: &Path) -> (Driver, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new(binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while reqwest::get(format!("{url}/status")).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (Driver(child), url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_one_user_revoke_the_other_session() {
    let Some(driver_binary) = chromedriver() else {
        return sessionkit_conformance::server_unavailable(
            "chromium + chromedriver (apt-get install chromium chromium-driver)",
            chromium_binary(),
            "not installed",
        )
        .unwrap_or(());
    };
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../artifacts/browser");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");

    // The demo, in-process, on its default store kind (SQLite), on a free loopback port.
    let dir = tempfile::tempdir().expect("dir");
    let store = sessionkit::SqliteStore::open(dir.path().join("demo.db"))
        .await
        .expect("sqlite");
    let app = sessionkit_cli::demo::app_with(
        Arc::new(store),
        sessionkit_cli::demo::Options {
            secure_cookies: true,
            admin_password: Some("demo-admin-password".into()),
            metrics: None,
        },
    )
    .expect("app");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let (_driver, driver) = start_driver(&driver_binary).await;
    let (profile_a, profile_b) = (
        tempfile::tempdir().expect("profile"),
        tempfile::tempdir().expect("profile"),
    );
    let laptop = Browser::start(&driver, "laptop", profile_a.path()).await;
    let phone = Browser::start(&driver, "phone", profile_b.path()).await;

    for browser in [&laptop, &phone] {
        browser.goto(&base).await;
        assert_eq!(
            browser.count("#user").await,
            0,
            "{} starts signed out",
            browser.name
        );
        browser.type_into("#username", "alice").await;
        browser.click("#login").await;
        assert_eq!(
            browser.wait_text("#user", "alice").await,
            "alice",
            "{} is signed in",
            browser.name
        );
    }
    laptop.click("#add-tea").await;
    laptop.wait_text("#cart", "1 × Green tea").await;
    laptop
        .screenshot(&artifacts, "1-laptop-signed-in-with-cart")
        .await;
    phone.screenshot(&artifacts, "2-phone-signed-in").await;

    laptop.goto(&format!("{base}/sessions")).await;
    laptop.wait_text("#count", "2 session(s).").await;
    assert_eq!(
        (
            laptop.count("tr.current").await,
            laptop.count("tr.other").await
        ),
        (1, 1)
    );
    laptop
        .screenshot(&artifacts, "3-laptop-your-sessions")
        .await;
    laptop.click("tr.other button.revoke").await;
    laptop.wait_text("#count", "1 session(s).").await; // the phone's session is gone
    laptop.screenshot(&artifacts, "4-laptop-after-revoke").await;

    phone.goto(&base).await;
    assert_eq!(phone.count("#user").await, 0, "the phone is signed out");
    assert!(
        phone.text("#notice").await.contains("You were signed out"),
        "and told why"
    );
    assert_eq!(
        phone.count("#username").await,
        1,
        "the phone sees the sign-in form"
    );
    phone.screenshot(&artifacts, "5-phone-signed-out").await;

    laptop.goto(&base).await;
    assert_eq!(
        laptop.text("#user").await,
        "alice",
        "the laptop is still signed in"
    );
    assert!(
        laptop.text("#cart").await.contains("1 × Green tea"),
        "and keeps its cart"
    );
    laptop.goto(&format!("{base}/admin")).await;
    assert_eq!(
        laptop.count("#all").await,
        0,
        "the admin page needs the admin password"
    );
    laptop.type_into("#password", "demo-admin-password").await;
    laptop.click("#admin-login").await;
    laptop.wait_text("#all", "alice").await;
    // The laptop's session, and the anonymous one the phone started by loading the home page
    // after it was signed out (the visit counter).
    assert_eq!(
        laptop.count("#all tr").await,
        3,
        "header + two live sessions"
    );
    assert_eq!(
        laptop.text("#all").await.matches("alice").count(),
        1,
        "one of them is alice's"
    );
    laptop.screenshot(&artifacts, "6-admin").await;

    laptop.quit().await;
    phone.quit().await;
}
