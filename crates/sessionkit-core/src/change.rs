//! What one request changed in a session, and what applying it means.

use std::collections::{BTreeMap, BTreeSet};

use crate::record::{Data, Record};
use crate::time::Timestamp;

/// The changes one request made to a session: a delta, never the whole session.
///
/// Stores apply a change atomically, so two requests that change different keys of the same
/// session both keep their writes. Applying means, in this order: check that every condition in
/// `expected` holds ([`Change::holds`]; if one does not, write nothing); if `cleared`, drop every
/// key; then drop the keys in `removed`; then set the keys in `set`; then set `expires_at` and
/// `owner` if given; then bump the version. [`Change::holds`] and [`Change::apply_to`] are that
/// meaning, written once.
///
/// `expected` is what makes a read-modify-write of one key safe: [`Session::update`] records
/// the bytes it read (or that the key was absent), and the store writes the change only if the
/// key still holds exactly those bytes. The witness is the value itself, compared byte for byte,
/// rather than a per-key version: it needs no extra column, field or migration in any store, it
/// is exact (no hash collisions), and an `A → B → A` history in between is harmless because an
/// update closure sees only the value. Blind writes (`Session::insert`, `remove`, `clear`)
/// carry no condition: for one key, the later of two blind writes wins.
///
/// [`Session::update`]: crate::Session::update
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// Drop every key the session has before setting `set`.
    pub cleared: bool,
    /// Keys to set, with their encoded values.
    pub set: BTreeMap<String, Vec<u8>>,
    /// Keys to drop. Never overlaps `set`.
    pub removed: BTreeSet<String>,
    /// The new deadline, if it moved.
    pub expires_at: Option<Timestamp>,
    /// The new owner, if it changed (`Some(None)` removes the owner).
    pub owner: Option<Option<String>>,
    /// Conditions: for each key, the value the request read before it rewrote the key (`None`:
    /// the key was absent). The change is written only if the session still holds exactly
    /// these values; otherwise the store writes nothing and reports
    /// [`ApplyOutcome::Conflict`]. Every key here is also in `set` or `removed`, and a
    /// `cleared` change has none.
    pub expected: BTreeMap<String, Option<Vec<u8>>>,
}

impl Change {
    /// A change that only moves the deadline (what `touch` writes).
    pub fn expiry(expires_at: Timestamp) -> Self {
        Self {
            expires_at: Some(expires_at),
            ..Self::default()
        }
    }

    /// Whether applying this would change nothing.
    pub fn is_empty(&self) -> bool {
        !self.cleared
            && self.set.is_empty()
            && self.removed.is_empty()
            && self.expires_at.is_none()
            && self.owner.is_none()
    }

    /// Whether this changes any data (not only the deadline or the owner).
    pub fn touches_data(&self) -> bool {
        self.cleared || !self.set.is_empty() || !self.removed.is_empty()
    }

    /// Records that `key` is set to `value`.
    pub fn set(&mut self, key: String, value: Vec<u8>) {
        self.removed.remove(&key);
        self.set.insert(key, value);
    }

    /// Records that `key` is removed.
    pub fn remove(&mut self, key: &str) {
        self.set.remove(key);
        self.removed.insert(key.to_owned());
    }

    /// Records that every key is removed (which also drops every condition: nothing the
    /// session held before survives, so nothing it held matters).
    pub fn clear(&mut self) {
        self.set.clear();
        self.removed.clear();
        self.expected.clear();
        self.cleared = true;
    }

    /// Adds the condition that `key` still holds `seen` (`None`: is absent), unless the change
    /// already has one for `key`: the first read is what the request's later writes build on.
    pub fn expect(&mut self, key: &str, seen: Option<&[u8]>) {
        if !self.expected.contains_key(key) {
            self.expected
                .insert(key.to_owned(), seen.map(<[u8]>::to_vec));
        }
    }

    /// Whether every condition in `expected` holds for a session holding `data`: the check a
    /// store makes, atomically with the write, before applying. True for a change with no
    /// conditions.
    pub fn holds(&self, data: &Data) -> bool {
        self.expected
            .iter()
            .all(|(key, seen)| data.get(key).map(Vec::as_slice) == seen.as_deref())
    }

    /// Applies this change to `record` in memory: the reference semantics every store implements.
    /// The caller has already checked that the record exists and is not expired, and that the
    /// change [`holds`](Change::holds) for it.
    pub fn apply_to(&self, record: &mut Record) {
        if self.cleared {
            record.data.clear();
        }
        for key in &self.removed {
            record.data.remove(key);
        }
        for (key, value) in &self.set {
            record.data.insert(key.clone(), value.clone());
        }
        if let Some(expires_at) = self.expires_at {
            record.expires_at = expires_at;
        }
        if let Some(owner) = &self.owner {
            record.owner.clone_from(owner);
        }
        record.version += 1;
    }
}

/// What [`Store::apply`](crate::Store::apply) and [`Store::touch`](crate::Store::touch) found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum ApplyOutcome {
    /// The change was applied; the session is now at this version.
    Applied {
        /// The version after the change.
        version: u64,
    },
    /// There was no live session under the key (never existed, deleted, cycled away, expired,
    /// or only a grace-period pointer): nothing was written and nothing was created.
    Gone,
    /// The session is live but a condition in [`Change::expected`] no longer holds (another
    /// request changed the key since this one read it): nothing was written. The session
    /// reloads the key, runs its update again on the fresh value and retries.
    Conflict,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_and_remove_cancel_out() {
        let mut change = Change::default();
        change.set("a".into(), vec![1]);
        change.remove("a");
        assert!(change.set.is_empty());
        assert!(change.removed.contains("a"));
        change.set("a".into(), vec![2]);
        assert!(change.removed.is_empty());
        assert!(change.touches_data());
    }

    #[test]
    fn apply_follows_clear_remove_set_order() {
        let mut record = Record::new(Timestamp::from_millis(0), Timestamp::from_millis(10));
        record.data.insert("old".into(), vec![0]);
        record.data.insert("gone".into(), vec![0]);
        let mut change = Change::default();
        change.remove("gone");
        change.set("new".into(), vec![1]);
        change.expires_at = Some(Timestamp::from_millis(20));
        change.owner = Some(Some("bob".into()));
        change.apply_to(&mut record);
        assert_eq!(record.data.keys().collect::<Vec<_>>(), ["new", "old"]);
        assert_eq!(record.expires_at, Timestamp::from_millis(20));
        assert_eq!(record.owner.as_deref(), Some("bob"));
        assert_eq!(record.version, 2);

        let mut clear = Change::default();
        clear.clear();
        clear.set("only".into(), vec![2]);
        clear.owner = Some(None);
        clear.apply_to(&mut record);
        assert_eq!(record.data.keys().collect::<Vec<_>>(), ["only"]);
        assert_eq!(record.owner, None);
        assert!(Change::default().is_empty());
        assert!(!Change::expiry(Timestamp::from_millis(1)).is_empty());
        assert!(!Change::expiry(Timestamp::from_millis(1)).touches_data());
    }

    #[test]
    fn conditions_compare_bytes_and_absence() {
        let mut data = Data::new();
        data.insert("n".into(), vec![1]);
        let mut change = Change::default();
        assert!(change.holds(&data), "no condition always holds");
        change.expect("n", Some(&[1]));
        change.expect("n", Some(&[9]));
        assert_eq!(
            change.expected["n"],
            Some(vec![1]),
            "the first read is kept"
        );
        assert!(change.holds(&data));
        change.expect("absent", None);
        assert!(change.holds(&data));
        data.insert("absent".into(), vec![]);
        assert!(!change.holds(&data), "an empty value is not an absent one");
        data.remove("absent");
        data.insert("n".into(), vec![2]);
        assert!(!change.holds(&data));
        change.clear();
        assert!(change.expected.is_empty() && change.holds(&data));
    }
}
