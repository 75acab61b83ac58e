//! The HTTP-level suite: written once, run against every web integration and several stores,
//! through the real middleware over real sockets.
//!
//! A framework's test file serves the **test app** below with its own router and middleware, and
//! calls [`http_suite!`](crate::http_suite) once per store (the workspace's integrations do it
//! through `sessionkit_testkit::web_integration_tests!`, which picks the stores and adds the
//! no-store and outage scenarios). The suite drives the app with a plain
//! HTTP client that handles cookies by hand, so every `Set-Cookie` is checked.
//!
//! The test app's routes (all `GET`):
//!
//! | route | does |
//! | --- | --- |
//! | `/none` | never touches the session; answers `none` |
//! | `/get/{key}` | the string under `key` (200) or 404 |
//! | `/set/{key}/{value}` | sets `key` to the string `value`; answers `ok` |
//! | `/slow-set/{key}/{value}/{ms}` | reads the session, waits `ms`, then sets; answers `ok` |
//! | `/login/{user}` | `cycle_id()`, `set_owner(user)`, sets `user`; answers `ok` |
//! | `/logout` | `destroy()`; answers `ok` |
//! | `/keys` | the session's keys, comma-separated |
//! | `/push/{key}/{value}` | `update`: appends `value` to the list of strings under `key`; answers `ok` |
//! | `/list/{key}` | the list of strings under `key`, comma-separated |
//! | `/flash/{level}/{message}` | queues a flash message (`info`, `success`, `warning`, `error`); answers `ok` |
//! | `/flashes` | the `Flashes` extractor: the queued messages as `level:message`, comma-separated |
//! | `/csrf-token` | a fresh CSRF token of the session |
//! | `POST /post/{key}/{value}` | sets `key` to `value`; answers `ok` |
//! | `/fill/{key}/{bytes}` | sets `key` to a string of `bytes` letters; answers `ok` |
//!
//! The app runs the integration's CSRF layer inside its session layer, with the default
//! [`CsrfConfig`](sessionkit_core::csrf::CsrfConfig). Handlers return session errors through
//! the integration's `SessionError` (`?`).

use std::sync::Arc;
use std::time::Duration;

use sessionkit_core::{CleanupPolicy, ListFilter, PageRequest, SessionManager, Store};

/// The idle timeout of the suite's manager.
pub const IDLE: Duration = Duration::from_secs(3);
/// The grace period of the suite's manager.
pub const GRACE: Duration = Duration::from_millis(800);
/// The cookie name the test apps use (the default).
pub const COOKIE: &str = "sessionkit";

/// The manager every test app is built with: short idle timeout and grace period, no cleanup.
///
/// # Panics
/// Never for these settings.
pub fn test_manager(store: Arc<dyn Store>) -> SessionManager {
    SessionManager::builder(store)
        .idle_timeout(IDLE)
        .cycle_grace(GRACE)
        .cleanup(CleanupPolicy::Off)
        .build()
        .expect("valid settings")
}

/// A running test app.
#[derive(Debug, Clone)]
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The manager the app uses.
    pub manager: SessionManager,
}

/// Generates one test per HTTP scenario, in a module named `$name`, for the app `$serve` (an
/// `async fn(SessionManager) -> TestServer` in the calling file) over the store `$store` (an
/// expression giving a future of `Option<Arc<dyn Store>>`; `None` skips).
#[macro_export]
macro_rules! http_suite {
    ($name:ident, $serve:path, $store:expr) => {
        $crate::http_suite!(@each $name, $serve, $store;
            untouched_requests_cost_nothing,
            a_first_write_sets_a_secure_cookie_and_reads_write_nothing,
            bogus_cookies_get_a_fresh_session_and_are_removed,
            a_fixation_attempt_is_never_adopted,
            login_cycles_the_id_and_the_old_one_only_lasts_the_grace_period,
            a_request_on_the_old_id_cannot_take_the_session_over,
            session_failures_are_logged_with_their_kind_and_key_hash,
            logout_clears_the_cookie_and_the_session,
            idle_sessions_expire,
            concurrent_requests_of_one_browser_keep_every_write,
            concurrent_pushes_to_one_list_keep_every_item,
            flash_messages_are_shown_once,
            concurrent_flashes_are_each_shown_exactly_once,
            csrf_refuses_cross_site_missing_and_forged_tokens,
            csrf_tokens_change_at_login,
            a_large_session_read_key_by_key_loses_nothing,
            a_slow_request_racing_a_logout_does_not_bring_the_session_back
        );
    };
    (@each $name:ident, $serve:path, $store:expr; $($test:ident),*) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    let Some(store) = ($store).await else { return };
                    let server = $serve($crate::http::test_manager(store)).await;
                    $crate::http::$test(&server).await;
                }
            )*
        }
    };
}

/// Something that can take the app's store away and give it back (a proxy that cuts the
/// store's connections).
pub trait Outage: Send + Sync {
    /// Cuts (`true`) or restores (`false`) the store.
    fn set_down(&self, down: bool);
}

/// Runs [`store_outage_gives_503_then_recovers`] on each store an app built by `serve` uses.
pub async fn outages_give_503_then_recover<F, Fut, O>(serve: F, stores: Vec<(Arc<dyn Store>, O)>)
where
    F: Fn(SessionManager) -> Fut,
    Fut: Future<Output = TestServer>,
    O: Outage,
{
    for (store, outage) in stores {
        let server = serve(test_manager(store)).await;
        store_outage_gives_503_then_recovers(&server, &outage).await;
    }
}

/// A store outage answers 503 (never a silently fresh session) and loses nothing; when the
/// store is back, so is the session.
pub async fn store_outage_gives_503_then_recovers(server: &TestServer, outage: &dyn Outage) {
    let cookie = start_session(server).await;
    outage.set_down(true);
    let read = get(server, "/get/a", Some(&cookie)).await;
    assert_eq!(read.status, 503, "an unreachable store is a 503: {read:?}");
    assert!(
        read.set_cookies.is_empty(),
        "no fresh session hides the outage: {read:?}"
    );
    let write = get(server, "/set/b/2", Some(&cookie)).await;
    assert_eq!(write.status, 503, "{write:?}");
    let new = get(server, "/set/c/3", None).await;
    assert_eq!(
        new.status, 503,
        "a new session cannot be stored either: {new:?}"
    );
    assert!(
        new.new_cookie().is_none(),
        "no cookie for a session that was not stored: {new:?}"
    );
    let untouched = get(server, "/none", Some(&cookie)).await;
    assert_eq!(
        untouched.status, 200,
        "requests that do not use the session still work"
    );
    outage.set_down(false);
    let mut recovered = get(server, "/get/a", Some(&cookie)).await;
    for _ in 0..20 {
        if recovered.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        recovered = get(server, "/get/a", Some(&cookie)).await;
    }
    assert_eq!(
        (recovered.status, recovered.body.as_str()),
        (200, "1"),
        "the session survived the outage"
    );
    assert_eq!(
        get(server, "/get/b", Some(&cookie)).await.status,
        404,
        "the failed write did not half-land"
    );
}

/// What [`a_failover_gives_503s_then_recovers`] measured.
#[derive(Debug, Clone, Copy)]
pub struct FailoverReport {
    /// Requests sent after the failover began.
    pub requests: usize,
    /// How many of them were answered 503.
    pub unavailable: usize,
    /// From the failover's start to the first 200 after the last 503.
    pub outage: Duration,
}

/// How many browsers the failover load has, and how many requests each sends at most.
const FAILOVER_BROWSERS: usize = 4;
const FAILOVER_REQUESTS: usize = 3000;

/// Four browsers write to their sessions (one request per 10 ms each, at most 3,000 each)
/// while `fail_over` takes the store's server away for good (it returns once the server is
/// gone), so that the store must find its replacement by itself. Every request is answered
/// 200 or 503, never with a fresh session; within `recover_within` every browser gets 200s
/// again; the sessions written before the failover are still there. Returns what it measured.
///
/// The app's idle timeout must outlast the outage (not [`test_manager`]'s).
///
/// # Panics
/// When any of that does not hold.
pub async fn a_failover_gives_503s_then_recovers(
    server: &TestServer,
    fail_over: impl Future<Output = ()>,
    recover_within: Duration,
) -> FailoverReport {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;
    let mut cookies = Vec::new();
    for _ in 0..FAILOVER_BROWSERS {
        cookies.push(start_session(server).await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (replies, mut received) = tokio::sync::mpsc::unbounded_channel();
    let browsers: Vec<_> = cookies
        .iter()
        .enumerate()
        .map(|(browser, cookie)| {
            let (server, cookie, stop, replies) = (
                server.clone(),
                cookie.clone(),
                Arc::clone(&stop),
                replies.clone(),
            );
            tokio::spawn(async move {
                for n in 0..FAILOVER_REQUESTS {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let reply = get(&server, &format!("/set/n/{n}"), Some(&cookie)).await;
                    let _ = replies.send((browser, Instant::now(), reply));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect();
    drop(replies);
    fail_over.await;
    let started = Instant::now();
    // Per browser: 200s in a row since the last 503 (after the failover began).
    let mut healthy_run = [0usize; FAILOVER_BROWSERS];
    let (mut requests, mut unavailable) = (0, 0);
    let mut last_unavailable = None::<Instant>;
    let mut first_ok_after = None::<Instant>;
    while healthy_run.iter().any(|&run| run < 20) {
        let left = recover_within.saturating_sub(started.elapsed());
        let Ok(Some((browser, at, reply))) = tokio::time::timeout(left, received.recv()).await
        else {
            panic!(
                "no recovery within {recover_within:?}: {unavailable} of {requests} requests got 503"
            );
        };
        assert!(
            reply.new_cookie().is_none(),
            "a failover never hands out a fresh session: {reply:?}"
        );
        if at < started {
            continue;
        }
        requests += 1;
        match reply.status {
            200 => {
                healthy_run[browser] += 1;
                if last_unavailable.is_some() && first_ok_after.is_none() {
                    first_ok_after = Some(at);
                }
            }
            503 => {
                unavailable += 1;
                healthy_run[browser] = 0;
                last_unavailable = Some(at);
                first_ok_after = None;
            }
            _ => panic!("a failover is a 503, nothing else: {reply:?}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    for browser in browsers {
        browser.await.expect("browser task");
    }
    for cookie in &cookies {
        let read = get(server, "/get/a", Some(cookie)).await;
        assert_eq!(
            (read.status, read.body.as_str()),
            (200, "1"),
            "a session written before the failover survived it"
        );
    }
    FailoverReport {
        requests,
        unavailable,
        outage: first_ok_after.map_or(Duration::ZERO, |at| at - started),
    }
}

/// One response, as the suite looks at it.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Body text.
    pub body: String,
    /// Every `Set-Cookie` header.
    pub set_cookies: Vec<String>,
    /// The `Cache-Control` header.
    pub cache_control: Option<String>,
}

impl Reply {
    /// The session cookie's new value, if this response sets one (not a removal).
    pub fn new_cookie(&self) -> Option<String> {
        self.session_cookie()
            .map(|(value, _)| value)
            .filter(|v| !v.is_empty())
    }

    /// Whether this response removes the session cookie.
    pub fn removes_cookie(&self) -> bool {
        self.session_cookie()
            .is_some_and(|(value, attrs)| value.is_empty() && attrs.contains("Max-Age=0"))
    }

    fn session_cookie(&self) -> Option<(String, String)> {
        self.set_cookies.iter().find_map(|header| {
            let (pair, attrs) = header.split_once(';').unwrap_or((header, ""));
            let (name, value) = pair.split_once('=')?;
            (name.trim() == COOKIE).then(|| (value.trim().to_owned(), attrs.to_owned()))
        })
    }
}

/// Sends `GET path` with the session cookie set to `cookie`, if any.
///
/// # Panics
/// If the request fails at the HTTP level.
pub async fn get(server: &TestServer, path: &str, cookie: Option<&str>) -> Reply {
    send(server, "GET", path, cookie, &[], Vec::new()).await
}

/// Sends `POST path` with the session cookie, these headers and this body.
///
/// # Panics
/// If the request fails at the HTTP level.
pub async fn post(
    server: &TestServer,
    path: &str,
    cookie: Option<&str>,
    headers: &[(&str, &str)],
    body: impl Into<Vec<u8>>,
) -> Reply {
    send(server, "POST", path, cookie, headers, body.into()).await
}

async fn send(
    server: &TestServer,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("http client");
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let mut request = client.request(method.clone(), format!("{}{path}", server.base));
    if let Some(cookie) = cookie {
        request = request.header("cookie", format!("other=1; {COOKIE}={cookie}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status().as_u16();
    let set_cookies = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let cache_control = response
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.text().await.unwrap_or_default();
    Reply {
        status,
        body,
        set_cookies,
        cache_control,
    }
}

/// Starts a session holding `a = 1` and returns its cookie.
///
/// # Panics
/// If the app does not set a cookie.
pub async fn start_session(server: &TestServer) -> String {
    let reply = get(server, "/set/a/1", None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.new_cookie().expect("a first write sets the cookie")
}

async fn stored_sessions(server: &TestServer) -> Option<usize> {
    let store = server.manager.store();
    if !store.capabilities().iterable {
        return None;
    }
    let page = store
        .list(&ListFilter::default(), PageRequest::first(1000))
        .await
        .expect("list");
    Some(page.sessions.len())
}

/// Requests that never use the session set no cookie and store nothing.
pub async fn untouched_requests_cost_nothing(server: &TestServer) {
    let reply = get(server, "/none", None).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "none"));
    assert!(reply.set_cookies.is_empty(), "{reply:?}");
    let reply = get(server, "/get/a", None).await;
    assert_eq!(reply.status, 404);
    assert!(
        reply.set_cookies.is_empty(),
        "reading an empty session sets nothing: {reply:?}"
    );
    assert_eq!(stored_sessions(server).await.unwrap_or(0), 0);
}

/// The first write sets a cookie with the secure defaults; later reads change nothing.
pub async fn a_first_write_sets_a_secure_cookie_and_reads_write_nothing(server: &TestServer) {
    let reply = get(server, "/set/a/1", None).await;
    let header = reply.set_cookies.first().expect("Set-Cookie");
    for attribute in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/", "Max-Age="] {
        assert!(header.contains(attribute), "{attribute} missing: {header}");
    }
    assert_eq!(reply.cache_control.as_deref(), Some("no-store"));
    let cookie = reply.new_cookie().expect("cookie");
    let read = get(server, "/get/a", Some(&cookie)).await;
    assert_eq!((read.status, read.body.as_str()), (200, "1"));
    assert!(
        read.set_cookies.is_empty(),
        "a read-only request writes nothing: {read:?}"
    );
    assert_ne!(
        read.cache_control.as_deref(),
        Some("no-store"),
        "only cookie-setting responses are marked"
    );
}

/// Malformed cookies get a fresh session, never reach the store, and are removed.
pub async fn bogus_cookies_get_a_fresh_session_and_are_removed(server: &TestServer) {
    let long = "A".repeat(5000);
    for bogus in [
        "garbage",
        "AAAA",
        long.as_str(),
        "%00%00",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    ] {
        let reply = get(server, "/get/a", Some(bogus)).await;
        assert_eq!(reply.status, 404, "{bogus}: {reply:?}");
        assert!(
            reply.removes_cookie(),
            "{bogus}: the bad cookie is removed: {reply:?}"
        );
        let reply = get(server, "/set/a/1", Some(bogus)).await;
        let fresh = reply.new_cookie().expect("a fresh session");
        assert_ne!(fresh, bogus);
    }
}

/// A well-formed id the server never issued is not adopted (session fixation).
pub async fn a_fixation_attempt_is_never_adopted(server: &TestServer) {
    let planted = "AbCdEfGhIjKlMnOpQrStUvWxYz012345";
    let reply = get(server, "/set/a/1", Some(planted)).await;
    let issued = reply.new_cookie().expect("a fresh session");
    assert_ne!(issued, planted, "the planted id was adopted");
    assert_eq!(get(server, "/get/a", Some(planted)).await.status, 404);
    assert_eq!(get(server, "/get/a", Some(&issued)).await.body, "1");
}

/// Login gives a new id with the same data; the old id works only for the grace period and its
/// holders never learn the new id.
pub async fn login_cycles_the_id_and_the_old_one_only_lasts_the_grace_period(server: &TestServer) {
    let old = start_session(server).await;
    let login = get(server, "/login/alice", Some(&old)).await;
    let new = login.new_cookie().expect("login sets the new id");
    assert_ne!(new, old);
    assert_eq!(login.cache_control.as_deref(), Some("no-store"));
    assert_eq!(
        get(server, "/get/a", Some(&new)).await.body,
        "1",
        "data survives the cycle"
    );
    assert_eq!(get(server, "/get/user", Some(&new)).await.body, "alice");
    let inflight = get(server, "/get/a", Some(&old)).await;
    assert_eq!(
        (inflight.status, inflight.body.as_str()),
        (200, "1"),
        "in-flight request within grace"
    );
    assert!(
        inflight.new_cookie().is_none_or(|c| c != new),
        "the old id's holder never gets the new id"
    );
    tokio::time::sleep(GRACE + Duration::from_millis(400)).await;
    assert_eq!(
        get(server, "/get/a", Some(&old)).await.status,
        404,
        "the old id is gone after grace"
    );
    assert_eq!(get(server, "/get/a", Some(&new)).await.body, "1");
}

/// During the grace period after a login, a request on the old (pre-login) id reads and writes
/// the session, but cannot log in again (409, logged), never gets an id, and the session stays
/// the browser's that logged in: a holder of a planted pre-login id cannot take it over.
pub async fn a_request_on_the_old_id_cannot_take_the_session_over(server: &TestServer) {
    let logs = crate::logs::capture();
    let old = start_session(server).await;
    let new = get(server, "/login/alice", Some(&old))
        .await
        .new_cookie()
        .expect("login sets the new id");
    let takeover = get(server, "/login/mallory", Some(&old)).await;
    assert_eq!(
        (takeover.status, takeover.body.as_str()),
        (409, "session superseded\n"),
        "a second login on the old id is refused"
    );
    assert!(takeover.set_cookies.is_empty(), "{takeover:?}");
    let short = key_hash(&old);
    assert!(
        logs.wait_for(&["WARN", "status=409", "superseded", &short], SECOND)
            .await
            .is_some(),
        "the refusal is logged with the old id's key hash"
    );
    let write = get(server, "/set/b/2", Some(&old)).await;
    assert_eq!(
        write.status, 200,
        "in-flight writes on the old id still land"
    );
    assert!(write.set_cookies.is_empty(), "{write:?}");
    assert_eq!(get(server, "/get/b", Some(&new)).await.body, "2");
    tokio::time::sleep(GRACE + Duration::from_millis(400)).await;
    assert_eq!(
        get(server, "/get/user", Some(&new)).await.body,
        "alice",
        "the session stays the logged-in browser's"
    );
    assert_eq!(get(server, "/get/a", Some(&old)).await.status, 404);
}

/// A handler's session error that becomes a 5xx (an over-long owner) is logged at error level
/// with its kind and the session key's short hash, and the log holds no session id.
pub async fn session_failures_are_logged_with_their_kind_and_key_hash(server: &TestServer) {
    let logs = crate::logs::capture();
    let cookie = start_session(server).await;
    let owner = "o".repeat(sessionkit_core::MAX_OWNER_LEN + 1);
    let reply = get(server, &format!("/login/{owner}"), Some(&cookie)).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (500, "session configuration error\n")
    );
    let short = key_hash(&cookie);
    let line = logs
        .wait_for(
            &["ERROR", "status=500", "configuration error", &short],
            SECOND,
        )
        .await;
    assert!(line.is_some(), "no error line for the 500");
    assert!(
        logs.matching(&[&cookie]).is_empty(),
        "a log line holds the session id"
    );
}

/// With [`WebConfig::with_no_store_when_signed_in`](sessionkit_core::web::WebConfig::with_no_store_when_signed_in),
/// every response of a signed-in session is `Cache-Control: no-store`, and an anonymous one's
/// are not (unless they set the cookie). The app must be served with that setting.
pub async fn signed_in_pages_are_no_store(server: &TestServer) {
    let cookie = start_session(server).await;
    let anonymous = get(server, "/get/a", Some(&cookie)).await;
    assert_eq!((anonymous.status, anonymous.cache_control), (200, None));
    let signed_in = get(server, "/login/alice", Some(&cookie))
        .await
        .new_cookie()
        .expect("login sets the new id");
    let page = get(server, "/get/a", Some(&signed_in)).await;
    assert!(page.set_cookies.is_empty(), "{page:?}");
    assert_eq!(
        (page.status, page.cache_control.as_deref()),
        (200, Some("no-store"))
    );
    let untouched = get(server, "/none", Some(&signed_in)).await;
    assert_eq!(untouched.cache_control, None, "the session was not loaded");
}

const SECOND: Duration = Duration::from_secs(1);

/// The short hash of a cookie's session key, as log lines show it.
fn key_hash(cookie: &str) -> String {
    sessionkit_core::SessionId::parse(cookie)
        .expect("a well-formed id")
        .key()
        .short()
}

/// Logout removes the cookie and the session.
pub async fn logout_clears_the_cookie_and_the_session(server: &TestServer) {
    let cookie = start_session(server).await;
    let reply = get(server, "/logout", Some(&cookie)).await;
    assert!(reply.removes_cookie(), "{reply:?}");
    assert_eq!(reply.cache_control.as_deref(), Some("no-store"));
    assert_eq!(get(server, "/get/a", Some(&cookie)).await.status, 404);
    assert_eq!(stored_sessions(server).await.unwrap_or(0), 0);
}

/// A session unused for the idle timeout is gone.
pub async fn idle_sessions_expire(server: &TestServer) {
    let cookie = start_session(server).await;
    tokio::time::sleep(IDLE + Duration::from_millis(300)).await;
    let reply = get(server, "/get/a", Some(&cookie)).await;
    assert_eq!(reply.status, 404, "{reply:?}");
    let reply = get(server, "/set/b/2", Some(&cookie)).await;
    assert_ne!(
        reply.new_cookie().expect("a fresh session"),
        cookie,
        "an expired id is not revived"
    );
}

/// Twenty requests of one browser, at once, each writing its own key: all twenty survive.
pub async fn concurrent_requests_of_one_browser_keep_every_write(server: &TestServer) {
    let cookie = start_session(server).await;
    let requests: Vec<_> = (0..20)
        .map(|i| {
            let (server, cookie) = (server.clone(), cookie.clone());
            tokio::spawn(async move {
                get(
                    &server,
                    &format!("/slow-set/k{i:02}/v{i}/20"),
                    Some(&cookie),
                )
                .await
            })
        })
        .collect();
    for request in requests {
        let reply = request.await.expect("task");
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let keys = get(server, "/keys", Some(&cookie)).await.body;
    let expected: Vec<String> = std::iter::once("a".to_owned())
        .chain((0..20).map(|i| format!("k{i:02}")))
        .collect();
    assert_eq!(keys, expected.join(","), "every concurrent write survived");
}

/// A hundred requests of one browser, at once, each appending to the same list with `update`:
/// every item is in the list afterwards, exactly once.
pub async fn concurrent_pushes_to_one_list_keep_every_item(server: &TestServer) {
    let cookie = start_session(server).await;
    let requests: Vec<_> = (0..100)
        .map(|i| {
            let (server, cookie) = (server.clone(), cookie.clone());
            tokio::spawn(async move {
                get(&server, &format!("/push/cart/i{i:03}"), Some(&cookie)).await
            })
        })
        .collect();
    for request in requests {
        let reply = request.await.expect("task");
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let list = get(server, "/list/cart", Some(&cookie)).await.body;
    let mut items: Vec<&str> = list.split(',').collect();
    items.sort_unstable();
    let expected: Vec<String> = (0..100).map(|i| format!("i{i:03}")).collect();
    assert_eq!(items, expected, "every concurrent push survived, once");
}

/// A slow request that saves after a logout finds the session gone and does not re-create it.
pub async fn a_slow_request_racing_a_logout_does_not_bring_the_session_back(server: &TestServer) {
    let cookie = start_session(server).await;
    let slow = {
        let (server, cookie) = (server.clone(), cookie.clone());
        tokio::spawn(async move { get(&server, "/slow-set/late/x/700", Some(&cookie)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logout = get(server, "/logout", Some(&cookie)).await;
    assert!(logout.removes_cookie());
    let slow = slow.await.expect("task");
    assert_eq!(slow.status, 200);
    assert!(
        slow.new_cookie().is_none(),
        "the slow request hands out no session: {slow:?}"
    );
    assert_eq!(get(server, "/get/late", Some(&cookie)).await.status, 404);
    assert_eq!(
        get(server, "/get/a", Some(&cookie)).await.status,
        404,
        "the session stays gone"
    );
    assert_eq!(
        stored_sessions(server).await.unwrap_or(0),
        0,
        "nothing was re-created"
    );
}

/// Flash messages queued on one request (starting a session) are shown once, in order, with
/// their levels, by the `Flashes` extractor of a later request; a page with none shows none.
pub async fn flash_messages_are_shown_once(server: &TestServer) {
    let first = get(server, "/flash/success/saved", None).await;
    assert_eq!(first.status, 200, "{first:?}");
    let cookie = first
        .new_cookie()
        .expect("a flash on a request without a session starts one");
    assert_eq!(
        get(server, "/flash/error/failed", Some(&cookie))
            .await
            .status,
        200
    );
    let shown = get(server, "/flashes", Some(&cookie)).await;
    assert_eq!(
        (shown.status, shown.body.as_str()),
        (200, "success:saved,error:failed")
    );
    assert_eq!(
        get(server, "/flashes", Some(&cookie)).await.body,
        "",
        "shown once"
    );
    let nothing = get(server, "/flashes", None).await;
    assert_eq!((nothing.status, nothing.body.as_str()), (200, ""));
    assert!(
        nothing.new_cookie().is_none(),
        "reading no flashes starts no session"
    );
}

/// Sixteen requests queue a message each while eight others show the queue, all at once:
/// every message is shown, and none twice.
pub async fn concurrent_flashes_are_each_shown_exactly_once(server: &TestServer) {
    let cookie = start_session(server).await;
    let count = sessionkit_core::MAX_FLASHES;
    let spawn_get = |path: String| {
        let (server, cookie) = (server.clone(), cookie.clone());
        tokio::spawn(async move { get(&server, &path, Some(&cookie)).await })
    };
    let mut requests = Vec::new();
    for i in 0..count {
        requests.push(spawn_get(format!("/flash/info/m{i:02}")));
        if i % 2 == 0 {
            requests.push(spawn_get("/flashes".to_owned()));
        }
    }
    let mut shown = Vec::new();
    for request in requests {
        let reply = request.await.expect("task");
        assert_eq!(reply.status, 200, "{reply:?}");
        if reply.body != "ok" {
            shown.extend(
                reply
                    .body
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned),
            );
        }
    }
    let rest = get(server, "/flashes", Some(&cookie)).await.body;
    shown.extend(rest.split(',').filter(|m| !m.is_empty()).map(str::to_owned));
    shown.sort_unstable();
    let expected: Vec<String> = (0..count).map(|i| format!("info:m{i:02}")).collect();
    assert_eq!(shown, expected, "every message shown exactly once");
}

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

/// A fresh CSRF token of the session `cookie` names.
async fn csrf_token(server: &TestServer, cookie: &str) -> String {
    let reply = get(server, "/csrf-token", Some(cookie)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body
}

/// The CSRF layer refuses, before the handler runs: a post without a token, with a forged one,
/// with another session's, from another origin, a JSON body without the header, and a form
/// over the size limit; it lets through the session's own token in the form field or the
/// header, from its own origin or with no origin at all.
pub async fn csrf_refuses_cross_site_missing_and_forged_tokens(server: &TestServer) {
    let cookie = start_session(server).await;
    let token = csrf_token(server, &cookie).await;
    let other = start_session(server).await;
    let others_token = csrf_token(server, &other).await;
    let forged = "A".repeat(token.len());
    let field = |t: &str| format!("x=1&csrf_token={t}");
    let own_origin = ("origin", server.base.as_str());
    let refusals = [
        (
            "no token",
            vec![FORM],
            "x=1".to_owned(),
            403,
            "no CSRF token",
        ),
        ("forged", vec![FORM], field(&forged), 403, "not valid"),
        (
            "another session's",
            vec![FORM],
            field(&others_token),
            403,
            "not valid",
        ),
        ("malformed", vec![FORM], field("%00%FF"), 403, "not valid"),
        (
            "cross-site",
            vec![FORM, ("origin", "http://evil.example")],
            field(&token),
            403,
            "another site",
        ),
        (
            "cross-site referer",
            vec![FORM, ("referer", "https://evil.example/page")],
            field(&token),
            403,
            "another site",
        ),
        (
            "JSON without header",
            vec![("content-type", "application/json")],
            format!("{{\"csrf_token\":\"{token}\"}}"),
            403,
            "no CSRF token",
        ),
        (
            "oversized",
            vec![FORM],
            format!("{}&{}", "a".repeat(70_000), field(&token)),
            413,
            "too large",
        ),
    ];
    for (what, headers, body, status, says) in refusals {
        let reply = post(server, "/post/hit/yes", Some(&cookie), &headers, body).await;
        assert_eq!(reply.status, status, "{what}: {reply:?}");
        assert!(reply.body.contains(says), "{what}: {reply:?}");
        assert_eq!(
            get(server, "/get/hit", Some(&cookie)).await.status,
            404,
            "{what}: the handler did not run"
        );
    }
    let accepted = [
        ("form field", vec![FORM], field(&token)),
        (
            "form field, own origin",
            vec![FORM, own_origin],
            field(&token),
        ),
        (
            "header",
            vec![("x-csrf-token", token.as_str())],
            String::new(),
        ),
        (
            "another render's token",
            vec![FORM],
            field(&csrf_token(server, &cookie).await),
        ),
    ];
    for (n, (what, headers, body)) in accepted.into_iter().enumerate() {
        let reply = post(
            server,
            &format!("/post/hit/{n}"),
            Some(&cookie),
            &headers,
            body,
        )
        .await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, "ok"),
            "{what}: {reply:?}"
        );
        assert_eq!(
            get(server, "/get/hit", Some(&cookie)).await.body,
            n.to_string(),
            "{what}"
        );
    }
}

/// Tokens rendered before a login stop verifying after it (the secret changes with the id);
/// a token rendered through the pre-login id during the grace period verifies nowhere; the
/// new session's tokens verify.
pub async fn csrf_tokens_change_at_login(server: &TestServer) {
    let old = start_session(server).await;
    let before = csrf_token(server, &old).await;
    let new = get(server, "/login/alice", Some(&old))
        .await
        .new_cookie()
        .expect("login sets the new id");
    let body = format!("csrf_token={before}");
    let stale = post(server, "/post/hit/1", Some(&new), &[FORM], body.clone()).await;
    assert_eq!(stale.status, 403, "a pre-login token is refused: {stale:?}");
    let via_old = get(server, "/csrf-token", Some(&old)).await;
    assert_eq!(via_old.status, 200, "{via_old:?}");
    let body = format!("csrf_token={}", via_old.body);
    let leaked = post(server, "/post/hit/1", Some(&new), &[FORM], body).await;
    assert_eq!(
        leaked.status, 403,
        "a token rendered through the old id is refused: {leaked:?}"
    );
    let after = csrf_token(server, &new).await;
    let body = format!("csrf_token={after}");
    let fresh = post(server, "/post/hit/2", Some(&new), &[FORM], body).await;
    assert_eq!(
        (fresh.status, fresh.body.as_str()),
        (200, "ok"),
        "{fresh:?}"
    );
    assert_eq!(get(server, "/get/hit", Some(&new)).await.body, "2");
}

/// A session over [`PARTIAL_LOAD_ABOVE`](sessionkit_core::PARTIAL_LOAD_ABOVE), which the
/// manager loads key by key once it has seen it whole, behaves exactly like a small one:
/// reads of loaded and not-yet-loaded keys, the key list, concurrent writes and `update`s,
/// flash messages, CSRF tokens, shrinking below the threshold and growing again, and a login
/// that moves it to a new id.
pub async fn a_large_session_read_key_by_key_loses_nothing(server: &TestServer) {
    let big = 2 * sessionkit_core::PARTIAL_LOAD_ABOVE;
    let cookie = start_session(server).await;
    assert_eq!(
        get(server, &format!("/fill/big/{big}"), Some(&cookie))
            .await
            .body,
        "ok"
    );
    // The first read loads it whole and finds it large; the later ones go key by key.
    for _ in 0..2 {
        assert_eq!(get(server, "/get/a", Some(&cookie)).await.body, "1");
    }
    assert_eq!(get(server, "/get/big", Some(&cookie)).await.body.len(), big);
    assert_eq!(get(server, "/get/absent", Some(&cookie)).await.status, 404);

    let requests: Vec<_> = (0..20)
        .map(|i| {
            let path = if i % 2 == 0 {
                format!("/push/cart/i{i:02}")
            } else {
                format!("/set/k{i:02}/v{i}")
            };
            let (server, cookie) = (server.clone(), cookie.clone());
            tokio::spawn(async move { get(&server, &path, Some(&cookie)).await })
        })
        .collect();
    for request in requests {
        let reply = request.await.expect("task");
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let cart: Vec<String> = (0..20).step_by(2).map(|i| format!("i{i:02}")).collect();
    let mut listed: Vec<String> = get(server, "/list/cart", Some(&cookie))
        .await
        .body
        .split(',')
        .map(str::to_owned)
        .collect();
    listed.sort_unstable();
    assert_eq!(listed, cart, "every push to the large session survived");
    let written: Vec<String> = (1..20).step_by(2).map(|i| format!("k{i:02}")).collect();
    let mut keys = vec!["a".to_owned(), "big".to_owned(), "cart".to_owned()];
    keys.extend(written.iter().cloned());
    assert_eq!(
        get(server, "/keys", Some(&cookie)).await.body,
        keys.join(",")
    );

    assert_eq!(
        get(server, "/flash/info/hi", Some(&cookie)).await.status,
        200
    );
    assert_eq!(get(server, "/flashes", Some(&cookie)).await.body, "info:hi");
    let token = csrf_token(server, &cookie).await;
    let posted = post(
        server,
        "/post/posted/yes",
        Some(&cookie),
        &[FORM],
        format!("csrf_token={token}"),
    )
    .await;
    assert_eq!(
        (posted.status, posted.body.as_str()),
        (200, "ok"),
        "{posted:?}"
    );

    // Shrunk below the threshold, then grown again: still whole and correct.
    assert_eq!(
        get(server, "/set/big/small", Some(&cookie)).await.body,
        "ok"
    );
    assert_eq!(get(server, "/get/big", Some(&cookie)).await.body, "small");
    keys.push("posted".to_owned());
    keys.sort_unstable();
    assert_eq!(
        get(server, "/keys", Some(&cookie)).await.body,
        keys.join(",")
    );
    assert_eq!(
        get(server, &format!("/fill/big/{big}"), Some(&cookie))
            .await
            .body,
        "ok"
    );
    assert_eq!(get(server, "/get/a", Some(&cookie)).await.body, "1");

    let login = get(server, "/login/alice", Some(&cookie)).await;
    let moved = login.new_cookie().expect("login sets the new id");
    assert_eq!(get(server, "/get/big", Some(&moved)).await.body.len(), big);
    assert_eq!(get(server, "/get/posted", Some(&moved)).await.body, "yes");
    keys.push("user".to_owned());
    keys.sort_unstable();
    assert_eq!(
        get(server, "/keys", Some(&moved)).await.body,
        keys.join(",")
    );
}
