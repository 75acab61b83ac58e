//! Partial loads: a request that reads one small key of a large session does not pay for the
//! rest.
//!
//! The rule, on stores with [`per_key_reads`](crate::Capabilities::per_key_reads): a session
//! is loaded whole, in one round trip, unless this process found it larger than
//! [`PARTIAL_LOAD_ABOVE`] before. A whole load that finds it larger remembers it (its key's
//! fingerprint, in a table of [`LARGE_SESSION_SLOTS`] slots per manager: a session whose slot
//! another large session takes is forgotten and simply loaded whole once more; `cycle_id()`
//! carries the memory over to the new id). A remembered
//! session's first access loads its metadata, the library's own keys and the keys the access
//! needs ([`Store::load_keys`](crate::Store::load_keys)); a later access of another key loads
//! that key (one more round trip), [`Session::keys`] and [`Session::is_empty`] load the rest
//! (and forget the session if it has shrunk), and writes never need what is not loaded (they
//! are deltas). Small sessions cost exactly what they did: the check is one atomic load, and
//! no store reads a size. Stores without per-key reads always load the whole session.
//!
//! Keys loaded by different round trips are each as the store held them at their own read: a
//! request that needs several keys to agree with each other should [`Session::update`] them
//! (the conditions check each key at commit).

use std::sync::atomic::{AtomicU64, Ordering};

use super::{EXPIRY_KEY, Loaded, Session, csrf, flash};
use crate::error::Result;
use crate::id::SessionKey;
use crate::record::{Data, Record};

/// Sessions whose values take more than this many bytes are loaded key by key (on stores with
/// per-key reads, once this process has seen one whole); smaller ones whole, in one round
/// trip. At 64 KiB, a whole load costs about what one more round trip does on a local
/// database.
pub const PARTIAL_LOAD_ABOVE: usize = 64 * 1024;

/// How many large sessions a manager remembers (8 bytes each): 65,536, 512 KiB.
pub const LARGE_SESSION_SLOTS: usize = 1 << 16;

/// The library's own keys: small, read by most requests (the expiry at every commit), so
/// every partial load includes them.
const RESERVED_KEYS: [&str; 3] = [EXPIRY_KEY, flash::FLASH_KEY, csrf::CSRF_KEY];

/// The sessions a manager found large: a direct-mapped table of key fingerprints (keys are
/// SHA-256 hashes, so their bytes index it evenly). Lock-free; a collision forgets the older.
pub(crate) struct LargeSessions {
    slots: Box<[AtomicU64]>,
}

impl LargeSessions {
    pub(crate) fn new() -> Self {
        Self {
            slots: (0..LARGE_SESSION_SLOTS)
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    /// The slot of `key`, and its fingerprint there (never 0, which marks an empty slot).
    fn slot(&self, key: &SessionKey) -> (&AtomicU64, u64) {
        let bytes = key.as_bytes();
        let word = |at: usize| {
            let mut word = [0; 8];
            word.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(word)
        };
        let index = usize::try_from(word(0) % LARGE_SESSION_SLOTS as u64).unwrap_or_default();
        (&self.slots[index], word(8) | 1)
    }

    fn contains(&self, key: &SessionKey) -> bool {
        let (slot, fingerprint) = self.slot(key);
        slot.load(Ordering::Relaxed) == fingerprint
    }

    fn remember(&self, key: &SessionKey) {
        let (slot, fingerprint) = self.slot(key);
        slot.store(fingerprint, Ordering::Relaxed);
    }

    fn forget(&self, key: &SessionKey) {
        let (slot, fingerprint) = self.slot(key);
        let _ = slot.compare_exchange(fingerprint, 0, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The session under `old` moved to `new` (`cycle_id()`): a large one stays remembered,
    /// so a login does not cost a whole load.
    pub(crate) fn moved(&self, old: &SessionKey, new: &SessionKey) {
        if self.contains(old) {
            self.forget(old);
            self.remember(new);
        }
    }
}

/// The bytes a session's values take.
fn size(data: &Data) -> usize {
    data.values().map(Vec::len).sum()
}

impl Loaded {
    /// This request wrote `key`: its value in `data` is the request's own from now on.
    pub(super) fn written(&mut self, key: &str) {
        if !self.complete {
            self.known.insert(key.to_owned());
        }
    }

    /// Takes the values of `keys` from `fresh` (absent there: absent in the session).
    fn merge(&mut self, fresh: Option<Record>, keys: &[&str]) {
        let mut fresh = fresh.map(|r| r.data).unwrap_or_default();
        for &key in keys {
            if let Some(value) = fresh.remove(key) {
                self.data.insert(key.to_owned(), value);
            }
            self.known.insert(key.to_owned());
        }
    }
}

impl Session {
    /// Loads the record under `key` with at least `keys` of its data: the record, and the keys
    /// it holds if it is partial (`None`: whole).
    pub(super) async fn load_record<'k>(
        &self,
        key: &SessionKey,
        keys: &[&'k str],
    ) -> Result<Option<(Record, Option<Vec<&'k str>>)>> {
        let manager = &self.shared.manager;
        let store = &manager.store;
        if manager.large_sessions.contains(key) && store.capabilities().per_key_reads {
            let mut asked: Vec<&'k str> = RESERVED_KEYS.to_vec();
            asked.extend(keys.iter().filter(|k| !RESERVED_KEYS.contains(k)));
            let record = store.load_keys(key, &asked).await?;
            return Ok(record.map(|record| (record, Some(asked))));
        }
        let record = store.load(key).await?;
        if let Some(record) = &record
            && size(&record.data) > PARTIAL_LOAD_ABOVE
            && store.capabilities().per_key_reads
        {
            manager.large_sessions.remember(key);
        }
        Ok(record.map(|record| (record, None)))
    }

    /// After a partial load: loads those of `keys` this request has not loaded or written.
    pub(super) async fn load_missing(&self, loaded: &mut Loaded, keys: &[&str]) -> Result<()> {
        if loaded.complete {
            return Ok(());
        }
        let missing: Vec<&str> = keys
            .iter()
            .copied()
            .filter(|k| !loaded.known.contains(*k))
            .collect();
        let Some(current) = loaded.current.as_ref().filter(|_| !missing.is_empty()) else {
            return Ok(());
        };
        let store = &self.shared.manager.store;
        let mut fresh = store.load_keys(&current.key, &missing).await?;
        if let Some(target) = fresh.as_ref().and_then(|r| r.moved_to) {
            // Cycled by another request meanwhile: the data lives on under the new key.
            fresh = store.load_keys(&target, &missing).await?;
        }
        loaded.merge(fresh, &missing);
        Ok(())
    }

    /// After a partial load: loads every key this request has not loaded or written.
    pub(super) async fn load_rest(&self, loaded: &mut Loaded) -> Result<()> {
        if loaded.complete {
            return Ok(());
        }
        if let Some(current) = loaded.current.as_ref() {
            let store = &self.shared.manager.store;
            let mut fresh = store.load(&current.key).await?;
            if let Some(target) = fresh.as_ref().and_then(|r| r.moved_to) {
                fresh = store.load(&target).await?;
            }
            let fresh = fresh.map(|r| r.data).unwrap_or_default();
            if size(&fresh) <= PARTIAL_LOAD_ABOVE {
                // It has shrunk: whole loads are the cheaper again.
                self.shared.manager.large_sessions.forget(&current.key);
            }
            for (key, value) in fresh {
                if !loaded.known.contains(&key) {
                    loaded.data.insert(key, value);
                }
            }
        }
        loaded.complete = true;
        loaded.known.clear();
        Ok(())
    }
}
