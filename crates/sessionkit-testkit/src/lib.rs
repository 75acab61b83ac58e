//! Test support shared by sessionkit's tests (backends, web integrations, CLI): one factory
//! per store, each giving a fresh, isolated store (or `None` to skip when its server is down
//! outside CI), the SQL servers' scratch tables ([`sql`]), what the SQL stores do when another
//! client holds their rows ([`locking`]), the TLS servers and certificates ([`tls`]), the
//! Redis Sentinel group ([`sentinel`]), and a TCP proxy that can cut a store's connections to
//! simulate an outage.

pub mod locking;
pub mod sentinel;
pub mod sql;
pub mod tls;

use std::sync::{Arc, Mutex, PoisonError};

use sessionkit_conformance::http::Outage;
use sessionkit_conformance::server_unavailable;
use sessionkit_core::{ErrorKind, Store};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use sql::{drop_stale_mysql_tables, drop_stale_postgres_tables};
pub use sql::{mysql_url, postgres_url, scratch_table};

/// A fresh memory store.
pub async fn memory() -> Option<Arc<dyn Store>> {
    Some(Arc::new(sessionkit_memory::MemoryStore::new()))
}

/// A fresh SQLite store in its own file under cargo's scratch directory.
///
/// # Panics
/// If the file cannot be created.
pub async fn sqlite() -> Option<Arc<dyn Store>> {
    let dir = tempfile::tempdir_in(scratch_dir()).expect("temp dir");
    let store = sessionkit_sqlite::SqliteStore::open(dir.keep().join("sessions.db"))
        .await
        .expect("sqlite");
    Some(Arc::new(store))
}

fn scratch_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join("sessionkit-tests");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// Opens a store of a server-backed kind (`what` names it in messages) at `url`: `None` (skip)
/// when its server is down outside CI.
///
/// # Panics
/// Under `CI=true` when the server is down; on any other open error.
async fn open_server_store<S, F>(
    what: &str,
    base: &str,
    url: String,
    open: F,
) -> Option<Arc<dyn Store>>
where
    S: Store,
    F: AsyncFnOnce(String) -> sessionkit_core::Result<S>,
{
    match open(url).await {
        Ok(store) => Some(Arc::new(store)),
        Err(err) if err.kind() == ErrorKind::Unavailable => server_unavailable(what, base, err),
        Err(err) => panic!("opening {what}: {err:?}"),
    }
}

/// PostgreSQL stores on `table` of the test database at `base`, `extra` appended to their
/// options: `count` of them, as that many app servers would open it.
///
/// # Panics
/// Under `CI=true` when the server is down; on any other open error.
pub async fn postgres_servers(
    base: &str,
    table: &str,
    extra: &str,
    count: usize,
) -> Option<Vec<Arc<dyn Store>>> {
    if let Err(err) = drop_stale_postgres_tables(&postgres_url()).await {
        return server_unavailable("PostgreSQL", base, err);
    }
    let joiner = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{joiner}table={table}&setup=true&max_connections=8{extra}");
    let mut servers = Vec::with_capacity(count);
    for _ in 0..count {
        servers.push(
            open_server_store("PostgreSQL", base, url.clone(), async |url: String| {
                sessionkit_postgres::PostgresStore::open(&url).await
            })
            .await?,
        );
    }
    Some(servers)
}

/// MySQL/MariaDB stores on `table` of the test database at `base`, `extra` appended to their
/// options: `count` of them, as that many app servers would open it.
///
/// # Panics
/// Under `CI=true` when the server is down; on any other open error.
pub async fn mysql_servers(
    base: &str,
    table: &str,
    extra: &str,
    count: usize,
) -> Option<Vec<Arc<dyn Store>>> {
    if let Err(err) = drop_stale_mysql_tables(&mysql_url()).await {
        return server_unavailable("MariaDB/MySQL", base, err);
    }
    let joiner = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{joiner}table={table}&setup=true&max_connections=8{extra}");
    let mut servers = Vec::with_capacity(count);
    for _ in 0..count {
        servers.push(
            open_server_store("MariaDB/MySQL", base, url.clone(), async |url: String| {
                sessionkit_mysql::MySqlStore::open(&url).await
            })
            .await?,
        );
    }
    Some(servers)
}

/// A PostgreSQL store on a fresh table of the test database at `base`, `extra` appended to
/// its options.
///
/// # Panics
/// Under `CI=true` when the server is down; on any other open error.
pub async fn postgres_with(base: &str, extra: &str) -> Option<Arc<dyn Store>> {
    postgres_servers(base, &scratch_table(), extra, 1)
        .await?
        .pop()
}

/// A PostgreSQL store on a fresh table of the test database.
pub async fn postgres() -> Option<Arc<dyn Store>> {
    postgres_with(&postgres_url(), "").await
}

/// A PostgreSQL store on a fresh table of the test database, over verified TLS as a user
/// with a SCRAM password ([`tls::postgres_url`]).
pub async fn postgres_tls() -> Option<Arc<dyn Store>> {
    postgres_with(&tls::postgres_url(), "").await
}

/// A MySQL/MariaDB store on a fresh table of the test database.
///
/// # Panics
/// Under `CI=true` when the server is down; on any other open error.
pub async fn mysql() -> Option<Arc<dyn Store>> {
    mysql_servers(&mysql_url(), &scratch_table(), "", 1)
        .await?
        .pop()
}

/// A MySQL/MariaDB store on a fresh table of the test database, over verified TLS as a user
/// that must use TLS ([`tls::mysql_url`]).
pub async fn mysql_tls() -> Option<Arc<dyn Store>> {
    mysql_servers(&tls::mysql_url(), &scratch_table(), "", 1)
        .await?
        .pop()
}

/// The two test Memcached servers (`SESSIONKIT_MEMCACHED_URL`, default 11211 and 11212 on
/// loopback).
pub fn memcached_url() -> String {
    std::env::var("SESSIONKIT_MEMCACHED_URL")
        .unwrap_or_else(|_| "memcached://127.0.0.1:11211,127.0.0.1:11212".into())
}

/// A Memcached store at `base` in a fresh namespace, with a 4 MiB item limit, or `None`
/// (skip) when its servers are down outside CI.
///
/// # Panics
/// Under `CI=true` when the servers are down; on any other open or probe error.
pub async fn memcached_at(base: &str) -> Option<sessionkit_memcached::MemcachedStore> {
    let joiner = if base.contains('?') { '&' } else { '?' };
    let url = format!(
        "{base}{joiner}namespace={}&max_item_bytes=4194304",
        scratch_table()
    );
    let store = sessionkit_memcached::MemcachedStore::open(&url)
        .await
        .expect("a valid URL");
    // Connections are made on first use: probe once so a down server is reported as such.
    match store.load(&sessionkit_conformance::fresh_key()).await {
        Ok(_) => Some(store),
        Err(err) if err.kind() == ErrorKind::Unavailable => {
            server_unavailable("Memcached", base, err)
        }
        Err(err) => panic!("probing Memcached: {err:?}"),
    }
}

/// A Memcached store over both test servers, in a fresh namespace.
pub async fn memcached() -> Option<sessionkit_memcached::MemcachedStore> {
    memcached_at(&memcached_url()).await
}

/// A Memcached store over TLS ([`tls::memcached_url`]), in a fresh namespace.
pub async fn memcached_tls() -> Option<sessionkit_memcached::MemcachedStore> {
    memcached_at(&tls::memcached_url()).await
}

fn redis_url() -> String {
    std::env::var("SESSIONKIT_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A Redis store at `base` in a fresh namespace, `extra` appended to its options.
///
/// # Panics
/// Under `CI=true` when the server is down; on any other open error.
pub async fn redis_with(base: &str, extra: &str) -> Option<Arc<dyn Store>> {
    let joiner = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{joiner}namespace={}{extra}", scratch_table());
    open_server_store("Redis", base, url, async |url: String| {
        sessionkit_redis::RedisStore::open(&url).await
    })
    .await
}

/// A Redis store in a fresh namespace of the test server (`SESSIONKIT_REDIS_URL`).
pub async fn redis() -> Option<Arc<dyn Store>> {
    redis_with(&redis_url(), "").await
}

/// A Redis store in a fresh namespace of the test Redis Cluster
/// (`SESSIONKIT_REDIS_CLUSTER_URL`, default three masters on 7001-7003).
pub async fn redis_cluster() -> Option<Arc<dyn Store>> {
    let url = std::env::var("SESSIONKIT_REDIS_CLUSTER_URL")
        .unwrap_or_else(|_| "redis+cluster://127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003".into());
    redis_with(&url, "").await
}

/// A Redis store in a fresh namespace of the TLS-only test server, verifying its certificate,
/// as an ACL user with a password ([`tls::redis_url`]).
pub async fn redis_tls() -> Option<Arc<dyn Store>> {
    redis_with(&tls::redis_url(), "").await
}

/// A Redis store in a fresh namespace of the master behind the test Sentinels
/// ([`sentinel::url`]), once the group is healthy ([`sentinel::wait_until_healthy`]).
pub async fn redis_sentinel() -> Option<Arc<dyn Store>> {
    sentinel::wait_until_healthy().await;
    redis_with(&sentinel::url(), "").await
}

/// A Redis store in a fresh namespace of the TLS-only test Redis Cluster, verifying every
/// node's certificate ([`tls::redis_cluster_url`]).
pub async fn redis_cluster_tls() -> Option<Arc<dyn Store>> {
    redis_with(&tls::redis_cluster_url(), "").await
}

/// A PostgreSQL store reached through a [`CutProxy`], for outage tests.
///
/// # Panics
/// As [`postgres`].
pub async fn postgres_through_proxy() -> Option<(Arc<dyn Store>, CutProxy)> {
    let (proxied, proxy) = proxied(&postgres_url(), "127.0.0.1:5432").await;
    let store = postgres_with(&proxied, "&acquire_timeout_ms=1000").await?;
    Some((store, proxy))
}

/// A Redis store (standalone) reached through a [`CutProxy`], for outage tests.
///
/// # Panics
/// As [`redis_with`].
pub async fn redis_through_proxy() -> Option<(Arc<dyn Store>, CutProxy)> {
    let (proxied, proxy) = proxied(&redis_url(), "127.0.0.1:6379").await;
    let store = redis_with(&proxied, "&timeout_ms=1000").await?;
    Some((store, proxy))
}

/// A [`CutProxy`] in front of the server `url` names (`default` if it names none), and `url`
/// rewritten to go through it.
async fn proxied(url: &str, default: &str) -> (String, CutProxy) {
    let target = host_port(url).unwrap_or_else(|| default.into());
    let proxy = CutProxy::start(&target).await;
    (url.replacen(&target, &proxy.address, 1), proxy)
}

/// Every server-backed store the outage tests cut: PostgreSQL and Redis, each behind its own
/// [`CutProxy`] (a store whose server is unreachable is skipped as [`postgres`] says).
pub async fn stores_through_proxy() -> Vec<(Arc<dyn Store>, CutProxy)> {
    [postgres_through_proxy().await, redis_through_proxy().await]
        .into_iter()
        .flatten()
        .collect()
}

fn host_port(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    Some(authority.rsplit('@').next()?.to_owned())
}

/// A loopback TCP proxy to a store's server that can be cut (every open connection dropped,
/// new ones refused) and restored: a store outage without touching the server.
#[derive(Clone)]
pub struct CutProxy {
    /// `127.0.0.1:PORT` to connect to instead of the server.
    pub address: String,
    state: Arc<Mutex<ProxyState>>,
}

#[derive(Default)]
struct ProxyState {
    down: bool,
    connections: Vec<AbortHandle>,
}

impl CutProxy {
    /// Starts a proxy to `target` (`host:port`).
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let address = listener.local_addr().expect("proxy address").to_string();
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let (target, shared) = (target.to_owned(), Arc::clone(&state));
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut guard = shared.lock().unwrap_or_else(PoisonError::into_inner);
                if guard.down {
                    continue; // dropping the socket refuses the connection
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                guard.connections.push(task.abort_handle());
            }
        });
        Self { address, state }
    }
}

impl Outage for CutProxy {
    fn set_down(&self, down: bool) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.down = down;
        if down {
            for connection in state.connections.drain(..) {
                connection.abort();
            }
        }
    }
}

/// The HTTP tests a web integration runs, in a module `$name`: the HTTP suite
/// ([`sessionkit_conformance::http_suite!`]) on the memory, SQLite, PostgreSQL and Redis stores
/// (submodules `memory`, `sqlite`, `postgres` and `redis`), signed-in pages with
/// `no_store_when_signed_in`, and store outages (PostgreSQL and Redis behind a [`CutProxy`]).
/// `$serve` and `$serve_with` are the test file's `async fn(SessionManager) -> TestServer` and
/// `async fn(SessionManager, WebConfig) -> TestServer`, serving the suite's test app.
///
/// The calling crate needs `sessionkit-conformance` (feature `http`), `sessionkit-core` and
/// tokio (with its macros) among its dependencies.
#[macro_export]
macro_rules! web_integration_tests {
    ($name:ident, $serve:path, $serve_with:path) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            ::sessionkit_conformance::http_suite!(memory, $serve, $crate::memory());
            ::sessionkit_conformance::http_suite!(sqlite, $serve, $crate::sqlite());
            ::sessionkit_conformance::http_suite!(postgres, $serve, $crate::postgres());
            ::sessionkit_conformance::http_suite!(redis, $serve, $crate::redis());

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn signed_in_pages_are_no_store_when_asked() {
                let store = $crate::memory().await.expect("memory store");
                let manager = ::sessionkit_conformance::http::test_manager(store);
                let web =
                    ::sessionkit_core::web::WebConfig::default().with_no_store_when_signed_in(true);
                let server = $serve_with(manager, web).await;
                ::sessionkit_conformance::http::signed_in_pages_are_no_store(&server).await;
            }

            /// A store that goes away mid-use (PostgreSQL, Redis) gives 503s, then the app
            /// recovers.
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn store_outage_gives_503_then_recovers() {
                let stores = $crate::stores_through_proxy().await;
                ::sessionkit_conformance::http::outages_give_503_then_recover($serve, stores).await;
            }
        }
    };
}
