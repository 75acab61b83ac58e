//! The tower-sessions `SessionStore` over a sessionkit `Store`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use sessionkit_core::codec::{decode_value, encode_value};
use sessionkit_core::{
    ApplyOutcome, Change, CookieUpdate, CycleOutcome, ErrorKind, MAX_KEY_LEN, MAX_OWNER_LEN,
    RESERVED_PREFIX, Record, SessionId, SessionKey, Store, Timestamp,
};
use time::OffsetDateTime;
use tower_sessions_core::session::{Id, Record as TowerRecord};
use tower_sessions_core::session_store::{self, Error as TowerError};
use tower_sessions_core::{ExpiredDeletion, SessionStore};

use crate::key::{session_key, session_key_for_cookie};

/// How many ids [`SessionStore::create`] and [`TowerSessionsStore::carry_over`] try before
/// giving up. With 128-bit (tower-sessions) and 192-bit (sessionkit) random ids a second try
/// already means something is wrong, such as a store that reports every insert as taken.
const ID_ATTEMPTS: usize = 4;

/// How a session's data maps to its owner (see [`TowerSessionsStore::with_owner`]).
type OwnerOf = dyn Fn(&HashMap<String, Value>) -> Option<String> + Send + Sync;

/// A tower-sessions [`SessionStore`] (and [`ExpiredDeletion`]) over any sessionkit [`Store`].
///
/// Cheap to clone (one `Arc`). See the [crate docs](crate) for what it keeps of sessionkit's
/// guarantees and what it does not.
pub struct TowerSessionsStore<S = Arc<dyn Store>> {
    store: Arc<S>,
    owner_of: Option<Arc<OwnerOf>>,
    recreate_gone: bool,
}

impl<S> Clone for TowerSessionsStore<S> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            owner_of: self.owner_of.clone(),
            recreate_gone: self.recreate_gone,
        }
    }
}

impl<S: Store> fmt::Debug for TowerSessionsStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TowerSessionsStore")
            .field("store", &self.store.name())
            .field("owner_index", &self.owner_of.is_some())
            .field("recreate_gone", &self.recreate_gone)
            .finish()
    }
}

/// A tower-sessions session moved to a sessionkit id by [`TowerSessionsStore::carry_over`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CarriedOver {
    /// The session's new id: the value of sessionkit's cookie from now on.
    pub id: SessionId,
    /// The session's deadline, for the cookie's `Max-Age`.
    pub expires_at: Timestamp,
}

impl CarriedOver {
    /// The cookie update that hands the new id to the browser, for
    /// [`CookieConfig::set_cookie`](sessionkit_core::web::CookieConfig::set_cookie).
    pub fn cookie(&self) -> CookieUpdate {
        CookieUpdate::Set {
            id: self.id.clone(),
            expires_at: self.expires_at,
        }
    }
}

/// What [`TowerSessionsStore::import`] did with a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Imported {
    /// Stored.
    Created,
    /// A session was already stored under its key (such as from an earlier, interrupted
    /// import); it was left as it is.
    AlreadyThere,
    /// Its deadline has passed: not stored.
    Expired,
}

impl<S: Store> TowerSessionsStore<S> {
    /// Wraps a sessionkit store: no owner index, and a save that finds its session gone
    /// re-creates it, as tower-sessions' own stores do.
    pub fn new(store: S) -> Self {
        Self {
            store: Arc::new(store),
            owner_of: None,
            recreate_gone: true,
        }
    }

    /// Files every session under an owner computed from its data on every save, so that
    /// sessionkit's owner index works for tower-sessions apps: [`Store::by_owner`] lists a
    /// user's sessions and [`Store::delete_by_owner`] logs them out everywhere. `None` leaves
    /// the session without an owner. An owner longer than [`MAX_OWNER_LEN`] bytes fails the
    /// save with [`session_store::Error::Encode`].
    #[must_use]
    pub fn with_owner(
        mut self,
        owner_of: impl Fn(&HashMap<String, Value>) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.owner_of = Some(Arc::new(owner_of));
        self
    }

    /// [`with_owner`](Self::with_owner) for the common case: the owner is the value at the
    /// JSON `pointer` ([RFC 6901](https://www.rfc-editor.org/rfc/rfc6901), such as
    /// `"/user_id"`) inside the value under `key`. A string is the owner as it is; a number or a
    /// boolean is written out (`42` → `"42"`); anything else (absent, `null`, an object, an
    /// array) means no owner.
    ///
    /// axum-login keeps its user id under `"axum-login.data"` (its default data key) at
    /// `/user_id`: `with_owner_at("axum-login.data", "/user_id")`.
    #[must_use]
    pub fn with_owner_at(self, key: impl Into<String>, pointer: impl Into<String>) -> Self {
        let (key, pointer) = (key.into(), pointer.into());
        self.with_owner(move |data| match data.get(&key)?.pointer(&pointer)? {
            Value::String(owner) => Some(owner.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null | Value::Array(_) | Value::Object(_) => None,
        })
    }

    /// What a save does when its session is gone (deleted, expired or carried over since the
    /// request loaded it): `true` (the default) re-creates it, as tower-sessions' own stores
    /// do, so the request's writes survive; `false` drops the save, as sessionkit's own layer
    /// does, so that a slow request racing a logout cannot bring the session back (the
    /// browser's next request then starts a fresh session).
    #[must_use]
    pub fn recreate_gone(mut self, recreate: bool) -> Self {
        self.recreate_gone = recreate;
        self
    }

    /// The sessionkit store underneath.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Moves the session that the tower-sessions cookie value `tower_cookie` names to a fresh
    /// sessionkit id, atomically ([`Store::cycle`]): data, owner, creation time and deadline
    /// move, and the tower-sessions id stops working at once. This is the cut-over from this
    /// store to sessionkit's own layer without logging anyone out (see the crate docs).
    ///
    /// `Ok(None)` if the value is not a tower-sessions id or its session is gone (nothing to
    /// carry over; the browser starts afresh).
    ///
    /// # Errors
    /// The store's errors, and [`ErrorKind::Conflict`] if every fresh id drawn was taken.
    pub async fn carry_over(
        &self,
        tower_cookie: &str,
    ) -> sessionkit_core::Result<Option<CarriedOver>> {
        let Some(old) = session_key_for_cookie(tower_cookie) else {
            return Ok(None);
        };
        self.carry_over_key(&old).await
    }

    /// [`carry_over`](Self::carry_over) for the session stored under `old`, such as one that
    /// [`import_data`](Self::import_data) wrote under a key derived from another crate's
    /// session id.
    ///
    /// # Errors
    /// As [`carry_over`](Self::carry_over).
    pub async fn carry_over_key(
        &self,
        old: &SessionKey,
    ) -> sessionkit_core::Result<Option<CarriedOver>> {
        let store = &*self.store;
        let Some(record) = store.load(old).await? else {
            return Ok(None);
        };
        if record.moved_to.is_some() {
            return Ok(None);
        }
        for _ in 0..ID_ATTEMPTS {
            let id = SessionId::generate()?;
            match store.cycle(old, &id.key(), None).await {
                Ok(CycleOutcome::Cycled) => {
                    return Ok(Some(CarriedOver {
                        id,
                        expires_at: record.expires_at,
                    }));
                }
                Ok(CycleOutcome::Gone) => return Ok(None),
                Err(err) if err.kind() == ErrorKind::Conflict => {}
                Err(err) => return Err(err),
            }
        }
        Err(sessionkit_core::Error::Conflict {
            message: format!("every one of {ID_ATTEMPTS} fresh session ids was taken"),
        })
    }

    /// Imports a session read from one of tower-sessions' own stores (its SQL tables or its
    /// Redis store, decoded as the [`TowerRecord`] they hold): stored under [`session_key`] of
    /// its id with its data and deadline, exactly as this store would have created it, so it
    /// loads through this store and [`carry_over`](Self::carry_over) moves it. Insert-only: a
    /// session already there is left as it is ([`Imported::AlreadyThere`], as after an
    /// interrupted earlier import), and an expired one is not written ([`Imported::Expired`]).
    ///
    /// # Errors
    /// [`session_store::Error::Encode`] if the data cannot be stored (a key sessionkit reserves
    /// or cannot hold, a value over the size limit, an owner too long), with the rule broken
    /// and never a value; [`session_store::Error::Backend`] for the store's own failures.
    pub async fn import(&self, tower: &TowerRecord) -> session_store::Result<Imported> {
        self.import_data(
            &session_key(&tower.id),
            &tower.data,
            timestamp(tower.expiry_date),
        )
        .await
    }

    /// [`import`](Self::import) for a session of another origin whose values are also JSON
    /// (such as actix-session's): `data` is stored under `key` until `expires_at`, each value
    /// in sessionkit's codec, with the owner if one is configured. The caller chooses the key;
    /// derive it one-way and domain-separated from the old cookie's session id, as
    /// [`session_key`] does, so it can be found again at the cut-over
    /// ([`carry_over_key`](Self::carry_over_key)).
    ///
    /// # Errors
    /// As [`import`](Self::import).
    pub async fn import_data(
        &self,
        key: &SessionKey,
        data: &HashMap<String, Value>,
        expires_at: Timestamp,
    ) -> session_store::Result<Imported> {
        let now = Timestamp::now();
        if expires_at <= now {
            return Ok(Imported::Expired);
        }
        let record = self.record(data, expires_at, now)?;
        Ok(if self.insert(key, &record).await? {
            Imported::Created
        } else {
            Imported::AlreadyThere
        })
    }

    /// The sessionkit record for a tower-sessions record: each value in sessionkit's own codec,
    /// the owner if one is configured.
    fn to_record(&self, tower: &TowerRecord, now: Timestamp) -> session_store::Result<Record> {
        self.record(&tower.data, timestamp(tower.expiry_date), now)
    }

    fn record(
        &self,
        data: &HashMap<String, Value>,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> session_store::Result<Record> {
        let mut record = Record::new(now, expires_at);
        record.data = encode_data(data)?;
        record.owner = self.owner(data)?;
        Ok(record)
    }

    fn owner(&self, data: &HashMap<String, Value>) -> session_store::Result<Option<String>> {
        let Some(owner_of) = &self.owner_of else {
            return Ok(None);
        };
        match owner_of(data) {
            Some(owner) if owner.len() > MAX_OWNER_LEN => Err(TowerError::Encode(format!(
                "a session owner is at most {MAX_OWNER_LEN} bytes, this one is {}",
                owner.len()
            ))),
            owner => Ok(owner),
        }
    }

    /// Inserts `record` under `key`; `Ok(false)` if the key is taken.
    async fn insert(&self, key: &SessionKey, record: &Record) -> session_store::Result<bool> {
        match self.store.create(key, record).await {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == ErrorKind::Conflict => Ok(false),
            Err(err) => Err(write_error(&err)),
        }
    }
}

#[async_trait]
impl<S: Store> SessionStore for TowerSessionsStore<S> {
    async fn create(&self, tower: &mut TowerRecord) -> session_store::Result<()> {
        let record = self.to_record(tower, Timestamp::now())?;
        for _ in 0..ID_ATTEMPTS {
            if self.insert(&session_key(&tower.id), &record).await? {
                return Ok(());
            }
            // tower-sessions' contract: the store answers a collision with a new id.
            tower.id = Id::default();
        }
        Err(TowerError::Backend(format!(
            "every one of {ID_ATTEMPTS} fresh session ids was taken"
        )))
    }

    async fn save(&self, tower: &TowerRecord) -> session_store::Result<()> {
        let key = session_key(&tower.id);
        // tower-sessions hands over the whole session: clear it and set every key, so a key the
        // request removed is removed. The store applies it atomically, as one write.
        let change = Change {
            cleared: true,
            set: encode_data(&tower.data)?,
            expires_at: Some(timestamp(tower.expiry_date)),
            owner: self
                .owner_of
                .is_some()
                .then(|| self.owner(&tower.data))
                .transpose()?,
            ..Change::default()
        };
        // Two rounds: a session that is gone is re-created, and if another request re-created it
        // in between, this save applies to that one.
        for _ in 0..2 {
            match self.store.apply(&key, &change).await {
                Ok(ApplyOutcome::Applied { .. }) => return Ok(()),
                Ok(ApplyOutcome::Gone) if !self.recreate_gone => return Ok(()),
                Ok(ApplyOutcome::Gone) => {
                    let record = self.to_record(tower, Timestamp::now())?;
                    if self.insert(&key, &record).await? {
                        return Ok(());
                    }
                }
                Ok(ApplyOutcome::Conflict) => {
                    return Err(TowerError::Backend(
                        "the store reported a conflict for a change without conditions".into(),
                    ));
                }
                Err(err) => return Err(write_error(&err)),
            }
        }
        Err(TowerError::Backend(
            "the session kept vanishing and reappearing while it was saved".into(),
        ))
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<TowerRecord>> {
        let Some(record) = self
            .store
            .load(&session_key(id))
            .await
            .map_err(|err| read_error(&err))?
        else {
            return Ok(None);
        };
        // A grace-period pointer (from sessionkit's own `cycle_id`) holds no data: to
        // tower-sessions the session is gone. The store judged expiry by its clock; judge it
        // again by ours, as sessionkit's manager does.
        if record.moved_to.is_some() || record.is_expired(Timestamp::now()) {
            return Ok(None);
        }
        let mut data = HashMap::with_capacity(record.data.len());
        for (key, bytes) in &record.data {
            // sessionkit's own bookkeeping (only there if the session was also used through
            // sessionkit's layer) is not the application's data.
            if key.starts_with(RESERVED_PREFIX) {
                continue;
            }
            let value: Value = decode_value(key, bytes).map_err(|err| read_error(&err))?;
            data.insert(key.clone(), value);
        }
        Ok(Some(TowerRecord {
            id: *id,
            data,
            expiry_date: offset_date_time(record.expires_at)?,
        }))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.store
            .delete(&session_key(id))
            .await
            .map(drop)
            .map_err(|err| write_error(&err))
    }
}

#[async_trait]
impl<S: Store> ExpiredDeletion for TowerSessionsStore<S> {
    async fn delete_expired(&self) -> session_store::Result<()> {
        self.store
            .delete_expired()
            .await
            .map(drop)
            .map_err(|err| write_error(&err))
    }
}

/// Encodes every value with sessionkit's codec, refusing keys sessionkit could not store or
/// read back through its own `Session`.
fn encode_data(data: &HashMap<String, Value>) -> session_store::Result<sessionkit_core::Data> {
    data.iter()
        .map(|(key, value)| {
            if key.starts_with(RESERVED_PREFIX) {
                return Err(TowerError::Encode(format!(
                    "session keys starting with {RESERVED_PREFIX:?} are reserved by sessionkit"
                )));
            }
            if key.is_empty() || key.len() > MAX_KEY_LEN {
                return Err(TowerError::Encode(format!(
                    "session keys are 1 to {MAX_KEY_LEN} bytes, this one is {}",
                    key.len()
                )));
            }
            let bytes = encode_value(key, value).map_err(|err| write_error(&err))?;
            Ok((key.clone(), bytes))
        })
        .collect()
}

/// tower-sessions' deadline in sessionkit's milliseconds (sub-millisecond parts are dropped:
/// the session ends up to a millisecond early).
fn timestamp(at: OffsetDateTime) -> Timestamp {
    let millis = at.unix_timestamp_nanos().div_euclid(1_000_000);
    Timestamp::from_millis(i64::try_from(millis).unwrap_or(if millis < 0 {
        i64::MIN
    } else {
        i64::MAX
    }))
}

fn offset_date_time(at: Timestamp) -> session_store::Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(at.as_millis()) * 1_000_000)
        .map_err(|_| TowerError::Decode("a session deadline is out of range".into()))
}

/// A sessionkit error on a write path: codec and size failures are tower-sessions' `Encode`,
/// the rest `Backend`. Only the message goes across (sessionkit messages never hold an id).
fn write_error(err: &sessionkit_core::Error) -> TowerError {
    match err.kind() {
        ErrorKind::Codec | ErrorKind::TooLarge => TowerError::Encode(err.to_string()),
        _ => TowerError::Backend(err.to_string()),
    }
}

/// A sessionkit error on a read path: codec failures are tower-sessions' `Decode`, the rest
/// `Backend`.
fn read_error(err: &sessionkit_core::Error) -> TowerError {
    match err.kind() {
        ErrorKind::Codec => TowerError::Decode(err.to_string()),
        _ => TowerError::Backend(err.to_string()),
    }
}
