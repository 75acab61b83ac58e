//! The session manager: configuration, policies, cleanup, hooks and admin operations.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::id::SessionKey;
use crate::record::StoredSession;
use crate::session::Session;
use crate::store::{Store, UnsupportedPolicy};
use crate::time::{Clock, SystemClock, Timestamp};

/// When expired sessions are deleted from the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CleanupPolicy {
    /// Never automatically; call [`SessionManager::purge_expired`] or run `sessionkit purge`.
    Off,
    /// On average once every `one_in` session loads, in a background task, at most one at a
    /// time per manager (the seeds' probabilistic cleanup, without stalling the request).
    Probabilistic {
        /// The average number of loads between cleanups; 0 and 1 both mean every load.
        one_in: u32,
    },
    /// A background task every `every`, for as long as the manager lives. Needs a Tokio runtime
    /// when the manager is built.
    Background {
        /// The interval between cleanups.
        every: Duration,
    },
}

impl CleanupPolicy {
    /// Whether a load with this random draw triggers a cleanup.
    fn triggers(self, draw: u32) -> bool {
        match self {
            Self::Probabilistic { one_in } => one_in <= 1 || draw.is_multiple_of(one_in),
            Self::Off | Self::Background { .. } => false,
        }
    }
}

/// Lifecycle hooks for audit logs and metrics. They see [`SessionKey`]s (hashes), never ids.
/// Every method has an empty default. Hooks run inline, so keep them quick (queue the work).
pub trait SessionHooks: Send + Sync + 'static {
    /// A session was created (stored for the first time).
    fn created(&self, key: &SessionKey, owner: Option<&str>) {
        let _ = (key, owner);
    }
    /// A session moved to a new id (login, privilege change).
    fn cycled(&self, old: &SessionKey, new: &SessionKey) {
        let _ = (old, new);
    }
    /// A session was destroyed: logout, revocation, or evicted by the per-owner limit.
    fn destroyed(&self, key: &SessionKey) {
        let _ = key;
    }
    /// A cleanup deleted `count` expired records.
    fn purged(&self, count: u64) {
        let _ = count;
    }
}

/// Hooks that do nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHooks;
impl SessionHooks for NoHooks {}

/// The manager's settings. Build with [`SessionManager::builder`]; the defaults are documented on
/// each builder method.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Sessions idle for this long expire.
    pub idle_timeout: Duration,
    /// No session lives longer than this after creation, however active.
    pub absolute_lifetime: Duration,
    /// A read-only request extends the idle deadline only once it would move by at least this
    /// fraction of the idle window (0.0 = every request writes, 1.0 = never on reads).
    pub touch_fraction: f64,
    /// Never adopt an id the server did not issue, or one that expired.
    pub strict: bool,
    /// How long the old id keeps working after `cycle_id()` (zero: not at all).
    pub cycle_grace: Duration,
    /// At most this many live sessions per owner; the oldest are ended first.
    pub max_sessions_per_owner: Option<usize>,
    /// How expired sessions get deleted.
    pub cleanup: CleanupPolicy,
    /// What to do when the store cannot do an admin operation.
    pub unsupported: UnsupportedPolicy,
    /// The largest encoded value one key may hold, in bytes.
    pub max_value_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(24 * 60 * 60),
            absolute_lifetime: Duration::from_secs(7 * 24 * 60 * 60),
            touch_fraction: 0.1,
            strict: true,
            cycle_grace: Duration::from_secs(5),
            max_sessions_per_owner: None,
            cleanup: CleanupPolicy::Probabilistic { one_in: 1000 },
            unsupported: UnsupportedPolicy::Error,
            max_value_bytes: 1 << 20,
        }
    }
}

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
    /// (sent before the browser saw the new cookie) keep reaching the session for this long; they
    /// never learn the new id. Zero removes the old id at once.
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
        let config = self.config;
        if config.idle_timeout.is_zero() || config.absolute_lifetime.is_zero() {
            return Err(Error::config(
                "idle timeout and absolute lifetime must be above zero",
            ));
        }
        if !(0.0..=1.0).contains(&config.touch_fraction) {
            return Err(Error::config("the touch fraction must be between 0 and 1"));
        }
        if config.max_sessions_per_owner == Some(0) {
            return Err(Error::config(
                "a per-owner session limit must be at least 1",
            ));
        }
        let background = match config.cleanup {
            CleanupPolicy::Background { every } if every.is_zero() => {
                return Err(Error::config("the cleanup interval must be above zero"));
            }
            CleanupPolicy::Background { every } => Some(every),
            _ => None,
        };
        let inner = Arc::new(ManagerInner {
            store: self.store,
            config,
            clock: self.clock,
            hooks: self.hooks,
            cleanup_running: AtomicBool::new(false),
            background: Mutex::new(None),
            update_turns: (0..UPDATE_TURN_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        });
        if let Some(every) = background {
            let runtime = tokio::runtime::Handle::try_current()
                .map_err(|e| Error::config_with("a background cleanup needs a Tokio runtime", e))?;
            let weak = Arc::downgrade(&inner);
            let task = runtime.spawn(background_cleanup(weak, every));
            if let Ok(mut slot) = inner.background.lock() {
                *slot = Some(task);
            }
        }
        Ok(SessionManager { inner })
    }
}

async fn background_cleanup(manager: Weak<ManagerInner>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(manager) = manager.upgrade() else {
            return;
        };
        if let Err(err) = manager.purge_expired().await {
            tracing::warn!(error = %err, store = manager.store.name(), "session cleanup failed");
        }
    }
}

pub(crate) struct ManagerInner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) config: Config,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) hooks: Arc<dyn SessionHooks>,
    cleanup_running: AtomicBool,
    background: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Conditional commits of one session in this process take turns (striped by session key),
    /// so they do not collide with each other: a request whose read went stale meets one
    /// conflict, re-runs its updates and lands, instead of racing every other request of the
    /// session round after round. Conflicts then come only from other processes.
    update_turns: Box<[tokio::sync::Mutex<()>]>,
}

/// Stripes of [`ManagerInner::update_turns`].
const UPDATE_TURN_STRIPES: usize = 64;

impl Drop for ManagerInner {
    fn drop(&mut self) {
        if let Ok(mut slot) = self.background.lock()
            && let Some(task) = slot.take()
        {
            task.abort();
        }
    }
}

impl ManagerInner {
    /// The turn a conditional commit of the session under `key` takes in this process.
    pub(crate) fn update_turn(&self, key: &SessionKey) -> &tokio::sync::Mutex<()> {
        &self.update_turns[usize::from(key.as_bytes()[0]) % self.update_turns.len()]
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Called on every load that reaches the store: maybe start a probabilistic cleanup.
    pub(crate) fn maybe_cleanup(self: &Arc<Self>) {
        if !self.config.cleanup.triggers(rand::random())
            || self.store.capabilities().native_ttl
            || self.cleanup_running.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.cleanup_running.store(false, Ordering::Release);
            return;
        };
        let manager = Arc::clone(self);
        runtime.spawn(async move {
            if let Err(err) = manager.purge_expired().await {
                tracing::warn!(error = %err, store = manager.store.name(), "session cleanup failed");
            }
            manager.cleanup_running.store(false, Ordering::Release);
        });
    }

    pub(crate) async fn purge_expired(&self) -> Result<u64> {
        let count = self.store.delete_expired().await?;
        if count > 0 {
            self.hooks.purged(count);
        }
        Ok(count)
    }

    /// Ends the owner's oldest sessions until at most the configured limit are live, never
    /// ending `keep`.
    pub(crate) async fn enforce_owner_limit(&self, owner: &str, keep: &SessionKey) -> Result<()> {
        let Some(limit) = self.config.max_sessions_per_owner else {
            return Ok(());
        };
        let sessions = self
            .config
            .unsupported
            .resolve(self.store.by_owner(owner).await, Vec::new)?;
        if sessions.len() <= limit {
            return Ok(());
        }
        let mut others: Vec<&StoredSession> = sessions.iter().filter(|s| s.key != *keep).collect();
        others.sort_by_key(|s| (s.record.created_at, s.key));
        let excess = sessions.len() - limit;
        for session in others.into_iter().take(excess) {
            if self.store.delete(&session.key).await? {
                self.hooks.destroyed(&session.key);
            }
        }
        Ok(())
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
    /// Starts building a manager over `store` (any [`Store`], or an `Arc<dyn Store>` from a
    /// [`Registry`](crate::Registry)).
    pub fn builder(store: impl Store) -> SessionManagerBuilder {
        Self::builder_arc(Arc::new(store))
    }

    /// Starts building a manager over a shared store.
    pub fn builder_arc(store: Arc<dyn Store>) -> SessionManagerBuilder {
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

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
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
        self.inner
            .config
            .unsupported
            .resolve(self.inner.store.delete_by_owner(owner).await, || 0)
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
            self.inner.hooks.destroyed(key);
        }
        Ok(existed)
    }

    /// Deletes expired sessions now and returns how many (also what the cleanup policies run).
    ///
    /// # Errors
    /// A store error.
    pub async fn purge_expired(&self) -> Result<u64> {
        self.inner.purge_expired().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilistic_cleanup_triggers_about_one_in_n() {
        let policy = CleanupPolicy::Probabilistic { one_in: 10 };
        let hits = (0..100_000u32)
            .filter(|_| policy.triggers(rand::random()))
            .count();
        // Binomial(100000, 0.1): mean 10000, sd 95; 8 sd either side.
        assert!((9_240..=10_760).contains(&hits), "{hits}");
        assert!(
            (0..100).all(|_| CleanupPolicy::Probabilistic { one_in: 1 }.triggers(rand::random()))
        );
        assert!(
            (0..100).all(|_| CleanupPolicy::Probabilistic { one_in: 0 }.triggers(rand::random()))
        );
        assert!(!CleanupPolicy::Off.triggers(0));
    }
}
