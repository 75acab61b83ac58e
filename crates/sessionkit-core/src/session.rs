//! The per-request session handle.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::change::{ApplyOutcome, Change};
use crate::codec::{decode_value, encode_value};
use crate::error::{Error, ErrorKind, Result};
use crate::id::{SessionId, SessionKey};
use crate::lifecycle::{Expiry, ManagerInner};
use crate::metrics::{Destroyed, UpdateFailure};
use crate::record::{Data, Record};
use crate::store::CycleOutcome;
use crate::time::Timestamp;

mod csrf;
mod flash;
mod partial;
mod updates;
use updates::Updates;

pub use flash::{Flash, FlashLevel, Flashes, MAX_FLASH_BYTES, MAX_FLASHES};
pub(crate) use partial::LargeSessions;
pub use partial::{LARGE_SESSION_SLOTS, PARTIAL_LOAD_ABOVE};

/// Data keys starting with this are the library's own (the per-session expiry, flash messages
/// and the CSRF secret live there).
/// Applications cannot write them, and [`Session::keys`] does not list them.
pub const RESERVED_PREFIX: &str = "__sessionkit.";
const EXPIRY_KEY: &str = "__sessionkit.expiry";
/// The longest data key, in bytes.
pub const MAX_KEY_LEN: usize = 255;
/// The longest owner, in bytes (SQL stores index owners as `VARCHAR(255)`).
pub const MAX_OWNER_LEN: usize = 255;
/// How many fresh ids `create` and `cycle` try before giving up on collisions (with 192-bit ids
/// a second try already means something is wrong, e.g. a store that reports every insert as a
/// conflict).
const ID_ATTEMPTS: usize = 4;
/// How many times a commit whose [`Session::update`]s conflicted is tried before it fails with
/// [`ErrorKind::Conflict`]. Within one process the conditional commits of a session take
/// turns, so a request meets at most one conflict from the updates of its own process; more
/// come from blind writes of the key or from other processes, and every round one writer
/// wins. The growing, jittered pauses between rounds spread such requests out.
pub const UPDATE_ATTEMPTS: u32 = 32;
/// The longest pause between two rounds of a conflicting commit.
const MAX_CONFLICT_PAUSE: Duration = Duration::from_millis(50);

/// What the caller (the web integration) must do with the cookie after [`Session::commit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CookieUpdate {
    /// Leave the browser's cookie as it is.
    Unchanged,
    /// Set the cookie to this id, valid until `expires_at` (a new session, a cycled id, or a
    /// deadline that moved, so a persistent cookie's `Max-Age` stays in step).
    Set {
        /// The id to put in the cookie.
        id: SessionId,
        /// The server-side deadline.
        expires_at: Timestamp,
    },
    /// Remove the cookie (logout, or a cookie that names no session).
    Remove,
}

/// The result of [`Session::commit`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct Committed {
    /// What to do with the cookie.
    pub cookie: CookieUpdate,
    /// The session was gone when the changes were saved (a logout or revocation raced this
    /// request): the changes were dropped and the session was **not** re-created.
    pub gone: bool,
}

/// One request's view of its session.
///
/// Cheap to clone (clones share state) and `Send + Sync`, so it can move into spawned tasks. The
/// store is first asked when a method needs the data; a request that never calls one costs no
/// store round trip. Changes are collected as a [`Change`] and written by [`Session::commit`]
/// (the web integrations call it after the handler): only what this request changed is written,
/// so concurrent requests that change different keys all keep their writes. Two requests that
/// [`update`](Session::update) the *same* key both land (the later one re-runs its closure on
/// the earlier one's result); two blind writes of one key ([`insert`](Session::insert),
/// [`remove`](Session::remove), [`take`](Session::take), [`clear`](Session::clear)): the later
/// commit wins.
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
}

struct Shared {
    manager: Arc<ManagerInner>,
    presented: Presented,
    state: tokio::sync::Mutex<Option<Loaded>>,
}

enum Presented {
    Nothing,
    Malformed,
    Id(SessionId),
}

/// The stored session a request works on.
struct Current {
    key: SessionKey,
    /// The id of `key`, unknown when the session was reached through a grace-period pointer (the
    /// browser holds the old id and must not learn the new one).
    id: Option<SessionId>,
    created_at: Timestamp,
    expires_at: Timestamp,
    /// The grace-period pointer this session was reached through.
    via: Option<SessionKey>,
}

struct Loaded {
    current: Option<Current>,
    data: Data,
    owner: Option<String>,
    change: Change,
    /// What this request's updates keep until commit (none until the first).
    updates: Option<Box<Updates>>,
    cycle: bool,
    /// Keys to delete at commit (`destroy()`), kept until the delete succeeded.
    destroy: Vec<SessionKey>,
    /// Non-strict mode: the presented (unknown) id may become this session's id.
    adopt: bool,
    /// `set_expiry` changed the per-session expiry since the last save.
    expiry_changed: bool,
    /// Every stored key is in `data` (a whole load, or a session not stored yet); otherwise
    /// only those in `known` are ([`partial`]).
    complete: bool,
    /// After a partial load: the keys `data` answers for (loaded, found absent, or written by
    /// this request).
    known: BTreeSet<String>,
}

impl Loaded {
    fn fresh(adopt: bool) -> Self {
        Self {
            current: None,
            data: Data::new(),
            owner: None,
            change: Change::default(),
            updates: None,
            cycle: false,
            destroy: Vec::new(),
            adopt,
            expiry_changed: false,
            complete: true,
            known: BTreeSet::new(),
        }
    }

    /// The session `record` holds: all of it, or (`partial`) the keys it was asked for.
    fn existing(current: Current, record: Record, partial: Option<&[&str]>) -> Self {
        let mut loaded = Self {
            current: Some(current),
            data: record.data,
            owner: record.owner,
            ..Self::fresh(false)
        };
        if let Some(asked) = partial {
            loaded.complete = false;
            loaded.known = asked.iter().map(|&k| k.to_owned()).collect();
        }
        loaded
    }

    fn put(&mut self, key: &str, bytes: Vec<u8>) {
        self.written(key);
        if self.data.get(key) != Some(&bytes) {
            self.data.insert(key.to_owned(), bytes.clone());
            self.change.set(key.to_owned(), bytes);
        }
    }

    fn delete(&mut self, key: &str) -> bool {
        self.written(key);
        let existed = self.data.remove(key).is_some();
        if existed {
            self.change.remove(key);
        }
        existed
    }

    fn expiry(&self) -> Expiry {
        match self
            .data
            .get(EXPIRY_KEY)
            .map(|bytes| decode_value::<Expiry>(EXPIRY_KEY, bytes))
        {
            None => Expiry::Default,
            Some(Ok(expiry)) => expiry,
            Some(Err(err)) => {
                tracing::warn!(error = %err, "stored session expiry does not decode; using the default");
                Expiry::Default
            }
        }
    }

    /// Refuses `operation` when this request reached the session through the grace-period
    /// pointer of its old id: such a request may read and write data, but whoever holds an
    /// old id (a pre-login id planted by an attacker, say) must never turn it into the
    /// session's new id, owner or lifetime.
    fn require_current_id(&self, operation: &'static str) -> Result<()> {
        match &self.current {
            Some(current) if current.via.is_some() => Err(Error::Superseded { operation }),
            _ => Ok(()),
        }
    }

    /// What of the pending change a request that reached the session through an old id may
    /// not do: set the owner or the per-session expiry.
    fn restricted_operation(&self) -> Option<&'static str> {
        if self.change.owner.is_some() {
            Some("set_owner")
        } else if self.expiry_changed {
            Some("set_expiry")
        } else {
            None
        }
    }

    fn user_keys(&self) -> impl Iterator<Item = &String> {
        self.data.keys().filter(|k| !k.starts_with(RESERVED_PREFIX))
    }

    /// Whether a session not stored yet holds something to store: an application key, an
    /// owner, queued flash messages or a CSRF secret (an expiry setting alone is not).
    fn worth_creating(&self) -> bool {
        self.owner.is_some()
            || self.data.iter().any(|(key, value)| match key.as_str() {
                EXPIRY_KEY => false,
                flash::FLASH_KEY => {
                    decode_value::<Vec<Flash>>(key, value).is_ok_and(|f| !f.is_empty())
                }
                _ => true,
            })
    }

    /// Drops the stored session from this request's view after the store said it is gone.
    fn forget(&mut self) {
        *self = Self::fresh(false);
    }

    /// The commit's answer when the store said the session is gone.
    fn gone(&mut self) -> Committed {
        self.forget();
        Committed {
            cookie: CookieUpdate::Unchanged,
            gone: true,
        }
    }

    /// Puts the deadline this commit should write into the change, if it is due, and returns
    /// the deadline the change writes. The deadline moves on writes under the same throttle
    /// as on reads: only when it would move by the touch fraction of the idle window. Every
    /// store indexes the deadline, so an unchanged one keeps a write small (a heap-only update
    /// on PostgreSQL). A new expiry setting or a new id always writes the deadline it implies.
    fn plan_deadline(
        &mut self,
        manager: &ManagerInner,
        now: Timestamp,
    ) -> Result<Option<Timestamp>> {
        let expiry = self.expiry();
        let Some(current) = self.current.as_ref() else {
            return Err(Error::Gone);
        };
        if current.via.is_some() {
            // Reached through an old id: the deadline is the current id's to move.
            return Ok(None);
        }
        let target = manager.deadline(now, current.created_at, expiry);
        let expiry_changed = self.change.set.contains_key(EXPIRY_KEY)
            || self.change.removed.contains(EXPIRY_KEY)
            || self.change.cleared;
        let due = manager.touch_due(current.expires_at, target, expiry)
            || ((expiry_changed || self.cycle) && target != current.expires_at);
        if due {
            self.change.expires_at = Some(target);
        }
        Ok(self.change.expires_at)
    }

    /// The change is in the store: start the next one, with the deadline it wrote.
    fn applied(&mut self, deadline: Option<Timestamp>) {
        self.change = Change::default();
        self.updates = None;
        self.expiry_changed = false;
        if let (Some(current), Some(deadline)) = (self.current.as_mut(), deadline) {
            current.expires_at = deadline;
        }
    }
}

fn check_size(key: &str, bytes: &[u8], limit: usize) -> Result<()> {
    if bytes.len() > limit {
        return Err(Error::TooLarge {
            what: format!("value {key:?}"),
            size: bytes.len(),
            limit,
        });
    }
    Ok(())
}

fn decode_or_default<T: DeserializeOwned + Default>(key: &str, bytes: Option<&[u8]>) -> Result<T> {
    bytes.map_or_else(|| Ok(T::default()), |bytes| decode_value(key, bytes))
}

fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(Error::config(format!(
            "session keys are 1 to {MAX_KEY_LEN} bytes, this one is {}",
            key.len()
        )));
    }
    if key.starts_with(RESERVED_PREFIX) {
        return Err(Error::config(format!(
            "session keys starting with {RESERVED_PREFIX:?} are reserved"
        )));
    }
    Ok(())
}

impl Session {
    pub(crate) fn new(manager: Arc<ManagerInner>, cookie_value: Option<&str>) -> Self {
        let presented = match cookie_value {
            None => Presented::Nothing,
            Some(value) => SessionId::parse(value).map_or(Presented::Malformed, Presented::Id),
        };
        Self {
            shared: Arc::new(Shared {
                manager,
                presented,
                state: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// The short hash of the session's key for a log line, without waiting or loading: the
    /// key of the id the request presented (what its cookie names, even when that is an old
    /// id in its grace period), else the key of the session it created.
    pub(crate) fn key_for_logs(&self) -> Option<String> {
        if let Presented::Id(id) = &self.shared.presented {
            return Some(id.key().short());
        }
        let state = self.shared.state.try_lock().ok()?;
        state.as_ref()?.current.as_ref().map(|c| c.key.short())
    }

    /// Whether this request loaded its session and it has an owner, without waiting or loading
    /// (the web layer asks after the commit).
    pub(crate) fn loaded_with_owner(&self) -> bool {
        self.shared.state.try_lock().is_ok_and(|state| {
            state
                .as_ref()
                .is_some_and(|loaded| loaded.current.is_some() && loaded.owner.is_some())
        })
    }

    /// Whether the request presented a cookie value that is not a well-formed session id.
    pub fn presented_malformed_id(&self) -> bool {
        matches!(self.shared.presented, Presented::Malformed)
    }

    /// Loads the presented session, with at least `keys` of its data ([`partial`]).
    async fn load(&self, keys: &[&str]) -> Result<Loaded> {
        let manager = &self.shared.manager;
        let Presented::Id(id) = &self.shared.presented else {
            return Ok(Loaded::fresh(false));
        };
        let adopt = !manager.config.strict;
        manager.maybe_cleanup();
        let key = id.key();
        let Some((record, partial)) = self.load_record(&key, keys).await? else {
            return Ok(Loaded::fresh(adopt));
        };
        let now = manager.now();
        if !manager.is_live(&record, now) {
            return Ok(Loaded::fresh(adopt));
        }
        let Some(target) = record.moved_to else {
            let current = Current {
                key,
                id: Some(id.clone()),
                created_at: record.created_at,
                expires_at: record.expires_at,
                via: None,
            };
            return Ok(Loaded::existing(current, record, partial.as_deref()));
        };
        match self.load_record(&target, keys).await? {
            Some((moved, partial)) if moved.moved_to.is_none() && manager.is_live(&moved, now) => {
                let current = Current {
                    key: target,
                    id: None,
                    created_at: moved.created_at,
                    expires_at: moved.expires_at,
                    via: Some(key),
                };
                Ok(Loaded::existing(current, moved, partial.as_deref()))
            }
            _ => Ok(Loaded::fresh(false)),
        }
    }

    /// The loaded session, with at least `keys` of its data (`None`: all of it), loaded
    /// first if this is the first access, locked for this request.
    async fn lock_loaded(
        &self,
        keys: Option<&[&str]>,
    ) -> Result<tokio::sync::MappedMutexGuard<'_, Loaded>> {
        let mut guard = self.shared.state.lock().await;
        if guard.is_none() {
            *guard = Some(self.load(keys.unwrap_or_default()).await?);
        }
        let mut loaded = tokio::sync::MutexGuard::map(guard, |state| {
            state.get_or_insert_with(|| Loaded::fresh(false))
        });
        match keys {
            Some(keys) => self.load_missing(&mut loaded, keys).await?,
            None => self.load_rest(&mut loaded).await?,
        }
        Ok(loaded)
    }

    /// Runs `f` on the loaded session (its metadata and the library's keys), loading it
    /// first if this is the first access.
    async fn with<R>(&self, f: impl FnOnce(&mut Loaded) -> Result<R> + Send) -> Result<R> {
        self.with_keys(&[], f).await
    }

    /// [`Session::with`], with the data of `keys` loaded too.
    async fn with_keys<R>(
        &self,
        keys: &[&str],
        f: impl FnOnce(&mut Loaded) -> Result<R> + Send,
    ) -> Result<R> {
        f(&mut *self.lock_loaded(Some(keys)).await?)
    }

    /// [`Session::with`], with all of the session's data loaded.
    async fn with_all<R>(&self, f: impl FnOnce(&mut Loaded) -> Result<R> + Send) -> Result<R> {
        f(&mut *self.lock_loaded(None).await?)
    }

    /// The value under `key`, decoded as `T`; `Ok(None)` if the session has no such key.
    ///
    /// # Errors
    /// A store error while loading, or [`ErrorKind::Codec`] if the stored value is not a `T`
    /// (the session and its other keys are unaffected).
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.with_keys(&[key], |loaded| {
            loaded
                .data
                .get(key)
                .map(|bytes| decode_value(key, bytes))
                .transpose()
        })
        .await
    }

    /// Sets `key` to `value`. Setting a key to the value it already has changes nothing.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for an empty, over-long or reserved key; [`ErrorKind::Codec`] if the
    /// value does not encode; [`ErrorKind::TooLarge`] above the manager's value limit; a store
    /// error while loading. Nothing is changed on error.
    pub async fn insert<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        check_key(key)?;
        let bytes = encode_value(key, value)?;
        check_size(key, &bytes, self.shared.manager.config.max_value_bytes)?;
        self.with(|loaded| {
            loaded.blind(key);
            loaded.put(key, bytes);
            loaded.settle(key);
            Ok(())
        })
        .await
    }

    /// Reads `key` (or `T::default()` if absent), lets `f` change it in place, and stores the
    /// result: a nested mutation (push to a list inside a struct) persists. Returns what `f`
    /// returns on this request's view of the value.
    ///
    /// **Concurrent updates of one key are never lost.** The write is conditional on the value
    /// this request read: if another request changed the key before this one commits, the
    /// store writes nothing of this commit, and [`Session::commit`] reads the key again, runs
    /// `f` again on the fresh value (every `update` of the key, in order) and retries, up to
    /// [`UPDATE_ATTEMPTS`] rounds; then it fails with [`ErrorKind::Conflict`] and writes
    /// nothing. That is why `f` is `FnMut + 'static`: it is kept until commit and may run more
    /// than once, so it should only compute the new value from the old one (clone what it
    /// moves in), and what it returns on a re-run is discarded. With no conflict, the commit
    /// is the same single store write as without conditions.
    ///
    /// An `update` after a blind write of the same key in this request ([`Session::insert`],
    /// [`Session::remove`], [`Session::take`], [`Session::clear`]) builds on that write and is
    /// as blind as it is.
    ///
    /// # Errors
    /// As [`Session::get`] and [`Session::insert`]; nothing is changed on error.
    pub async fn update<T, R, F>(&self, key: &str, f: F) -> Result<R>
    where
        T: Serialize + DeserializeOwned + Default + 'static,
        F: FnMut(&mut T) -> R + Send + 'static,
    {
        check_key(key)?;
        self.update_any_key(key, f).await
    }

    /// [`Session::update`] of any key, the library's reserved ones included.
    async fn update_any_key<T, R, F>(&self, key: &str, f: F) -> Result<R>
    where
        T: Serialize + DeserializeOwned + Default + 'static,
        F: FnMut(&mut T) -> R + Send + 'static,
    {
        let limit = self.shared.manager.config.max_value_bytes;
        let mut f = f;
        self.with_keys(&[key], |loaded| {
            let mut value: T = decode_or_default(key, loaded.data.get(key).map(Vec::as_slice))?;
            let out = f(&mut value);
            let bytes = encode_value(key, &value)?;
            check_size(key, &bytes, limit)?;
            loaded.put_updated(key, bytes, updates::replay(f));
            Ok(out)
        })
        .await
    }

    /// Removes `key`. Returns whether it was there.
    ///
    /// # Errors
    /// A store error while loading.
    pub async fn remove(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        self.with_keys(&[key], |loaded| {
            loaded.blind(key);
            let existed = loaded.delete(key);
            loaded.settle(key);
            Ok(existed)
        })
        .await
    }

    /// Removes `key` and returns its value decoded as `T`. A blind remove: an item another
    /// request adds to the value meanwhile is removed with it. To consume a list that others
    /// append to (flash messages), [`get`](Session::get) it and remove exactly what was read
    /// with [`update`](Session::update).
    ///
    /// # Errors
    /// As [`Session::get`]; on a decode error the key is left in place.
    pub async fn take<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        check_key(key)?;
        self.with_keys(&[key], |loaded| {
            let value = loaded
                .data
                .get(key)
                .map(|bytes| decode_value(key, bytes))
                .transpose()?;
            loaded.blind(key);
            loaded.delete(key);
            loaded.settle(key);
            Ok(value)
        })
        .await
    }

    /// Removes every key the application set (the per-session expiry setting, queued flash
    /// messages and the CSRF secret stay).
    ///
    /// # Errors
    /// A store error while loading.
    pub async fn clear(&self) -> Result<()> {
        self.with(|loaded| {
            let reserved: Vec<(String, Vec<u8>)> = loaded
                .data
                .iter()
                .filter(|(k, _)| k.starts_with(RESERVED_PREFIX))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            loaded.data.clear();
            loaded.change.clear();
            // Every stored key is removed: what `data` holds from here on is all there is.
            loaded.complete = true;
            loaded.updates = None;
            for (key, value) in reserved {
                loaded.data.insert(key.clone(), value.clone());
                loaded.change.set(key, value);
            }
            Ok(())
        })
        .await
    }

    /// Whether the session has `key`.
    ///
    /// # Errors
    /// A store error while loading.
    pub async fn contains(&self, key: &str) -> Result<bool> {
        self.with_keys(&[key], |loaded| Ok(loaded.data.contains_key(key)))
            .await
    }

    /// The application's keys, sorted.
    ///
    /// # Errors
    /// A store error while loading.
    pub async fn keys(&self) -> Result<Vec<String>> {
        self.with_all(|loaded| Ok(loaded.user_keys().cloned().collect()))
            .await
    }

    /// Whether the session has no application keys.
    ///
    /// # Errors
    /// A store error while loading.
    pub async fn is_empty(&self) -> Result<bool> {
        self.with_all(|loaded| Ok(loaded.user_keys().next().is_none()))
            .await
    }

    /// The session's owner.
    ///
    /// # Errors
    /// A store error while loading.
    pub async fn owner(&self) -> Result<Option<String>> {
        self.with(|loaded| Ok(loaded.owner.clone())).await
    }

    /// Sets or removes the session's owner (typically at login, together with
    /// [`Session::cycle_id`]). With a per-owner limit, saving may end the owner's oldest sessions.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for an empty owner or one over [`MAX_OWNER_LEN`] bytes;
    /// [`ErrorKind::Superseded`] when the request presented the session's old id during the
    /// grace period after a `cycle_id()` (and at commit, if another request cycled the id
    /// while this one ran); a store error while loading.
    pub async fn set_owner(&self, owner: Option<&str>) -> Result<()> {
        if let Some(owner) = owner
            && (owner.is_empty() || owner.len() > MAX_OWNER_LEN)
        {
            return Err(Error::config(format!(
                "owners are 1 to {MAX_OWNER_LEN} bytes, this one is {}",
                owner.len()
            )));
        }
        self.with(|loaded| {
            if loaded.owner.as_deref() != owner {
                loaded.require_current_id("set_owner")?;
                loaded.owner = owner.map(str::to_owned);
                loaded.change.owner = Some(loaded.owner.clone());
            }
            Ok(())
        })
        .await
    }

    /// How this session's deadline moves.
    ///
    /// # Errors
    /// A store error while loading.
    pub async fn expiry(&self) -> Result<Expiry> {
        self.with(|loaded| Ok(loaded.expiry())).await
    }

    /// Changes how this session's deadline moves (it is kept with the session). The absolute
    /// lifetime still caps every deadline.
    ///
    /// # Errors
    /// [`ErrorKind::Superseded`] as for [`Session::set_owner`]; a store error while loading.
    pub async fn set_expiry(&self, expiry: Expiry) -> Result<()> {
        let bytes = match expiry {
            Expiry::Default => None,
            other => Some(encode_value(EXPIRY_KEY, &other)?),
        };
        self.with(|loaded| {
            let stored = loaded.data.get(EXPIRY_KEY);
            if stored == bytes.as_ref() {
                return Ok(());
            }
            loaded.require_current_id("set_expiry")?;
            match bytes {
                None => {
                    loaded.delete(EXPIRY_KEY);
                }
                Some(bytes) => loaded.put(EXPIRY_KEY, bytes),
            }
            loaded.expiry_changed = true;
            Ok(())
        })
        .await
    }

    /// The stored deadline, or `None` if the session is not stored yet.
    ///
    /// # Errors
    /// A store error while loading.
    pub async fn expires_at(&self) -> Result<Option<Timestamp>> {
        self.with(|loaded| Ok(loaded.current.as_ref().map(|c| c.expires_at)))
            .await
    }

    /// The key the session is stored under, or `None` if it is not stored yet: how "your
    /// sessions" pages mark the current one.
    ///
    /// # Errors
    /// A store error while loading.
    pub async fn key(&self) -> Result<Option<SessionKey>> {
        self.with(|loaded| Ok(loaded.current.as_ref().map(|c| c.key)))
            .await
    }

    /// Gives the session a new id when it is saved (call at login and at every privilege change,
    /// against session fixation). Data, owner and deadline are kept; the old id stops working
    /// after the manager's grace period.
    ///
    /// During that grace period, a request that presents the old id reaches the session to read
    /// and write its data, but it cannot cycle the id again, set the owner or the expiry, and
    /// never receives the new id (nor any other): otherwise whoever holds a pre-login id (one
    /// planted in the victim's browser) could race the login and end up owning the session.
    ///
    /// # Errors
    /// [`ErrorKind::Superseded`] when this request presented the session's old id during the
    /// grace period (a second login submitted before the browser saw the first one's cookie
    /// gets it too: the web integrations answer 409, and the browser keeps the first login's
    /// id); a store error while loading.
    pub async fn cycle_id(&self) -> Result<()> {
        self.with(|loaded| {
            loaded.require_current_id("cycle_id")?;
            loaded.adopt = false;
            if loaded.current.is_some() {
                loaded.cycle = true;
            }
            // A new secret with the new id: tokens of pages rendered before stop verifying.
            if loaded.data.contains_key(csrf::CSRF_KEY) {
                loaded.blind(csrf::CSRF_KEY);
                loaded.delete(csrf::CSRF_KEY);
            }
            Ok(())
        })
        .await
    }

    /// Ends the session (logout): it is deleted when saved and the cookie is removed. Keys
    /// inserted after this start a new session with a new id.
    ///
    /// # Errors
    /// A store error while loading.
    pub async fn destroy(&self) -> Result<()> {
        self.with(|loaded| {
            if let Some(current) = loaded.current.take() {
                loaded.destroy.push(current.key);
                loaded.destroy.extend(current.via);
            }
            let destroy = std::mem::take(&mut loaded.destroy);
            *loaded = Loaded {
                destroy,
                ..Loaded::fresh(false)
            };
            Ok(())
        })
        .await
    }

    /// Saves what this request changed and says what to do with the cookie. The web
    /// integrations call this after the handler; call it yourself elsewhere. A session never
    /// touched is not loaded and costs nothing; an unchanged one writes only a throttled
    /// deadline extension. Committing twice writes only what changed in between.
    ///
    /// # Errors
    /// A store error. The pending changes are kept, so a later commit can retry them.
    pub async fn commit(&self) -> Result<Committed> {
        let mut guard = self.shared.state.lock().await;
        let Some(loaded) = guard.as_mut() else {
            let cookie = if self.presented_malformed_id() {
                CookieUpdate::Remove
            } else {
                CookieUpdate::Unchanged
            };
            return Ok(Committed {
                cookie,
                gone: false,
            });
        };
        let manager = &*self.shared.manager;
        let removed = destroy_pending(manager, loaded).await?;
        let presented = !matches!(self.shared.presented, Presented::Nothing);
        let committed = match loaded.current.is_some() {
            false if !loaded.worth_creating() => {
                loaded.change = Change::default();
                let cookie = if removed || presented {
                    CookieUpdate::Remove
                } else {
                    CookieUpdate::Unchanged
                };
                Committed {
                    cookie,
                    gone: false,
                }
            }
            false => self.create(manager, loaded).await?,
            true => self.save_existing(manager, loaded).await?,
        };
        Ok(committed)
    }

    async fn create(&self, manager: &ManagerInner, loaded: &mut Loaded) -> Result<Committed> {
        let now = manager.now();
        let expires_at = manager.deadline(now, now, loaded.expiry());
        let record = Record {
            data: loaded.data.clone(),
            owner: loaded.owner.clone(),
            ..Record::new(now, expires_at)
        };
        let adopted = match (&self.shared.presented, loaded.adopt) {
            (Presented::Id(id), true) => Some(id.clone()),
            _ => None,
        };
        let (id, ()) = draw_ids(adopted, |id| {
            let record = &record;
            async move { manager.store.create(&id.key(), record).await }
        })
        .await?;
        let key = id.key();
        manager.session_created(&key, record.owner.as_deref());
        loaded.current = Some(Current {
            key,
            id: Some(id.clone()),
            created_at: now,
            expires_at,
            via: None,
        });
        loaded.applied(None);
        loaded.adopt = false;
        if let Some(owner) = &record.owner {
            manager.enforce_owner_limit(owner, &key).await?;
        }
        Ok(Committed {
            cookie: CookieUpdate::Set { id, expires_at },
            gone: false,
        })
    }

    async fn save_existing(
        &self,
        manager: &ManagerInner,
        loaded: &mut Loaded,
    ) -> Result<Committed> {
        let now = manager.now();
        let cycling = loaded.cycle;
        let deadline = loaded.plan_deadline(manager, now)?;
        let owner_set = matches!(loaded.change.owner, Some(Some(_)));
        // The change is written before the id rotates: a commit that fails (a store error, or
        // updates that kept conflicting) has then rotated nothing, so the browser's id stays
        // the session's. A rotating request never follows a pointer another request's
        // rotation left: its change (a login's owner) must not land in that session.
        if !loaded.change.is_empty() {
            if apply_change(manager, loaded, !cycling).await? == ApplyOutcome::Gone {
                return Ok(loaded.gone());
            }
            loaded.applied(deadline);
        }
        let new_id = match cycling {
            true => match rotate(manager, loaded, now).await? {
                Some(id) => Some(id),
                None => return Ok(loaded.gone()),
            },
            false => None,
        };
        let Some(current) = loaded.current.as_ref() else {
            return Err(Error::Gone);
        };
        if owner_set && let Some(owner) = loaded.owner.as_deref() {
            manager.enforce_owner_limit(owner, &current.key).await?;
        }
        Ok(Committed {
            cookie: cookie_after_save(current, new_id, deadline.is_some()),
            gone: false,
        })
    }
}

/// Deletes the keys `destroy()` left to delete (each forgotten only once its delete succeeded,
/// so a failed commit retries it); whether there were any.
async fn destroy_pending(manager: &ManagerInner, loaded: &mut Loaded) -> Result<bool> {
    let mut removed = false;
    while let Some(key) = loaded.destroy.last().copied() {
        if manager.store.delete(&key).await? {
            manager.session_destroyed(&key, Destroyed::Destroy);
        }
        loaded.destroy.pop();
        removed = true;
    }
    Ok(removed)
}

/// The cookie after saving an existing session: the new id after a rotation; the same id with
/// its new expiry when the deadline moved (a persistent cookie's `Max-Age` follows it);
/// otherwise unchanged.
fn cookie_after_save(
    current: &Current,
    new_id: Option<SessionId>,
    deadline_moved: bool,
) -> CookieUpdate {
    match (new_id, &current.id) {
        (Some(id), _) => CookieUpdate::Set {
            id,
            expires_at: current.expires_at,
        },
        (None, Some(id)) if deadline_moved => CookieUpdate::Set {
            id: id.clone(),
            expires_at: current.expires_at,
        },
        _ => CookieUpdate::Unchanged,
    }
}

/// Moves the session to a fresh id (`cycle_id()`), the old id left pointing at it for the grace
/// period. `None` if the session is gone.
async fn rotate(
    manager: &ManagerInner,
    loaded: &mut Loaded,
    now: Timestamp,
) -> Result<Option<SessionId>> {
    let Some(current) = loaded.current.as_mut() else {
        return Ok(None);
    };
    let grace = manager.config.cycle_grace;
    let grace_until = (!grace.is_zero()).then(|| now.saturating_add(grace));
    let old = current.key;
    let (cycled, outcome) = draw_ids(None, |id| async move {
        manager.store.cycle(&old, &id.key(), grace_until).await
    })
    .await?;
    if outcome == CycleOutcome::Gone {
        return Ok(None);
    }
    manager.session_cycled(&old, &cycled.key());
    manager.large_sessions.moved(&old, &cycled.key());
    if let Some(pointer) = current.via.take() {
        // The old-old id must not reach the session any more either.
        manager.store.delete(&pointer).await?;
    }
    current.key = cycled.key();
    current.id = Some(cycled.clone());
    loaded.cycle = false;
    Ok(Some(cycled))
}

/// Writes the loaded session's change: follows the session to its new key if another request
/// cycled it meanwhile (if `follow`), and after a conflict re-runs the updates on fresh values and tries
/// again (bounded). `Gone` if the session is gone; never `Conflict`.
async fn apply_change(
    manager: &ManagerInner,
    loaded: &mut Loaded,
    follow: bool,
) -> Result<ApplyOutcome> {
    loaded.prune_conditions();
    let _turn = match (&loaded.current, loaded.change.expected.is_empty()) {
        (Some(current), false) => Some(manager.update_turn(&current.key).lock().await),
        _ => None,
    };
    let mut conflicts = 0;
    loop {
        let restricted = loaded.restricted_operation();
        let Some(current) = loaded.current.as_mut() else {
            return Ok(ApplyOutcome::Gone);
        };
        let conditional = !loaded.change.expected.is_empty();
        let mut outcome = save(manager, &current.key, &loaded.change)
            .await
            .inspect_err(|_| {
                if conditional {
                    loaded.updates.get_or_insert_with(Box::default).unsure = true;
                }
            })?;
        if outcome == ApplyOutcome::Gone
            && follow
            && current.via.is_none()
            && let Some(target) = manager
                .store
                .load(&current.key)
                .await?
                .and_then(|r| r.moved_to)
        {
            // Another request cycled the id while this one ran (a login in another tab):
            // the old key now points at the session, so the change follows it there. This
            // request's browser keeps its old cookie and never learns the new id, and the
            // request is now one through an old id: it may not set the owner or the expiry.
            if let Some(operation) = restricted {
                return Err(Error::Superseded { operation });
            }
            outcome = save(manager, &target, &loaded.change)
                .await
                .inspect_err(|_| {
                    if conditional {
                        loaded.updates.get_or_insert_with(Box::default).unsure = true;
                    }
                })?;
            current.via = Some(current.key);
            current.key = target;
            current.id = None;
        }
        if outcome != ApplyOutcome::Conflict {
            return Ok(outcome);
        }
        manager.meters.conflict();
        if loaded.unsure() {
            manager.meters.update_failed(UpdateFailure::Unsure);
            return Err(Error::conflict(
                "an earlier attempt to save these updates failed in a way that may have written them; \
                 they are not run again, so that none is applied twice",
            ));
        }
        conflicts += 1;
        if conflicts >= UPDATE_ATTEMPTS {
            manager.meters.update_failed(UpdateFailure::Attempts);
            let keys: Vec<&str> = loaded.change.expected.keys().map(String::as_str).collect();
            return Err(Error::conflict(format!(
                "the update of {keys:?} conflicted with other requests {conflicts} times in a row; nothing was written"
            )));
        }
        if conflicts > 1 {
            tokio::time::sleep(conflict_pause(conflicts)).await;
        }
        manager.meters.retry();
        if !loaded.rerun_updates(manager).await? {
            return Ok(ApplyOutcome::Gone);
        }
    }
}

/// A random pause before round `conflicts + 1`, up to a bound that doubles each round from
/// 1 ms: requests that keep colliding on one key spread out.
fn conflict_pause(conflicts: u32) -> Duration {
    let bound = Duration::from_micros(500u64 << conflicts.min(16)).min(MAX_CONFLICT_PAUSE);
    bound.mul_f64(rand::random::<f64>())
}

/// Writes `change` to `key`: a `touch` when only the deadline moves, an `apply` otherwise.
async fn save(manager: &ManagerInner, key: &SessionKey, change: &Change) -> Result<ApplyOutcome> {
    match change.expires_at {
        Some(deadline) if !change.touches_data() && change.owner.is_none() => {
            manager.store.touch(key, deadline).await
        }
        _ => manager.store.apply(key, change).await,
    }
}

/// Tries `first` (if any), then fresh ids, until `write` does not report a conflict.
async fn draw_ids<T, F, Fut>(first: Option<SessionId>, mut write: F) -> Result<(SessionId, T)>
where
    F: FnMut(SessionId) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut first = first;
    let mut last_conflict = None;
    for _ in 0..ID_ATTEMPTS {
        let id = match first.take() {
            Some(id) => id,
            None => SessionId::generate()?,
        };
        match write(id.clone()).await {
            Ok(out) => return Ok((id, out)),
            Err(err) if err.kind() == ErrorKind::Conflict => last_conflict = Some(err),
            Err(err) => return Err(err),
        }
    }
    Err(last_conflict.unwrap_or_else(|| Error::conflict("no free session id")))
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let presented = match &self.shared.presented {
            Presented::Nothing => "nothing",
            Presented::Malformed => "malformed",
            Presented::Id(_) => "id",
        };
        f.debug_struct("Session")
            .field("presented", &presented)
            .finish_non_exhaustive()
    }
}
