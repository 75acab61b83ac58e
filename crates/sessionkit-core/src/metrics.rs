//! Metrics and spans: what a [`SessionManager`](crate::SessionManager) reports, under which
//! names and labels.
//!
//! sessionkit records through the [`metrics`](https://docs.rs/metrics) facade (0.24) and
//! installs no recorder: without one, every measurement is dropped at the cost of a few
//! branches. To see them, install a recorder or an exporter once, at start, in the
//! application (the demo, `sessionkit demo`, serves them at `/metrics` with
//! `metrics-exporter-prometheus`), and call [`describe`] after it to give each metric its
//! help text and unit:
//!
//! ```
//! use metrics_util::debugging::{DebugValue, DebuggingRecorder};
//! use sessionkit_core::SessionManager;
//! use sessionkit_memory::MemoryStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> sessionkit_core::Result<()> {
//! // Once, at start. An application installs its exporter's recorder here
//! // (`metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()`, say);
//! // this one keeps the values for reading them back.
//! let recorder = DebuggingRecorder::new();
//! let snapshotter = recorder.snapshotter();
//! recorder.install().expect("the process's first recorder");
//! sessionkit_core::metrics::describe();
//!
//! let manager = SessionManager::builder(MemoryStore::new()).build()?;
//! let session = manager.session(None);
//! session.insert("visits", &1u32).await?;
//! let _ = session.commit().await?;
//!
//! let created = snapshotter.snapshot().into_vec().into_iter().find_map(|(key, _, _, value)| {
//!     (key.key().name() == sessionkit_core::metrics::SESSIONS_CREATED).then_some(value)
//! });
//! assert_eq!(created, Some(DebugValue::Counter(1)));
//! # Ok(())
//! # }
//! ```
//!
//! Everything below comes from the manager: the store calls it makes (so also the calls of
//! sessions, cleanups and the admin operations on the manager), and the life-cycle events
//! its [`SessionHooks`](crate::SessionHooks) hear. Calls made on
//! [`SessionManager::store`](crate::SessionManager::store) directly, which is the store as
//! it was given to the builder, are not measured.
//!
//! ## Metrics
//!
//! | name | type | labels | what it measures |
//! | --- | --- | --- | --- |
//! | `sessionkit_store_operation_duration_seconds` | histogram | `store`, `operation` | every store call, successful or not, in seconds: its count is the number of calls |
//! | `sessionkit_store_errors_total` | counter | `store`, `operation`, `kind` | store calls that returned an error |
//! | `sessionkit_sessions_created_total` | counter | `store` | sessions stored for the first time |
//! | `sessionkit_sessions_destroyed_total` | counter | `store`, `reason` | sessions ended: `destroy` ([`Session::destroy`](crate::Session::destroy), logout), `revoke` (the manager's `revoke`, `revoke_others`, `revoke_owner`), `owner_limit` (evicted by the per-owner limit) |
//! | `sessionkit_sessions_cycled_total` | counter | `store` | sessions moved to a new id ([`Session::cycle_id`](crate::Session::cycle_id)) |
//! | `sessionkit_sessions_purged_total` | counter | `store` | expired records a cleanup deleted (sessions and grace-period pointers: what [`SessionHooks::purged`](crate::SessionHooks::purged) hears) |
//! | `sessionkit_update_conflicts_total` | counter | `store` | conditional writes the store refused because a key changed since it was read ([`Session::update`](crate::Session::update), taking flash messages) |
//! | `sessionkit_update_retries_total` | counter | `store` | re-reads of the keys after a conflict, before the next try |
//! | `sessionkit_update_failures_total` | counter | `store`, `reason` | commits given up with [`ErrorKind::Conflict`]: `attempts` ([`UPDATE_ATTEMPTS`](crate::UPDATE_ATTEMPTS) conflicts in a row), `unsure` (an earlier try failed in a way that may have written) |
//! | `sessionkit_cleanup_runs_total` | counter | `store`, `trigger`, `outcome` | cleanups of expired sessions: `trigger` is `probabilistic` or `background` (the [`CleanupPolicy`](crate::CleanupPolicy)) or `manual` ([`SessionManager::purge_expired`](crate::SessionManager::purge_expired)); `outcome` is `ok` or `error` |
//! | `sessionkit_cleanup_batches_total` | counter | `store` | store calls the cleanups made: one per `delete_expired`, one per step of a cleanup that reports the sessions it deleted |
//! | `sessionkit_cleanup_duration_seconds` | histogram | `store` | how long each cleanup took, in seconds |
//!
//! ## Labels
//!
//! Every label value comes from a small fixed set; no label ever holds a session id, a key
//! hash, an owner or any other data of a session.
//!
//! | label | values |
//! | --- | --- |
//! | `store` | the store's [`Store::name`]: `memory`, `sqlite`, `file`, `redb`, `postgres`, `mysql`, `redis`, `memcached` (or a custom store's) |
//! | `operation` | `create`, `load`, `load_keys`, `apply`, `touch`, `delete`, `cycle`, `delete_expired`, `delete_expired_batch_reporting`, `by_owner`, `delete_by_owner` (the [`Store`] methods the manager calls) |
//! | `kind` | `backend`, `unavailable`, `codec`, `conflict`, `gone`, `unsupported`, `too_large`, `config`, `superseded` (the [`ErrorKind`]) |
//! | `reason`, `trigger`, `outcome` | as in the table above |
//!
//! Useful queries: the error rate of a store is `sessionkit_store_errors_total` over the
//! histogram's `_count`; the share of `update`s that meet a conflict is
//! `sessionkit_update_conflicts_total` over the `apply` count; `sessionkit_update_failures_total`
//! is what the web integrations answered with 409.
//!
//! ## Spans
//!
//! Every store call runs in a `DEBUG` span named `sessionkit.store`, target
//! [`SPAN_TARGET`] (`sessionkit::store`), with the fields `store`, `operation` (the label
//! values above), `key` (the first 12 hex digits of the session's [`SessionKey`],
//! as in sessionkit's log lines; absent for calls that name no session) and, when the call
//! returns, `outcome`: `ok`, `found` or `missing` (loads), `applied`, `gone` or `conflict`
//! (apply, touch), `deleted` or `missing` (delete), `cycled` or `gone` (cycle), or `error`,
//! with `error_kind` then set to the `kind` value above. With a subscriber that times spans
//! (`tracing-subscriber`'s `fmt` with `FmtSpan::CLOSE`, OpenTelemetry), a slow request shows
//! which store call was slow; `RUST_LOG=sessionkit::store=debug` turns them on.
//!
//! ## What it costs
//!
//! With no recorder and no subscriber at debug level, each store call pays for two clock
//! reads, a thread-local and two atomic loads (the recorder, the tracing level) and a few
//! branches: no allocation, no span. Measured in instructions per request (callgrind, the
//! benchmark's in-process app on the memory store): `/read` +1.2 %, `/incr` +4.9 %, most of
//! it a larger request future; `docs/BENCHMARKS.md` ("Twelfth round") has the figures.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::metrics::{Key, Label, Level, Metadata, Unit};
use tracing::Instrument as _;

use crate::change::{ApplyOutcome, Change};
use crate::error::{ErrorKind, Result};
use crate::id::SessionKey;
use crate::record::{Record, StoredSession};
use crate::store::{Capabilities, CycleOutcome, PurgeReport, Store};
use crate::time::Timestamp;

/// Histogram: the duration of every store call, in seconds, by `store` and `operation`.
pub const STORE_OPERATION_DURATION: &str = "sessionkit_store_operation_duration_seconds";
/// Counter: store calls that returned an error, by `store`, `operation` and `kind`.
pub const STORE_ERRORS: &str = "sessionkit_store_errors_total";
/// Counter: sessions stored for the first time, by `store`.
pub const SESSIONS_CREATED: &str = "sessionkit_sessions_created_total";
/// Counter: sessions ended, by `store` and `reason` (`destroy`, `revoke`, `owner_limit`).
pub const SESSIONS_DESTROYED: &str = "sessionkit_sessions_destroyed_total";
/// Counter: sessions moved to a new id, by `store`.
pub const SESSIONS_CYCLED: &str = "sessionkit_sessions_cycled_total";
/// Counter: expired records (sessions and grace-period pointers) cleanups deleted, by `store`.
pub const SESSIONS_PURGED: &str = "sessionkit_sessions_purged_total";
/// Counter: conditional writes refused because a key changed since it was read, by `store`.
pub const UPDATE_CONFLICTS: &str = "sessionkit_update_conflicts_total";
/// Counter: re-reads of the conflicting keys before another try, by `store`.
pub const UPDATE_RETRIES: &str = "sessionkit_update_retries_total";
/// Counter: commits given up with a conflict error, by `store` and `reason` (`attempts`,
/// `unsure`).
pub const UPDATE_FAILURES: &str = "sessionkit_update_failures_total";
/// Counter: cleanups of expired sessions, by `store`, `trigger` (`probabilistic`,
/// `background`, `manual`) and `outcome` (`ok`, `error`).
pub const CLEANUP_RUNS: &str = "sessionkit_cleanup_runs_total";
/// Counter: store calls the cleanups made (`delete_expired`, or steps of a reporting cleanup),
/// by `store`.
pub const CLEANUP_BATCHES: &str = "sessionkit_cleanup_batches_total";
/// Histogram: how long each cleanup took, in seconds, by `store`.
pub const CLEANUP_DURATION: &str = "sessionkit_cleanup_duration_seconds";

/// The target of the store-call spans, for filters (`RUST_LOG=sessionkit::store=debug`).
pub const SPAN_TARGET: &str = "sessionkit::store";

/// Gives every metric above its unit and help text in the installed recorder (Prometheus
/// prints them as `# HELP` and `# TYPE` lines). Call it once, after installing the recorder;
/// the metrics work without it.
pub fn describe() {
    for (name, unit, help) in DESCRIPTIONS {
        match unit {
            Some(unit) => ::metrics::describe_histogram!(name, unit, help),
            None => ::metrics::describe_counter!(name, help),
        }
    }
}

/// Each metric's name, unit (histograms: seconds; counters: none) and help text.
const DESCRIPTIONS: [(&str, Option<Unit>, &str); 12] = [
    (
        STORE_OPERATION_DURATION,
        Some(Unit::Seconds),
        "Duration of session store calls, by store and operation.",
    ),
    (
        STORE_ERRORS,
        None,
        "Session store calls that returned an error, by store, operation and error kind.",
    ),
    (
        SESSIONS_CREATED,
        None,
        "Sessions stored for the first time.",
    ),
    (
        SESSIONS_DESTROYED,
        None,
        "Sessions ended, by reason (destroy, revoke, owner_limit).",
    ),
    (SESSIONS_CYCLED, None, "Sessions moved to a new id."),
    (
        SESSIONS_PURGED,
        None,
        "Expired records (sessions and grace-period pointers) deleted by cleanups.",
    ),
    (
        UPDATE_CONFLICTS,
        None,
        "Conditional session writes refused because a key changed since it was read.",
    ),
    (
        UPDATE_RETRIES,
        None,
        "Re-reads of conflicting keys before another try.",
    ),
    (
        UPDATE_FAILURES,
        None,
        "Commits given up with a conflict error, by reason (attempts, unsure).",
    ),
    (
        CLEANUP_RUNS,
        None,
        "Cleanups of expired sessions, by trigger and outcome.",
    ),
    (CLEANUP_BATCHES, None, "Store calls made by cleanups."),
    (
        CLEANUP_DURATION,
        Some(Unit::Seconds),
        "Duration of cleanups of expired sessions.",
    ),
];

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// A key with the `store` label and `labels`, built once (a key built per call would
/// allocate its label list on every store call, recorder or not).
fn key(name: &'static str, store: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
    let mut all = Vec::with_capacity(labels.len() + 1);
    all.push(Label::from_static_parts("store", store));
    all.extend(
        labels
            .iter()
            .map(|&(label, value)| Label::from_static_parts(label, value)),
    );
    Key::from_parts(name, all)
}

fn increment(key: &Key, by: u64) {
    ::metrics::with_recorder(|recorder| recorder.register_counter(key, &METADATA).increment(by));
}

fn record_duration(key: &Key, elapsed: Duration) {
    ::metrics::with_recorder(|recorder| {
        recorder
            .register_histogram(key, &METADATA)
            .record(elapsed.as_secs_f64());
    });
}

/// The `kind` label of an error kind.
fn kind_label(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Backend => "backend",
        ErrorKind::Unavailable => "unavailable",
        ErrorKind::Codec => "codec",
        ErrorKind::Conflict => "conflict",
        ErrorKind::Gone => "gone",
        ErrorKind::Unsupported => "unsupported",
        ErrorKind::TooLarge => "too_large",
        ErrorKind::Config => "config",
        ErrorKind::Superseded => "superseded",
    }
}

/// Why a session was destroyed (the `reason` label).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Destroyed {
    Destroy,
    Revoke,
    OwnerLimit,
}

/// Why a commit gave up (the `reason` label).
#[derive(Clone, Copy, Debug)]
pub(crate) enum UpdateFailure {
    Attempts,
    Unsure,
}

/// What started a cleanup (the `trigger` label).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Trigger {
    Probabilistic,
    Background,
    Manual,
}

/// The life-cycle metrics of one manager, their keys built once for its store.
pub(crate) struct Meters {
    created: Key,
    destroyed: [Key; 3],
    cycled: Key,
    purged: Key,
    conflicts: Key,
    retries: Key,
    failures: [Key; 2],
    cleanup_runs: [[Key; 2]; 3],
    cleanup_batches: Key,
    cleanup_duration: Key,
}

impl Meters {
    pub(crate) fn new(store: &'static str) -> Self {
        let reason = |name, reason| key(name, store, &[("reason", reason)]);
        let run = |trigger| {
            [
                key(
                    CLEANUP_RUNS,
                    store,
                    &[("trigger", trigger), ("outcome", "ok")],
                ),
                key(
                    CLEANUP_RUNS,
                    store,
                    &[("trigger", trigger), ("outcome", "error")],
                ),
            ]
        };
        Self {
            created: key(SESSIONS_CREATED, store, &[]),
            destroyed: [
                reason(SESSIONS_DESTROYED, "destroy"),
                reason(SESSIONS_DESTROYED, "revoke"),
                reason(SESSIONS_DESTROYED, "owner_limit"),
            ],
            cycled: key(SESSIONS_CYCLED, store, &[]),
            purged: key(SESSIONS_PURGED, store, &[]),
            conflicts: key(UPDATE_CONFLICTS, store, &[]),
            retries: key(UPDATE_RETRIES, store, &[]),
            failures: [
                reason(UPDATE_FAILURES, "attempts"),
                reason(UPDATE_FAILURES, "unsure"),
            ],
            cleanup_runs: [run("probabilistic"), run("background"), run("manual")],
            cleanup_batches: key(CLEANUP_BATCHES, store, &[]),
            cleanup_duration: key(CLEANUP_DURATION, store, &[]),
        }
    }

    pub(crate) fn created(&self) {
        increment(&self.created, 1);
    }

    pub(crate) fn destroyed(&self, why: Destroyed, count: u64) {
        increment(&self.destroyed[why as usize], count);
    }

    pub(crate) fn cycled(&self) {
        increment(&self.cycled, 1);
    }

    pub(crate) fn purged(&self, count: u64) {
        increment(&self.purged, count);
    }

    pub(crate) fn conflict(&self) {
        increment(&self.conflicts, 1);
    }

    pub(crate) fn retry(&self) {
        increment(&self.retries, 1);
    }

    pub(crate) fn update_failed(&self, why: UpdateFailure) {
        increment(&self.failures[why as usize], 1);
    }

    pub(crate) fn cleanup_batch(&self) {
        increment(&self.cleanup_batches, 1);
    }

    pub(crate) fn cleanup_run(&self, trigger: Trigger, ok: bool, elapsed: Duration) {
        increment(&self.cleanup_runs[trigger as usize][usize::from(!ok)], 1);
        record_duration(&self.cleanup_duration, elapsed);
    }
}

/// The store calls (the `operation` label), in the order of [`InstrumentedStore::durations`].
#[derive(Clone, Copy, Debug)]
enum Operation {
    Create,
    Load,
    LoadKeys,
    Apply,
    Touch,
    Delete,
    Cycle,
    DeleteExpired,
    DeleteExpiredBatchReporting,
    ByOwner,
    DeleteByOwner,
}

impl Operation {
    const ALL: [Self; 11] = [
        Self::Create,
        Self::Load,
        Self::LoadKeys,
        Self::Apply,
        Self::Touch,
        Self::Delete,
        Self::Cycle,
        Self::DeleteExpired,
        Self::DeleteExpiredBatchReporting,
        Self::ByOwner,
        Self::DeleteByOwner,
    ];

    const fn label(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Load => "load",
            Self::LoadKeys => "load_keys",
            Self::Apply => "apply",
            Self::Touch => "touch",
            Self::Delete => "delete",
            Self::Cycle => "cycle",
            Self::DeleteExpired => "delete_expired",
            Self::DeleteExpiredBatchReporting => "delete_expired_batch_reporting",
            Self::ByOwner => "by_owner",
            Self::DeleteByOwner => "delete_by_owner",
        }
    }
}

/// The first 12 hex digits of a key, written into the span without building a string unless
/// a subscriber records it.
struct ShortKey<'a>(&'a SessionKey);

impl fmt::Display for ShortKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.write_short(f)
    }
}

/// The store as the manager uses it: every call timed into
/// [`STORE_OPERATION_DURATION`], its errors counted, and run in a span.
pub(crate) struct InstrumentedStore {
    inner: Arc<dyn Store>,
    store: &'static str,
    durations: [Key; Operation::ALL.len()],
}

impl InstrumentedStore {
    pub(crate) fn new(inner: Arc<dyn Store>) -> Self {
        let store = inner.name();
        Self {
            durations: Operation::ALL.map(|op| {
                key(
                    STORE_OPERATION_DURATION,
                    store,
                    &[("operation", op.label())],
                )
            }),
            inner,
            store,
        }
    }

    /// The store this one measures, as a trait object: calling through it reaches the
    /// backend's method directly (a call on the `Arc` would go through `Arc`'s own `Store`
    /// impl first, one more boxed future per call).
    fn inner(&self) -> &dyn Store {
        &*self.inner
    }

    /// Runs `call` (in the operation's span, if anything wants its level), then records its
    /// duration and its error kind.
    async fn observe<T>(
        &self,
        operation: Operation,
        key: Option<&SessionKey>,
        call: impl Future<Output = Result<T>>,
        outcome: impl FnOnce(&T) -> &'static str,
    ) -> Result<T> {
        let started = Instant::now();
        let result = if spans_wanted() {
            // Boxed: inline, the span's state would grow every future that awaits a store
            // call (a request's whole future among them, which the web layer boxes) for a
            // branch that runs only with a subscriber at debug level.
            Box::pin(self.traced(operation, key, call, outcome)).await
        } else {
            call.await
        };
        record_duration(&self.durations[operation as usize], started.elapsed());
        if let Err(err) = &result {
            // Errors are rare: their key (three labels) is built when one happens.
            let kind = kind_label(err.kind());
            increment(&key_for_error(self.store, operation, kind), 1);
        }
        result
    }

    /// Runs `call` in the operation's span and records its outcome there (named by
    /// `outcome` when it succeeds).
    async fn traced<T>(
        &self,
        operation: Operation,
        key: Option<&SessionKey>,
        call: impl Future<Output = Result<T>>,
        outcome: impl FnOnce(&T) -> &'static str,
    ) -> Result<T> {
        let span = tracing::debug_span!(
            target: SPAN_TARGET,
            "sessionkit.store",
            store = self.store,
            operation = operation.label(),
            key = key.map(|key| tracing::field::display(ShortKey(key))),
            outcome = tracing::field::Empty,
            error_kind = tracing::field::Empty,
        );
        let result = call.instrument(span.clone()).await;
        match &result {
            Ok(value) => {
                span.record("outcome", outcome(value));
            }
            Err(err) => {
                span.record("outcome", "error");
                span.record("error_kind", kind_label(err.kind()));
            }
        }
        result
    }
}

/// Whether any subscriber may want a `DEBUG` span: one atomic load. Without the check, a
/// disabled span still costs its creation, its drop and, when some crate turns on `tracing`'s
/// `log` feature, a check of the `log` crate's level at each of them (about 500 instructions
/// per store call, measured with callgrind).
fn spans_wanted() -> bool {
    tracing::Level::DEBUG <= tracing::level_filters::STATIC_MAX_LEVEL
        && tracing::Level::DEBUG <= tracing::level_filters::LevelFilter::current()
}

fn key_for_error(store: &'static str, operation: Operation, kind: &'static str) -> Key {
    key(
        STORE_ERRORS,
        store,
        &[("operation", operation.label()), ("kind", kind)],
    )
}

fn ok<T>(_: &T) -> &'static str {
    "ok"
}

fn found(record: &Option<Record>) -> &'static str {
    if record.is_some() { "found" } else { "missing" }
}

fn applied(outcome: &ApplyOutcome) -> &'static str {
    match outcome {
        ApplyOutcome::Applied { .. } => "applied",
        ApplyOutcome::Gone => "gone",
        ApplyOutcome::Conflict => "conflict",
    }
}

/// The [`Store`] methods the manager calls, each forwarded to the same method of the store
/// (default methods included, so a backend's overrides run). Inherent methods rather than a `Store` impl: the
/// manager calls them on this type directly, so a call boxes one future (the backend's), as it
/// did before the store was measured.
impl InstrumentedStore {
    pub(crate) fn name(&self) -> &'static str {
        self.store
    }

    pub(crate) fn capabilities(&self) -> Capabilities {
        self.inner().capabilities()
    }

    pub(crate) async fn create(&self, key: &SessionKey, record: &Record) -> Result<()> {
        let call = self.inner().create(key, record);
        self.observe(Operation::Create, Some(key), call, ok).await
    }

    pub(crate) async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let call = self.inner().load(key);
        self.observe(Operation::Load, Some(key), call, found).await
    }

    pub(crate) async fn load_keys(
        &self,
        key: &SessionKey,
        keys: &[&str],
    ) -> Result<Option<Record>> {
        let call = self.inner().load_keys(key, keys);
        self.observe(Operation::LoadKeys, Some(key), call, found)
            .await
    }

    pub(crate) async fn apply(&self, key: &SessionKey, change: &Change) -> Result<ApplyOutcome> {
        let call = self.inner().apply(key, change);
        self.observe(Operation::Apply, Some(key), call, applied)
            .await
    }

    pub(crate) async fn touch(
        &self,
        key: &SessionKey,
        expires_at: Timestamp,
    ) -> Result<ApplyOutcome> {
        let call = self.inner().touch(key, expires_at);
        self.observe(Operation::Touch, Some(key), call, applied)
            .await
    }

    pub(crate) async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let call = self.inner().delete(key);
        self.observe(Operation::Delete, Some(key), call, |existed| {
            if *existed { "deleted" } else { "missing" }
        })
        .await
    }

    pub(crate) async fn cycle(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        grace_until: Option<Timestamp>,
    ) -> Result<CycleOutcome> {
        let call = self.inner().cycle(old, new, grace_until);
        self.observe(Operation::Cycle, Some(old), call, |outcome| match outcome {
            CycleOutcome::Cycled => "cycled",
            CycleOutcome::Gone => "gone",
        })
        .await
    }

    pub(crate) async fn delete_expired(&self) -> Result<u64> {
        let call = self.inner().delete_expired();
        self.observe(Operation::DeleteExpired, None, call, ok).await
    }

    pub(crate) async fn delete_expired_batch_reporting(&self, limit: usize) -> Result<PurgeReport> {
        let call = self.inner().delete_expired_batch_reporting(limit);
        self.observe(Operation::DeleteExpiredBatchReporting, None, call, ok)
            .await
    }

    pub(crate) async fn by_owner(&self, owner: &str) -> Result<Vec<StoredSession>> {
        let call = self.inner().by_owner(owner);
        self.observe(Operation::ByOwner, None, call, ok).await
    }

    pub(crate) async fn delete_by_owner(&self, owner: &str) -> Result<u64> {
        let call = self.inner().delete_by_owner(owner);
        self.observe(Operation::DeleteByOwner, None, call, ok).await
    }
}
