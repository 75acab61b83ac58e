//! The store trait: what every backend does, and the contract of each operation.
//!
//! Stores are keyed by [`SessionKey`] (the hash of the session id): a store never sees an id a
//! browser could present. Every operation is async and every contract below is checked by the
//! conformance suite (`sessionkit-conformance`), which every backend runs.
//!
//! Time: a store judges expiry by its own clock (the machine's wall clock, or the server's for
//! stores with native expiry). The manager judges expiry again with its own clock, so a record the
//! store still returns a moment after its deadline is never used.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{Stream, TryStreamExt};

use crate::change::{ApplyOutcome, Change};
use crate::error::{ErrorKind, Result};
use crate::id::SessionKey;
use crate::record::{Record, StoredSession};
use crate::time::Timestamp;

/// What a store can do, for callers that adapt (the CLI, the manager's owner limit) and for the
/// seeds' `is_multiprocess_safe` question.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Several processes (app servers, a CLI next to a running app) may use the store at once.
    pub multiprocess_safe: bool,
    /// [`Store::list`] works (and so do the CLI's `list`, `stats` and `migrate --from`).
    pub iterable: bool,
    /// [`Store::by_owner`] and [`Store::delete_by_owner`] work.
    pub owner_index: bool,
    /// [`Store::load_keys`] does not read the values it was not asked for: every value on
    /// memory, SQLite, redb and Redis; the values over 1 KiB on PostgreSQL and MySQL/MariaDB,
    /// which keep smaller ones in the session row (one document, read whole).
    pub per_key_reads: bool,
    /// The backend expires sessions itself; [`Store::delete_expired`] has little or nothing to do.
    pub native_ttl: bool,
    /// [`Store::delete_expired_batch_reporting`] works: cleanup can say which sessions it
    /// deleted (key hash, owner, deadline), for audit logs
    /// ([`SessionHooks::purged_sessions`](crate::SessionHooks::purged_sessions)).
    ///
    /// | store | reports purged sessions |
    /// | --- | --- |
    /// | memory, SQLite, file, redb, PostgreSQL, MySQL/MariaDB | yes |
    /// | Redis, Memcached | no: the server expires sessions itself, silently (see their crate docs) |
    ///
    /// Off in [`Capabilities::all`], so a store that does not implement the method never claims
    /// it; a store that does turns it on with [`Capabilities::with_reports_purged`].
    pub reports_purged: bool,
}

impl Capabilities {
    /// Everything supported, multi-process, no native expiry: a starting point for stores to
    /// adjust. `reports_purged` is off (a store turns it on when it implements
    /// [`Store::delete_expired_batch_reporting`]).
    pub const fn all() -> Self {
        Self {
            multiprocess_safe: true,
            iterable: true,
            owner_index: true,
            per_key_reads: true,
            native_ttl: false,
            reports_purged: false,
        }
    }

    /// Returns `self` with `multiprocess_safe` set.
    #[must_use]
    pub const fn with_multiprocess_safe(mut self, yes: bool) -> Self {
        self.multiprocess_safe = yes;
        self
    }

    /// Returns `self` with `iterable` set.
    #[must_use]
    pub const fn with_iterable(mut self, yes: bool) -> Self {
        self.iterable = yes;
        self
    }

    /// Returns `self` with `owner_index` set.
    #[must_use]
    pub const fn with_owner_index(mut self, yes: bool) -> Self {
        self.owner_index = yes;
        self
    }

    /// Returns `self` with `per_key_reads` set.
    #[must_use]
    pub const fn with_per_key_reads(mut self, yes: bool) -> Self {
        self.per_key_reads = yes;
        self
    }

    /// Returns `self` with `native_ttl` set.
    #[must_use]
    pub const fn with_native_ttl(mut self, yes: bool) -> Self {
        self.native_ttl = yes;
        self
    }

    /// Returns `self` with `reports_purged` set.
    #[must_use]
    pub const fn with_reports_purged(mut self, yes: bool) -> Self {
        self.reports_purged = yes;
        self
    }
}

/// Which sessions [`Store::list`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only sessions of this owner.
    pub owner: Option<String>,
    /// Live, expired, or both.
    pub state: ListState,
}

/// The expiry state [`ListFilter`] selects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ListState {
    /// Only sessions that are not expired.
    #[default]
    Live,
    /// Only expired sessions not yet purged.
    Expired,
    /// Both.
    All,
}

impl ListState {
    /// Whether a record with this deadline passes the filter at `now`.
    pub fn admits(self, expires_at: Timestamp, now: Timestamp) -> bool {
        match self {
            Self::Live => expires_at > now,
            Self::Expired => expires_at <= now,
            Self::All => true,
        }
    }
}

/// Which page of a listing to return. Pages are keyset-paginated by [`SessionKey`] order, so a
/// listing walks a store of any size in constant memory and never skips or repeats a session that
/// exists for the whole walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    /// Return sessions whose key sorts after this one (`None`: from the start).
    pub after: Option<SessionKey>,
    /// At most this many sessions.
    pub limit: usize,
}

impl PageRequest {
    /// The first page of at most `limit` sessions.
    pub const fn first(limit: usize) -> Self {
        Self { after: None, limit }
    }
}

/// One page of a listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// The sessions, in ascending key order.
    pub sessions: Vec<StoredSession>,
    /// The keys, in ascending order, of stored records in this page's range that do not
    /// decode (a corrupt file or row): they are not in `sessions`, and since their owner and
    /// deadline cannot be read they are reported whatever the filter, so that admin tools can
    /// name them instead of skipping them silently. Stores that cannot single out one record
    /// (the listing's query fails as a whole) return the listing's error instead.
    pub undecodable: Vec<SessionKey>,
    /// Where the next page starts, or `None` if this was the last page.
    pub next: Option<SessionKey>,
}

impl Page {
    /// Builds a page from up to `limit + 1` sessions in key order: the extra one, if present,
    /// proves there is a next page and is dropped. Stores fetch `limit + 1` rows and call this.
    pub fn from_sorted(sessions: Vec<StoredSession>, limit: usize) -> Self {
        Self::from_sorted_entries(sessions.into_iter().map(Ok).collect(), limit)
    }

    /// As [`Page::from_sorted`], for stores that decode each record themselves: an entry is a
    /// session, or the key of a record that does not decode (which goes to
    /// [`Page::undecodable`]). Both count towards `limit`, so a page of undecodable records
    /// still moves the listing on.
    pub fn from_sorted_entries(
        mut entries: Vec<std::result::Result<StoredSession, SessionKey>>,
        limit: usize,
    ) -> Self {
        let next = if entries.len() > limit {
            entries.truncate(limit);
            entries.last().map(|entry| match entry {
                Ok(session) => session.key,
                Err(key) => *key,
            })
        } else {
            None
        };
        let mut page = Self {
            next,
            ..Self::default()
        };
        for entry in entries {
            match entry {
                Ok(session) => page.sessions.push(session),
                Err(key) => page.undecodable.push(key),
            }
        }
        page
    }
}

/// One expired session that a cleanup deleted, as
/// [`Store::delete_expired_batch_reporting`] reports it, for audit logs. It names the session
/// by its [`SessionKey`] (the hash of the id), never by the id.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PurgedSession {
    /// The session's key (the SHA-256 of its id).
    pub key: SessionKey,
    /// Who the session belonged to, if anyone.
    pub owner: Option<String>,
    /// The deadline it expired at.
    pub expires_at: Timestamp,
}

impl PurgedSession {
    /// A purged session (stores build these; more fields may come, with defaults).
    pub fn new(key: SessionKey, owner: Option<String>, expires_at: Timestamp) -> Self {
        Self {
            key,
            owner,
            expires_at,
        }
    }
}

/// What one step of [`Store::delete_expired_batch_reporting`] deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PurgeReport {
    /// How many records the step deleted, counted as [`Store::delete_expired_batch`] counts
    /// them: expired sessions, expired grace-period pointers, and (in stores that delete them)
    /// expired records that do not decode. `0` means nothing expired was left.
    pub deleted: u64,
    /// The sessions among them, in no particular order: every deleted record that is a session
    /// (not a grace-period pointer) and decodes. Each deleted session appears once.
    pub sessions: Vec<PurgedSession>,
}

impl PurgeReport {
    /// A report of `deleted` records, of which `sessions` were sessions.
    pub fn new(deleted: u64, sessions: Vec<PurgedSession>) -> Self {
        Self { deleted, sessions }
    }
}

/// What [`Store::cycle`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum CycleOutcome {
    /// The session now lives under the new key.
    Cycled,
    /// There was no live session under the old key; nothing was written.
    Gone,
}

/// A session store. See the [module docs](self) for how keys and time are handled.
///
/// Implementations must be safe to share between tasks (`Send + Sync`) and must hold no lock
/// across an `.await` that another task needs to make progress.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name for messages and metrics (`"memory"`, `"sqlite"`).
    fn name(&self) -> &'static str;

    /// What this store supports.
    fn capabilities(&self) -> Capabilities;

    /// Inserts a new session. **Insert only**: if a live record or a grace-period pointer exists
    /// under `key`, nothing is written and the result is an [`ErrorKind::Conflict`] error, which
    /// the manager answers by drawing a new id. (An expired record not yet purged may be replaced
    /// or reported as a conflict; stores with native expiry no longer have it.)
    async fn create(&self, key: &SessionKey, record: &Record) -> Result<()>;

    /// Loads a session. `Ok(None)` means missing **or expired**: an expired record is never
    /// returned. A grace-period pointer left by [`Store::cycle`] is returned as a record with
    /// `moved_to` set until its own deadline. `Err` is for system failures only (and a stored
    /// record that does not decode, which is [`ErrorKind::Codec`]).
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>>;

    /// Loads only some data keys of a session (for sessions that hold large values). Same
    /// `Ok(None)` rules as [`Store::load`]; keys the session does not have are absent from the
    /// returned record's `data`, and every other field is filled in. Stores whose layout cannot
    /// read single keys keep this default, which loads the whole record and filters it
    /// (`capabilities().per_key_reads` says which).
    async fn load_keys(&self, key: &SessionKey, keys: &[&str]) -> Result<Option<Record>> {
        Ok(self.load(key).await?.map(|mut record| {
            record.data.retain(|k, _| keys.contains(&k.as_str()));
            record
        }))
    }

    /// Applies `change` to a live session, **atomically**: all of it or none of it, and
    /// concurrent applies to the same session compose (two changes setting different keys both
    /// survive; for the same key, the later one wins unless the change is conditional). Updates
    /// only: if there is no live session under `key` (missing, deleted, expired, or a
    /// grace-period pointer), nothing is written, **nothing is created**, and the result is
    /// [`ApplyOutcome::Gone`]. An empty change still checks liveness and bumps the version.
    ///
    /// **Conditions.** If the session is live and any condition in [`Change::expected`] fails
    /// (the key's current value is not byte for byte the expected one, or is present where
    /// `None` was expected, or absent where bytes were), nothing is written (no key, no
    /// deadline, no owner, no version bump) and the result is [`ApplyOutcome::Conflict`].
    /// The check and the write are one atomic step: no other apply, cycle or delete of the
    /// session lands between them. `Gone` takes precedence over `Conflict`.
    /// [`Change::holds`] is the reference check.
    async fn apply(&self, key: &SessionKey, change: &Change) -> Result<ApplyOutcome>;

    /// Moves a live session's deadline to `expires_at`. Same contract as `apply` with
    /// [`Change::expiry`], which is the default; stores with a cheaper way override it.
    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<ApplyOutcome> {
        self.apply(key, &Change::expiry(expires_at)).await
    }

    /// Deletes a session (or a grace-period pointer). Deleting a missing key is a no-op, not an
    /// error. Returns whether a record was there. A concurrent `apply` either lands before the
    /// delete or finds the session gone: it never brings the session back.
    async fn delete(&self, key: &SessionKey) -> Result<bool>;

    /// Moves a live session from `old` to `new` **atomically** (id rotation at login): the
    /// record, data, owner and deadline move, the version is bumped. If `grace_until` is given,
    /// `old` is left holding a pointer record (`moved_to = Some(new)`, no data, no owner,
    /// `expires_at = grace_until`) so in-flight requests that still carry the old id find the
    /// session; otherwise `old` is deleted. If there is no live session under `old` the result is
    /// [`CycleOutcome::Gone`] and nothing is written. If `new` is taken the result is an
    /// [`ErrorKind::Conflict`] error and nothing is written.
    async fn cycle(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        grace_until: Option<Timestamp>,
    ) -> Result<CycleOutcome>;

    /// Creates or migrates whatever the store needs (tables, indexes, directories). Idempotent:
    /// safe to call on every start and from several processes at once.
    async fn setup(&self) -> Result<()> {
        Ok(())
    }

    /// The schema [`Store::setup`] creates, as text for users' own migration tools (SQL DDL for
    /// SQL stores), or `None` if the store has no schema.
    fn schema(&self) -> Option<String> {
        None
    }

    /// Deletes every expired record (sessions and grace-period pointers) and returns how many.
    /// Works in batches so it never holds a long lock or deadlocks against live traffic; with
    /// several processes, concurrent calls must not fail (one may find nothing left to do).
    async fn delete_expired(&self) -> Result<u64>;

    /// How many records [`Store::delete_expired`] would delete now: expired sessions **and
    /// expired grace-period pointers**, of every owner. Admin tools show it before a purge
    /// (`sessionkit stats`, the progress of `sessionkit purge`), so it counts exactly what a
    /// purge deletes. The default counts the expired sessions [`Store::list`] returns, which is
    /// right for a store whose backend drops expired records itself (native expiry); a store
    /// that keeps grace-period pointers until its cleanup deletes them must override it.
    /// [`ErrorKind::Unsupported`] if `capabilities().iterable` is false and the store does not
    /// override it.
    async fn count_expired(&self) -> Result<u64> {
        let filter = ListFilter {
            owner: None,
            state: ListState::Expired,
        };
        list_all(self, filter, 500)
            .try_fold(0u64, |n, _| async move { Ok(n + 1) })
            .await
    }

    /// Deletes expired records in one short step of about `limit` (admin tools call this in a
    /// loop to show progress) and returns how many; 0 means none are left. Stores that cannot
    /// bound a step keep this default, which runs the whole [`Store::delete_expired`] as one
    /// step. Unlike `delete_expired`, it takes no cross-server cleaner lock.
    async fn delete_expired_batch(&self, limit: usize) -> Result<u64> {
        let _ = limit;
        self.delete_expired().await
    }

    /// Deletes expired records in one short step of about `limit`, as
    /// [`Store::delete_expired_batch`] does, and says what it deleted: how many records, and
    /// which of them were sessions, with their owners (for audit logs; see
    /// [`SessionHooks::purged_sessions`](crate::SessionHooks::purged_sessions)).
    ///
    /// - **What is deleted**: exactly what `delete_expired_batch(limit)` would delete: expired
    ///   sessions and expired grace-period pointers (records with `moved_to`), at most `limit`
    ///   records (at least one for a `limit` of 0), oldest deadline first where the store keeps
    ///   deadlines in order. Pointers count in [`PurgeReport::deleted`] but are **not** listed
    ///   in [`PurgeReport::sessions`]: the session they pointed at lives on under its new key.
    ///   A record that does not decode is deleted or left alone as `delete_expired` does with
    ///   it, and never listed (its owner cannot be read).
    /// - **Atomic per session**: a session listed in the report is deleted, and was expired
    ///   when it was deleted (the owner and deadline are the ones it was deleted with). A
    ///   session that a concurrent `apply` or `touch` extends is either extended first and
    ///   then neither deleted nor listed, or deleted and listed first and then the `apply`
    ///   finds it gone; never listed without being deleted, and never deleted without being
    ///   listed (but see *Failures*). Concurrent calls (several processes cleaning at once)
    ///   list each session at most once between them.
    /// - **Done**: a report with `deleted == 0` means nothing expired was left. A step may
    ///   delete fewer than `limit` records while more are left (records extended meanwhile
    ///   shorten it); callers that loop stop at a short step and let the next cleanup go on.
    /// - **Failures**: an `Err` means the step deleted nothing (stores that delete in one
    ///   transaction roll it back; a store that deletes record by record, like the file store,
    ///   ends the step early at a failure after it deleted something, and reports what it
    ///   deleted). The one exception is a reply lost after the database committed (a
    ///   connection broken at that moment): the step's error is returned and those sessions go
    ///   unreported. A session is never reported that was not deleted.
    ///
    /// Takes no cross-server cleaner lock. Stores that cannot say what they deleted (native
    /// expiry: Redis, Memcached) keep this default, which returns [`ErrorKind::Unsupported`];
    /// `capabilities().reports_purged` says which.
    async fn delete_expired_batch_reporting(&self, limit: usize) -> Result<PurgeReport> {
        let _ = limit;
        Err(crate::backend::unsupported(
            self.name(),
            "reporting the sessions a cleanup deletes",
        ))
    }

    /// One page of sessions matching `filter`, in ascending key order. Grace-period pointers are
    /// never listed. A stored record that does not decode fails the listing with
    /// [`ErrorKind::Codec`], or, in stores that decode each record on their own, is left out of
    /// `sessions` and named in [`Page::undecodable`]; it is never skipped silently.
    /// [`ErrorKind::Unsupported`] if `capabilities().iterable` is false.
    async fn list(&self, filter: &ListFilter, page: PageRequest) -> Result<Page>;

    /// Every live session of `owner`, in no particular order. [`ErrorKind::Unsupported`] if
    /// `capabilities().owner_index` is false.
    async fn by_owner(&self, owner: &str) -> Result<Vec<StoredSession>>;

    /// Deletes every session of `owner` ("log out everywhere") and returns how many were live.
    /// [`ErrorKind::Unsupported`] if `capabilities().owner_index` is false.
    async fn delete_by_owner(&self, owner: &str) -> Result<u64>;
}

#[async_trait]
impl<S: Store + ?Sized> Store for Arc<S> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    async fn create(&self, key: &SessionKey, record: &Record) -> Result<()> {
        (**self).create(key, record).await
    }
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        (**self).load(key).await
    }
    async fn load_keys(&self, key: &SessionKey, keys: &[&str]) -> Result<Option<Record>> {
        (**self).load_keys(key, keys).await
    }
    async fn apply(&self, key: &SessionKey, change: &Change) -> Result<ApplyOutcome> {
        (**self).apply(key, change).await
    }
    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<ApplyOutcome> {
        (**self).touch(key, expires_at).await
    }
    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        (**self).delete(key).await
    }
    async fn cycle(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        grace_until: Option<Timestamp>,
    ) -> Result<CycleOutcome> {
        (**self).cycle(old, new, grace_until).await
    }
    async fn setup(&self) -> Result<()> {
        (**self).setup().await
    }
    fn schema(&self) -> Option<String> {
        (**self).schema()
    }
    async fn delete_expired(&self) -> Result<u64> {
        (**self).delete_expired().await
    }
    async fn delete_expired_batch(&self, limit: usize) -> Result<u64> {
        (**self).delete_expired_batch(limit).await
    }
    async fn delete_expired_batch_reporting(&self, limit: usize) -> Result<PurgeReport> {
        (**self).delete_expired_batch_reporting(limit).await
    }
    async fn count_expired(&self) -> Result<u64> {
        (**self).count_expired().await
    }
    async fn list(&self, filter: &ListFilter, page: PageRequest) -> Result<Page> {
        (**self).list(filter, page).await
    }
    async fn by_owner(&self, owner: &str) -> Result<Vec<StoredSession>> {
        (**self).by_owner(owner).await
    }
    async fn delete_by_owner(&self, owner: &str) -> Result<u64> {
        (**self).delete_by_owner(owner).await
    }
}

/// Walks every page of a listing as a stream (constant memory, for admin tools and migration).
pub fn list_all<'a, S: Store + ?Sized>(
    store: &'a S,
    filter: ListFilter,
    page_size: usize,
) -> impl Stream<Item = Result<StoredSession>> + Send + 'a {
    let page_size = page_size.max(1);
    let state = (Some(PageRequest::first(page_size)), Vec::new().into_iter());
    futures::stream::try_unfold(
        (state, filter),
        move |((mut request, mut buffered), filter)| async move {
            loop {
                if let Some(session) = buffered.next() {
                    return Ok(Some((session, ((request, buffered), filter))));
                }
                let Some(current) = request else {
                    return Ok(None);
                };
                let page = store.list(&filter, current).await?;
                request = page.next.map(|after| PageRequest {
                    after: Some(after),
                    limit: page_size,
                });
                buffered = page.sessions.into_iter();
            }
        },
    )
}

/// What the caller wants when a store answers [`ErrorKind::Unsupported`] (the seeds' memcached
/// store offered the same three choices).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnsupportedPolicy {
    /// Return the error.
    #[default]
    Error,
    /// Log a warning and go on with an empty result.
    Warn,
    /// Go on with an empty result silently.
    Ignore,
}

impl UnsupportedPolicy {
    /// Applies the policy: an `Unsupported` error becomes `fallback` (with a warning for `Warn`)
    /// unless the policy is `Error`. Every other result passes through.
    ///
    /// # Errors
    /// The original error, unless it is `Unsupported` and the policy says to go on.
    pub fn resolve<T>(self, result: Result<T>, fallback: impl FnOnce() -> T) -> Result<T> {
        match result {
            Err(err) if err.kind() == ErrorKind::Unsupported => match self {
                Self::Error => Err(err),
                Self::Warn => {
                    tracing::warn!(error = %err, "operation not supported by the session store; ignored");
                    Ok(fallback())
                }
                Self::Ignore => Ok(fallback()),
            },
            other => other,
        }
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flags = [
            ("multiprocess_safe", self.multiprocess_safe),
            ("iterable", self.iterable),
            ("owner_index", self.owner_index),
            ("per_key_reads", self.per_key_reads),
            ("native_ttl", self.native_ttl),
            ("reports_purged", self.reports_purged),
        ];
        let mut first = true;
        for (name, on) in flags {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{}{name}", if on { "+" } else { "-" })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_policy_maps_only_unsupported() {
        let unsupported_result: Result<Vec<u8>> =
            Err(crate::backend::unsupported("memcached", "list"));
        assert!(
            UnsupportedPolicy::Error
                .resolve(unsupported_result, Vec::new)
                .is_err()
        );
        let unsupported_result: Result<Vec<u8>> =
            Err(crate::backend::unsupported("memcached", "list"));
        assert_eq!(
            UnsupportedPolicy::Warn
                .resolve(unsupported_result, Vec::new)
                .ok(),
            Some(vec![])
        );
        let unsupported_result: Result<Vec<u8>> =
            Err(crate::backend::unsupported("memcached", "list"));
        assert_eq!(
            UnsupportedPolicy::Ignore
                .resolve(unsupported_result, Vec::new)
                .ok(),
            Some(vec![])
        );
        let other: Result<Vec<u8>> = Err(crate::Error::Gone);
        assert!(UnsupportedPolicy::Ignore.resolve(other, Vec::new).is_err());
    }

    #[test]
    fn pages_know_when_there_is_more() {
        let session = |n: u8| StoredSession {
            key: SessionKey::from_bytes([n; 32]),
            record: Record::new(Timestamp::from_millis(0), Timestamp::from_millis(1)),
        };
        let page = Page::from_sorted(vec![session(1), session(2), session(3)], 2);
        assert_eq!(page.sessions.len(), 2);
        assert_eq!(page.next, Some(SessionKey::from_bytes([2; 32])));
        let last = Page::from_sorted(vec![session(1)], 2);
        assert_eq!(last.next, None);
    }

    #[test]
    fn undecodable_records_count_towards_the_page() {
        let session = |n: u8| StoredSession {
            key: SessionKey::from_bytes([n; 32]),
            record: Record::new(Timestamp::from_millis(0), Timestamp::from_millis(1)),
        };
        let key = |n: u8| SessionKey::from_bytes([n; 32]);
        let page = Page::from_sorted_entries(vec![Ok(session(1)), Err(key(2)), Ok(session(3))], 2);
        assert_eq!(page.sessions, vec![session(1)]);
        assert_eq!(page.undecodable, vec![key(2)]);
        assert_eq!(
            page.next,
            Some(key(2)),
            "the next page starts after the bad record"
        );
        let last = Page::from_sorted_entries(vec![Err(key(1)), Ok(session(2))], 2);
        assert_eq!((last.undecodable.len(), last.sessions.len()), (1, 1));
        assert_eq!(last.next, None);
    }
}
