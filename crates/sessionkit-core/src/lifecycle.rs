//! The life-cycle rules every session follows, in one place: a session's liveness and
//! deadlines, the touch throttle, the per-owner limit, and when expired sessions are cleaned
//! up; and the state a manager shares with its sessions (store, configuration, clock, hooks,
//! the turns of conditional commits). The manager and the session both build on this module;
//! neither depends on the other's internals.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::id::SessionKey;
use crate::metrics::{Destroyed, InstrumentedStore, Meters, Trigger};
use crate::record::{Record, StoredSession};
use crate::store::{PurgedSession, Store, UnsupportedPolicy};
use crate::time::{Clock, Timestamp};

/// How a session's deadline moves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Expiry {
    /// The manager's idle timeout, extended by activity.
    #[default]
    Default,
    /// This idle timeout instead of the manager's, extended by activity ("remember me").
    OnInactivity(Duration),
    /// A fixed deadline that activity does not extend.
    AtTimestamp(Timestamp),
}

/// When expired sessions are deleted from the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CleanupPolicy {
    /// Never automatically; call [`SessionManager::purge_expired`](crate::SessionManager::purge_expired) or run `sessionkit purge`.
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

/// How many expired records one step of a reporting cleanup deletes (see
/// [`SessionHooks::purged_sessions`]): one store transaction, so one batch of the hook.
pub const PURGE_REPORT_BATCH: usize = 500;

/// The most steps one reporting cleanup runs; what is still expired after
/// `PURGE_REPORT_BATCH * PURGE_REPORT_MAX_BATCHES` records (a million) is left for the next
/// cleanup, so one cleanup always ends, even while sessions expire as fast as it deletes them.
pub const PURGE_REPORT_MAX_BATCHES: usize = 2_000;

/// Lifecycle hooks for audit logs and metrics. They see [`SessionKey`]s (hashes), never ids.
/// Every method has an empty default. Hooks run inline, so keep them quick (queue the work).
///
/// ## Expiry events
///
/// A cleanup (by the [`CleanupPolicy`], or
/// [`SessionManager::purge_expired`](crate::SessionManager::purge_expired)) always calls
/// [`purged`](Self::purged) with the number of records it deleted. To learn *which* sessions
/// expired (an audit log of "session of alice expired"), return `true` from
/// [`wants_purged_sessions`](Self::wants_purged_sessions): on a store with
/// [`Capabilities::reports_purged`](crate::Capabilities::reports_purged), the cleanup then
/// deletes in steps of [`PURGE_REPORT_BATCH`] records through
/// [`Store::delete_expired_batch_reporting`](crate::Store::delete_expired_batch_reporting)
/// (at most [`PURGE_REPORT_MAX_BATCHES`] steps, stopping at the first short step) and calls
/// [`purged_sessions`](Self::purged_sessions) once per step that deleted sessions, before the
/// one `purged` call with the total. Each [`PurgedSession`] carries the key hash, the owner
/// and the deadline; grace-period pointers left by `cycle_id()` are counted in `purged` but
/// never reported as sessions.
///
/// Which stores report: memory, SQLite, file, redb, PostgreSQL and MySQL/MariaDB. On the
/// others, and when no hook asks, the cleanup runs as before
/// ([`Store::delete_expired`](crate::Store::delete_expired), one count), which on PostgreSQL
/// and MySQL lets one server's cleaner work at a time. The reporting path takes no such lock:
/// cleaners on several servers may run at once, and each reports only what it deleted (every
/// session once between them).
///
/// Redis and Memcached expire sessions themselves, silently, so these hooks never hear which
/// sessions expired there (a cleanup finds little or nothing left to delete). On Redis,
/// keyspace notifications (`CONFIG SET notify-keyspace-events Ex`, then `SUBSCRIBE
/// __keyevent@<db>__:expired`) announce each expired Redis key; a session's (or a grace
/// pointer's) is `<namespace>:s:{<key hex>}`, which gives the key hash but not the owner
/// (keep your own key-to-owner record from [`created`](Self::created) if the log needs it).
/// Redis sends them at most once, to the subscribers connected at that moment. Memcached
/// announces nothing.
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
    /// A cleanup deleted `count` expired records (sessions and grace-period pointers). Called
    /// once per cleanup that deleted anything, after any
    /// [`purged_sessions`](Self::purged_sessions) calls of that cleanup.
    fn purged(&self, count: u64) {
        let _ = count;
    }
    /// Whether cleanups should say which sessions they deleted
    /// ([`purged_sessions`](Self::purged_sessions)); default `false`, which keeps the
    /// cheaper one-count cleanup. Asked once per cleanup.
    fn wants_purged_sessions(&self) -> bool {
        false
    }
    /// One step of a cleanup deleted these expired sessions (never an empty slice; at most
    /// [`PURGE_REPORT_BATCH`]). Called only when
    /// [`wants_purged_sessions`](Self::wants_purged_sessions) says so and the store has
    /// [`Capabilities::reports_purged`](crate::Capabilities::reports_purged); see *Expiry
    /// events* above. Every session listed is deleted; a session deleted by a step whose
    /// store call failed goes unreported (the cleanup returns that error).
    fn purged_sessions(&self, batch: &[PurgedSession]) {
        let _ = batch;
    }
}

/// Hooks that do nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHooks;
impl SessionHooks for NoHooks {}

/// The manager's settings. Build with [`SessionManager::builder`](crate::SessionManager::builder); the defaults are documented on
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

async fn background_cleanup(manager: Weak<ManagerInner>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(manager) = manager.upgrade() else {
            return;
        };
        if let Err(err) = manager.purge_expired(Trigger::Background).await {
            tracing::warn!(error = %err, store = manager.store.name(), "session cleanup failed");
        }
    }
}

pub(crate) struct ManagerInner {
    /// The store, measured and traced (`crate::metrics`): every call the manager makes goes
    /// through it.
    pub(crate) store: InstrumentedStore,
    /// The store as the builder was given it, for [`SessionManager::store`](crate::SessionManager::store).
    pub(crate) given: Arc<dyn Store>,
    pub(crate) meters: Meters,
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
    /// Sessions this process found larger than [`crate::PARTIAL_LOAD_ABOVE`]: loaded key by key.
    pub(crate) large_sessions: crate::session::LargeSessions,
}

/// Stripes of [`ManagerInner::update_turns`]: enough that the commits of different sessions
/// rarely share one, since a shared stripe makes one wait for the other's store write
/// (`docs/BENCHMARKS.md`, ninth round, has the measurement).
const UPDATE_TURN_STRIPES: usize = 1024;

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
    /// Checks `config` and starts the shared state of a manager; with
    /// `CleanupPolicy::Background`, spawns the cleanup task, which ends when the state is
    /// dropped.
    pub(crate) fn start(
        store: Arc<dyn Store>,
        config: Config,
        clock: Arc<dyn Clock>,
        hooks: Arc<dyn SessionHooks>,
    ) -> Result<Arc<Self>> {
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
            meters: Meters::new(store.name()),
            store: InstrumentedStore::new(Arc::clone(&store)),
            given: store,
            config,
            clock,
            hooks,
            cleanup_running: AtomicBool::new(false),
            background: Mutex::new(None),
            update_turns: (0..UPDATE_TURN_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            large_sessions: crate::session::LargeSessions::new(),
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
        Ok(inner)
    }

    /// The turn a conditional commit of the session under `key` takes in this process.
    pub(crate) fn update_turn(&self, key: &SessionKey) -> &tokio::sync::Mutex<()> {
        let [a, b, ..] = *key.as_bytes();
        &self.update_turns[usize::from(u16::from_le_bytes([a, b])) % self.update_turns.len()]
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
            if let Err(err) = manager.purge_expired(Trigger::Probabilistic).await {
                tracing::warn!(error = %err, store = manager.store.name(), "session cleanup failed");
            }
            manager.cleanup_running.store(false, Ordering::Release);
        });
    }

    /// Runs one cleanup, started by `trigger`; returns how many records it deleted.
    pub(crate) async fn purge_expired(&self, trigger: Trigger) -> Result<u64> {
        let started = Instant::now();
        let result = self.purge().await;
        self.meters
            .cleanup_run(trigger, result.is_ok(), started.elapsed());
        result
    }

    async fn purge(&self) -> Result<u64> {
        let count =
            if self.hooks.wants_purged_sessions() && self.store.capabilities().reports_purged {
                self.purge_reporting().await?
            } else {
                self.meters.cleanup_batch();
                self.store.delete_expired().await?
            };
        self.purged(count);
        Ok(count)
    }

    /// A cleanup deleted `count` expired records: the hook hears of it (if any) and the
    /// metrics count it.
    fn purged(&self, count: u64) {
        if count > 0 {
            self.hooks.purged(count);
            self.meters.purged(count);
        }
    }

    /// A session was stored for the first time.
    pub(crate) fn session_created(&self, key: &SessionKey, owner: Option<&str>) {
        self.hooks.created(key, owner);
        self.meters.created();
    }

    /// A session moved from `old` to `new`.
    pub(crate) fn session_cycled(&self, old: &SessionKey, new: &SessionKey) {
        self.hooks.cycled(old, new);
        self.meters.cycled();
    }

    /// The session under `key` was ended, for `why`.
    pub(crate) fn session_destroyed(&self, key: &SessionKey, why: Destroyed) {
        self.hooks.destroyed(key);
        self.meters.destroyed(why, 1);
    }

    /// The cleanup that says which sessions it deleted: steps of [`PURGE_REPORT_BATCH`]
    /// records, one `purged_sessions` call per step that deleted sessions, until a short step
    /// or [`PURGE_REPORT_MAX_BATCHES`] steps. Returns how many records it deleted. On a
    /// failed step, `purged` hears of what the earlier steps deleted before the error returns.
    async fn purge_reporting(&self) -> Result<u64> {
        let mut total = 0u64;
        for _ in 0..PURGE_REPORT_MAX_BATCHES {
            self.meters.cleanup_batch();
            let report = match self
                .store
                .delete_expired_batch_reporting(PURGE_REPORT_BATCH)
                .await
            {
                Ok(report) => report,
                Err(err) if err.kind() == ErrorKind::Unsupported => {
                    // A store (or a wrapper that forwards `capabilities` but not this method)
                    // that claims the capability without the operation: the counting cleanup.
                    tracing::warn!(
                        store = self.store.name(),
                        "the session store claims to report purged sessions but does not; cleaning up without reporting"
                    );
                    self.meters.cleanup_batch();
                    return Ok(total + self.store.delete_expired().await?);
                }
                Err(err) => {
                    self.purged(total);
                    return Err(err);
                }
            };
            if !report.sessions.is_empty() {
                self.hooks.purged_sessions(&report.sessions);
            }
            total += report.deleted;
            if report.deleted < PURGE_REPORT_BATCH as u64 {
                break;
            }
        }
        Ok(total)
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
                self.session_destroyed(&session.key, Destroyed::OwnerLimit);
            }
        }
        Ok(())
    }

    /// Whether `record` is live at `now`: not past its deadline nor its absolute lifetime.
    pub(crate) fn is_live(&self, record: &Record, now: Timestamp) -> bool {
        !record.is_expired(now)
            && record
                .created_at
                .saturating_add(self.config.absolute_lifetime)
                > now
    }

    /// The deadline activity at `now` gives a session created at `created_at`.
    pub(crate) fn deadline(
        &self,
        now: Timestamp,
        created_at: Timestamp,
        expiry: Expiry,
    ) -> Timestamp {
        let cap = created_at.saturating_add(self.config.absolute_lifetime);
        let wanted = match expiry {
            Expiry::Default => now.saturating_add(self.config.idle_timeout),
            Expiry::OnInactivity(window) => now.saturating_add(window),
            Expiry::AtTimestamp(at) => at,
        };
        wanted.min(cap)
    }

    /// Whether a read-only request should write the idle deadline: only once it would move by
    /// at least the touch fraction of the idle window.
    pub(crate) fn touch_due(&self, current: Timestamp, target: Timestamp, expiry: Expiry) -> bool {
        let window = match expiry {
            Expiry::Default => self.config.idle_timeout,
            Expiry::OnInactivity(window) => window,
            Expiry::AtTimestamp(_) => return false,
        };
        target > current
            && target.duration_since(current) >= window.mul_f64(self.config.touch_fraction)
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
