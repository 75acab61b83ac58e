//! What a request's [`Session::update`](super::Session::update)s keep until commit: the
//! closures to run again when the store reports a conflict, and what tells a conditional write
//! from a blind one.

use std::collections::BTreeSet;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Loaded, check_size, decode_or_default};
use crate::codec::encode_value;
use crate::error::Result;
use crate::lifecycle::ManagerInner;

/// An update kept for commit time: runs the update closure on a value's bytes (`None`:
/// absent) and returns the new bytes. Takes the data key (for its errors) and the value size
/// limit as arguments, so that a closure capturing nothing boxes without an allocation.
pub(super) type Replay = Box<dyn FnMut(&str, Option<&[u8]>, usize) -> Result<Vec<u8>> + Send>;

/// The update closures of each conditionally written key, in call order.
type Replays = Vec<(String, Replay)>;

/// A request's update bookkeeping, allocated by its first `update` (or blind write that
/// changed nothing): a request that makes neither carries none.
#[derive(Default)]
pub(super) struct Updates {
    /// The update closures of each conditionally written key, in call order.
    replays: Replays,
    /// Keys this request wrote blindly without changing them (an `insert` of the value the key
    /// holds, a `remove` of an absent key): not in the change, but no longer the stored value's
    /// either, so a later `update` of them is blind too.
    settled: BTreeSet<String>,
    /// A store error interrupted an apply of this change's conditions: it may have been
    /// written. A conflict on retry then cannot tell this request's own write from another's,
    /// so the updates are not re-run (they would be applied twice).
    pub(super) unsure: bool,
}

/// The update closure `f` of values of type `T`, kept for re-runs: decodes, runs `f`,
/// encodes, and checks the size as the first run did.
pub(super) fn replay<T, R, F>(mut f: F) -> Replay
where
    T: Serialize + DeserializeOwned + Default + 'static,
    F: FnMut(&mut T) -> R + Send + 'static,
{
    Box::new(move |key, stored, limit| {
        let mut value: T = decode_or_default(key, stored)?;
        f(&mut value);
        let bytes = encode_value(key, &value)?;
        check_size(key, &bytes, limit)?;
        Ok(bytes)
    })
}

fn has(replays: &Replays, key: &str) -> bool {
    replays.iter().any(|(k, _)| k == key)
}

impl Loaded {
    fn updates_mut(&mut self) -> &mut Updates {
        self.updates.get_or_insert_with(Box::default)
    }

    /// A blind write of `key` is coming: it replaces whatever updates made of the key, so
    /// their condition and closures go.
    pub(super) fn blind(&mut self, key: &str) {
        if let Some(updates) = self.updates.as_mut() {
            updates.replays.retain(|(k, _)| k != key);
            self.change.expected.remove(key);
        }
    }

    /// After a blind write of `key`: if it changed nothing, remember that the key's value is
    /// still this request's own.
    pub(super) fn settle(&mut self, key: &str) {
        if !self.change.set.contains_key(key) && !self.change.removed.contains(key) {
            self.updates_mut().settled.insert(key.to_owned());
        }
    }

    /// Records an update of `key` to `bytes`. The first update of a key this request has not
    /// written blindly makes the write conditional on the value it read; later ones build on
    /// it. After a blind write the key's value is this request's own, so no condition applies.
    pub(super) fn put_updated(&mut self, key: &str, bytes: Vec<u8>, replay: Replay) {
        if self.updates.as_ref().is_some_and(|u| has(&u.replays, key)) {
            self.updates_mut().replays.push((key.to_owned(), replay));
        } else if !self.written_blindly(key) {
            if self.data.get(key) == Some(&bytes) {
                return; // changes nothing: no write, no condition
            }
            // The value read is the witness: moved into the condition, not copied.
            let seen = self.data.insert(key.to_owned(), bytes.clone());
            self.change.expected.insert(key.to_owned(), seen);
            self.change.set(key.to_owned(), bytes);
            self.updates_mut().replays.push((key.to_owned(), replay));
            return;
        }
        self.put(key, bytes);
    }

    /// Whether this request wrote `key` blindly (its value is then the request's own).
    fn written_blindly(&self, key: &str) -> bool {
        self.change.cleared
            || self.change.set.contains_key(key)
            || self.change.removed.contains(key)
            || self
                .updates
                .as_ref()
                .is_some_and(|c| c.settled.contains(key))
    }

    /// Drops the conditions of keys this change does not write (their updates changed
    /// nothing): a key not written needs no check.
    pub(super) fn prune_conditions(&mut self) {
        let change = &mut self.change;
        change
            .expected
            .retain(|key, _| change.set.contains_key(key) || change.removed.contains(key));
        if let Some(updates) = self.updates.as_mut() {
            updates
                .replays
                .retain(|(key, _)| change.expected.contains_key(key));
        }
    }

    /// Whether a store error may have written this change's conditions already.
    pub(super) fn unsure(&self) -> bool {
        self.updates.as_ref().is_some_and(|c| c.unsure)
    }

    /// After a conflict: reads the conditional keys again and re-runs their updates on the
    /// fresh values, so the next apply expects what the store holds now. False if the
    /// session is gone.
    pub(super) async fn rerun_updates(&mut self, manager: &ManagerInner) -> Result<bool> {
        let limit = manager.config.max_value_bytes;
        let (Some(current), Some(updates)) = (self.current.as_mut(), self.updates.as_mut()) else {
            return Ok(false);
        };
        let keys: Vec<&str> = self.change.expected.keys().map(String::as_str).collect();
        let mut record = manager.store.load_keys(&current.key, &keys).await?;
        if let Some(target) = record.as_ref().and_then(|r| r.moved_to)
            && current.via.is_none()
        {
            // Cycled by another request meanwhile: the session lives on under `target`.
            record = manager.store.load_keys(&target, &keys).await?;
            current.key = target;
            current.id = None;
        }
        let Some(record) =
            record.filter(|r| r.moved_to.is_none() && manager.is_live(r, manager.now()))
        else {
            return Ok(false);
        };
        let mut keys: Vec<String> = self.change.expected.keys().cloned().collect();
        keys.retain(|key| has(&updates.replays, key));
        for key in keys {
            let fresh = record.data.get(&key);
            let mut value = fresh.cloned();
            for (_, replay) in updates.replays.iter_mut().filter(|(k, _)| *k == key) {
                value = Some(replay(&key, value.as_deref(), limit)?);
            }
            self.change.expected.insert(key.clone(), fresh.cloned());
            match value {
                Some(bytes) if Some(&bytes) != fresh => {
                    self.data.insert(key.clone(), bytes.clone());
                    self.change.set(key, bytes);
                }
                _ => {
                    // The fresh value already is the result: nothing to write for this key.
                    match fresh {
                        Some(bytes) => self.data.insert(key.clone(), bytes.clone()),
                        None => self.data.remove(&key),
                    };
                    self.change.set.remove(&key);
                }
            }
        }
        self.prune_conditions();
        Ok(true)
    }
}
