//! The session manager: how it is built, and the admin operations (the rules it applies live
//! in `lifecycle`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::id::SessionKey;
use crate::lifecycle::{CleanupPolicy, Config, ManagerInner, NoHooks, SessionHooks};
use crate::metrics::{Destroyed, Trigger};
use crate::record::StoredSession;
use crate::session::Session;
use crate::store::{Store, UnsupportedPolicy};
use crate::time::{Clock, SystemClock, Timestamp};

/// Builds a [`SessionManager`].
#[must_use]
pub struct SessionManagerBuilder {
    store: Arc<dyn Store>,
    config: Config,
    clock: Arc<dyn Clock>,
    hooks: Arc<dyn SessionHooks>,
}

impl SessionManagerBuilder {
    /// Idle timeout (default 24 hours): a session unused for this long expires.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// Absolute lifetime (default 7 days): no session outlives this, however active.
    pub fn absolute_lifetime(mut self, lifetime: Duration) -> Self {
        self.config.absolute_lifetime = lifetime;
        self
    }

    /// Touch throttle (default 0.1): a read-only request writes a new idle deadline only when it
    /// would move the deadline by at least this fraction of the idle timeout. With the default,
    /// sessions may expire up to 10 % of the idle timeout early, and a busy read-only session costs
    /// one write per 2.4 hours instead of one per request.
    pub fn touch_fraction(mut self, fraction: f64) -> Self {
        self.config.touch_fraction = fraction;
        self
    }

    /// Strict mode (default on): an unknown or expired id is never adopted; the request gets a
    /// fresh session under a fresh id. Turning it off adopts a well-formed unknown id from the
    /// cookie when the session is first saved, which enables session fixation: leave it on.
    pub fn strict(mut self, strict: bool) -> Self {
        self.config.strict = strict;
        self
    }

    /// Grace period after `cycle_id()` (default 5 seconds): requests still carrying the old id
    /// (sent before the browser saw the new cookie) keep reaching the session for this long, to
    /// read and write its data only: they never learn the new id, and cannot cycle the id or
    /// set the owner or expiry ([`ErrorKind::Superseded`](crate::ErrorKind::Superseded)). Zero
    /// removes the old id at once. The crate docs' *grace window* section has the threat model.
    pub fn cycle_grace(mut self, grace: Duration) -> Self {
        self.config.cycle_grace = grace;
        self
    }

    /// Limit of live sessions per owner (default none). When a save makes an owner exceed it,
    /// the owner's oldest sessions (by creation time) are destroyed until the limit holds; the
    /// session being saved is never the one ended. Needs a store with an owner index.
    pub fn max_sessions_per_owner(mut self, limit: Option<usize>) -> Self {
        self.config.max_sessions_per_owner = limit;
        self
    }

    /// Cleanup policy (default `Probabilistic { one_in: 1000 }`). Stores with native expiry
    /// (Redis, Memcached) are never cleaned automatically: their server does it.
    pub fn cleanup(mut self, policy: CleanupPolicy) -> Self {
        self.config.cleanup = policy;
        self
    }

    /// What admin operations do on a store that cannot do them (default: return the error).
    pub fn unsupported(mut self, policy: UnsupportedPolicy) -> Self {
        self.config.unsupported = policy;
        self
    }

    /// The largest encoded value one key may hold (default 1 MiB). Larger inserts fail with
    /// [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) before anything is written.
    pub fn max_value_bytes(mut self, limit: usize) -> Self {
        self.config.max_value_bytes = limit;
        self
    }

    /// The clock (default: the system clock). Tests pass a [`ManualClock`](crate::ManualClock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Lifecycle hooks (default: none).
    pub fn hooks(mut self, hooks: impl SessionHooks) -> Self {
        self.hooks = Arc::new(hooks);
        self
    }

    /// Checks the settings and builds the manager. With `CleanupPolicy::Background` this spawns
    /// the cleanup task, which ends when the last clone of the manager is dropped.
    ///
    /// # Errors
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) for a zero timeout, a touch fraction outside
    /// 0..=1, a zero per-owner limit or cleanup interval, or a background cleanup without a Tokio
    /// runtime.
    pub fn build(self) -> Result<SessionManager> {
        let inner = ManagerInner::start(self.store, self.config, self.clock, self.hooks)?;
        Ok(SessionManager { inner })
    }
}

/// Hands out [`Session`]s and runs the admin operations. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct SessionManager {
    pub(crate) inner: Arc<ManagerInner>,
}

impl fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionManager")
            .field("store", &self.inner.store.name())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl SessionManager {
    /// Starts building a manager over `store`: any [`Store`], or an `Arc<dyn Store>` (as
    /// [`Registry::open`](crate::Registry::open) and [`open`](https://docs.rs/sessionkit)
    /// return), which is used as it is rather than wrapped in a second `Arc`.
    pub fn builder<S: Store>(store: S) -> SessionManagerBuilder {
        let mut store = Some(store);
        let shared = (&mut store as &mut dyn std::any::Any)
            .downcast_mut::<Option<Arc<dyn Store>>>()
            .and_then(Option::take);
        let store = shared.unwrap_or_else(|| match store {
            Some(store) => Arc::new(store) as Arc<dyn Store>,
            None => unreachable!("taken only when it is an Arc<dyn Store>"),
        });
        SessionManagerBuilder {
            store,
            config: Config::default(),
            clock: Arc::new(SystemClock),
            hooks: Arc::new(NoHooks),
        }
    }

    /// The session for one request, given the value of its session cookie (if any). This does
    /// no I/O: the store is first asked when the handler first reads or writes the session, and
    /// a malformed cookie value is never sent to the store at all.
    pub fn session(&self, cookie_value: Option<&str>) -> Session {
        Session::new(Arc::clone(&self.inner), cookie_value)
    }

    /// The store, as it was given to the builder: calls made on it directly are not in the
    /// manager's metrics and spans ([`metrics`](crate::metrics)), which cover the calls the
    /// manager and its sessions make.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.given
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The current time by the manager's clock.
    pub fn now(&self) -> Timestamp {
        self.inner.now()
    }

    /// Every live session of `owner` ("your sessions"), oldest first.
    ///
    /// # Errors
    /// A store error, or `Unsupported` (subject to the manager's [`UnsupportedPolicy`]).
    pub async fn sessions_of(&self, owner: &str) -> Result<Vec<StoredSession>> {
        let now = self.now();
        let mut sessions = self
            .inner
            .config
            .unsupported
            .resolve(self.inner.store.by_owner(owner).await, Vec::new)?;
        sessions.retain(|s| !s.record.is_expired(now));
        sessions.sort_by_key(|s| (s.record.created_at, s.key));
        Ok(sessions)
    }

    /// Ends every session of `owner` ("log out everywhere", account disabled). Returns how many.
    ///
    /// # Errors
    /// A store error, or `Unsupported` (subject to the manager's [`UnsupportedPolicy`]).
    pub async fn revoke_owner(&self, owner: &str) -> Result<u64> {
        let ended = self
            .inner
            .config
            .unsupported
            .resolve(self.inner.store.delete_by_owner(owner).await, || 0)?;
        self.inner.meters.destroyed(Destroyed::Revoke, ended);
        Ok(ended)
    }

    /// Ends every session of `owner` except `keep` ("end all other sessions"). Returns how many.
    ///
    /// # Errors
    /// A store error, or `Unsupported` (subject to the manager's [`UnsupportedPolicy`]).
    pub async fn revoke_others(&self, owner: &str, keep: &SessionKey) -> Result<u64> {
        let mut ended = 0;
        for session in self.sessions_of(owner).await? {
            if session.key != *keep && self.revoke(&session.key).await? {
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// Ends one session by key (from an admin listing or "your sessions"). Returns whether it
    /// existed.
    ///
    /// # Errors
    /// A store error.
    pub async fn revoke(&self, key: &SessionKey) -> Result<bool> {
        let existed = self.inner.store.delete(key).await?;
        if existed {
            self.inner.session_destroyed(key, Destroyed::Revoke);
        }
        Ok(existed)
    }

    /// Deletes expired sessions now and returns how many (also what the cleanup policies run).
    ///
    /// # Errors
    /// A store error.
    pub async fn purge_expired(&self) -> Result<u64> {
        self.inner.purge_expired(Trigger::Manual).await
    }
}
