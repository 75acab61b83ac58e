use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use sessionkit_core::backend::{split_options, unsupported};
use sessionkit_core::{
    ApplyOutcome, Capabilities, Change, CycleOutcome, Error, ListFilter, Page, PageRequest,
    Record, Registry, Result, SessionKey, Store, StoredSession, Timestamp, async_trait,
};

/// A store that keeps sessions in a map in this process. Every operation takes the one lock,
/// so each is atomic, which is what the contracts ask for.
#[derive(Default)]
pub struct MapStore {
    sessions: Mutex<HashMap<SessionKey, Record>>,
}

impl MapStore {
    fn sessions(&self) -> MutexGuard<'_, HashMap<SessionKey, Record>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens a store from its URL, `map:` (no options): the one place the URL is read.
    pub fn open(url: &str) -> Result<Self> {
        match split_options(url) {
            ("", options) if options.is_empty() => Ok(Self::default()),
            // The message does not echo the URL: a store URL may hold a password.
            _ => Err(Error::config("a map store URL is `map:`, with no options")),
        }
    }
}

/// The URL schemes this store opens, in one place.
pub const SCHEMES: [&str; 1] = ["map"];

/// Registers [`SCHEMES`] with a registry (the facade calls each backend's `register`). The
/// opener gets the `OpenMode` too: a store that creates a file, a directory or a schema when it
/// opens must create nothing in `OpenMode::Existing`; a map creates nothing either way.
pub fn register(registry: &mut Registry) {
    registry.register_store(&SCHEMES, |url, _mode| async move { MapStore::open(&url) });
}

/// A live session: not expired and not a grace-period pointer.
fn live(record: &Record, now: Timestamp) -> bool {
    !record.is_expired(now) && record.moved_to.is_none()
}

#[async_trait]
impl Store for MapStore {
    fn name(&self) -> &'static str {
        "map"
    }

    fn capabilities(&self) -> Capabilities {
        // One process only; no listing or owner index (those operations say `unsupported`).
        Capabilities::all()
            .with_multiprocess_safe(false)
            .with_iterable(false)
            .with_owner_index(false)
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<()> {
        let mut sessions = self.sessions();
        if sessions.get(key).is_some_and(|r| !r.is_expired(Timestamp::now())) {
            return Err(Error::conflict("the session key is taken"));
        }
        sessions.insert(*key, record.clone());
        Ok(())
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let now = Timestamp::now();
        Ok(self.sessions().get(key).filter(|r| !r.is_expired(now)).cloned())
    }

    async fn apply(&self, key: &SessionKey, change: &Change) -> Result<ApplyOutcome> {
        let mut sessions = self.sessions();
        let Some(record) = sessions.get_mut(key).filter(|r| live(r, Timestamp::now())) else {
            return Ok(ApplyOutcome::Gone); // update-only: never re-create a session
        };
        if !change.holds(&record.data) {
            return Ok(ApplyOutcome::Conflict); // a condition failed: write nothing
        }
        change.apply_to(record);
        Ok(ApplyOutcome::Applied {
            version: record.version,
        })
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        Ok(self.sessions().remove(key).is_some())
    }

    async fn cycle(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        grace_until: Option<Timestamp>,
    ) -> Result<CycleOutcome> {
        let now = Timestamp::now();
        let mut sessions = self.sessions();
        if !sessions.get(old).is_some_and(|r| live(r, now)) {
            return Ok(CycleOutcome::Gone);
        }
        if sessions.get(new).is_some_and(|r| !r.is_expired(now)) {
            return Err(Error::conflict("the new session key is taken"));
        }
        let Some(mut record) = sessions.remove(old) else {
            return Ok(CycleOutcome::Gone);
        };
        record.version += 1;
        sessions.insert(*new, record);
        if let Some(until) = grace_until {
            sessions.insert(*old, Record::moved(*new, now, until));
        }
        Ok(CycleOutcome::Cycled)
    }

    async fn delete_expired(&self) -> Result<u64> {
        let now = Timestamp::now();
        let mut sessions = self.sessions();
        let before = sessions.len();
        sessions.retain(|_, record| !record.is_expired(now));
        Ok((before - sessions.len()) as u64)
    }

    async fn list(&self, _filter: &ListFilter, _page: PageRequest) -> Result<Page> {
        Err(unsupported("map", "list"))
    }

    async fn by_owner(&self, _owner: &str) -> Result<Vec<StoredSession>> {
        Err(unsupported("map", "by_owner"))
    }

    async fn delete_by_owner(&self, _owner: &str) -> Result<u64> {
        Err(unsupported("map", "delete_by_owner"))
    }
}
