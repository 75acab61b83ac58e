//! # sessionkit-redis
//!
//! A [`Store`] on Redis, standalone or Redis Cluster, with options `namespace` (key prefix,
//! default `sessionkit`) so sessions can share a Redis with other data, and `timeout_ms`
//! (default 5000, at most a day): how long connecting may take, and waiting requests may go
//! without a reply (on a cluster, each reply may take), before the server counts as
//! unreachable (`ErrorKind::Unavailable`).
//!
//! ## URLs
//! | URL | server |
//! |-----|--------|
//! | `redis://[user:password@]host:6379[/db]` | standalone, plain TCP |
//! | `rediss://[user:password@]host:6380[/db]` | standalone over TLS |
//! | `redis+unix:///run/redis.sock?db=0&user=u&pass=p` | standalone through a Unix socket |
//! | `redis+cluster://[user:password@]h1:p1,h2:p2` | Redis Cluster (seed nodes) |
//! | `rediss+cluster://[user:password@]h1:p1,h2:p2` | Redis Cluster over TLS |
//! | `redis+sentinel://[user:password@]s1:26379,s2:26379/master[/db]` | the master behind Redis Sentinel |
//! | `rediss+sentinel://[user:password@]s1:26379,s2:26379/master[/db]` | the same, Sentinels and master over TLS |
//!
//! TLS verifies the server's certificate chain and host name, against the system's roots, or
//! the CA certificates of `tls_ca=/path/ca.pem`; `tls_cert=`/`tls_key=` send a client
//! certificate (for `tls-auth-clients yes`). redis-rs's `#insecure` at the end of the URL turns
//! verification off (standalone only): the traffic is then encrypted, but anyone on the path
//! can pose as the server. A user and password log in with `AUTH` (an ACL user, or the
//! `requirepass` password with no user).
//!
//! A refused certificate, a wrong password or an unknown user is an
//! [`ErrorKind::Config`](sessionkit_core::ErrorKind::Config) error when the store opens; a
//! server that does not answer is `Unavailable` (over TLS, with a hint: a plain-text port
//! never answers the handshake).
//!
//! ## Sentinel
//! With `redis+sentinel://`, the user and password are the master's; the Sentinels' own login,
//! if they have one, is `sentinel_user=`/`sentinel_password=` (a port left out is 26379). Every
//! new connection asks the Sentinels for the master (redis-rs's Sentinel client, which also
//! checks that the server it names says `ROLE` master). When the master fails, requests fail
//! with `Unavailable` (503s) until the Sentinels have promoted a replica; then the next request
//! connects to it, with no restart. A server that turned replica under an open connection
//! (its `READONLY` reply) makes the connection reconnect the same way. Measured in the
//! failover test (`kill -9` of the master under load, `down-after-milliseconds 1000`): 503s
//! for 1.6–2.3 s, then only 200s. Redis replicates asynchronously: a write the old master
//! acknowledged just before it died may be missing on the new one; a failover never mixes two
//! sessions or hands out a fresh one.
//!
//! ## Built in code
//! [`RedisStore::with_connection`] takes a [`Multiplexed`] made from redis-rs's
//! `ConnectionInfo` (re-exported as [`redis`]), with a rustls configuration of your own
//! ([`Multiplexed::with_tls`]) or from a Sentinel client ([`Multiplexed::with_sentinel`]);
//! [`RedisStore::with_cluster`] takes a connection of redis-rs's `ClusterClient`.
//!
//! ## Layout
//! - One hash per session, `<ns>:s:{<key hex>}`: metadata fields (`__c` created, `__e` expires,
//!   `__v` version, `__o` owner, `__p` grace pointer) and `d:<name>` per data key. The braces
//!   are a cluster hash tag, so each session lives on one slot.
//! - Native expiry: every write sets `PEXPIREAT` to the session's deadline, so Redis deletes
//!   sessions itself (`capabilities().native_ttl`); the stored `__e` is checked on every read too.
//!   Redis does that silently, so this store does not have `capabilities().reports_purged`:
//!   [`Store::delete_expired_batch_reporting`] returns `Unsupported` and
//!   [`SessionHooks::purged_sessions`](sessionkit_core::SessionHooks::purged_sessions) never
//!   hears of an expired session. To log expiries, turn on keyspace notifications
//!   (`CONFIG SET notify-keyspace-events Ex`) and `SUBSCRIBE __keyevent@<db>__:expired`: each
//!   expired session (or grace pointer) arrives as its Redis key, `<ns>:s:{<key hex>}`, which
//!   names the session's key hash but not its owner (the hash is gone; keep your own
//!   key-to-owner record, e.g. from `SessionHooks::created`, if the log needs it). Redis sends
//!   each event once, to the subscribers connected at that moment (pub/sub keeps nothing), and
//!   on a cluster each node announces its own keys.
//! - Owner index: a set per owner, `<ns>:o:<owner hex>`, of session keys. Added before the session
//!   names the owner, removed after; readers drop members whose session is gone or changed hands,
//!   and `delete_expired` prunes members of expired sessions.
//!
//! ## Atomicity
//! `create`, `apply`, `touch` and `delete` are Lua scripts on the session's hash, so each is
//! atomic, and `apply` is update-only: a save racing a logout finds no hash and writes nothing.
//! `cycle` moves a session between two keys, which in a cluster are on different slots, so it
//! runs as three atomic steps that are safe anywhere: mark the old session *moving* (applies to
//! it wait, so no write is lost during the copy) and read it; copy it to the new key
//! (insert-only); turn the old key into a grace pointer, or delete it. A crash midway leaves the
//! old session usable once the 5-second move deadline passes, and an unreachable copy that expires.
//!
//! ## Listing
//! `list` SCANs the namespace on every master and sorts the keys: O(sessions) per page, meant
//! for admin tools, not request paths.
//!
//! ## Driver
//! Commands and scripts are built with redis-rs. A standalone server is reached through the
//! store's own multiplexed, reconnecting connection (`connection.rs`, with a hand-written RESP2
//! reply parser in `resp.rs`: redis-rs's parser was a third of the client's CPU per request);
//! a cluster through redis-rs's cluster client, which multiplexes per node. Either way one
//! connection per server carries every concurrent request, which on a 2-core machine beats a
//! pool (see `docs/BENCHMARKS.md`). It speaks plain TCP, TLS (tokio-rustls; the TLS stream is
//! written by the connection's writer task) and Unix sockets. That connection is public,
//! [`Multiplexed`]: an application can send its own redis-rs commands down the same path.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod command;
mod connection;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
mod options;
mod resp;
mod scripts;
mod transport;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{
    Cmd, FromRedisValue, Pipeline, RedisError, RedisFuture, RedisResult, Script, ServerErrorKind,
    Value,
};
use sessionkit_core::backend::tls;
use sessionkit_core::{
    ApplyOutcome, Capabilities, Change, CycleOutcome, Data, Error, ListFilter, Page, PageRequest,
    Record, Registry, Result, SessionKey, Store, StoredSession, Timestamp, async_trait,
};

use crate::command::Arg;
pub use crate::connection::Multiplexed;
use crate::options::StoreOptions;
use crate::scripts::{
    ABORT_MOVE, APPLY, BEGIN_MOVE, CREATE, DATA_PREFIX, DELETE, DELETE_IF_OWNER, FINISH_MOVE,
};
/// The driver, for [`Multiplexed`]'s `ConnectionInfo`, the Sentinel client and the cluster
/// client [`RedisStore::with_cluster`] takes.
pub use redis;

/// How long a cycle may keep a session marked as moving.
const MOVE_DEADLINE: Duration = Duration::from_secs(5);
/// How many keys one SCAN step asks for.
const SCAN_COUNT: usize = 1000;

/// Either connection kind, so every operation is written once.
#[derive(Clone)]
enum Connection {
    Single(Multiplexed),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(cmd, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

impl Connection {
    /// Sends one command (its name first) and waits for its reply.
    async fn query(&self, args: &[Arg<'_>]) -> RedisResult<Value> {
        match self {
            Self::Single(conn) => conn.query(|out| command::write(out, args)).await,
            // The cluster client hands error replies back as values.
            Self::Cluster(conn) => conn
                .clone()
                .req_packed_command(&command::to_cmd(args))
                .await?
                .extract_error(),
        }
    }

    /// Runs a script call built by [`command::script_call`], loading the script first if the
    /// server does not have it (after a restart, a failover or a `SCRIPT FLUSH`).
    async fn eval<T: FromRedisValue>(&self, script: &Script, call: &[Arg<'_>]) -> RedisResult<T> {
        let reply = match self.query(call).await {
            Err(err) if err.kind() == redis::ErrorKind::Server(ServerErrorKind::NoScript) => {
                script.load_async(&mut self.clone()).await?;
                self.query(call).await
            }
            other => other,
        }?;
        Ok(T::from_redis_value(reply)?)
    }
}

/// The Redis store. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    conn: Connection,
    namespace: Arc<str>,
}

/// The namespace and the kind of server; never an address with its password.
impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.conn {
            Connection::Single(_) => "standalone",
            Connection::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisStore")
            .field("namespace", &self.namespace)
            .field("server", &kind)
            .finish_non_exhaustive()
    }
}

fn redis_error(context: &str, err: RedisError) -> Error {
    if matches!(err.code(), Some("WRONGPASS" | "NOAUTH"))
        || err.kind() == redis::ErrorKind::AuthenticationFailed
    {
        Error::config_with(format!("{context}: the server refused the login"), err)
    } else if err.code() == Some("READONLY") {
        Error::unavailable(
            format!("{context}: the server is a read-only replica (a failover?)"),
            err,
        )
    } else if err.kind() == redis::ErrorKind::MasterNameNotFoundBySentinel {
        Error::unavailable(
            format!(
                "{context}: no Sentinel names a reachable master of that name (a wrong name, or a failover under way)"
            ),
            err,
        )
    } else if let Some(why) = tls::handshake_refusal(&err) {
        Error::config_with(format!("{context}: {why}"), err)
    } else if err.is_io_error()
        || err.is_connection_refusal()
        || err.is_timeout()
        || err.is_connection_dropped()
    {
        Error::unavailable(context.to_owned(), err)
    } else {
        Error::backend(context.to_owned(), err)
    }
}

fn checked_namespace(namespace: &str) -> Result<Arc<str>> {
    if options::valid_namespace(namespace) {
        Ok(namespace.into())
    } else {
        Err(Error::config(format!(
            "invalid Redis namespace {namespace:?}: printable ASCII without braces"
        )))
    }
}

fn now_ms() -> i64 {
    Timestamp::now().as_millis()
}

/// The hash field of data key `name`: `d:<name>`, so data keys never collide with metadata.
fn data_field(name: &str) -> Vec<u8> {
    let mut field = Vec::with_capacity(DATA_PREFIX.len() + name.len());
    field.extend_from_slice(DATA_PREFIX);
    field.extend_from_slice(name.as_bytes());
    field
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds a record from a session hash's fields (name, value), in any order, as HGETALL or a
/// script returns them: the data keys are moved out of the reply, not copied. No fields: `None`.
fn record_from_fields(
    fields: impl IntoIterator<Item = Result<(Vec<u8>, Vec<u8>)>>,
) -> Result<Option<Record>> {
    let (mut created, mut expires, mut owner, mut version, mut pointer) =
        (None, None, None, None, None);
    let mut data = Data::new();
    let mut empty = true;
    for field in fields {
        let (name, value) = field?;
        empty = false;
        match name.as_slice() {
            b"__c" => created = Some(value),
            b"__e" => expires = Some(value),
            b"__o" => owner = Some(value),
            b"__v" => version = Some(value),
            b"__p" => pointer = Some(value),
            _ if name.starts_with(DATA_PREFIX) => {
                // The field's own buffer becomes the key: one allocation less per data key.
                let mut name = name;
                name.drain(..DATA_PREFIX.len());
                let data_key = String::from_utf8(name)
                    .map_err(|_| Error::corrupt("a session key is not UTF-8"))?;
                data.insert(data_key, value);
            }
            _ => {}
        }
    }
    if empty {
        return Ok(None);
    }
    let number = |name: &str, raw: Option<Vec<u8>>| -> Result<i64> {
        let raw = raw.ok_or_else(|| Error::corrupt(format!("session hash without {name}")))?;
        crate::resp::decimal(&raw).ok_or_else(|| Error::corrupt(format!("{name} is not a number")))
    };
    let text = |name: &str, raw: Option<Vec<u8>>| -> Result<Option<String>> {
        raw.map(|raw| {
            String::from_utf8(raw).map_err(|_| Error::corrupt(format!("{name} is not UTF-8")))
        })
        .transpose()
    };
    Ok(Some(Record {
        data,
        created_at: Timestamp::from_millis(number("__c", created)?),
        expires_at: Timestamp::from_millis(number("__e", expires)?),
        owner: text("__o", owner)?,
        version: u64::try_from(number("__v", version)?)
            .map_err(|_| Error::corrupt("a negative version"))?,
        moved_to: text("__p", pointer)?
            .map(|h| SessionKey::from_hex(&h))
            .transpose()?,
    }))
}

/// The (name, value) pairs of an HGETALL reply (a flat array, or a map under RESP3), taken
/// from the reply as they are read (no list of pairs is built).
fn hash_pairs(reply: Value) -> Result<impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>>> {
    let bytes = |value: Value| match value {
        Value::BulkString(bytes) => Ok(bytes),
        Value::SimpleString(text) => Ok(text.into_bytes()),
        other => Err(Error::corrupt(format!(
            "a session hash holds a {other:?}, not a string"
        ))),
    };
    let (flat, map) = match reply {
        Value::Nil => (Vec::new(), Vec::new()),
        Value::Array(items) if items.len() % 2 != 0 => {
            return Err(Error::corrupt("a hash reply with an odd number of items"));
        }
        Value::Array(items) => (items, Vec::new()),
        Value::Map(entries) => (Vec::new(), entries),
        other => {
            return Err(Error::corrupt(format!(
                "a session hash reply was {other:?}"
            )));
        }
    };
    let mut flat = flat.into_iter();
    let flat = std::iter::from_fn(move || Some((flat.next()?, flat.next()?)));
    Ok(flat
        .chain(map)
        .map(move |(name, value)| Ok((bytes(name)?, bytes(value)?))))
}

impl RedisStore {
    /// Connects to the Redis (or Redis Cluster) a URL names.
    ///
    /// # Errors
    /// [`ErrorKind::Config`](sessionkit_core::ErrorKind::Config) for a bad URL or option,
    /// [`ErrorKind::Unavailable`](sessionkit_core::ErrorKind::Unavailable) if no server answers.
    pub async fn open(url: &str) -> Result<Self> {
        let options = StoreOptions::parse(url)?;
        let namespace = &options.namespace;
        if let Some((scheme, rest)) = options.base.split_once("+sentinel://") {
            let conn = options.sentinel(scheme == "rediss", rest)?;
            Self::with_connection(conn, namespace).await
        } else if let Some((scheme, hosts)) = options.base.split_once("+cluster://") {
            let client = options.cluster_client(scheme, hosts)?;
            let conn = client
                .get_async_connection()
                .await
                .map_err(|e| redis_error("connecting to Redis Cluster", e))?;
            Self::with_cluster(conn, namespace)
        } else {
            Self::with_connection(options.standalone()?, namespace).await
        }
    }

    /// A store on a connection built in code: a [`Multiplexed`] from redis-rs's
    /// `ConnectionInfo` (with a TLS configuration of your own: [`Multiplexed::with_tls`]) or
    /// from a Sentinel client ([`Multiplexed::with_sentinel`]), keeping its keys under
    /// `namespace` (printable ASCII without `{` `}`). Connects now.
    ///
    /// ```no_run
    /// # async fn demo() -> sessionkit_core::Result<()> {
    /// use std::time::Duration;
    /// use sessionkit_redis::redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};
    /// use sessionkit_redis::{Multiplexed, RedisStore};
    ///
    /// let info: ConnectionInfo = ConnectionAddr::Tcp("cache.internal".into(), 6379)
    ///     .into_connection_info()
    ///     .map_err(|e| sessionkit_core::Error::config_with("redis address", e))?;
    /// let conn = Multiplexed::new(&info, Duration::from_secs(2))
    ///     .map_err(|e| sessionkit_core::Error::config_with("redis address", e))?;
    /// let store = RedisStore::with_connection(conn, "myapp").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Config` for an invalid namespace or a refused login; `Unavailable` if the server does
    /// not answer.
    pub async fn with_connection(conn: Multiplexed, namespace: &str) -> Result<Self> {
        let namespace = checked_namespace(namespace)?;
        conn.connect()
            .await
            .map_err(|e| redis_error("connecting to Redis", e))?;
        Ok(Self {
            conn: Connection::Single(conn),
            namespace,
        })
    }

    /// A store on a Redis Cluster connection made from redis-rs's `ClusterClient` (built in
    /// code: TLS certificates, credentials, timeouts, read-from-replicas off), keeping its keys
    /// under `namespace`.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use sessionkit_redis::redis::cluster::ClusterClient;
    ///
    /// let client = ClusterClient::builder(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"])
    ///     .password(std::env::var("REDIS_PASSWORD")?)
    ///     .build()?;
    /// let conn = client.get_async_connection().await?;
    /// let store = sessionkit_redis::RedisStore::with_cluster(conn, "myapp")?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Config` for an invalid namespace.
    pub fn with_cluster(conn: ClusterConnection, namespace: &str) -> Result<Self> {
        Ok(Self {
            conn: Connection::Cluster(conn),
            namespace: checked_namespace(namespace)?,
        })
    }

    fn session_key(&self, key: &SessionKey) -> String {
        // Built by hand: `format!` cost ~2,400 instructions here, on every request.
        let mut name = String::with_capacity(self.namespace.len() + 5 + 64);
        name.push_str(&self.namespace);
        name.push_str(":s:{");
        key.push_hex(&mut name);
        name.push('}');
        name
    }

    fn owner_key(&self, owner: &str) -> String {
        format!("{}:o:{}", self.namespace, hex(owner.as_bytes()))
    }

    fn conn(&self) -> Connection {
        self.conn.clone()
    }

    async fn add_owner(&self, owner: &str, key: &SessionKey) -> Result<()> {
        self.change_owner_index("SADD", owner, key).await
    }

    async fn remove_owner(&self, owner: &str, key: &SessionKey) -> Result<()> {
        self.change_owner_index("SREM", owner, key).await
    }

    /// `SADD` or `SREM` of `key` in the index of `owner`'s sessions.
    async fn change_owner_index(&self, verb: &str, owner: &str, key: &SessionKey) -> Result<()> {
        let (set, member) = (self.owner_key(owner), key.to_hex());
        self.conn
            .query(&[verb, &set, &member].map(Arg::from))
            .await
            .map(drop)
            .map_err(|e| redis_error("updating the owner index", e))
    }

    /// The session hash under `key` as a record (expired or not; pointers too).
    async fn stored(&self, key: &SessionKey) -> Result<Option<Record>> {
        let name = self.session_key(key);
        let reply = self
            .conn
            .query(&[Arg::from("HGETALL"), Arg::from(name.as_str())])
            .await
            .map_err(|e| redis_error("loading a session", e))?;
        record_from_fields(hash_pairs(reply)?)
    }

    /// Runs `script` on the session hash of `key` with `args` (after the key).
    async fn run_script<T: FromRedisValue>(
        &self,
        script: &Script,
        key: &SessionKey,
        args: &[Arg<'_>],
    ) -> RedisResult<T> {
        let name = self.session_key(key);
        let mut call = command::script_call(script, &name, args.len());
        call.extend_from_slice(args);
        self.conn.eval(script, &call).await
    }

    /// Inserts `record` under `key` unless a live session or pointer is there.
    async fn insert(&self, key: &SessionKey, record: &Record) -> Result<bool> {
        let mut args = Vec::with_capacity(5 + 2 * record.data.len());
        args.extend([
            Arg::Int(now_ms()),
            Arg::Int(record.created_at.as_millis()),
            Arg::Int(record.expires_at.as_millis()),
            Arg::Unsigned(record.version),
            Arg::from(record.owner.as_deref().unwrap_or("")),
        ]);
        for (name, value) in &record.data {
            args.extend([Arg::DataField(name), Arg::Bytes(value.as_slice())]);
        }
        let created: i64 = self
            .run_script(&CREATE, key, &args)
            .await
            .map_err(|e| redis_error("creating a session", e))?;
        Ok(created == 1)
    }

    /// The masters whose keyspaces together hold every key, as (host, port); none for a
    /// standalone server (its own connection scans it).
    async fn masters(&self) -> Result<Vec<(String, u16)>> {
        let Connection::Cluster(_) = &self.conn else {
            return Ok(Vec::new());
        };
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut self.conn())
            .await
            .map_err(|e| redis_error("listing cluster nodes", e))?;
        Ok(nodes
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let flags = fields.get(2)?;
                (flags.contains("master") && !flags.contains("fail")).then(|| {
                    let address = fields.get(1)?.split('@').next()?;
                    let (host, port) = address.rsplit_once(':')?;
                    Some((host.to_owned(), port.parse().ok()?))
                })?
            })
            .collect())
    }

    /// One SCAN step on `master` (the standalone server if `None`), through the store's own
    /// connections (so with their TLS and credentials).
    async fn scan_step(
        &self,
        master: Option<&(String, u16)>,
        cursor: u64,
        pattern: &str,
    ) -> RedisResult<(u64, Vec<String>)> {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT);
        let reply = match (&self.conn, master) {
            (Connection::Cluster(conn), Some((host, port))) => {
                let node = SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                };
                conn.clone()
                    .route_command(scan, RoutingInfo::SingleNode(node))
                    .await?
            }
            _ => self.conn().req_packed_command(&scan).await?,
        };
        Ok(FromRedisValue::from_redis_value(reply)?)
    }

    /// Every key matching `pattern` on every master.
    async fn scan(&self, pattern: &str) -> Result<Vec<String>> {
        let masters = self.masters().await?;
        let targets: Vec<Option<&(String, u16)>> = if masters.is_empty() {
            vec![None]
        } else {
            masters.iter().map(Some).collect()
        };
        let mut keys = Vec::new();
        for master in targets {
            let mut cursor = 0u64;
            loop {
                let (next, batch) = self
                    .scan_step(master, cursor, pattern)
                    .await
                    .map_err(|e| redis_error("scanning sessions", e))?;
                keys.extend(batch);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(keys)
    }
}

/// The URL schemes this store opens.
pub const SCHEMES: [&str; 7] = [
    "redis",
    "rediss",
    "redis+unix",
    "redis+cluster",
    "rediss+cluster",
    "redis+sentinel",
    "rediss+sentinel",
];

/// Registers [`SCHEMES`] with `registry`.
pub fn register(registry: &mut Registry) {
    // Opening creates nothing on the server, so both open modes open the same way.
    registry.register_store(&SCHEMES, |url, _mode| async move {
        RedisStore::open(&url).await
    });
}

#[async_trait]
impl Store for RedisStore {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all().with_native_ttl(true)
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<()> {
        if let Some(owner) = &record.owner {
            self.add_owner(owner, key).await?;
        }
        if self.insert(key, record).await? {
            Ok(())
        } else {
            Err(Error::conflict("a session with this key exists"))
        }
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let record = self.stored(key).await?;
        Ok(record.filter(|r| !r.is_expired(Timestamp::now())))
    }

    async fn load_keys(&self, key: &SessionKey, keys: &[&str]) -> Result<Option<Record>> {
        let name = self.session_key(key);
        let mut args = Vec::with_capacity(7 + keys.len());
        args.extend(["HMGET", &name, "__c", "__e", "__o", "__v", "__p"].map(Arg::from));
        args.extend(keys.iter().map(|k| Arg::DataField(k)));
        let reply = self.conn.query(&args).await;
        let values: Vec<Option<Vec<u8>>> = reply
            .and_then(|v| Ok(FromRedisValue::from_redis_value(v)?))
            .map_err(|e| redis_error("loading a session", e))?;
        if values.get(1).is_none_or(Option::is_none) {
            return Ok(None); // no `__e`: no session
        }
        let names = ["__c", "__e", "__o", "__v", "__p"]
            .into_iter()
            .map(|name| name.as_bytes().to_vec())
            .chain(keys.iter().map(|k| data_field(k)));
        let fields = names
            .zip(values)
            .filter_map(|(name, value)| Some(Ok((name, value?))));
        let record = record_from_fields(fields)?;
        Ok(record.filter(|r| !r.is_expired(Timestamp::now())))
    }

    async fn apply(&self, key: &SessionKey, change: &Change) -> Result<ApplyOutcome> {
        if let Some(Some(owner)) = &change.owner {
            self.add_owner(owner, key).await?;
        }
        let started = std::time::Instant::now();
        let only_sets = change.expires_at.is_none()
            && change.owner.is_none()
            && !change.cleared
            && change.removed.is_empty();
        // The condition marks, one byte per condition: `=` a value follows, `!` must be absent.
        let marks: Vec<u8> = change
            .expected
            .values()
            .map(|seen| if seen.is_some() { b'=' } else { b'!' })
            .collect();
        let mut args = Vec::with_capacity(
            7 + change.removed.len() + 2 * change.set.len() + 2 * change.expected.len(),
        );
        args.push(Arg::Int(0)); // `now`, written below on each attempt
        if !marks.is_empty() {
            args.push(Arg::Bytes(&marks));
        }
        // The count of control arguments: none, or 4 and the removed fields.
        let control = if only_sets {
            0
        } else {
            i64::try_from(4 + change.removed.len()).unwrap_or(i64::MAX)
        };
        args.push(Arg::Int(control));
        if !marks.is_empty() {
            args.extend(change.expected.keys().map(|name| Arg::DataField(name)));
            args.extend(
                change
                    .expected
                    .values()
                    .filter_map(|seen| seen.as_deref().map(Arg::Bytes)),
            );
        }
        if !only_sets {
            args.extend([
                change
                    .expires_at
                    .map_or(Arg::from(""), |t| Arg::Int(t.as_millis())),
                Arg::from(match &change.owner {
                    None => "",
                    Some(Some(_)) => "+",
                    Some(None) => "-",
                }),
                Arg::from(
                    change
                        .owner
                        .as_ref()
                        .and_then(Option::as_deref)
                        .unwrap_or_default(),
                ),
                Arg::from(if change.cleared { "1" } else { "0" }),
            ]);
            args.extend(change.removed.iter().map(|name| Arg::DataField(name)));
        }
        for (name, value) in &change.set {
            args.extend([Arg::DataField(name), Arg::Bytes(value.as_slice())]);
        }
        loop {
            args[0] = Arg::Int(now_ms());
            let reply: (i64, u64, String) = self
                .run_script(&APPLY, key, &args)
                .await
                .map_err(|e| redis_error("applying a change", e))?;
            match reply {
                (1, version, previous) => {
                    if !previous.is_empty()
                        && change
                            .owner
                            .as_ref()
                            .is_some_and(|new| new.as_deref() != Some(previous.as_str()))
                    {
                        self.remove_owner(&previous, key).await?;
                    }
                    return Ok(ApplyOutcome::Applied { version });
                }
                (2, _, _) if started.elapsed() < MOVE_DEADLINE => {
                    // A cycle is copying this session; its copy must include this change, so wait
                    // (and check the conditions again: the run that writes is the one that checks).
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                (3, _, owner) => {
                    // Nothing was written: the index entry added for a new owner goes too.
                    if let Some(Some(new)) = &change.owner
                        && *new != owner
                    {
                        self.remove_owner(new, key).await?;
                    }
                    return Ok(ApplyOutcome::Conflict);
                }
                _ => return Ok(ApplyOutcome::Gone),
            }
        }
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let (deleted, owner): (i64, String) = self
            .run_script(&DELETE, key, &[])
            .await
            .map_err(|e| redis_error("deleting a session", e))?;
        if !owner.is_empty() {
            self.remove_owner(&owner, key).await?;
        }
        Ok(deleted == 1)
    }

    async fn cycle(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        grace_until: Option<Timestamp>,
    ) -> Result<CycleOutcome> {
        let started = std::time::Instant::now();
        let fields: Vec<Vec<u8>> = loop {
            let now = Timestamp::now();
            let new_hex = new.to_hex();
            let args = [
                Arg::Int(now.as_millis()),
                Arg::from(new_hex.as_str()),
                Arg::Int(now.saturating_add(MOVE_DEADLINE).as_millis()),
            ];
            let reply: Option<Vec<Vec<u8>>> = self
                .run_script(&BEGIN_MOVE, old, &args)
                .await
                .map_err(|e| redis_error("cycling a session id", e))?;
            match reply {
                None => return Ok(CycleOutcome::Gone),
                Some(busy) if busy.len() == 1 && started.elapsed() < MOVE_DEADLINE => {
                    let _ = busy; // another cycle of the same session is under way
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Some(busy) if busy.len() == 1 => {
                    return Err(Error::conflict(
                        "the session is being cycled by another request",
                    ));
                }
                Some(fields) => break fields,
            }
        };
        let mut fields = fields.into_iter();
        let pairs = std::iter::from_fn(|| Some(Ok((fields.next()?, fields.next()?))));
        let Some(mut record) = record_from_fields(pairs)? else {
            return Ok(CycleOutcome::Gone);
        };
        record.version += 1;
        let new_hex = new.to_hex();
        let abort = || async {
            let _: RedisResult<i64> = self
                .run_script(&ABORT_MOVE, old, &[Arg::from(new_hex.as_str())])
                .await;
        };
        if let Some(owner) = &record.owner {
            self.add_owner(owner, new).await?;
        }
        match self.insert(new, &record).await {
            Ok(true) => {}
            Ok(false) => {
                abort().await;
                return Err(Error::conflict("the new session key is taken"));
            }
            Err(err) => {
                abort().await;
                return Err(err);
            }
        }
        let args = [
            Arg::from(new_hex.as_str()),
            Arg::Int(now_ms()),
            grace_until.map_or(Arg::from(""), |t| Arg::Int(t.as_millis())),
        ];
        let finished: i64 = self
            .run_script(&FINISH_MOVE, old, &args)
            .await
            .map_err(|e| redis_error("cycling a session id", e))?;
        if finished != 1 {
            // The move outlived its deadline and the old session went on without it.
            let _: Result<bool> = self.delete(new).await;
            return Err(Error::conflict("the cycle took longer than its deadline"));
        }
        if let Some(owner) = &record.owner {
            self.remove_owner(owner, old).await?;
        }
        Ok(CycleOutcome::Cycled)
    }

    async fn delete_expired(&self) -> Result<u64> {
        // Redis expires sessions itself; what is left is owner-index members of expired sessions.
        for set in self.scan(&format!("{}:o:*", self.namespace)).await? {
            let members: Vec<String> = redis::cmd("SMEMBERS")
                .arg(&set)
                .query_async(&mut self.conn())
                .await
                .map_err(|e| redis_error("pruning the owner index", e))?;
            for member in members {
                let Ok(key) = SessionKey::from_hex(&member) else {
                    continue;
                };
                let exists: bool = redis::cmd("EXISTS")
                    .arg(self.session_key(&key))
                    .query_async(&mut self.conn())
                    .await
                    .map_err(|e| redis_error("pruning the owner index", e))?;
                if !exists {
                    redis::cmd("SREM")
                        .arg(&set)
                        .arg(&member)
                        .query_async::<()>(&mut self.conn())
                        .await
                        .map_err(|e| redis_error("pruning the owner index", e))?;
                }
            }
        }
        Ok(0)
    }

    async fn list(&self, filter: &ListFilter, page: PageRequest) -> Result<Page> {
        let prefix = format!("{}:s:{{", self.namespace);
        let mut keys: Vec<SessionKey> = self
            .scan(&format!("{prefix}*"))
            .await?
            .iter()
            .filter_map(|k| {
                k.strip_prefix(&prefix)?
                    .strip_suffix('}')
                    .map(SessionKey::from_hex)?
                    .ok()
            })
            .filter(|k| page.after.is_none_or(|after| *k > after))
            .collect();
        keys.sort();
        keys.dedup();
        let now = Timestamp::now();
        let mut found = Vec::new();
        for key in keys {
            let Some(record) = self.stored(&key).await? else {
                continue;
            };
            if record.moved_to.is_none()
                && filter.state.admits(record.expires_at, now)
                && (filter.owner.is_none() || record.owner == filter.owner)
            {
                found.push(StoredSession { key, record });
                if found.len() > page.limit {
                    break;
                }
            }
        }
        Ok(Page::from_sorted(found, page.limit))
    }

    async fn by_owner(&self, owner: &str) -> Result<Vec<StoredSession>> {
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.owner_key(owner))
            .query_async(&mut self.conn())
            .await
            .map_err(|e| redis_error("reading the owner index", e))?;
        let now = Timestamp::now();
        let mut found = Vec::new();
        for member in members {
            let Ok(key) = SessionKey::from_hex(&member) else {
                continue;
            };
            match self.stored(&key).await? {
                Some(record)
                    if record.owner.as_deref() == Some(owner) && record.moved_to.is_none() =>
                {
                    if !record.is_expired(now) {
                        found.push(StoredSession { key, record });
                    }
                }
                // Gone, expired away, or owned by someone else now: a stale member.
                _ => self.remove_owner(owner, &key).await?,
            }
        }
        Ok(found)
    }

    async fn delete_by_owner(&self, owner: &str) -> Result<u64> {
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.owner_key(owner))
            .query_async(&mut self.conn())
            .await
            .map_err(|e| redis_error("reading the owner index", e))?;
        let mut live = 0;
        for member in members {
            let Ok(key) = SessionKey::from_hex(&member) else {
                continue;
            };
            let outcome: i64 = self
                .run_script(
                    &DELETE_IF_OWNER,
                    &key,
                    &[Arg::from(owner), Arg::Int(now_ms())],
                )
                .await
                .map_err(|e| redis_error("revoking an owner's sessions", e))?;
            if outcome == 1 {
                live += 1;
            }
            self.remove_owner(owner, &key).await?;
        }
        Ok(live)
    }
}
