//! The manager's policies, driven by a manual clock over the memory store.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sessionkit_core::{
    ApplyOutcome, Capabilities, Change, CleanupPolicy, CookieUpdate, CycleOutcome, Error,
    ErrorKind, Expiry, ListFilter, ManualClock, Page, PageRequest, Record, Result, SessionHooks,
    SessionId, SessionKey, SessionManager, SessionManagerBuilder, Store, StoredSession, Timestamp,
    async_trait,
};
use sessionkit_memory::MemoryStore;

const HOUR: Duration = Duration::from_secs(3600);

/// Counts every call that reaches the store, and fails them all while `down` is set.
struct Probe {
    inner: MemoryStore,
    calls: AtomicUsize,
    writes: AtomicUsize,
    /// Of the calls, the whole loads (`load`, not `load_keys`).
    whole_loads: AtomicUsize,
    down: AtomicBool,
    /// How many more conditional applies a rival request beats: before each, it pushes
    /// `rival<n>` to every key the apply expects (a `Vec<String>`), so the condition fails.
    rivals: AtomicUsize,
    /// The next apply is written, and then answered with an error (a reply lost on the way).
    lose_reply: AtomicBool,
}

impl Probe {
    fn check(&self, write: bool) -> Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if write {
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
        if self.down.load(Ordering::SeqCst) {
            let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
            return Err(Error::unavailable("probe store is down", refused));
        }
        Ok(())
    }
}

impl Probe {
    /// A rival request's blind write of every key `change` expects.
    async fn rival_push(&self, key: &SessionKey, change: &Change) -> Result<()> {
        let names: Vec<&str> = change.expected.keys().map(String::as_str).collect();
        let Some(record) = self.inner.load_keys(key, &names).await? else {
            return Ok(());
        };
        let mut rival = Change::default();
        for name in names {
            let mut list: Vec<String> = match record.data.get(name) {
                Some(bytes) => sessionkit_core::codec::decode_value(name, bytes)?,
                None => Vec::new(),
            };
            list.push(format!("rival{}", list.len()));
            rival.set(
                name.to_owned(),
                sessionkit_core::codec::encode_value(name, &list)?,
            );
        }
        let _ = self.inner.apply(key, &rival).await?;
        Ok(())
    }
}

#[async_trait]
impl Store for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn create(&self, key: &SessionKey, record: &Record) -> Result<()> {
        self.check(true)?;
        self.inner.create(key, record).await
    }
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.check(false)?;
        self.whole_loads.fetch_add(1, Ordering::SeqCst);
        self.inner.load(key).await
    }
    async fn load_keys(&self, key: &SessionKey, keys: &[&str]) -> Result<Option<Record>> {
        self.check(false)?;
        self.inner.load_keys(key, keys).await
    }
    async fn apply(&self, key: &SessionKey, change: &Change) -> Result<ApplyOutcome> {
        self.check(true)?;
        if !change.expected.is_empty()
            && self
                .rivals
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            self.rival_push(key, change).await?;
        }
        let outcome = self.inner.apply(key, change).await?;
        if self.lose_reply.swap(false, Ordering::SeqCst) {
            let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
            return Err(Error::unavailable("the reply was lost", reset));
        }
        Ok(outcome)
    }
    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<ApplyOutcome> {
        self.check(true)?;
        self.inner.touch(key, expires_at).await
    }
    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        self.check(true)?;
        self.inner.delete(key).await
    }
    async fn cycle(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        grace: Option<Timestamp>,
    ) -> Result<CycleOutcome> {
        self.check(true)?;
        self.inner.cycle(old, new, grace).await
    }
    async fn delete_expired(&self) -> Result<u64> {
        self.check(true)?;
        self.inner.delete_expired().await
    }
    async fn list(&self, filter: &ListFilter, page: PageRequest) -> Result<Page> {
        self.check(false)?;
        self.inner.list(filter, page).await
    }
    async fn by_owner(&self, owner: &str) -> Result<Vec<StoredSession>> {
        self.check(false)?;
        self.inner.by_owner(owner).await
    }
    async fn delete_by_owner(&self, owner: &str) -> Result<u64> {
        self.check(true)?;
        self.inner.delete_by_owner(owner).await
    }
}

#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Recorder {
    fn events(&self) -> Vec<String> {
        self.0.lock().expect("recorder").clone()
    }
    fn push(&self, event: String) {
        self.0.lock().expect("recorder").push(event);
    }
}

#[derive(Clone, Default)]
struct Hooks(Arc<Recorder>);

impl SessionHooks for Hooks {
    fn created(&self, key: &SessionKey, owner: Option<&str>) {
        self.0.push(format!("created {} {owner:?}", key.to_hex()));
    }
    fn cycled(&self, old: &SessionKey, new: &SessionKey) {
        self.0
            .push(format!("cycled {} {}", old.to_hex(), new.to_hex()));
    }
    fn destroyed(&self, key: &SessionKey) {
        self.0.push(format!("destroyed {}", key.to_hex()));
    }
    fn purged(&self, count: u64) {
        self.0.push(format!("purged {count}"));
    }
}

struct Fixture {
    clock: ManualClock,
    probe: Arc<Probe>,
    hooks: Hooks,
}

impl Fixture {
    fn new() -> Self {
        let clock = ManualClock::starting_now();
        let probe = Arc::new(Probe {
            inner: MemoryStore::with_clock(clock.clone()),
            calls: AtomicUsize::new(0),
            writes: AtomicUsize::new(0),
            whole_loads: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            rivals: AtomicUsize::new(0),
            lose_reply: AtomicBool::new(false),
        });
        Self {
            clock,
            probe,
            hooks: Hooks::default(),
        }
    }

    fn builder(&self) -> SessionManagerBuilder {
        SessionManager::builder(Arc::clone(&self.probe))
            .clock(self.clock.clone())
            .hooks(self.hooks.clone())
            .idle_timeout(HOUR)
            .absolute_lifetime(10 * HOUR)
            .cleanup(CleanupPolicy::Off)
    }

    fn manager(&self) -> SessionManager {
        self.builder().build().expect("valid config")
    }

    fn calls(&self) -> usize {
        self.probe.calls.load(Ordering::SeqCst)
    }

    fn writes(&self) -> usize {
        self.probe.writes.load(Ordering::SeqCst)
    }
}

/// Starts a session holding `counter = 1` and returns its cookie value.
async fn start(manager: &SessionManager) -> String {
    let session = manager.session(None);
    session.insert("counter", &1u32).await.expect("insert");
    match session.commit().await.expect("commit").cookie {
        CookieUpdate::Set { id, .. } => id.expose(),
        other => panic!("a new session sets its cookie, got {other:?}"),
    }
}

/// The counter `start` put in the session a cookie names, as a new request sees it.
async fn counter(manager: &SessionManager, cookie: &str) -> Option<u32> {
    manager
        .session(Some(cookie))
        .get::<u32>("counter")
        .await
        .expect("get")
}

/// Starts a session and a request on it that pushes `mine` to the list under `list`.
async fn start_pushing_mine(manager: &SessionManager) -> (String, sessionkit_core::Session) {
    let cookie = start(manager).await;
    let session = manager.session(Some(&cookie));
    session
        .update("list", |list: &mut Vec<String>| list.push("mine".into()))
        .await
        .expect("update");
    (cookie, session)
}

fn cookie_id(update: &CookieUpdate) -> String {
    match update {
        CookieUpdate::Set { id, .. } => id.expose(),
        other => panic!("expected a cookie, got {other:?}"),
    }
}

#[tokio::test]
async fn an_untouched_session_costs_no_store_call() {
    let fx = Fixture::new();
    let manager = fx.manager();
    let cookie = start(&manager).await;
    let before = fx.calls();
    let session = manager.session(Some(&cookie));
    let committed = session.commit().await.expect("commit");
    assert_eq!(committed.cookie, CookieUpdate::Unchanged);
    assert_eq!(fx.calls(), before, "no load, no write");
}

#[tokio::test]
async fn an_empty_new_session_is_never_stored() {
    let fx = Fixture::new();
    let manager = fx.manager();
    let session = manager.session(None);
    assert_eq!(session.get::<u32>("x").await.expect("get"), None);
    assert_eq!(
        session.commit().await.expect("commit").cookie,
        CookieUpdate::Unchanged
    );
    assert_eq!(fx.writes(), 0);
    assert!(fx.probe.inner.is_empty());
}

#[tokio::test]
async fn reading_writes_nothing_until_the_touch_throttle_allows() {
    let fx = Fixture::new();
    let manager = fx.manager(); // idle 1 h, touch fraction 0.1 = 6 minutes
    let cookie = start(&manager).await;
    let writes = fx.writes();

    fx.clock.advance(Duration::from_secs(5 * 60));
    let session = manager.session(Some(&cookie));
    assert_eq!(session.get::<u32>("counter").await.expect("get"), Some(1));
    assert_eq!(
        session.commit().await.expect("commit").cookie,
        CookieUpdate::Unchanged
    );
    assert_eq!(
        fx.writes(),
        writes,
        "5 minutes in: below the throttle, no write"
    );

    fx.clock.advance(Duration::from_secs(2 * 60));
    let session = manager.session(Some(&cookie));
    assert_eq!(session.get::<u32>("counter").await.expect("get"), Some(1));
    let committed = session.commit().await.expect("commit");
    assert_eq!(fx.writes(), writes + 1, "7 minutes in: one touch");
    let CookieUpdate::Set { id, expires_at } = committed.cookie else {
        panic!("a touched session refreshes its cookie: {committed:?}")
    };
    assert_eq!(id.expose(), cookie, "touching keeps the id");
    assert_eq!(expires_at, fx.clock_now().saturating_add(HOUR));
}

impl Fixture {
    fn clock_now(&self) -> Timestamp {
        use sessionkit_core::Clock;
        self.clock.now()
    }
}

#[tokio::test]
async fn writes_move_the_deadline_under_the_same_throttle_as_reads() {
    let fx = Fixture::new();
    let manager = fx.manager(); // idle 1 h, touch fraction 0.1 = 6 minutes
    let cookie = start(&manager).await;
    let first = manager
        .session(Some(&cookie))
        .expires_at()
        .await
        .expect("load")
        .expect("stored");

    fx.clock.advance(Duration::from_secs(60));
    let session = manager.session(Some(&cookie));
    session.insert("n", &1).await.expect("insert");
    assert_eq!(
        session.commit().await.expect("commit").cookie,
        CookieUpdate::Unchanged,
        "1 minute in: data only"
    );
    assert_eq!(
        manager
            .session(Some(&cookie))
            .expires_at()
            .await
            .expect("load"),
        Some(first)
    );

    fx.clock.advance(Duration::from_secs(6 * 60));
    let session = manager.session(Some(&cookie));
    session.insert("n", &2).await.expect("insert");
    let committed = session.commit().await.expect("commit");
    assert!(
        matches!(committed.cookie, CookieUpdate::Set { .. }),
        "7 minutes in: the deadline moves"
    );
    assert_eq!(
        manager
            .session(Some(&cookie))
            .expires_at()
            .await
            .expect("load"),
        Some(fx.clock_now().saturating_add(HOUR))
    );
}

#[tokio::test]
async fn idle_sessions_expire_and_their_id_is_not_reused() {
    let fx = Fixture::new();
    let manager = fx.manager();
    let cookie = start(&manager).await;
    fx.clock.advance(HOUR + Duration::from_secs(1));
    let session = manager.session(Some(&cookie));
    assert_eq!(
        session.get::<u32>("counter").await.expect("get"),
        None,
        "expired data is gone"
    );
    session.insert("counter", &5u32).await.expect("insert");
    let committed = session.commit().await.expect("commit");
    assert_ne!(
        cookie_id(&committed.cookie),
        cookie,
        "strict mode: a fresh id"
    );
}

#[tokio::test]
async fn activity_never_outlives_the_absolute_lifetime() {
    let fx = Fixture::new();
    let manager = fx.manager(); // absolute 10 h
    let cookie = start(&manager).await;
    let created = fx.clock_now();
    for _ in 0..19 {
        fx.clock.advance(Duration::from_secs(30 * 60));
        let session = manager.session(Some(&cookie));
        session
            .update("counter", |n: &mut u32| *n += 1)
            .await
            .expect("update");
        let committed = session.commit().await.expect("commit");
        if let CookieUpdate::Set { expires_at, .. } = committed.cookie {
            assert!(
                expires_at <= created.saturating_add(10 * HOUR),
                "capped by the absolute lifetime"
            );
        }
    }
    assert_eq!(counter(&manager, &cookie).await, Some(20));
    fx.clock.advance(Duration::from_secs(60 * 60));
    let session = manager.session(Some(&cookie));
    assert_eq!(
        session.get::<u32>("counter").await.expect("get"),
        None,
        "10 h after creation it is over"
    );
}

#[tokio::test]
async fn strict_mode_never_adopts_a_forged_id() {
    let fx = Fixture::new();
    let manager = fx.manager();
    let forged = SessionId::generate().expect("rng").expose();
    let session = manager.session(Some(&forged));
    assert!(session.is_empty().await.expect("empty"));
    session.insert("x", &1).await.expect("insert");
    let issued = cookie_id(&session.commit().await.expect("commit").cookie);
    assert_ne!(issued, forged);
    assert_eq!(
        manager
            .session(Some(&forged))
            .get::<i32>("x")
            .await
            .expect("get"),
        None
    );
}

#[tokio::test]
async fn lax_mode_adopts_an_unknown_well_formed_id() {
    let fx = Fixture::new();
    let manager = fx.builder().strict(false).build().expect("config");
    let presented = SessionId::generate().expect("rng").expose();
    let session = manager.session(Some(&presented));
    session.insert("x", &1).await.expect("insert");
    assert_eq!(
        cookie_id(&session.commit().await.expect("commit").cookie),
        presented
    );
}

#[tokio::test]
async fn a_malformed_cookie_never_reaches_the_store_and_is_removed() {
    let fx = Fixture::new();
    let manager = fx.manager();
    for bogus in [
        "",
        "short",
        &"x".repeat(10_000),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "../../etc/passwd\0",
    ] {
        let session = manager.session(Some(bogus));
        assert!(session.presented_malformed_id());
        assert_eq!(session.get::<u32>("counter").await.expect("get"), None);
        assert_eq!(
            session.commit().await.expect("commit").cookie,
            CookieUpdate::Remove
        );
    }
    assert_eq!(fx.calls(), 0, "no store round trip for malformed values");
}

#[tokio::test]
async fn cycling_keeps_data_and_the_old_id_works_only_during_grace() {
    let fx = Fixture::new();
    let manager = fx
        .builder()
        .cycle_grace(Duration::from_secs(5))
        .build()
        .expect("config");
    let old = start(&manager).await;

    let login = manager.session(Some(&old));
    login.set_owner(Some("alice")).await.expect("owner");
    login.cycle_id().await.expect("cycle");
    let new = cookie_id(&login.commit().await.expect("commit").cookie);
    assert_ne!(new, old);

    // An in-flight request with the old id reaches the session and its write lands...
    let inflight = manager.session(Some(&old));
    assert_eq!(inflight.get::<u32>("counter").await.expect("get"), Some(1));
    inflight
        .insert("from_old_tab", &true)
        .await
        .expect("insert");
    let committed = inflight.commit().await.expect("commit");
    assert!(!committed.gone);
    assert!(
        !matches!(committed.cookie, CookieUpdate::Set { ref id, .. } if id.expose() == new),
        "the old id's holder never learns the new id"
    );
    let current = manager.session(Some(&new));
    assert_eq!(
        current.get::<bool>("from_old_tab").await.expect("get"),
        Some(true)
    );
    assert_eq!(
        current.owner().await.expect("owner").as_deref(),
        Some("alice")
    );

    // ...until the grace period ends.
    fx.clock.advance(Duration::from_secs(6));
    assert_eq!(counter(&manager, &old).await, None);
    assert_eq!(counter(&manager, &new).await, Some(1));
    let events = fx.hooks.0.events();
    assert!(
        events.iter().any(|e| e.starts_with("cycled ")),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_write_racing_a_login_in_another_tab_follows_the_session() {
    let fx = Fixture::new();
    let manager = fx.manager(); // 5 s grace
    let old = start(&manager).await;
    let slow = manager.session(Some(&old));
    assert_eq!(slow.get::<u32>("counter").await.expect("get"), Some(1));

    let login = manager.session(Some(&old));
    login.cycle_id().await.expect("cycle");
    let new = cookie_id(&login.commit().await.expect("commit").cookie);

    slow.insert("from_slow_tab", &true).await.expect("insert");
    let committed = slow.commit().await.expect("commit");
    assert!(
        !committed.gone,
        "the write followed the session to its new key"
    );
    assert_eq!(
        committed.cookie,
        CookieUpdate::Unchanged,
        "and the old tab never learns the new id"
    );
    let current = manager.session(Some(&new));
    assert_eq!(
        current.get::<bool>("from_slow_tab").await.expect("get"),
        Some(true)
    );
}

#[tokio::test]
async fn a_request_on_the_old_id_cannot_cycle_or_change_owner_or_expiry() {
    let fx = Fixture::new();
    let manager = fx.manager(); // 5 s grace
    let old = start(&manager).await;
    let login = manager.session(Some(&old));
    login.cycle_id().await.expect("cycle");
    login.set_owner(Some("alice")).await.expect("owner");
    let new = cookie_id(&login.commit().await.expect("commit").cookie);

    // Whoever holds the pre-login id (planted by an attacker) races the login.
    let rival = manager.session(Some(&old));
    assert_eq!(rival.get::<u32>("counter").await.expect("get"), Some(1));
    let refused = |result: sessionkit_core::Result<()>| {
        result.expect_err("refused on the old id").kind() == ErrorKind::Superseded
    };
    assert!(refused(rival.cycle_id().await));
    assert!(refused(rival.set_owner(Some("mallory")).await));
    assert!(refused(rival.set_owner(None).await));
    assert!(refused(
        rival
            .set_expiry(sessionkit_core::Expiry::OnInactivity(10 * HOUR))
            .await
    ));
    rival
        .set_owner(Some("alice"))
        .await
        .expect("setting the owner it has is no change");
    rival.insert("from_old_id", &true).await.expect("insert");
    let committed = rival.commit().await.expect("data writes land");
    assert_eq!(committed.cookie, CookieUpdate::Unchanged, "no id for it");

    // After the grace period, the session is the logged-in browser's, unchanged but for data.
    fx.clock.advance(Duration::from_secs(6));
    let current = manager.session(Some(&new));
    assert_eq!(
        current.owner().await.expect("owner").as_deref(),
        Some("alice")
    );
    assert_eq!(
        current.get::<bool>("from_old_id").await.expect("get"),
        Some(true)
    );
    assert_eq!(
        current.expiry().await.expect("expiry"),
        sessionkit_core::Expiry::Default
    );
    assert_eq!(counter(&manager, &old).await, None);
}

#[tokio::test]
async fn a_request_racing_a_login_cannot_set_the_owner_of_the_new_session() {
    let fx = Fixture::new();
    let manager = fx.manager();
    let old = start(&manager).await;
    let slow = manager.session(Some(&old));
    assert_eq!(slow.get::<u32>("counter").await.expect("get"), Some(1));
    slow.set_owner(Some("mallory"))
        .await
        .expect("not known yet");
    slow.insert("from_slow", &true).await.expect("insert");

    let login = manager.session(Some(&old));
    login.cycle_id().await.expect("cycle");
    login.set_owner(Some("alice")).await.expect("owner");
    let new = cookie_id(&login.commit().await.expect("commit").cookie);

    let err = slow
        .commit()
        .await
        .expect_err("the old id may not set the owner");
    assert_eq!(err.kind(), ErrorKind::Superseded);
    let current = manager.session(Some(&new));
    assert_eq!(
        current.owner().await.expect("owner").as_deref(),
        Some("alice")
    );
    assert_eq!(
        current.get::<bool>("from_slow").await.expect("get"),
        None,
        "nothing of the refused commit was written"
    );
}

#[tokio::test]
async fn without_grace_the_old_id_dies_at_once() {
    let fx = Fixture::new();
    let manager = fx
        .builder()
        .cycle_grace(Duration::ZERO)
        .build()
        .expect("config");
    let old = start(&manager).await;
    let login = manager.session(Some(&old));
    login.cycle_id().await.expect("cycle");
    let new = cookie_id(&login.commit().await.expect("commit").cookie);
    assert_eq!(counter(&manager, &old).await, None);
    assert_eq!(counter(&manager, &new).await, Some(1));
}

#[tokio::test]
async fn logout_removes_the_cookie_and_a_slow_request_cannot_bring_the_session_back() {
    let fx = Fixture::new();
    let manager = fx.manager();
    let cookie = start(&manager).await;

    let slow = manager.session(Some(&cookie));
    assert_eq!(slow.get::<u32>("counter").await.expect("get"), Some(1));

    let logout = manager.session(Some(&cookie));
    logout.destroy().await.expect("destroy");
    assert_eq!(
        logout.commit().await.expect("commit").cookie,
        CookieUpdate::Remove
    );

    slow.insert("late", &"write").await.expect("insert");
    let committed = slow.commit().await.expect("commit");
    assert!(
        committed.gone,
        "the slow request learns the session is gone"
    );
    assert!(
        !matches!(committed.cookie, CookieUpdate::Set { .. }),
        "a gone session hands out no cookie: {committed:?}"
    );
    assert!(fx.probe.inner.is_empty(), "nothing re-created");
    assert!(
        fx.hooks
            .0
            .events()
            .iter()
            .any(|e| e.starts_with("destroyed "))
    );
}

#[tokio::test]
async fn data_after_destroy_starts_a_new_session() {
    let fx = Fixture::new();
    let manager = fx.manager();
    let cookie = start(&manager).await;
    let session = manager.session(Some(&cookie));
    session.destroy().await.expect("destroy");
    session
        .insert("flash", &"logged out")
        .await
        .expect("insert");
    let fresh = cookie_id(&session.commit().await.expect("commit").cookie);
    assert_ne!(fresh, cookie);
    let next = manager.session(Some(&fresh));
    assert_eq!(
        next.get::<String>("flash").await.expect("get").as_deref(),
        Some("logged out")
    );
    assert_eq!(next.get::<u32>("counter").await.expect("get"), None);
}

#[tokio::test]
async fn two_concurrent_requests_writing_different_keys_both_keep_their_writes() {
    let fx = Fixture::new();
    let manager = fx.manager();
    let cookie = start(&manager).await;
    let a = manager.session(Some(&cookie));
    let b = manager.session(Some(&cookie));
    assert_eq!(a.get::<u32>("counter").await.expect("get"), Some(1));
    assert_eq!(b.get::<u32>("counter").await.expect("get"), Some(1));
    a.insert("a", &"from a").await.expect("insert");
    b.insert("b", &"from b").await.expect("insert");
    let _ = a.commit().await.expect("commit");
    let _ = b.commit().await.expect("commit");
    let after = manager.session(Some(&cookie));
    assert_eq!(after.keys().await.expect("keys"), ["a", "b", "counter"]);
}

#[tokio::test]
async fn the_per_owner_limit_ends_the_oldest_sessions() {
    let fx = Fixture::new();
    let manager = fx
        .builder()
        .max_sessions_per_owner(Some(2))
        .build()
        .expect("config");
    let mut cookies = Vec::new();
    for _ in 0..3 {
        fx.clock.advance(Duration::from_secs(1));
        let session = manager.session(None);
        session.set_owner(Some("alice")).await.expect("owner");
        session
            .insert("device", &cookies.len())
            .await
            .expect("insert");
        cookies.push(cookie_id(&session.commit().await.expect("commit").cookie));
    }
    let live = manager.sessions_of("alice").await.expect("sessions");
    assert_eq!(live.len(), 2);
    assert_eq!(
        manager
            .session(Some(&cookies[0]))
            .get::<usize>("device")
            .await
            .expect("get"),
        None
    );
    assert_eq!(
        manager
            .session(Some(&cookies[2]))
            .get::<usize>("device")
            .await
            .expect("get"),
        Some(2)
    );

    // Logging an older session in again keeps that one and ends the oldest other.
    fx.clock.advance(Duration::from_secs(1));
    let relogin = manager.session(Some(&cookies[1]));
    relogin.set_owner(Some("bob")).await.expect("owner");
    let _ = relogin.commit().await.expect("commit");
    relogin.set_owner(Some("alice")).await.expect("owner");
    let _ = relogin.commit().await.expect("commit");
    assert_eq!(
        manager.sessions_of("alice").await.expect("sessions").len(),
        2
    );
}

#[tokio::test]
async fn revoking_ends_all_or_all_other_sessions() {
    let fx = Fixture::new();
    let manager = fx.manager();
    let mut keys = Vec::new();
    for _ in 0..3 {
        let session = manager.session(None);
        session.set_owner(Some("carol")).await.expect("owner");
        let _ = session.commit().await.expect("commit");
        keys.push(session.key().await.expect("key").expect("stored"));
    }
    assert_eq!(
        manager
            .revoke_others("carol", &keys[1])
            .await
            .expect("revoke others"),
        2
    );
    let left: Vec<SessionKey> = manager
        .sessions_of("carol")
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.key)
        .collect();
    assert_eq!(left, vec![keys[1]]);
    assert_eq!(manager.revoke_owner("carol").await.expect("revoke"), 1);
    assert!(manager.sessions_of("carol").await.expect("list").is_empty());
}

#[tokio::test]
async fn probabilistic_cleanup_purges_in_the_background() {
    let fx = Fixture::new();
    let manager = fx
        .builder()
        .cleanup(CleanupPolicy::Probabilistic { one_in: 1 })
        .build()
        .expect("config");
    let stale = start(&manager).await;
    let _ = stale;
    fx.clock.advance(2 * HOUR);
    let live = start(&manager).await;
    assert_eq!(fx.probe.inner.len(), 2);
    let _ = counter(&manager, &live).await;
    for _ in 0..100 {
        if fx.probe.inner.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fx.probe.inner.len(), 1, "the expired session was purged");
    assert!(fx.hooks.0.events().contains(&"purged 1".to_owned()));
}

#[tokio::test]
async fn cleanup_off_never_purges_on_its_own() {
    let fx = Fixture::new();
    let manager = fx.manager();
    start(&manager).await;
    fx.clock.advance(2 * HOUR);
    let live = start(&manager).await;
    for _ in 0..50 {
        let _ = counter(&manager, &live).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(fx.probe.inner.len(), 2);
    assert_eq!(manager.purge_expired().await.expect("purge"), 1);
}

#[tokio::test]
async fn background_cleanup_runs_on_its_interval_and_stops_with_the_manager() {
    let fx = Fixture::new();
    let manager = fx
        .builder()
        .cleanup(CleanupPolicy::Background {
            every: Duration::from_millis(20),
        })
        .build()
        .expect("config");
    start(&manager).await;
    fx.clock.advance(2 * HOUR);
    for _ in 0..200 {
        if fx.probe.inner.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        fx.probe.inner.is_empty(),
        "the background task purged the expired session"
    );
    drop(manager);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let calls = fx.calls();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fx.calls(), calls, "the task ended with the manager");
}

#[test]
fn background_cleanup_without_a_runtime_is_a_config_error() {
    let fx = Fixture::new();
    let err = fx
        .builder()
        .cleanup(CleanupPolicy::Background {
            every: Duration::from_secs(1),
        })
        .build()
        .expect_err("no runtime");
    assert_eq!(err.kind(), ErrorKind::Config);
}

#[test]
fn invalid_settings_are_config_errors() {
    let fx = Fixture::new();
    for builder in [
        fx.builder().idle_timeout(Duration::ZERO),
        fx.builder().touch_fraction(1.5),
        fx.builder().max_sessions_per_owner(Some(0)),
        fx.builder().cleanup(CleanupPolicy::Background {
            every: Duration::ZERO,
        }),
    ] {
        assert_eq!(
            builder.build().expect_err("invalid").kind(),
            ErrorKind::Config
        );
    }
}

#[tokio::test]
async fn hooks_see_hashes_never_ids() {
    let fx = Fixture::new();
    let manager = fx.manager();
    let cookie = start(&manager).await;
    let session = manager.session(Some(&cookie));
    session.destroy().await.expect("destroy");
    let _ = session.commit().await.expect("commit");
    let events = fx.hooks.0.events();
    let key = SessionId::parse(&cookie).expect("id").key().to_hex();
    assert_eq!(
        events,
        vec![format!("created {key} None"), format!("destroyed {key}")]
    );
    assert!(events.iter().all(|e| !e.contains(&cookie)));
}

#[tokio::test]
async fn bad_values_are_typed_errors_that_lose_nothing() {
    let fx = Fixture::new();
    let manager = fx.builder().max_value_bytes(1024).build().expect("config");
    let cookie = start(&manager).await;
    let session = manager.session(Some(&cookie));
    let err = session
        .insert("big", &vec![0u8; 4096])
        .await
        .expect_err("too large");
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    let err = session
        .insert("__sessionkit.expiry", &1)
        .await
        .expect_err("reserved");
    assert_eq!(err.kind(), ErrorKind::Config);
    let err = session.insert("", &1).await.expect_err("empty key");
    assert_eq!(err.kind(), ErrorKind::Config);
    let err = session
        .get::<String>("counter")
        .await
        .expect_err("wrong type");
    assert_eq!(err.kind(), ErrorKind::Codec);
    assert_eq!(
        session
            .get::<u32>("counter")
            .await
            .expect("still readable as its type"),
        Some(1)
    );
    let _ = session.commit().await.expect("commit");
    let reread = manager.session(Some(&cookie));
    assert_eq!(
        reread.keys().await.expect("keys"),
        ["counter"],
        "nothing written, nothing lost"
    );
}

#[tokio::test]
async fn update_persists_nested_mutations() {
    let fx = Fixture::new();
    let manager = fx.manager();
    let cookie = start(&manager).await;
    let session = manager.session(Some(&cookie));
    let len = session
        .update("cart", |cart: &mut Vec<String>| {
            cart.push("tea".into());
            cart.len()
        })
        .await
        .expect("update");
    assert_eq!(len, 1);
    let _ = session.commit().await.expect("commit");
    let next = manager.session(Some(&cookie));
    next.update("cart", |cart: &mut Vec<String>| cart.push("milk".into()))
        .await
        .expect("update");
    let _ = next.commit().await.expect("commit");
    let cart: Vec<String> = manager
        .session(Some(&cookie))
        .get("cart")
        .await
        .expect("get")
        .expect("cart");
    assert_eq!(cart, ["tea", "milk"]);
}

#[tokio::test]
async fn unchanged_values_write_nothing() {
    let fx = Fixture::new();
    let manager = fx.manager();
    let cookie = start(&manager).await;
    let writes = fx.writes();
    let session = manager.session(Some(&cookie));
    session.insert("counter", &1u32).await.expect("same value");
    assert!(!session.remove("absent").await.expect("remove"));
    let _ = session.commit().await.expect("commit");
    assert_eq!(fx.writes(), writes);
}

#[tokio::test]
async fn per_session_expiry_overrides_the_idle_timeout() {
    let fx = Fixture::new();
    let manager = fx.manager();
    let cookie = start(&manager).await;
    let session = manager.session(Some(&cookie));
    session
        .set_expiry(Expiry::OnInactivity(3 * HOUR))
        .await
        .expect("expiry");
    let committed = session.commit().await.expect("commit");
    let CookieUpdate::Set { expires_at, .. } = committed.cookie else {
        panic!("{committed:?}")
    };
    assert_eq!(expires_at, fx.clock_now().saturating_add(3 * HOUR));
    fx.clock.advance(2 * HOUR);
    let session = manager.session(Some(&cookie));
    assert_eq!(
        session.expiry().await.expect("expiry"),
        Expiry::OnInactivity(3 * HOUR)
    );
    assert_eq!(
        session.keys().await.expect("keys"),
        ["counter"],
        "the setting is not a user key"
    );

    let fixed = fx.clock_now().saturating_add(HOUR / 2);
    session
        .set_expiry(Expiry::AtTimestamp(fixed))
        .await
        .expect("expiry");
    let _ = session.commit().await.expect("commit");
    fx.clock.advance(HOUR / 4);
    let session = manager.session(Some(&cookie));
    session.insert("activity", &1).await.expect("insert");
    let committed = session.commit().await.expect("commit");
    assert!(
        !matches!(committed.cookie, CookieUpdate::Set { expires_at, .. } if expires_at != fixed),
        "a fixed deadline does not roll"
    );
    fx.clock.advance(HOUR / 4 + Duration::from_secs(1));
    assert_eq!(counter(&manager, &cookie).await, None);
}

#[tokio::test]
async fn a_store_outage_is_an_error_and_pending_changes_survive_for_a_retry() {
    let fx = Fixture::new();
    let manager = fx.manager();
    let cookie = start(&manager).await;
    let session = manager.session(Some(&cookie));
    session.insert("x", &1).await.expect("insert");
    fx.probe.down.store(true, Ordering::SeqCst);
    let err = session.commit().await.expect_err("store down");
    assert!(err.is_unavailable(), "{err}");
    let loading = manager.session(Some(&cookie));
    assert!(
        loading
            .get::<u32>("counter")
            .await
            .expect_err("store down")
            .is_unavailable()
    );
    fx.probe.down.store(false, Ordering::SeqCst);
    let _ = session.commit().await.expect("retry");
    assert_eq!(
        manager
            .session(Some(&cookie))
            .get::<i32>("x")
            .await
            .expect("get"),
        Some(1)
    );
    assert_eq!(
        loading.get::<u32>("counter").await.expect("recovered"),
        Some(1)
    );
}

#[tokio::test]
async fn clear_keeps_the_per_session_expiry() {
    let fx = Fixture::new();
    let manager = fx.manager();
    let cookie = start(&manager).await;
    let session = manager.session(Some(&cookie));
    session
        .set_expiry(Expiry::OnInactivity(2 * HOUR))
        .await
        .expect("expiry");
    session.insert("b", &2).await.expect("insert");
    let _ = session.commit().await.expect("commit");
    let session = manager.session(Some(&cookie));
    session.clear().await.expect("clear");
    let _ = session.commit().await.expect("commit");
    let session = manager.session(Some(&cookie));
    assert!(session.is_empty().await.expect("empty"));
    assert_eq!(
        session.expiry().await.expect("expiry"),
        Expiry::OnInactivity(2 * HOUR)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_of_one_key_lose_nothing() {
    let fx = Fixture::new();
    let manager = fx.manager();
    let cookie = start(&manager).await;
    let requests: Vec<_> = (0..100)
        .map(|i| {
            let (manager, cookie) = (manager.clone(), cookie.clone());
            tokio::spawn(async move {
                let session = manager.session(Some(&cookie));
                let item = format!("item{i:03}");
                session
                    .update("cart", move |cart: &mut Vec<String>| {
                        cart.push(item.clone())
                    })
                    .await?;
                session.update("counter", |n: &mut u32| *n += 1).await?;
                session.commit().await
            })
        })
        .collect();
    for request in requests {
        let committed = request.await.expect("task").expect("commit");
        assert!(!committed.gone);
    }
    let after = manager.session(Some(&cookie));
    let mut cart: Vec<String> = after.get("cart").await.expect("get").expect("a cart");
    cart.sort();
    let every: Vec<String> = (0..100).map(|i| format!("item{i:03}")).collect();
    assert_eq!(cart, every, "every concurrent push survives, once");
    assert_eq!(after.get::<u32>("counter").await.expect("get"), Some(101));
}

#[tokio::test]
async fn a_conflicting_update_is_rerun_on_the_fresh_value() {
    let fx = Fixture::new();
    let manager = fx.manager();
    let cookie = start(&manager).await;
    let session = manager.session(Some(&cookie));
    let seen = session
        .update("list", |list: &mut Vec<String>| {
            list.push("mine".into());
            list.len()
        })
        .await
        .expect("update");
    assert_eq!(
        seen, 1,
        "update returns what the closure returned on this request's view"
    );
    session.insert("blind", &7u8).await.expect("insert");
    fx.probe.rivals.store(3, Ordering::SeqCst);
    let committed = session
        .commit()
        .await
        .expect("commit after three conflicts");
    assert!(!committed.gone);
    let after = manager.session(Some(&cookie));
    assert_eq!(
        after.get::<Vec<String>>("list").await.expect("get"),
        Some(vec![
            "rival0".into(),
            "rival1".into(),
            "rival2".into(),
            "mine".into()
        ]),
        "every rival's push and this request's push"
    );
    assert_eq!(after.get::<u8>("blind").await.expect("get"), Some(7));
    assert_eq!(
        session
            .get::<Vec<String>>("list")
            .await
            .expect("get")
            .map(|l| l.len()),
        Some(4),
        "the committed session's view follows the rerun"
    );
}

#[tokio::test]
async fn an_update_that_keeps_conflicting_fails_and_writes_nothing() {
    let fx = Fixture::new();
    let manager = fx.manager();
    let (cookie, session) = start_pushing_mine(&manager).await;
    session.insert("blind", &7u8).await.expect("insert");
    fx.probe.rivals.store(usize::MAX, Ordering::SeqCst);
    let err = session.commit().await.expect_err("conflicts every time");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    fx.probe.rivals.store(0, Ordering::SeqCst);
    let after = manager.session(Some(&cookie));
    let list: Vec<String> = after.get("list").await.expect("get").expect("rivals' list");
    assert_eq!(list.len(), sessionkit_core::UPDATE_ATTEMPTS as usize);
    assert!(
        !list.contains(&"mine".to_owned()),
        "nothing of the failed commit was written"
    );
    assert_eq!(after.get::<u8>("blind").await.expect("get"), None);
}

#[tokio::test]
async fn blind_writes_of_one_key_are_last_writer_wins() {
    let fx = Fixture::new();
    let manager = fx.manager();
    let cookie = start(&manager).await;
    let (a, b) = (
        manager.session(Some(&cookie)),
        manager.session(Some(&cookie)),
    );
    a.insert("counter", &10u32).await.expect("insert");
    a.update("counter", |n: &mut u32| *n += 1)
        .await
        .expect("update after insert");
    b.update("counter", |n: &mut u32| *n += 100)
        .await
        .expect("update");
    let _ = b.commit().await.expect("commit");
    fx.probe.rivals.store(1, Ordering::SeqCst);
    let _ = a.commit().await.expect("a blind write never conflicts");
    assert_eq!(
        fx.probe.rivals.load(Ordering::SeqCst),
        1,
        "no condition was sent"
    );
    let after = manager.session(Some(&cookie));
    assert_eq!(after.get::<u32>("counter").await.expect("get"), Some(11));
}

#[tokio::test]
async fn a_login_whose_updates_keep_conflicting_rotates_nothing() {
    let fx = Fixture::new();
    let manager = fx.manager();
    let cookie = start(&manager).await;
    let login = manager.session(Some(&cookie));
    login.cycle_id().await.expect("cycle");
    login.set_owner(Some("alice")).await.expect("owner");
    login
        .update("list", |list: &mut Vec<String>| list.push("welcome".into()))
        .await
        .expect("update");
    fx.probe.rivals.store(usize::MAX, Ordering::SeqCst);
    let err = login.commit().await.expect_err("conflicts every time");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    fx.probe.rivals.store(0, Ordering::SeqCst);
    fx.clock.advance(Duration::from_secs(60));
    let later = manager.session(Some(&cookie));
    assert_eq!(
        later.get::<u32>("counter").await.expect("get"),
        Some(1),
        "the browser's id still reaches the session after the grace period"
    );
    assert_eq!(
        later.owner().await.expect("owner"),
        None,
        "nothing of the login was written"
    );
}

#[tokio::test]
async fn an_update_whose_reply_was_lost_is_never_applied_twice() {
    let fx = Fixture::new();
    let manager = fx.manager();
    let (cookie, session) = start_pushing_mine(&manager).await;
    fx.probe.lose_reply.store(true, Ordering::SeqCst);
    let lost = session.commit().await.expect_err("the reply was lost");
    assert_eq!(lost.kind(), ErrorKind::Unavailable);
    let retried = session
        .commit()
        .await
        .expect_err("cannot tell its own write from another's");
    assert_eq!(retried.kind(), ErrorKind::Conflict, "{retried}");
    let after = manager.session(Some(&cookie));
    assert_eq!(
        after.get::<Vec<String>>("list").await.expect("get"),
        Some(vec!["mine".to_owned()]),
        "applied once"
    );
}

#[tokio::test]
async fn an_update_after_a_blind_write_that_changed_nothing_is_blind() {
    let fx = Fixture::new();
    let manager = fx.manager();
    let cookie = start(&manager).await;
    let (a, b) = (
        manager.session(Some(&cookie)),
        manager.session(Some(&cookie)),
    );
    a.insert("counter", &1u32)
        .await
        .expect("insert of the value it holds");
    a.update("counter", |n: &mut u32| *n += 1)
        .await
        .expect("update");
    b.update("counter", |n: &mut u32| *n += 100)
        .await
        .expect("update");
    let _ = b.commit().await.expect("commit");
    let _ = a.commit().await.expect("commit");
    let after = manager.session(Some(&cookie));
    assert_eq!(
        after.get::<u32>("counter").await.expect("get"),
        Some(2),
        "insert then update is a blind write: the last commit wins"
    );
}

#[test]
fn a_shared_store_is_used_as_it_is() {
    let shared: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let manager = SessionManager::builder(Arc::clone(&shared))
        .build()
        .expect("manager");
    assert!(Arc::ptr_eq(manager.store(), &shared), "not wrapped again");
    let owned = SessionManager::builder(MemoryStore::new())
        .build()
        .expect("manager");
    assert_eq!(owned.store().name(), "memory");
}

#[tokio::test]
async fn flashes_are_bounded_oversized_ones_refused_and_reading_none_stores_nothing() {
    use sessionkit_core::{FlashLevel, MAX_FLASH_BYTES, MAX_FLASHES};
    let fx = Fixture::new();
    let manager = fx.manager();
    let session = manager.session(None);
    assert!(session.take_flashes().await.expect("take").is_empty());
    assert_eq!(
        session.commit().await.expect("commit").cookie,
        CookieUpdate::Unchanged,
        "reading no flashes stores no session"
    );
    assert_eq!(fx.writes(), 0);

    let session = manager.session(None);
    for n in 0..MAX_FLASHES + 4 {
        session
            .flash(FlashLevel::Info, format!("m{n}"))
            .await
            .expect("flash");
    }
    let too_long = "x".repeat(MAX_FLASH_BYTES + 1);
    let err = session
        .flash(FlashLevel::Error, too_long)
        .await
        .expect_err("over the limit");
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    assert!(
        session.keys().await.expect("keys").is_empty(),
        "flashes are not app keys"
    );
    let cookie = cookie_id(&session.commit().await.expect("commit").cookie);

    let next = manager.session(Some(&cookie));
    let shown: Vec<String> = next
        .take_flashes()
        .await
        .expect("take")
        .into_iter()
        .map(|f| f.message)
        .collect();
    let kept: Vec<String> = (4..MAX_FLASHES + 4).map(|n| format!("m{n}")).collect();
    assert_eq!(shown, kept, "the newest are kept, oldest first");
    let _ = next.commit().await.expect("commit");
    let again = manager.session(Some(&cookie));
    assert!(again.take_flashes().await.expect("take").is_empty());
}

#[tokio::test]
async fn csrf_tokens_verify_only_in_their_session_and_not_through_an_old_id() {
    let fx = Fixture::new();
    let manager = fx
        .builder()
        .cycle_grace(Duration::from_secs(5))
        .build()
        .expect("manager");
    let session = manager.session(None);
    let token = session.csrf_token().await.expect("token");
    assert_ne!(
        token,
        session.csrf_token().await.expect("token"),
        "masked afresh"
    );
    assert!(session.verify_csrf(&token).await.expect("verify"));
    let cookie = cookie_id(&session.commit().await.expect("commit").cookie);

    let other = start(&manager).await;
    let other = manager.session(Some(&other));
    assert!(
        !other.verify_csrf(&token).await.expect("verify"),
        "another session's"
    );
    assert!(!other.verify_csrf("").await.expect("verify"));

    let login = manager.session(Some(&cookie));
    assert!(login.verify_csrf(&token).await.expect("verify"));
    login.cycle_id().await.expect("cycle");
    assert!(
        !login.verify_csrf(&token).await.expect("verify"),
        "rotated at login"
    );
    let new = cookie_id(&login.commit().await.expect("commit").cookie);
    let old_id = manager.session(Some(&cookie));
    let through_old = old_id
        .csrf_token()
        .await
        .expect("a token through the old id");
    let fresh = manager.session(Some(&new));
    let token = fresh.csrf_token().await.expect("token");
    assert!(
        !fresh.verify_csrf(&through_old).await.expect("verify"),
        "a token rendered through the old id verifies nowhere"
    );
    let _ = fresh.commit().await.expect("commit");
    let later = manager.session(Some(&new));
    assert!(later.verify_csrf(&token).await.expect("verify"));
}

/// A value that makes its session large.
fn big_value() -> Vec<u8> {
    vec![7u8; sessionkit_core::PARTIAL_LOAD_ABOVE + 1]
}

/// A large session, once loaded whole, is loaded key by key: each access loads only what it
/// needs, writes load nothing more, and what the request sees and stores is what a whole load
/// would give. A small one is always one whole load.
#[tokio::test]
async fn a_large_session_is_loaded_key_by_key_after_its_first_whole_load() {
    let fx = Fixture::new();
    let manager = fx.manager();
    let small = start(&manager).await;
    let session = manager.session(Some(&small));
    let before = fx.calls();
    assert_eq!(session.get::<u32>("counter").await.expect("get"), Some(1));
    assert_eq!(session.get::<u32>("other").await.expect("get"), None);
    assert_eq!(fx.calls(), before + 1, "a small session is one whole load");

    let session = manager.session(None);
    for (key, value) in [("a", 1u32), ("b", 2), ("c", 3), ("d", 4)] {
        session.insert(key, &value).await.expect("insert");
    }
    session.insert("big", &big_value()).await.expect("insert");
    session
        .set_expiry(Expiry::OnInactivity(2 * HOUR))
        .await
        .expect("expiry");
    let cookie = cookie_id(&session.commit().await.expect("commit").cookie);
    let first = manager.session(Some(&cookie));
    assert_eq!(first.get::<u32>("a").await.expect("get"), Some(1));
    assert_eq!(
        first
            .get::<Vec<u8>>("big")
            .await
            .expect("get")
            .map(|v| v.len()),
        Some(big_value().len()),
        "the first load in this process is whole"
    );

    let session = manager.session(Some(&cookie));
    let before = fx.calls();
    assert_eq!(session.get::<u32>("a").await.expect("get"), Some(1));
    assert_eq!(fx.calls(), before + 1, "one round trip for the first key");
    assert_eq!(session.get::<u32>("a").await.expect("get"), Some(1));
    assert_eq!(
        session.expiry().await.expect("expiry"),
        Expiry::OnInactivity(2 * HOUR)
    );
    assert_eq!(
        fx.calls(),
        before + 1,
        "loaded keys and the library's own cost nothing more"
    );
    assert_eq!(session.get::<u32>("b").await.expect("get"), Some(2));
    assert_eq!(session.get::<u32>("zz").await.expect("get"), None);
    assert_eq!(fx.calls(), before + 3, "one round trip per further key");
    session.insert("e", &5u32).await.expect("insert");
    assert!(session.remove("c").await.expect("remove"), "c was there");
    session
        .update("d", |d: &mut u32| *d += 10)
        .await
        .expect("update");
    let loads = fx.calls();
    assert_eq!(
        session.keys().await.expect("keys"),
        ["a", "b", "big", "d", "e"]
    );
    assert_eq!(fx.calls(), loads + 1, "keys() loads the rest once");
    assert_eq!(
        session.get::<u32>("d").await.expect("get"),
        Some(14),
        "the request's own write wins over the rest"
    );
    let _ = session.commit().await.expect("commit");

    // Writes only: one load (metadata and library keys) and one apply.
    let session = manager.session(Some(&cookie));
    let before = fx.calls();
    session.insert("f", &6u32).await.expect("insert");
    let _ = session.commit().await.expect("commit");
    assert_eq!(fx.calls(), before + 2);

    let whole = manager.session(Some(&cookie));
    assert_eq!(
        whole.keys().await.expect("keys"),
        ["a", "b", "big", "d", "e", "f"]
    );
    assert_eq!(whole.get::<u32>("d").await.expect("get"), Some(14));
}

/// A login (`cycle_id()`) on a session this process found large keeps it remembered: the
/// next request on the new id loads key by key, not the whole session again.
#[tokio::test]
async fn a_large_session_stays_partial_across_a_login() {
    let fx = Fixture::new();
    let manager = fx.manager();
    let session = manager.session(None);
    session.insert("a", &1u32).await.expect("insert");
    session.insert("big", &big_value()).await.expect("insert");
    let cookie = cookie_id(&session.commit().await.expect("commit").cookie);
    let first = manager.session(Some(&cookie));
    assert_eq!(first.get::<u32>("a").await.expect("get"), Some(1));
    let _ = first.commit().await.expect("commit");

    let login = manager.session(Some(&cookie));
    assert_eq!(login.get::<u32>("a").await.expect("get"), Some(1));
    login.cycle_id().await.expect("cycle");
    let moved = cookie_id(&login.commit().await.expect("commit").cookie);
    assert_ne!(moved, cookie);

    let whole = fx.probe.whole_loads.load(Ordering::SeqCst);
    let after = manager.session(Some(&moved));
    assert_eq!(after.get::<u32>("a").await.expect("get"), Some(1));
    assert_eq!(
        fx.probe.whole_loads.load(Ordering::SeqCst),
        whole,
        "the new id is read key by key"
    );
    assert_eq!(
        after
            .get::<Vec<u8>>("big")
            .await
            .expect("get")
            .map(|v| v.len()),
        Some(big_value().len())
    );
}

/// `clear()` after a partial load removes the keys it never loaded too, and keeps the
/// library's own (the expiry); the session, now small, is loaded whole again.
#[tokio::test]
async fn clear_after_a_partial_load_removes_what_was_not_loaded() {
    let fx = Fixture::new();
    let manager = fx.manager();
    let session = manager.session(None);
    session.insert("a", &1u32).await.expect("insert");
    session.insert("big", &big_value()).await.expect("insert");
    session
        .set_expiry(Expiry::OnInactivity(3 * HOUR))
        .await
        .expect("expiry");
    let cookie = cookie_id(&session.commit().await.expect("commit").cookie);
    let first = manager.session(Some(&cookie));
    assert_eq!(first.get::<u32>("a").await.expect("get"), Some(1));
    let session = manager.session(Some(&cookie));
    assert_eq!(session.get::<u32>("a").await.expect("get"), Some(1));
    session.clear().await.expect("clear");
    assert!(session.keys().await.expect("keys").is_empty());
    assert_eq!(session.get::<Vec<u8>>("big").await.expect("get"), None);
    let _ = session.commit().await.expect("commit");
    let whole = manager.session(Some(&cookie));
    assert!(whole.keys().await.expect("keys").is_empty());
    assert_eq!(
        whole.expiry().await.expect("expiry"),
        Expiry::OnInactivity(3 * HOUR)
    );
    let again = manager.session(Some(&cookie));
    let before = fx.calls();
    assert_eq!(again.get::<u32>("a").await.expect("get"), None);
    assert_eq!(
        again.expiry().await.expect("expiry"),
        Expiry::OnInactivity(3 * HOUR)
    );
    assert!(again.keys().await.expect("keys").is_empty());
    assert_eq!(fx.calls(), before + 1, "shrunk: one whole load again");
}
