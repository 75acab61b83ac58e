//! Partial loads: a request that reads one small key of a large session does not pay for the
//! rest.
//!
//! The rule, on stores with [`per_key_reads`](crate::Capabilities::per_key_reads): the first
//! access asks the store for the session whole if its data takes at most
//! [`PARTIAL_LOAD_ABOVE`] bytes, and otherwise for its metadata, the library's own keys and the
//! keys the access needs ([`Store::load_bounded`](crate::Store::load_bounded)); one round trip
//! either way. After a partial load, a later access of another key loads that key (one more
//! round trip), [`Session::keys`] and [`Session::is_empty`] load the rest, and writes never
//! need what is not loaded (they are deltas). Stores without per-key reads always load the
//! whole session.
//!
//! Keys loaded by different round trips are each as the store held them at their own read: a
//! request that needs several keys to agree with each other should [`Session::update`] them
//! (the conditions check each key at commit).

use super::{EXPIRY_KEY, Loaded, Session, csrf, flash};
use crate::error::Result;
use crate::id::SessionKey;
use crate::record::Record;

/// Sessions whose data takes more than this many bytes are loaded key by key (on stores with
/// per-key reads); smaller ones whole, in the same single round trip. At 64 KiB, reading the
/// whole session costs about what one more round trip does on a local database
/// (docs/BENCHMARKS.md, "Partial loads").
pub const PARTIAL_LOAD_ABOVE: usize = 64 * 1024;

/// The library's own keys: small, read by most requests (the expiry at every commit), so
/// every partial load includes them.
const RESERVED_KEYS: [&str; 3] = [EXPIRY_KEY, flash::FLASH_KEY, csrf::CSRF_KEY];

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
        let store = &self.shared.manager.store;
        if !store.capabilities().per_key_reads {
            return Ok(store.load(key).await?.map(|record| (record, None)));
        }
        let mut asked: Vec<&'k str> = RESERVED_KEYS.to_vec();
        asked.extend(keys.iter().filter(|k| !RESERVED_KEYS.contains(k)));
        let loaded = store.load_bounded(key, &asked, PARTIAL_LOAD_ABOVE).await?;
        Ok(loaded.map(|(record, whole)| (record, (!whole).then_some(asked))))
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
            for (key, value) in fresh.map(|r| r.data).unwrap_or_default() {
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
