//! # sessionkit-memcached
//!
//! A [`Store`] on one or several Memcached servers (the seeds' Webware store, without its
//! "last write wins"). URL: `memcached://h1:11211,h2:11211?namespace=myapp&max_item_bytes=1048576`.
//!
//! - **Namespace**: every key is `<namespace>:<session key hex>`, so sessions can share a
//!   Memcached with other data (default namespace `sessionkit`).
//! - **Native expiry**: each item's exptime is the session's deadline; Memcached drops expired
//!   sessions itself and `delete_expired` has nothing to do.
//! - **Several servers**: keys are spread by consistent hashing (160 points per server), so
//!   adding a server moves about 1/(n+1) of the sessions instead of nearly all of them.
//! - **No lost updates**: `apply` is `gets` → merge the change → `cas`, retried (up to 32 times,
//!   with backoff) when another write got in between, so concurrent writes of different keys
//!   all survive. A `cas` on a deleted item fails (`NOT_FOUND`) and nothing is added back.
//!   `cycle` copies the session with `add` (insert-only) and then retires the old item with a
//!   `cas`, re-copying if a write landed meanwhile.
//! - **What Memcached cannot do**: list sessions, keep an owner index, or read single keys:
//!   `capabilities()` says so, and `list`, `by_owner` and `delete_by_owner` return
//!   [`ErrorKind::Unsupported`](sessionkit_core::ErrorKind::Unsupported), which the caller's
//!   [`UnsupportedPolicy`](sessionkit_core::UnsupportedPolicy) turns into an error, a warning or
//!   nothing.
//! - **No purge reports**: Memcached expires items silently and says nothing about them, so
//!   this store does not have `capabilities().reports_purged`:
//!   [`Store::delete_expired_batch_reporting`] returns `Unsupported`, and
//!   [`SessionHooks::purged_sessions`](sessionkit_core::SessionHooks::purged_sessions) never
//!   hears of an expired session. An audit log that must record expiries needs a store that
//!   reports them (SQLite, PostgreSQL, MySQL/MariaDB, file, redb).
//! - **TLS**: `memcached+tls://h1:11214,h2:11214` connects with TLS (memcached 1.6 started
//!   with `-Z`), verifying each server's certificate chain and host name against the system's
//!   roots or the CA certificates of `tls_ca=/path/ca.pem`; `tls_cert=`/`tls_key=` send a
//!   client certificate (for `ssl_verify_mode`). A refused certificate, or a server that does
//!   not speak TLS on that port, is an [`ErrorKind::Config`](sessionkit_core::ErrorKind::Config)
//!   error on the first request to that server.
//! - **Size**: a session (the whole record is one item) larger than `max_item_bytes` (default
//!   1 MiB, Memcached's default `-I`) fails with
//!   [`ErrorKind::TooLarge`](sessionkit_core::ErrorKind::TooLarge) before anything is written.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
mod protocol;
mod ring;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sessionkit_core::backend::tls::{self, TlsFiles, Verify};
use sessionkit_core::backend::{percent_decoded, split_options, unsupported};
use sessionkit_core::{
    ApplyOutcome, Capabilities, Change, CycleOutcome, Error, ListFilter, Page, PageRequest, Record,
    Registry, Result, SessionKey, Store, StoredSession, Timestamp, async_trait,
};

use crate::protocol::{Server, StoreReply};
use crate::ring::Ring;
use tokio_rustls::TlsConnector;

/// The host of `host:port` (an IPv6 address keeps its brackets).
fn host_of(address: &str) -> &str {
    address.rsplit_once(':').map_or(address, |(host, _)| host)
}

/// How many times `apply` and `cycle` retry after losing a compare-and-swap race.
const CAS_ATTEMPTS: u32 = 32;
/// Memcached reads exptimes above this many seconds as absolute Unix times.
const RELATIVE_LIMIT_SECS: i64 = 30 * 24 * 3600;
/// Bytes Memcached adds to an item beyond key and value (a conservative allowance).
const ITEM_OVERHEAD: usize = 64;

/// The Memcached store. Cheap to clone.
#[derive(Clone)]
pub struct MemcachedStore {
    servers: Arc<[Server]>,
    ring: Arc<Ring>,
    namespace: Arc<str>,
    max_item_bytes: usize,
}

impl std::fmt::Debug for MemcachedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let servers: Vec<&str> = self.servers.iter().map(|s| s.address.as_str()).collect();
        f.debug_struct("MemcachedStore")
            .field("servers", &servers)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// The exptime that makes Memcached drop the item at `expires_at`.
fn exptime(expires_at: Timestamp) -> i64 {
    let now = Timestamp::now();
    if expires_at <= now {
        return -1; // already expired: stored as gone
    }
    let seconds = i64::try_from(expires_at.duration_since(now).as_millis().div_ceil(1000))
        .unwrap_or(i64::MAX);
    if seconds <= RELATIVE_LIMIT_SECS {
        seconds
    } else {
        (expires_at.as_millis() + 999).div_euclid(1000)
    }
}

fn live(record: Option<Record>) -> Option<Record> {
    record.filter(|r| !r.is_expired(Timestamp::now()) && r.moved_to.is_none())
}

impl MemcachedStore {
    /// Opens the servers a `memcached://` (or, over TLS, `memcached+tls://`) URL names (no
    /// connection is made until first use).
    ///
    /// # Errors
    /// [`ErrorKind::Config`](sessionkit_core::ErrorKind::Config) for a URL without servers,
    /// with an unknown option, or with TLS files that cannot be read.
    pub async fn open(url: &str) -> Result<Self> {
        let (hosts, options) = split_options(url);
        let addresses: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect();
        if addresses.is_empty() || addresses.iter().any(|a| !a.contains(':')) {
            return Err(Error::config(format!(
                "{url:?}: expected memcached://host:port[,host:port…]"
            )));
        }
        let (mut tls_files, mut rest) = (TlsFiles::default(), Vec::new());
        for (name, value) in options {
            let path = || Some(PathBuf::from(percent_decoded(&value)));
            match name.as_str() {
                "tls_ca" => tls_files.ca = path(),
                "tls_cert" => tls_files.cert = path(),
                "tls_key" => tls_files.key = path(),
                _ => rest.push((name, value)),
            }
        }
        let tls = if url.starts_with("memcached+tls:") {
            let config = tls::client_config(&tls_files, Verify::Full)?;
            Some(TlsConnector::from(Arc::new(config)))
        } else if tls_files != TlsFiles::default() {
            return Err(Error::config(
                "tls_ca, tls_cert and tls_key are for memcached+tls:// URLs",
            ));
        } else {
            None
        };
        let servers = addresses
            .iter()
            .map(|address| {
                let tls = match &tls {
                    None => None,
                    Some(connector) => Some(protocol::Tls {
                        connector: connector.clone(),
                        name: tls::server_name(host_of(address))?,
                    }),
                };
                Ok(Server::new(address.clone(), tls))
            })
            .collect::<Result<Arc<[Server]>>>()?;
        let mut store = Self {
            ring: Arc::new(Ring::new(&addresses)),
            servers,
            namespace: "sessionkit".into(),
            max_item_bytes: 1 << 20,
        };
        for (name, value) in rest {
            match (name.as_str(), value.parse::<usize>()) {
                ("namespace", _)
                    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic()) =>
                {
                    store.namespace = value.into()
                }
                ("max_item_bytes", Ok(limit)) if limit > ITEM_OVERHEAD => {
                    store.max_item_bytes = limit
                }
                _ => {
                    return Err(Error::config(format!(
                        "unknown or invalid memcached option {name}={value} (namespace, max_item_bytes, tls_ca, tls_cert, tls_key)"
                    )));
                }
            }
        }
        Ok(store)
    }

    fn item_key(&self, key: &SessionKey) -> String {
        format!("{}:{}", self.namespace, key.to_hex())
    }

    fn server(&self, item: &str) -> &Server {
        &self.servers[self.ring.server_for(item)]
    }

    /// Encodes `record`, refusing it before any write if Memcached could not hold it.
    fn encode(&self, item: &str, record: &Record) -> Result<Vec<u8>> {
        let blob = record.to_blob()?;
        let size = blob.len() + item.len() + ITEM_OVERHEAD;
        if size > self.max_item_bytes {
            return Err(Error::TooLarge {
                what: "session".into(),
                size,
                limit: self.max_item_bytes,
            });
        }
        Ok(blob)
    }

    async fn gets(&self, key: &SessionKey) -> Result<Option<(Record, u64)>> {
        let item = self.item_key(key);
        match self.server(&item).gets(&item).await? {
            None => Ok(None),
            Some((blob, cas)) => Ok(Some((Record::from_blob(&blob)?, cas))),
        }
    }
}

/// The URL schemes this store opens.
pub const SCHEMES: [&str; 2] = ["memcached", "memcached+tls"];

/// Registers [`SCHEMES`] with `registry`.
pub fn register(registry: &mut Registry) {
    // Opening creates nothing on the servers, so both open modes open the same way.
    registry.register_store(&SCHEMES, |url, _mode| async move {
        MemcachedStore::open(&url).await
    });
}

async fn backoff(attempt: u32) {
    tokio::time::sleep(Duration::from_micros(200 * u64::from(attempt.min(20)))).await;
}

#[async_trait]
impl Store for MemcachedStore {
    fn name(&self) -> &'static str {
        "memcached"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
            .with_iterable(false)
            .with_owner_index(false)
            .with_per_key_reads(false)
            .with_native_ttl(true)
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<()> {
        let item = self.item_key(key);
        let blob = self.encode(&item, record)?;
        match self
            .server(&item)
            .store("add", &item, &blob, exptime(record.expires_at), None)
            .await?
        {
            StoreReply::Stored => Ok(()),
            _ => Err(Error::conflict("a session with this key exists")),
        }
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        Ok(self
            .gets(key)
            .await?
            .map(|(record, _)| record)
            .filter(|r| !r.is_expired(Timestamp::now())))
    }

    async fn apply(&self, key: &SessionKey, change: &Change) -> Result<ApplyOutcome> {
        let item = self.item_key(key);
        for attempt in 0..CAS_ATTEMPTS {
            let Some((record, cas)) = self.gets(key).await? else {
                return Ok(ApplyOutcome::Gone);
            };
            let Some(mut record) = live(Some(record)) else {
                return Ok(ApplyOutcome::Gone);
            };
            if !change.holds(&record.data) {
                // Checked on the item this `cas` is conditional on: if the key changes after
                // this read, the `cas` fails and the next round checks again.
                return Ok(ApplyOutcome::Conflict);
            }
            change.apply_to(&mut record);
            let blob = self.encode(&item, &record)?;
            match self
                .server(&item)
                .store("cas", &item, &blob, exptime(record.expires_at), Some(cas))
                .await?
            {
                StoreReply::Stored => {
                    return Ok(ApplyOutcome::Applied {
                        version: record.version,
                    });
                }
                StoreReply::NotFound => return Ok(ApplyOutcome::Gone), // deleted meanwhile: never added back
                StoreReply::Exists => backoff(attempt).await,
            }
        }
        Err(Error::conflict(format!(
            "another write kept winning the compare-and-swap ({CAS_ATTEMPTS} attempts)"
        )))
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let item = self.item_key(key);
        self.server(&item).delete(&item).await
    }

    async fn cycle(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        grace_until: Option<Timestamp>,
    ) -> Result<CycleOutcome> {
        let (old_item, new_item) = (self.item_key(old), self.item_key(new));
        let mut copied = false;
        for attempt in 0..CAS_ATTEMPTS {
            let Some((record, cas)) = self.gets(old).await? else {
                return Ok(CycleOutcome::Gone);
            };
            let Some(mut moved) = live(Some(record)) else {
                return Ok(CycleOutcome::Gone);
            };
            moved.version += 1;
            let blob = self.encode(&new_item, &moved)?;
            let expires = exptime(moved.expires_at);
            // The first copy is insert-only (a taken key is a conflict); later ones refresh our copy.
            let command = if copied { "set" } else { "add" };
            if self
                .server(&new_item)
                .store(command, &new_item, &blob, expires, None)
                .await?
                != StoreReply::Stored
            {
                return Err(Error::conflict("the new session key is taken"));
            }
            copied = true;
            let now = Timestamp::now();
            let (retired, retired_exptime) = match grace_until {
                Some(until) => (Record::moved(*new, now, until), exptime(until)),
                None => (Record::moved(*new, now, now), -1), // stored already expired: gone
            };
            let retired = self.encode(&old_item, &retired)?;
            match self
                .server(&old_item)
                .store("cas", &old_item, &retired, retired_exptime, Some(cas))
                .await?
            {
                StoreReply::Stored => return Ok(CycleOutcome::Cycled),
                StoreReply::NotFound => {
                    let _ = self.server(&new_item).delete(&new_item).await;
                    return Ok(CycleOutcome::Gone);
                }
                StoreReply::Exists => backoff(attempt).await, // a write landed on the old key: copy again
            }
        }
        let _ = self.server(&new_item).delete(&new_item).await;
        Err(Error::conflict(format!(
            "writes kept landing during the cycle ({CAS_ATTEMPTS} attempts)"
        )))
    }

    async fn delete_expired(&self) -> Result<u64> {
        Ok(0) // Memcached drops expired items itself
    }

    async fn list(&self, _filter: &ListFilter, _page: PageRequest) -> Result<Page> {
        Err(unsupported("memcached", "listing sessions"))
    }

    async fn by_owner(&self, _owner: &str) -> Result<Vec<StoredSession>> {
        Err(unsupported("memcached", "finding sessions by owner"))
    }

    async fn delete_by_owner(&self, _owner: &str) -> Result<u64> {
        Err(unsupported("memcached", "revoking sessions by owner"))
    }
}
