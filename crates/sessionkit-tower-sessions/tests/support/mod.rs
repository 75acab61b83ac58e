//! What the compat tests share: a plain HTTP client that handles cookies by hand (so every
//! `Set-Cookie` is seen), and serving an app on a real socket.

use axum::Router;

/// tower-sessions' default cookie name.
pub const TOWER_COOKIE: &str = "id";

/// One response, as the tests look at it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub set_cookies: Vec<String>,
}

impl Reply {
    /// The new value of cookie `name`, if this response sets one (not a removal).
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookie_pair(name)
            .map(|(value, _)| value)
            .filter(|value| !value.is_empty())
    }

    /// Whether this response removes cookie `name`.
    pub fn removes(&self, name: &str) -> bool {
        self.cookie_pair(name)
            .is_some_and(|(value, attrs)| value.is_empty() && attrs.contains("Max-Age=0"))
    }

    fn cookie_pair(&self, name: &str) -> Option<(String, String)> {
        self.set_cookies.iter().rev().find_map(|header| {
            let (pair, attrs) = header.split_once(';').unwrap_or((header, ""));
            let (found, value) = pair.split_once('=')?;
            (found.trim() == name).then(|| (value.trim().to_owned(), attrs.to_owned()))
        })
    }
}

/// Serves `app` on a fresh loopback port and returns `http://127.0.0.1:PORT`.
pub async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

/// Sends `GET base+path` with these cookies (name, value).
///
/// # Panics
/// If the request fails at the HTTP level.
pub async fn get(base: &str, path: &str, cookies: &[(&str, &str)]) -> Reply {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("http client");
    let mut request = client.get(format!("{base}{path}"));
    if !cookies.is_empty() {
        let header: Vec<String> = cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        request = request.header("cookie", header.join("; "));
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = response.status().as_u16();
    let set_cookies = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let body = response.text().await.unwrap_or_default();
    Reply {
        status,
        body,
        set_cookies,
    }
}

/// `GET` with the tower-sessions cookie, if any.
pub async fn get_tower(base: &str, path: &str, cookie: Option<&str>) -> Reply {
    let cookies: Vec<(&str, &str)> = cookie.map(|c| (TOWER_COOKIE, c)).into_iter().collect();
    get(base, path, &cookies).await
}

/// `GET path` without a cookie, which must start a session: its tower-sessions cookie.
///
/// # Panics
/// If the response sets no tower-sessions cookie.
pub async fn start(base: &str, path: &str) -> String {
    let reply = get_tower(base, path, None).await;
    reply
        .cookie(TOWER_COOKIE)
        .unwrap_or_else(|| panic!("GET {path} starts a session: {reply:?}"))
}

/// The status of `GET path` with the tower-sessions cookie, if any.
pub async fn status(base: &str, path: &str, cookie: Option<&str>) -> u16 {
    get_tower(base, path, cookie).await.status
}
