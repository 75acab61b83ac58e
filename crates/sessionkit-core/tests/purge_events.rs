//! Expiry events per session: a hook that wants them gets each purged session (key hash,
//! owner, deadline) in batches, and `purged` the total; everyone else keeps the counting
//! cleanup. Driven by a manual clock over the memory store.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sessionkit_core::{
    ApplyOutcome, Capabilities, Change, CleanupPolicy, Clock, CookieUpdate, CycleOutcome, Error,
    ErrorKind, ListFilter, ManualClock, PURGE_REPORT_BATCH, Page, PageRequest, PurgeReport,
    PurgedSession, Record, Result, SessionHooks, SessionId, SessionKey, SessionManager, Store,
    StoredSession, Timestamp, async_trait,
};
use sessionkit_memory::MemoryStore;

const HOUR: Duration = Duration::from_secs(3600);

/// The memory store, with the reporting capability claimed or not, the reporting operation
/// implemented or not (`Unsupported`), and a reporting step that fails; counts which cleanup
/// ran.
struct Wrapped {
    inner: MemoryStore,
    claims: bool,
    implements: bool,
    /// The reporting step (1-based) that fails with a store error.
    fail_step: Option<usize>,
    reporting_steps: AtomicUsize,
    counting_cleanups: AtomicUsize,
}

impl Wrapped {
    fn new(clock: &ManualClock) -> Self {
        Self {
            inner: MemoryStore::with_clock(clock.clone()),
            claims: true,
            implements: true,
            fail_step: None,
            reporting_steps: AtomicUsize::new(0),
            counting_cleanups: AtomicUsize::new(0),
        }
    }
}

#[async_trait]
impl Store for Wrapped {
    fn name(&self) -> &'static str {
        "wrapped"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities().with_reports_purged(self.claims)
    }
    async fn create(&self, key: &SessionKey, record: &Record) -> Result<()> {
        self.inner.create(key, record).await
    }
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.inner.load(key).await
    }
    async fn apply(&self, key: &SessionKey, change: &Change) -> Result<ApplyOutcome> {
        self.inner.apply(key, change).await
    }
    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        self.inner.delete(key).await
    }
    async fn cycle(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        grace: Option<Timestamp>,
    ) -> Result<CycleOutcome> {
        self.inner.cycle(old, new, grace).await
    }
    async fn delete_expired(&self) -> Result<u64> {
        self.counting_cleanups.fetch_add(1, Ordering::SeqCst);
        self.inner.delete_expired().await
    }
    async fn delete_expired_batch_reporting(&self, limit: usize) -> Result<PurgeReport> {
        let step = self.reporting_steps.fetch_add(1, Ordering::SeqCst) + 1;
        if !self.implements {
            return Err(sessionkit_core::backend::unsupported(
                "wrapped",
                "reporting purges",
            ));
        }
        if self.fail_step == Some(step) {
            let broken = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
            return Err(Error::unavailable("the store went away", broken));
        }
        self.inner.delete_expired_batch_reporting(limit).await
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

#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    Created(String, Option<String>),
    Batch(Vec<PurgedSession>),
    Purged(u64),
}

/// Records every hook call; `wants` is what it answers to `wants_purged_sessions`.
#[derive(Clone, Default)]
struct Audit {
    wants: bool,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Audit {
    fn wanting() -> Self {
        Self {
            wants: true,
            ..Self::default()
        }
    }
    fn events(&self) -> Vec<Event> {
        self.events.lock().expect("events").clone()
    }
    fn batches(&self) -> Vec<Vec<PurgedSession>> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Batch(batch) => Some(batch),
                _ => None,
            })
            .collect()
    }
    fn purged(&self) -> Vec<u64> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Purged(n) => Some(n),
                _ => None,
            })
            .collect()
    }
}

impl SessionHooks for Audit {
    fn created(&self, key: &SessionKey, owner: Option<&str>) {
        self.events
            .lock()
            .expect("events")
            .push(Event::Created(key.to_hex(), owner.map(str::to_owned)));
    }
    fn purged(&self, count: u64) {
        self.events
            .lock()
            .expect("events")
            .push(Event::Purged(count));
    }
    fn wants_purged_sessions(&self) -> bool {
        self.wants
    }
    fn purged_sessions(&self, batch: &[PurgedSession]) {
        assert!(!batch.is_empty(), "an empty batch was reported");
        self.events
            .lock()
            .expect("events")
            .push(Event::Batch(batch.to_vec()));
    }
}

fn manager(store: &Arc<Wrapped>, clock: &ManualClock, audit: &Audit) -> SessionManager {
    SessionManager::builder(Arc::clone(store))
        .clock(clock.clone())
        .hooks(audit.clone())
        .idle_timeout(HOUR)
        .absolute_lifetime(10 * HOUR)
        .cleanup(CleanupPolicy::Off)
        .build()
        .expect("valid config")
}

/// A session saved through the manager, with one value and `owner`; its id.
async fn signed_in(manager: &SessionManager, owner: Option<&str>) -> SessionId {
    let session = manager.session(None);
    session.insert("cart", &[1u32, 2, 3]).await.expect("insert");
    if let Some(owner) = owner {
        session.set_owner(Some(owner)).await.expect("owner");
    }
    match session.commit().await.expect("commit").cookie {
        CookieUpdate::Set { id, .. } => id,
        other => panic!("a new session gets a cookie: {other:?}"),
    }
}

/// Expired records planted straight in the store (fast, for the batch sizes).
async fn plant_expired(store: &Wrapped, clock: &ManualClock, n: usize) -> Vec<SessionKey> {
    let mut keys = Vec::new();
    for i in 0..n {
        let key = SessionId::generate().expect("id").key();
        let mut record = Record::new(clock.now(), clock.now().saturating_add(HOUR));
        record.owner = (i % 3 == 0).then(|| format!("user{i}"));
        store.create(&key, &record).await.expect("create");
        keys.push(key);
    }
    keys
}

#[tokio::test]
async fn a_hook_that_wants_purged_sessions_gets_each_one_by_key_hash_never_by_id() {
    let clock = ManualClock::starting_now();
    let store = Arc::new(Wrapped::new(&clock));
    let audit = Audit::wanting();
    let manager = manager(&store, &clock, &audit);

    let mut expected: BTreeMap<SessionKey, Option<String>> = BTreeMap::new();
    let mut ids = Vec::new();
    for owner in [Some("alice"), Some("alice"), Some("bob"), None, None] {
        let id = signed_in(&manager, owner).await;
        expected.insert(id.key(), owner.map(str::to_owned));
        ids.push(id);
    }
    // A login: the session moves to a new id, the old one is left as a grace pointer.
    let before = signed_in(&manager, None).await;
    let login = manager.session(Some(&before.expose()));
    login.set_owner(Some("carol")).await.expect("owner");
    login.cycle_id().await.expect("cycle");
    let CookieUpdate::Set { id: after, .. } = login.commit().await.expect("commit").cookie else {
        panic!("a cycled session gets a new cookie");
    };
    expected.insert(after.key(), Some("carol".into()));
    ids.extend([before.clone(), after.clone()]);

    clock.advance(2 * HOUR);
    let live = signed_in(&manager, Some("alice")).await;
    ids.push(live.clone());

    let purged = manager.purge_expired().await.expect("purge");
    assert_eq!(purged, 7, "six sessions and the login's grace pointer");

    let batches = audit.batches();
    assert_eq!(batches.len(), 1, "seven records: one step");
    let reported: BTreeMap<SessionKey, Option<String>> = batches[0]
        .iter()
        .map(|s| (s.key, s.owner.clone()))
        .collect();
    assert_eq!(batches[0].len(), reported.len(), "a session reported twice");
    assert_eq!(
        reported, expected,
        "exactly the expired sessions, by key hash, with their owners; not the pointer, not the live one"
    );
    assert!(
        !reported.contains_key(&before.key()),
        "the pointer is no session"
    );
    assert!(!reported.contains_key(&live.key()));
    for session in &batches[0] {
        assert!(session.expires_at <= clock.now());
    }
    let events = audit.events();
    assert_eq!(
        events.last(),
        Some(&Event::Purged(7)),
        "purged(total) after the batches"
    );
    assert_eq!(audit.purged(), vec![7], "purged is called once");

    // Nothing a hook saw holds an id: only key hashes.
    let seen = format!("{events:?}");
    for id in &ids {
        assert!(
            !seen.contains(&id.expose()),
            "a session id reached the hooks"
        );
    }
    assert_eq!(
        store.counting_cleanups.load(Ordering::SeqCst),
        0,
        "the reporting path, not the counting one"
    );

    // The live session is untouched; a second purge finds nothing and reports nothing.
    let session = manager.session(Some(&live.expose()));
    assert_eq!(
        session.get::<Vec<u32>>("cart").await.expect("get"),
        Some(vec![1, 2, 3])
    );
    assert_eq!(manager.purge_expired().await.expect("purge again"), 0);
    assert_eq!(audit.batches().len(), 1);
    assert_eq!(audit.purged(), vec![7], "no purged(0)");
}

#[tokio::test]
async fn cleanup_reports_in_batches_and_calls_purged_once_with_the_total() {
    let clock = ManualClock::starting_now();
    let store = Arc::new(Wrapped::new(&clock));
    let audit = Audit::wanting();
    let manager = manager(&store, &clock, &audit);
    let total = 2 * PURGE_REPORT_BATCH + 3;
    let keys = plant_expired(&store, &clock, total).await;
    clock.advance(2 * HOUR);

    assert_eq!(manager.purge_expired().await.expect("purge"), total as u64);
    let sizes: Vec<usize> = audit.batches().iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![PURGE_REPORT_BATCH, PURGE_REPORT_BATCH, 3]);
    assert_eq!(
        store.reporting_steps.load(Ordering::SeqCst),
        3,
        "the short step ends the cleanup"
    );
    let mut reported: Vec<SessionKey> = audit.batches().concat().iter().map(|s| s.key).collect();
    reported.sort();
    let mut expected = keys;
    expected.sort();
    assert_eq!(reported, expected, "every session once");
    assert_eq!(audit.purged(), vec![total as u64]);
    assert!(store.inner.is_empty());
}

#[tokio::test]
async fn without_the_hook_or_the_capability_cleanup_only_counts() {
    for (wants, claims, implements) in [
        (false, true, true),
        (true, false, true),
        (true, true, false),
    ] {
        let case = format!("wants {wants}, claims {claims}, implements {implements}");
        let clock = ManualClock::starting_now();
        let store = Arc::new(Wrapped {
            claims,
            implements,
            ..Wrapped::new(&clock)
        });
        let audit = Audit {
            wants,
            ..Audit::default()
        };
        let manager = manager(&store, &clock, &audit);
        plant_expired(&store, &clock, 4).await;
        clock.advance(2 * HOUR);

        assert_eq!(manager.purge_expired().await.expect("purge"), 4, "{case}");
        assert!(audit.batches().is_empty(), "{case}: nothing reported");
        assert_eq!(audit.purged(), vec![4], "{case}");
        assert!(store.inner.is_empty(), "{case}: everything deleted");
        assert_eq!(
            store.counting_cleanups.load(Ordering::SeqCst),
            1,
            "{case}: the counting cleanup ran"
        );
        let tried = store.reporting_steps.load(Ordering::SeqCst);
        assert_eq!(
            tried,
            usize::from(wants && claims),
            "{case}: the reporting path is tried only when wanted and claimed"
        );
    }
}

#[tokio::test]
async fn a_failed_step_ends_the_cleanup_after_reporting_what_was_deleted() {
    let clock = ManualClock::starting_now();
    let store = Arc::new(Wrapped {
        fail_step: Some(2),
        ..Wrapped::new(&clock)
    });
    let audit = Audit::wanting();
    let manager = manager(&store, &clock, &audit);
    plant_expired(&store, &clock, PURGE_REPORT_BATCH + 10).await;
    clock.advance(2 * HOUR);

    let err = manager
        .purge_expired()
        .await
        .expect_err("the second step fails");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    let sizes: Vec<usize> = audit.batches().iter().map(Vec::len).collect();
    assert_eq!(
        sizes,
        vec![PURGE_REPORT_BATCH],
        "the first step was reported"
    );
    assert_eq!(
        audit.purged(),
        vec![PURGE_REPORT_BATCH as u64],
        "purged hears of what was deleted before the failure"
    );
    assert_eq!(store.inner.len(), 10, "the rest waits for the next cleanup");

    assert_eq!(manager.purge_expired().await.expect("next cleanup"), 10);
    assert_eq!(audit.batches().concat().len(), PURGE_REPORT_BATCH + 10);
}
