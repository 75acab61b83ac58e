//! The manager's metrics (`sessionkit_core::metrics`): each life-cycle event moves its
//! counter, every store call is timed under the right labels, errors are counted by kind, and
//! no label holds an id, a key hash or an owner. Driven over the memory store with a recorder
//! local to the test's thread (`store_spans.rs` has the spans).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use sessionkit_core::metrics::{
    CLEANUP_BATCHES, CLEANUP_DURATION, CLEANUP_RUNS, SESSIONS_CREATED, SESSIONS_CYCLED,
    SESSIONS_DESTROYED, SESSIONS_PURGED, STORE_ERRORS, STORE_OPERATION_DURATION, UPDATE_CONFLICTS,
    UPDATE_FAILURES, UPDATE_RETRIES,
};
use sessionkit_core::{
    ApplyOutcome, Capabilities, Change, CleanupPolicy, CookieUpdate, CycleOutcome, Error,
    ErrorKind, ListFilter, ManualClock, Page, PageRequest, Record, Result, SessionId, SessionKey,
    SessionManager, Store, StoredSession, Timestamp, UPDATE_ATTEMPTS, async_trait,
};
use sessionkit_memory::MemoryStore;

const HOUR: Duration = Duration::from_secs(3600);

/// Every value a label may take (the table in the `metrics` module docs).
const LABEL_VALUES: &[&str] = &[
    // store
    "memory",
    "faulty",
    // operation
    "create",
    "load",
    "load_keys",
    "apply",
    "touch",
    "delete",
    "cycle",
    "delete_expired",
    "delete_expired_batch_reporting",
    "by_owner",
    "delete_by_owner",
    // kind
    "backend",
    "unavailable",
    "codec",
    "conflict",
    "gone",
    "unsupported",
    "too_large",
    "config",
    "superseded",
    // reason, trigger, outcome
    "destroy",
    "revoke",
    "owner_limit",
    "attempts",
    "unsure",
    "probabilistic",
    "background",
    "manual",
    "ok",
    "error",
];

/// What a recorder saw: each metric's name, labels, and value (a counter's count, or the
/// number of a histogram's samples).
struct Recorded {
    rows: Vec<(Kind, String, BTreeMap<String, String>, u64)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Histogram,
}

impl Recorded {
    fn take(snapshotter: &Snapshotter) -> Self {
        let rows = snapshotter.snapshot().into_vec().into_iter();
        let rows = rows.map(|(key, _, _, value)| {
            let key = key.key();
            let labels = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            let name = key.name().to_owned();
            match value {
                DebugValue::Counter(n) => (Kind::Counter, name, labels, n),
                DebugValue::Histogram(samples) => {
                    (Kind::Histogram, name, labels, samples.len() as u64)
                }
                DebugValue::Gauge(_) => panic!("sessionkit records no gauges: {name}"),
            }
        });
        Self {
            rows: rows.collect(),
        }
    }

    /// The sum of the values of the `kind` metrics named `name` whose labels include `labels`.
    fn total(&self, kind: Kind, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.rows
            .iter()
            .filter(|(k, n, l, _)| *k == kind && n == name && matches(l, labels))
            .map(|(_, _, _, value)| value)
            .sum()
    }

    /// The sum of the counters named `name` whose labels include `labels`.
    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.total(Kind::Counter, name, labels)
    }

    /// The number of samples of the histograms named `name` whose labels include `labels`.
    fn samples(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.total(Kind::Histogram, name, labels)
    }

    /// Every label of every metric, with the metric's name.
    fn labels(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.rows.iter().flat_map(|(_, name, labels, _)| {
            labels
                .iter()
                .map(move |(k, v)| (name.as_str(), k.as_str(), v.as_str()))
        })
    }

    /// Every label value is one of the fixed set, and none is (or holds) a secret.
    fn assert_labels_clean(&self, secrets: &[String]) {
        for (name, label, value) in self.labels() {
            assert!(
                LABEL_VALUES.contains(&value),
                "{name}: label {label}={value:?} is not one of the documented values"
            );
            for secret in secrets {
                assert!(
                    !value.contains(secret.as_str()),
                    "{name}: label {label} holds session data"
                );
            }
        }
    }
}

fn matches(have: &BTreeMap<String, String>, want: &[(&str, &str)]) -> bool {
    want.iter()
        .all(|(k, v)| have.get(*k).is_some_and(|have| have == v))
}

/// Commits `session` and returns the id its cookie now carries.
async fn commit_id(session: &sessionkit_core::Session) -> SessionId {
    match session.commit().await.expect("commit").cookie {
        CookieUpdate::Set { id, .. } => id,
        other => panic!("expected a cookie, got {other:?}"),
    }
}

/// Secrets a label must never hold: the id, the key hash (whole and short) of each session.
fn secrets_of(ids: &[&SessionId]) -> Vec<String> {
    ids.iter()
        .flat_map(|id| [id.expose(), id.key().to_hex(), id.key().short()])
        .collect()
}

#[tokio::test]
async fn each_life_cycle_event_moves_its_counter() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _recording = metrics::set_default_local_recorder(&recorder);

    let clock = ManualClock::new(Timestamp::from_millis(1_000_000));
    let manager = SessionManager::builder(MemoryStore::with_clock(clock.clone()))
        .clock(clock.clone())
        .idle_timeout(HOUR)
        .cleanup(CleanupPolicy::Off)
        .max_sessions_per_owner(Some(1))
        .build()
        .expect("manager");

    // Created.
    let first = manager.session(None);
    first.insert("n", &1u32).await.expect("insert");
    let id = commit_id(&first).await;

    // Two requests read the counter, both update it: the second meets one conflict and
    // re-runs its update on the fresh value.
    let a = manager.session(Some(&id.expose()));
    let b = manager.session(Some(&id.expose()));
    assert_eq!(a.get::<u32>("n").await.expect("get"), Some(1));
    assert_eq!(b.get::<u32>("n").await.expect("get"), Some(1));
    a.update("n", |n: &mut u32| *n += 1).await.expect("update");
    let _ = a.commit().await.expect("commit");
    b.update("n", |n: &mut u32| *n += 1).await.expect("update");
    let _ = b.commit().await.expect("commit");

    // Cycled, then signed in as alice.
    let login = manager.session(Some(&id.expose()));
    login.cycle_id().await.expect("cycle");
    login.set_owner(Some("alice")).await.expect("owner");
    let alice_old = commit_id(&login).await;
    assert_eq!(login.get::<u32>("n").await.expect("get"), Some(3));

    // A second session of alice evicts the first (the limit is one).
    let second = manager.session(None);
    second.set_owner(Some("alice")).await.expect("owner");
    second.insert("n", &1u32).await.expect("insert");
    let alice_new = commit_id(&second).await;

    // Destroyed by its own request, and revoked by key.
    let gone = manager.session(Some(&alice_new.expose()));
    gone.destroy().await.expect("destroy");
    let _ = gone.commit().await.expect("commit");
    let revoked = manager.session(None);
    revoked.insert("n", &1u32).await.expect("insert");
    let revoked_id = commit_id(&revoked).await;
    assert!(manager.revoke(&revoked_id.key()).await.expect("revoke"));

    // Expired and purged: the session left, and the grace pointer of the cycle.
    let stale = manager.session(None);
    stale.insert("n", &1u32).await.expect("insert");
    let stale_id = commit_id(&stale).await;
    clock.advance(2 * HOUR);
    let purged = manager.purge_expired().await.expect("purge");
    assert!(purged >= 2, "{purged}");

    let seen = Recorded::take(&snapshotter);
    let memory = ("store", "memory");
    assert_eq!(seen.counter(SESSIONS_CREATED, &[memory]), 4);
    assert_eq!(seen.counter(SESSIONS_CYCLED, &[memory]), 1);
    assert_eq!(seen.counter(UPDATE_CONFLICTS, &[memory]), 1);
    assert_eq!(seen.counter(UPDATE_RETRIES, &[memory]), 1);
    assert_eq!(seen.counter(UPDATE_FAILURES, &[memory]), 0);
    for (reason, count) in [("owner_limit", 1), ("destroy", 1), ("revoke", 1)] {
        assert_eq!(
            seen.counter(SESSIONS_DESTROYED, &[memory, ("reason", reason)]),
            count,
            "{reason}"
        );
    }
    assert_eq!(seen.counter(SESSIONS_PURGED, &[memory]), purged);
    assert_eq!(
        seen.counter(
            CLEANUP_RUNS,
            &[memory, ("trigger", "manual"), ("outcome", "ok")]
        ),
        1
    );
    assert_eq!(seen.counter(CLEANUP_BATCHES, &[memory]), 1);
    assert_eq!(seen.samples(CLEANUP_DURATION, &[memory]), 1);
    assert_eq!(seen.counter(STORE_ERRORS, &[]), 0);

    // Every store call timed, by operation.
    let op = |name| seen.samples(STORE_OPERATION_DURATION, &[memory, ("operation", name)]);
    assert_eq!(op("create"), 4);
    assert_eq!(op("cycle"), 1);
    assert_eq!(op("delete_expired"), 1);
    assert_eq!(
        op("by_owner"),
        2,
        "the per-owner limit, at each sign-in of alice"
    );
    assert!(op("load") >= 4, "{}", op("load"));
    assert_eq!(op("load_keys"), 1, "the re-read after the conflict");
    assert!(op("apply") >= 3, "{}", op("apply"));
    assert!(op("delete") >= 3, "{}", op("delete"));

    let mut secrets = secrets_of(&[&id, &alice_old, &alice_new, &revoked_id, &stale_id]);
    secrets.push("alice".to_owned());
    seen.assert_labels_clean(&secrets);
    // Only the manager's calls are measured, not calls on the store it hands out.
    let _ = manager.store().load(&id.key()).await.expect("load");
    assert_eq!(
        Recorded::take(&snapshotter).samples(STORE_OPERATION_DURATION, &[]),
        0
    );
}

/// The memory store, able to refuse every conditional write (`Conflict`) and to fail loads;
/// counts the calls of its own `load_keys`, to show the manager's wrapper forwards it.
struct Faulty {
    inner: MemoryStore,
    conflicts: AtomicBool,
    unavailable: AtomicBool,
    load_keys_calls: AtomicUsize,
}

#[async_trait]
impl Store for Faulty {
    fn name(&self) -> &'static str {
        "faulty"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn create(&self, key: &SessionKey, record: &Record) -> Result<()> {
        self.inner.create(key, record).await
    }
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        if self.unavailable.load(Ordering::Relaxed) {
            return Err(Error::unavailable(
                "the test store is down",
                std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            ));
        }
        self.inner.load(key).await
    }
    async fn load_keys(&self, key: &SessionKey, keys: &[&str]) -> Result<Option<Record>> {
        self.load_keys_calls.fetch_add(1, Ordering::Relaxed);
        self.inner.load_keys(key, keys).await
    }
    async fn apply(&self, key: &SessionKey, change: &Change) -> Result<ApplyOutcome> {
        if self.conflicts.load(Ordering::Relaxed) && !change.expected.is_empty() {
            return Ok(ApplyOutcome::Conflict);
        }
        self.inner.apply(key, change).await
    }
    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        self.inner.delete(key).await
    }
    async fn cycle(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        grace_until: Option<Timestamp>,
    ) -> Result<CycleOutcome> {
        self.inner.cycle(old, new, grace_until).await
    }
    async fn delete_expired(&self) -> Result<u64> {
        self.inner.delete_expired().await
    }
    async fn list(&self, filter: &ListFilter, page: PageRequest) -> Result<Page> {
        self.inner.list(filter, page).await
    }
    async fn by_owner(&self, owner: &str) -> Result<Vec<StoredSession>> {
        self.inner.by_owner(owner).await
    }
    async fn delete_by_owner(&self, owner: &str) -> Result<u64> {
        self.inner.delete_by_owner(owner).await
    }
}

#[tokio::test]
async fn failed_updates_and_store_errors_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _recording = metrics::set_default_local_recorder(&recorder);

    let store = Arc::new(Faulty {
        inner: MemoryStore::new(),
        conflicts: AtomicBool::new(false),
        unavailable: AtomicBool::new(false),
        load_keys_calls: AtomicUsize::new(0),
    });
    let manager = SessionManager::builder(Arc::clone(&store) as Arc<dyn Store>)
        .cleanup(CleanupPolicy::Off)
        .build()
        .expect("manager");
    let session = manager.session(None);
    session.insert("n", &1u32).await.expect("insert");
    let id = commit_id(&session).await;

    // Every conditional write conflicts: the commit gives up after UPDATE_ATTEMPTS rounds.
    store.conflicts.store(true, Ordering::Relaxed);
    let session = manager.session(Some(&id.expose()));
    session
        .update("n", |n: &mut u32| *n += 1)
        .await
        .expect("update");
    let err = session.commit().await.expect_err("gives up");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    store.conflicts.store(false, Ordering::Relaxed);

    // The store is down.
    store.unavailable.store(true, Ordering::Relaxed);
    let session = manager.session(Some(&id.expose()));
    let err = session.get::<u32>("n").await.expect_err("down");
    assert_eq!(err.kind(), ErrorKind::Unavailable);

    let seen = Recorded::take(&snapshotter);
    let faulty = ("store", "faulty");
    let attempts = u64::from(UPDATE_ATTEMPTS);
    assert_eq!(seen.counter(UPDATE_CONFLICTS, &[faulty]), attempts);
    assert_eq!(seen.counter(UPDATE_RETRIES, &[faulty]), attempts - 1);
    assert_eq!(
        seen.counter(UPDATE_FAILURES, &[faulty, ("reason", "attempts")]),
        1
    );
    assert_eq!(
        store.load_keys_calls.load(Ordering::Relaxed) as u64,
        attempts - 1,
        "the manager's wrapper runs the store's own load_keys"
    );
    assert_eq!(
        seen.counter(
            STORE_ERRORS,
            &[faulty, ("operation", "load"), ("kind", "unavailable")]
        ),
        1
    );
    assert_eq!(seen.counter(STORE_ERRORS, &[]), 1);
    assert_eq!(
        seen.samples(STORE_OPERATION_DURATION, &[faulty, ("operation", "load")]),
        2,
        "failed calls are timed too"
    );
    seen.assert_labels_clean(&secrets_of(&[&id]));
}
