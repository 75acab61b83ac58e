//! # sessionkit-memory
//!
//! An in-process [`Store`] for sessionkit: sessions live in this process's memory and are gone
//! when it exits. Use it for tests, for development, and for single-process apps that can afford
//! to log everyone out on restart. It is complete: expiry, batched cleanup, an owner index,
//! ordered listing and per-key reads.
//!
//! `capabilities().multiprocess_safe` is false: two processes have two separate stores.
//!
//! Open it from a URL with `memory:`, or build it directly:
//!
//! ```
//! use sessionkit_core::SessionManager;
//! use sessionkit_memory::MemoryStore;
//!
//! let manager = SessionManager::builder(MemoryStore::new()).build()?;
//! # Ok::<(), sessionkit_core::Error>(())
//! ```
//!
//! All state sits behind one mutex that is never held across an `.await`; every operation is a
//! few map updates, and cleanup releases the lock between batches of [`CLEANUP_BATCH`] records.
//!
//! **Reports purged sessions** (`capabilities().reports_purged`):
//! [`Store::delete_expired_batch_reporting`] deletes a batch under one hold of the lock and
//! returns each expired session's key, owner and deadline, for
//! [`SessionHooks::purged_sessions`](sessionkit_core::SessionHooks::purged_sessions).

#![cfg_attr(docsrs, feature(doc_cfg))]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use sessionkit_core::{
    ApplyOutcome, Capabilities, Change, Clock, CycleOutcome, Error, ListFilter, Page, PageRequest,
    PurgeReport, PurgedSession, Record, Registry, Result, SessionKey, Store, StoredSession,
    SystemClock, Timestamp, async_trait,
};

/// How many expired records one cleanup step removes before letting other tasks in.
pub const CLEANUP_BATCH: usize = 1_000;

/// The in-memory store.
pub struct MemoryStore {
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
}

#[derive(Default)]
struct State {
    sessions: BTreeMap<SessionKey, Record>,
    by_expiry: BTreeSet<(Timestamp, SessionKey)>,
    by_owner: HashMap<String, BTreeSet<SessionKey>>,
}

/// Drops `key` from `owner`'s sessions (and the owner, once it has none).
fn unindex_owner(
    by_owner: &mut HashMap<String, BTreeSet<SessionKey>>,
    owner: &str,
    key: &SessionKey,
) {
    if let Some(keys) = by_owner.get_mut(owner) {
        keys.remove(key);
        if keys.is_empty() {
            by_owner.remove(owner);
        }
    }
}

impl State {
    fn insert(&mut self, key: SessionKey, record: Record) {
        self.remove(&key);
        self.by_expiry.insert((record.expires_at, key));
        if let Some(owner) = &record.owner {
            self.by_owner.entry(owner.clone()).or_default().insert(key);
        }
        self.sessions.insert(key, record);
    }

    fn remove(&mut self, key: &SessionKey) -> Option<Record> {
        let record = self.sessions.remove(key)?;
        self.by_expiry.remove(&(record.expires_at, *key));
        if let Some(owner) = &record.owner {
            unindex_owner(&mut self.by_owner, owner, key);
        }
        Some(record)
    }

    /// The live session under `key` (not expired, not a grace-period pointer).
    fn live(&self, key: &SessionKey, now: Timestamp) -> Option<&Record> {
        self.sessions
            .get(key)
            .filter(|r| !r.is_expired(now) && r.moved_to.is_none())
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(SystemClock)
    }

    /// An empty store that judges expiry by `clock` (share a
    /// [`ManualClock`](sessionkit_core::ManualClock) with the manager in tests).
    pub fn with_clock(clock: impl Clock) -> Self {
        Self {
            state: Mutex::new(State::default()),
            clock: Arc::new(clock),
        }
    }

    /// How many records (sessions, expired ones not yet purged, grace pointers) are held.
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Whether the store holds no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes up to `limit` expired records under one short hold of the lock; calls `removed`
    /// with each removed record, under the lock.
    fn remove_expired(&self, limit: usize, mut removed: impl FnMut(SessionKey, Record)) -> usize {
        let now = self.clock.now();
        let mut state = self.lock();
        let batch: Vec<SessionKey> = state
            .by_expiry
            .iter()
            .take_while(|(expires_at, _)| *expires_at <= now)
            .take(limit)
            .map(|(_, key)| *key)
            .collect();
        for key in &batch {
            if let Some(record) = state.remove(key) {
                removed(*key, record);
            }
        }
        batch.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No operation leaves the maps inconsistent when it panics midway (none can panic), so a
        // poisoned lock still guards consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The URL schemes this store opens.
pub const SCHEMES: [&str; 1] = ["memory"];

/// Registers [`SCHEMES`] with `registry`.
pub fn register(registry: &mut Registry) {
    registry.register_store(
        &SCHEMES,
        |_url, _mode| async move { Ok(MemoryStore::new()) },
    );
}

#[async_trait]
impl Store for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
            .with_multiprocess_safe(false)
            .with_reports_purged(true)
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<()> {
        let mut state = self.lock();
        if state.sessions.contains_key(key) {
            return Err(Error::conflict("a session with this key exists"));
        }
        state.insert(*key, record.clone());
        Ok(())
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let now = self.clock.now();
        Ok(self
            .lock()
            .sessions
            .get(key)
            .filter(|r| !r.is_expired(now))
            .cloned())
    }

    async fn load_keys(&self, key: &SessionKey, keys: &[&str]) -> Result<Option<Record>> {
        let now = self.clock.now();
        let state = self.lock();
        let Some(record) = state.sessions.get(key).filter(|r| !r.is_expired(now)) else {
            return Ok(None);
        };
        let data = keys
            .iter()
            .filter_map(|k| record.data.get_key_value(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Some(Record {
            data,
            created_at: record.created_at,
            expires_at: record.expires_at,
            owner: record.owner.clone(),
            version: record.version,
            moved_to: record.moved_to,
        }))
    }

    async fn apply(&self, key: &SessionKey, change: &Change) -> Result<ApplyOutcome> {
        let now = self.clock.now();
        let mut state = self.lock();
        let State {
            sessions,
            by_expiry,
            by_owner,
        } = &mut *state;
        let Some(record) = sessions
            .get_mut(key)
            .filter(|r| !r.is_expired(now) && r.moved_to.is_none())
        else {
            return Ok(ApplyOutcome::Gone);
        };
        if !change.holds(&record.data) {
            return Ok(ApplyOutcome::Conflict);
        }
        // In place: only the keys the change names are touched (no copy of the session), and
        // the indexes only when the deadline or the owner moved.
        let old_expiry = record.expires_at;
        let old_owner = change.owner.is_some().then(|| record.owner.clone());
        change.apply_to(record);
        if record.expires_at != old_expiry {
            by_expiry.remove(&(old_expiry, *key));
            by_expiry.insert((record.expires_at, *key));
        }
        if let Some(old_owner) = old_owner
            && record.owner != old_owner
        {
            if let Some(old) = &old_owner {
                unindex_owner(by_owner, old, key);
            }
            if let Some(new) = &record.owner {
                by_owner.entry(new.clone()).or_default().insert(*key);
            }
        }
        Ok(ApplyOutcome::Applied {
            version: record.version,
        })
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        Ok(self.lock().remove(key).is_some())
    }

    async fn cycle(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        grace_until: Option<Timestamp>,
    ) -> Result<CycleOutcome> {
        let now = self.clock.now();
        let mut state = self.lock();
        if state.live(old, now).is_none() {
            return Ok(CycleOutcome::Gone);
        }
        if state.sessions.contains_key(new) {
            return Err(Error::conflict("the new session key is taken"));
        }
        let Some(mut record) = state.remove(old) else {
            return Ok(CycleOutcome::Gone);
        };
        record.version += 1;
        state.insert(*new, record);
        if let Some(until) = grace_until {
            state.insert(*old, Record::moved(*new, now, until));
        }
        Ok(CycleOutcome::Cycled)
    }

    async fn delete_expired(&self) -> Result<u64> {
        let mut total = 0u64;
        loop {
            let removed = self.remove_expired(CLEANUP_BATCH, |_, _| {});
            total += removed as u64;
            if removed < CLEANUP_BATCH {
                return Ok(total);
            }
            yield_now().await;
        }
    }

    async fn delete_expired_batch(&self, limit: usize) -> Result<u64> {
        Ok(self.remove_expired(limit.max(1), |_, _| {}) as u64)
    }

    async fn delete_expired_batch_reporting(&self, limit: usize) -> Result<PurgeReport> {
        let mut sessions = Vec::new();
        let deleted = self.remove_expired(limit.max(1), |key, record| {
            if record.moved_to.is_none() {
                sessions.push(PurgedSession::new(key, record.owner, record.expires_at));
            }
        });
        Ok(PurgeReport::new(deleted as u64, sessions))
    }

    async fn count_expired(&self) -> Result<u64> {
        // The deadline index holds sessions and grace-period pointers alike, as cleanup sees it.
        let now = self.clock.now();
        let state = self.lock();
        let expired = state
            .by_expiry
            .iter()
            .take_while(|(expires_at, _)| *expires_at <= now)
            .count();
        Ok(expired as u64)
    }

    async fn list(&self, filter: &ListFilter, page: PageRequest) -> Result<Page> {
        let now = self.clock.now();
        let state = self.lock();
        let start = page.after.map_or(Bound::Unbounded, Bound::Excluded);
        let sessions = state
            .sessions
            .range((start, Bound::Unbounded))
            .filter(|(_, r)| r.moved_to.is_none() && filter.state.admits(r.expires_at, now))
            .filter(|(_, r)| filter.owner.is_none() || r.owner == filter.owner)
            .take(page.limit.saturating_add(1))
            .map(|(key, record)| StoredSession {
                key: *key,
                record: record.clone(),
            })
            .collect();
        Ok(Page::from_sorted(sessions, page.limit))
    }

    async fn by_owner(&self, owner: &str) -> Result<Vec<StoredSession>> {
        let now = self.clock.now();
        let state = self.lock();
        let Some(keys) = state.by_owner.get(owner) else {
            return Ok(Vec::new());
        };
        Ok(keys
            .iter()
            .filter_map(|key| {
                state.live(key, now).map(|r| StoredSession {
                    key: *key,
                    record: r.clone(),
                })
            })
            .collect())
    }

    async fn delete_by_owner(&self, owner: &str) -> Result<u64> {
        let now = self.clock.now();
        let mut state = self.lock();
        let keys: Vec<SessionKey> = state
            .by_owner
            .get(owner)
            .map(|keys| keys.iter().copied().collect())
            .unwrap_or_default();
        let mut live = 0;
        for key in keys {
            if state.remove(&key).is_some_and(|r| !r.is_expired(now)) {
                live += 1;
            }
        }
        Ok(live)
    }
}

/// Lets other tasks run between cleanup batches without depending on a runtime crate.
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await;
}
