//! # sessionkit-redb
//!
//! A [`Store`] on [redb](https://docs.rs/redb), an embedded ACID key-value file: the modern
//! counterpart of the seeds' Durus and Shelve object stores. URL: `redb://path/to/sessions.redb`.
//!
//! Opening creates the file and its tables if they are missing, as an application wants. In
//! [`OpenMode::Existing`] ([`RedbStore::open_with_mode`], or
//! [`sessionkit_core::Registry::open_existing`]) it creates nothing: a missing file, or one
//! without the session tables, is an [`ErrorKind::Config`]
//! error that says to run `sessionkit setup`.
//!
//! ## Layout
//! Four tables in one file, all changed together in one ACID write transaction per operation:
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `sessions` | session key (32 bytes) | metadata: created, expires, owner, version, pointer (a data-less `Record` blob) |
//! | `session_values` | (session key, data key) | encoded value |
//! | `session_expiry` | (expires_at ms, session key) | — (cleanup walks it in deadline order) |
//! | `session_owners` | (owner, session key) | — (owner listing and revocation) |
//!
//! Writes are durable on commit (redb's default: fsync per transaction). Reads run in MVCC
//! read transactions and never wait for the writer; a session's load (a point read) runs on
//! the calling task, since it takes about a microsecond against 20 µs or more for a hop to a
//! blocking thread, while writes and scans (listing, cleanup) run on Tokio's blocking pool.
//!
//! ## Cleanup and purge reports
//! Cleanup walks `session_expiry` in deadline order and deletes up to [`CLEANUP_BATCH`]
//! records per write transaction. The store **reports purged sessions**
//! (`capabilities().reports_purged`): [`Store::delete_expired_batch_reporting`] does the same
//! in one write transaction and lists the sessions it deleted (key, owner, deadline, from the
//! metadata it deleted); the list is handed back only after the commit. Grace pointers are
//! counted but not listed, and so is an expired record that does not decode (it is deleted,
//! as cleanup deletes it, with a warning; its owner cannot be read).
//!
//! ## One process only
//! redb (in its default mode) locks the file to one process, so
//! `capabilities().multiprocess_safe` is **false**: run one app server per file, and stop it
//! before pointing the CLI at the file. Opening a file another process holds fails at once with
//! an [`ErrorKind::Unavailable`] error saying so; it
//! never hangs. Use SQLite or a server store for several processes.

#![cfg_attr(docsrs, feature(doc_cfg))]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};
use sessionkit_core::backend::blocking;
use sessionkit_core::backend::path_only;
use sessionkit_core::{
    ApplyOutcome, Capabilities, Change, CycleOutcome, Data, Error, ErrorKind, ListFilter, OpenMode,
    Page, PageRequest, PurgeReport, PurgedSession, Record, Registry, Result, SessionKey, Store,
    StoredSession, Timestamp, async_trait,
};

type KeyBytes = [u8; 32];

const SESSIONS: TableDefinition<&KeyBytes, &[u8]> = TableDefinition::new("sessions");
const VALUES: TableDefinition<(&KeyBytes, &str), &[u8]> = TableDefinition::new("session_values");
const EXPIRY: TableDefinition<(i64, &KeyBytes), ()> = TableDefinition::new("session_expiry");
const OWNERS: TableDefinition<(&str, &KeyBytes), ()> = TableDefinition::new("session_owners");

/// How many expired sessions one cleanup transaction deletes.
pub const CLEANUP_BATCH: usize = 500;

/// The redb store. Cheap to clone.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    path: Arc<PathBuf>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Runs `work` on both tables in one read transaction. A session's load calls it on the
/// calling task (a point read): a read transaction never waits for a writer (redb keeps the
/// last committed snapshot for it), and a point read of cached pages takes about a
/// microsecond, against 20 µs or more for the hop to a blocking thread and back
/// (docs/BENCHMARKS.md). Scans go through `RedbStore::read`, on the blocking pool.
fn read_snapshot<T>(
    db: &Database,
    work: impl FnOnce(
        &redb::ReadOnlyTable<&'static KeyBytes, &'static [u8]>,
        &redb::ReadOnlyTable<(&'static KeyBytes, &'static str), &'static [u8]>,
        &redb::ReadTransaction,
    ) -> Result<T>,
) -> Result<T> {
    let txn = db
        .begin_read()
        .map_err(|e| db_error("starting a read", e))?;
    let sessions = txn
        .open_table(SESSIONS)
        .map_err(|e| db_error("opening tables", e))?;
    let values = txn
        .open_table(VALUES)
        .map_err(|e| db_error("opening tables", e))?;
    work(&sessions, &values, &txn)
}

fn db_error(context: &str, err: impl Into<redb::Error>) -> Error {
    match err.into() {
        redb::Error::DatabaseAlreadyOpen => Error::unavailable(
            format!(
                "{context}: the redb file is open in another process (redb allows one process per file)"
            ),
            redb::Error::DatabaseAlreadyOpen,
        ),
        redb::Error::Io(io) => Error::unavailable(context.to_owned(), io),
        other => Error::backend(context.to_owned(), other),
    }
}

/// The tables of one write transaction.
struct Tables<'txn> {
    sessions: Table<'txn, &'static KeyBytes, &'static [u8]>,
    values: Table<'txn, (&'static KeyBytes, &'static str), &'static [u8]>,
    expiry: Table<'txn, (i64, &'static KeyBytes), ()>,
    owners: Table<'txn, (&'static str, &'static KeyBytes), ()>,
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self> {
        let e = |e| db_error("opening tables", e);
        Ok(Self {
            sessions: txn.open_table(SESSIONS).map_err(e)?,
            values: txn.open_table(VALUES).map_err(e)?,
            expiry: txn.open_table(EXPIRY).map_err(e)?,
            owners: txn.open_table(OWNERS).map_err(e)?,
        })
    }

    fn meta(&self, key: &SessionKey) -> Result<Option<Record>> {
        read_meta(&self.sessions, key)
    }

    /// Writes `record`'s metadata, moving its index entries from `old` (if any).
    fn put_meta(&mut self, key: &SessionKey, old: Option<&Record>, record: &Record) -> Result<()> {
        let e = |e| db_error("writing a session", e);
        let bytes = key.as_bytes();
        if let Some(old) = old {
            self.expiry
                .remove((old.expires_at.as_millis(), bytes))
                .map_err(e)?;
            if let Some(owner) = &old.owner {
                self.owners.remove((owner.as_str(), bytes)).map_err(e)?;
            }
        }
        let meta = Record {
            data: Data::new(),
            ..record.clone()
        }
        .to_blob()?;
        self.sessions.insert(bytes, meta.as_slice()).map_err(e)?;
        self.expiry
            .insert((record.expires_at.as_millis(), bytes), ())
            .map_err(e)?;
        if let Some(owner) = &record.owner {
            self.owners.insert((owner.as_str(), bytes), ()).map_err(e)?;
        }
        Ok(())
    }

    fn value_names(&self, key: &SessionKey) -> Result<Vec<String>> {
        let e = |e| db_error("reading values", e);
        let mut names = Vec::new();
        for entry in self.values.range((key.as_bytes(), "")..).map_err(e)? {
            let (k, _) = entry.map_err(e)?;
            let (session, name) = k.value();
            if session != key.as_bytes() {
                break;
            }
            names.push(name.to_owned());
        }
        Ok(names)
    }

    fn clear_values(&mut self, key: &SessionKey) -> Result<()> {
        for name in self.value_names(key)? {
            self.values
                .remove((key.as_bytes(), name.as_str()))
                .map_err(|e| db_error("removing values", e))?;
        }
        Ok(())
    }

    /// Removes a session entirely (metadata, values, index entries); returns its metadata.
    fn delete(&mut self, key: &SessionKey) -> Result<Option<Record>> {
        let Some(old) = self.meta(key)? else {
            return Ok(None);
        };
        let e = |e| db_error("deleting a session", e);
        self.sessions.remove(key.as_bytes()).map_err(e)?;
        self.expiry
            .remove((old.expires_at.as_millis(), key.as_bytes()))
            .map_err(e)?;
        if let Some(owner) = &old.owner {
            self.owners
                .remove((owner.as_str(), key.as_bytes()))
                .map_err(e)?;
        }
        self.clear_values(key)?;
        Ok(Some(old))
    }

    /// Deletes up to `limit` expired records in deadline order (what cleanup does in one
    /// transaction) and returns how many; calls `deleted` with each one's key and metadata
    /// (`None` for a record that did not decode, or an index entry whose record was missing).
    fn delete_expired(
        &mut self,
        limit: usize,
        mut deleted: impl FnMut(&SessionKey, Option<Record>),
    ) -> Result<u64> {
        let now = Timestamp::now().as_millis();
        let e = |e| db_error("finding expired sessions", e);
        let mut doomed = Vec::new();
        for entry in self.expiry.range(..=(now, &[0xff; 32])).map_err(e)? {
            let (k, _) = entry.map_err(e)?;
            let (at, key) = k.value();
            doomed.push((at, SessionKey::from_bytes(*key)));
            if doomed.len() == limit {
                break;
            }
        }
        for (at, key) in &doomed {
            let record = match self.delete(key) {
                Err(err) if err.kind() == ErrorKind::Codec => {
                    self.delete_even_undecodable(key)?;
                    None
                }
                other => other?,
            };
            deleted(key, record);
            // Gone with the record, unless the index named a record that is not there:
            // then this entry alone would keep every round finding it.
            self.expiry
                .remove((*at, key.as_bytes()))
                .map_err(|e| db_error("deleting expired sessions", e))?;
        }
        Ok(doomed.len() as u64)
    }

    /// Removes a session whatever its metadata holds: as [`Self::delete`], and a record that
    /// does not decode (so `delete` and cleanup are never blocked by one) with its values and
    /// every index entry naming it, found by a scan of the indexes (rare, so not indexed).
    /// Returns whether there was a record.
    fn delete_even_undecodable(&mut self, key: &SessionKey) -> Result<bool> {
        match self.delete(key) {
            Err(err) if err.kind() == ErrorKind::Codec => {}
            other => return other.map(|old| old.is_some()),
        }
        tracing::warn!(session = %key.short(), "deleting a session record that does not decode");
        let e = |e| db_error("deleting an undecodable session", e);
        self.sessions.remove(key.as_bytes()).map_err(e)?;
        let mut deadlines = Vec::new();
        for entry in self.expiry.iter().map_err(e)? {
            let (k, _) = entry.map_err(e)?;
            let (at, session) = k.value();
            if session == key.as_bytes() {
                deadlines.push(at);
            }
        }
        for at in deadlines {
            self.expiry.remove((at, key.as_bytes())).map_err(e)?;
        }
        let mut owners = Vec::new();
        for entry in self.owners.iter().map_err(e)? {
            let (k, _) = entry.map_err(e)?;
            let (owner, session) = k.value();
            if session == key.as_bytes() {
                owners.push(owner.to_owned());
            }
        }
        for owner in owners {
            self.owners
                .remove((owner.as_str(), key.as_bytes()))
                .map_err(e)?;
        }
        self.clear_values(key)?;
        Ok(true)
    }
}

fn read_meta(
    table: &impl ReadableTable<&'static KeyBytes, &'static [u8]>,
    key: &SessionKey,
) -> Result<Option<Record>> {
    let found = table
        .get(key.as_bytes())
        .map_err(|e| db_error("reading a session", e))?;
    found
        .map(|guard| Record::from_blob(guard.value()))
        .transpose()
}

fn read_values(
    table: &impl ReadableTable<(&'static KeyBytes, &'static str), &'static [u8]>,
    key: &SessionKey,
    only: Option<&[&str]>,
) -> Result<Data> {
    let e = |e| db_error("reading values", e);
    let mut data = Data::new();
    match only {
        Some(names) => {
            for name in names {
                if let Some(value) = table.get((key.as_bytes(), *name)).map_err(e)? {
                    data.insert((*name).to_owned(), value.value().to_vec());
                }
            }
        }
        None => {
            for entry in table.range((key.as_bytes(), "")..).map_err(e)? {
                let (k, v) = entry.map_err(e)?;
                let (session, name) = k.value();
                if session != key.as_bytes() {
                    break;
                }
                data.insert(name.to_owned(), v.value().to_vec());
            }
        }
    }
    Ok(data)
}

fn live(record: Option<Record>, now: Timestamp) -> Option<Record> {
    record.filter(|r| !r.is_expired(now) && r.moved_to.is_none())
}

impl RedbStore {
    /// Opens (creating if needed) the redb file at `path` and its tables.
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] if another process
    /// has the file open, or it cannot be opened.
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self> {
        Self::open_with_mode(path, OpenMode::Create).await
    }

    /// Opens the redb file at `path` in `mode`: [`OpenMode::Create`] as [`RedbStore::open`];
    /// [`OpenMode::Existing`] creates nothing, and the file must exist and hold the session
    /// tables.
    ///
    /// # Errors
    /// As [`RedbStore::open`]; in [`OpenMode::Existing`],
    /// [`ErrorKind::Config`] for a missing file or tables.
    pub async fn open_with_mode(path: impl Into<PathBuf>, mode: OpenMode) -> Result<Self> {
        let path = path.into();
        let opened = path.clone();
        let db = blocking("redb", move || {
            let context = format!("opening {}", opened.display());
            if mode == OpenMode::Create {
                return Database::create(&opened).map_err(|e| db_error(&context, e));
            }
            if !opened.is_file() {
                return Err(Error::config(format!(
                    "the redb file {} does not exist (create it with `sessionkit setup`)",
                    opened.display()
                )));
            }
            let db = Database::open(&opened).map_err(|e| db_error(&context, e))?;
            let txn = db.begin_read().map_err(|e| db_error(&context, e))?;
            let tables = [
                txn.open_table(SESSIONS).map(drop),
                txn.open_table(VALUES).map(drop),
                txn.open_table(EXPIRY).map(drop),
                txn.open_table(OWNERS).map(drop),
            ];
            for opened_table in tables {
                match opened_table {
                    Ok(()) => {}
                    Err(redb::TableError::TableDoesNotExist(_)) => {
                        return Err(Error::config(format!(
                            "the redb file {} has no session tables (create them with `sessionkit setup`)",
                            opened.display()
                        )));
                    }
                    Err(err) => return Err(db_error(&context, err)),
                }
            }
            drop(txn);
            Ok(db)
        })
        .await?;
        let store = Self {
            db: Arc::new(db),
            path: Arc::new(path),
        };
        if mode == OpenMode::Create {
            store.setup().await?;
        }
        Ok(store)
    }

    /// Opens the store a `redb://` URL names.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a URL without a path or with
    /// options; otherwise as [`RedbStore::open`].
    pub async fn open_url(url: &str) -> Result<Self> {
        Self::open_url_with_mode(url, OpenMode::Create).await
    }

    /// Opens the store a `redb://` URL names, in `mode` (see [`RedbStore::open_with_mode`]).
    ///
    /// # Errors
    /// As [`RedbStore::open_url`] and [`RedbStore::open_with_mode`].
    pub async fn open_url_with_mode(url: &str, mode: OpenMode) -> Result<Self> {
        let path = path_only(url, "redb://path/to/file.redb")?;
        Self::open_with_mode(path, mode).await
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Tables<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = Arc::clone(&self.db);
        blocking("redb", move || {
            let txn = db
                .begin_write()
                .map_err(|e| db_error("starting a write", e))?;
            let out = {
                let mut tables = Tables::open(&txn)?;
                work(&mut tables)?
            };
            txn.commit()
                .map_err(|e| db_error("committing a write", e))?;
            Ok(out)
        })
        .await
    }

    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(
            &redb::ReadOnlyTable<&'static KeyBytes, &'static [u8]>,
            &redb::ReadOnlyTable<(&'static KeyBytes, &'static str), &'static [u8]>,
            &redb::ReadTransaction,
        ) -> Result<T>
        + Send
        + 'static,
    ) -> Result<T> {
        let db = Arc::clone(&self.db);
        blocking("redb", move || read_snapshot(&db, work)).await
    }
}

/// The URL schemes this store opens.
pub const SCHEMES: [&str; 1] = ["redb"];

/// Registers [`SCHEMES`] with `registry`.
pub fn register(registry: &mut Registry) {
    registry.register_store(&SCHEMES, |url, mode| async move {
        RedbStore::open_url_with_mode(&url, mode).await
    });
}

#[async_trait]
impl Store for RedbStore {
    fn name(&self) -> &'static str {
        "redb"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
            .with_multiprocess_safe(false)
            .with_reports_purged(true)
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<()> {
        let (key, record) = (*key, record.clone());
        self.write(move |t| {
            let existing = t.meta(&key)?;
            if existing
                .as_ref()
                .is_some_and(|r| !r.is_expired(Timestamp::now()))
            {
                return Err(Error::conflict("a session with this key exists"));
            }
            if existing.is_some() {
                t.delete(&key)?;
            }
            t.put_meta(&key, None, &record)?;
            for (name, value) in &record.data {
                t.values
                    .insert((key.as_bytes(), name.as_str()), value.as_slice())
                    .map_err(|e| db_error("creating a session", e))?;
            }
            Ok(())
        })
        .await
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        read_snapshot(&self.db, |sessions, values, _| {
            let Some(mut record) =
                read_meta(sessions, key)?.filter(|r| !r.is_expired(Timestamp::now()))
            else {
                return Ok(None);
            };
            record.data = read_values(values, key, None)?;
            Ok(Some(record))
        })
    }

    async fn load_keys(&self, key: &SessionKey, keys: &[&str]) -> Result<Option<Record>> {
        read_snapshot(&self.db, |sessions, values, _| {
            let Some(mut record) =
                read_meta(sessions, key)?.filter(|r| !r.is_expired(Timestamp::now()))
            else {
                return Ok(None);
            };
            record.data = read_values(values, key, Some(keys))?;
            Ok(Some(record))
        })
    }

    async fn apply(&self, key: &SessionKey, change: &Change) -> Result<ApplyOutcome> {
        let (key, change) = (*key, change.clone());
        self.write(move |t| {
            let Some(old) = live(t.meta(&key)?, Timestamp::now()) else {
                return Ok(ApplyOutcome::Gone);
            };
            for (name, seen) in &change.expected {
                let value = t
                    .values
                    .get((key.as_bytes(), name.as_str()))
                    .map_err(|e| db_error("checking a conditional change", e))?;
                if value.as_ref().map(|v| v.value()) != seen.as_deref() {
                    return Ok(ApplyOutcome::Conflict);
                }
            }
            let mut record = old.clone();
            // The metadata half of the change (the data rows change below, row by row).
            Change {
                expires_at: change.expires_at,
                owner: change.owner.clone(),
                ..Change::default()
            }
            .apply_to(&mut record);
            t.put_meta(&key, Some(&old), &record)?;
            if change.cleared {
                t.clear_values(&key)?;
            }
            let e = |e| db_error("applying a change", e);
            for name in &change.removed {
                t.values
                    .remove((key.as_bytes(), name.as_str()))
                    .map_err(e)?;
            }
            for (name, value) in &change.set {
                t.values
                    .insert((key.as_bytes(), name.as_str()), value.as_slice())
                    .map_err(e)?;
            }
            Ok(ApplyOutcome::Applied {
                version: record.version,
            })
        })
        .await
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let key = *key;
        self.write(move |t| t.delete_even_undecodable(&key)).await
    }

    async fn cycle(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        grace_until: Option<Timestamp>,
    ) -> Result<CycleOutcome> {
        let (old, new) = (*old, *new);
        self.write(move |t| {
            let now = Timestamp::now();
            let Some(record) = live(t.meta(&old)?, now) else {
                return Ok(CycleOutcome::Gone);
            };
            let taken = t.meta(&new)?;
            if taken.as_ref().is_some_and(|r| !r.is_expired(now)) {
                return Err(Error::conflict("the new session key is taken"));
            }
            if taken.is_some() {
                t.delete(&new)?;
            }
            let e = |e| db_error("cycling a session id", e);
            let mut data = Vec::new();
            for name in t.value_names(&old)? {
                if let Some(value) = t
                    .values
                    .remove((old.as_bytes(), name.as_str()))
                    .map_err(e)?
                {
                    data.push((name, value.value().to_vec()));
                }
            }
            for (name, value) in &data {
                t.values
                    .insert((new.as_bytes(), name.as_str()), value.as_slice())
                    .map_err(e)?;
            }
            let moved = Record {
                version: record.version + 1,
                ..record.clone()
            };
            t.put_meta(&new, None, &moved)?;
            t.delete(&old)?;
            if let Some(until) = grace_until {
                t.put_meta(&old, None, &Record::moved(new, now, until))?;
            }
            Ok(CycleOutcome::Cycled)
        })
        .await
    }

    async fn setup(&self) -> Result<()> {
        self.write(|_| Ok(())).await
    }

    async fn delete_expired(&self) -> Result<u64> {
        let mut total = 0u64;
        loop {
            let deleted = self.delete_expired_batch(CLEANUP_BATCH).await?;
            total += deleted;
            if deleted < CLEANUP_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    async fn delete_expired_batch(&self, limit: usize) -> Result<u64> {
        let limit = limit.max(1);
        self.write(move |t| t.delete_expired(limit, |_, _| {}))
            .await
    }

    async fn delete_expired_batch_reporting(&self, limit: usize) -> Result<PurgeReport> {
        let limit = limit.max(1);
        self.write(move |t| {
            let mut sessions = Vec::new();
            let deleted = t.delete_expired(limit, |key, record| {
                if let Some(record) = record
                    && record.moved_to.is_none()
                {
                    sessions.push(PurgedSession::new(*key, record.owner, record.expires_at));
                }
            })?;
            Ok(PurgeReport::new(deleted, sessions))
        })
        .await
    }

    async fn count_expired(&self) -> Result<u64> {
        // The deadline index holds sessions and grace-period pointers alike: what
        // `delete_expired_batch` walks and deletes.
        let db = Arc::clone(&self.db);
        blocking("redb", move || {
            let e = |e| db_error("counting expired sessions", e);
            let txn = db
                .begin_read()
                .map_err(|e| db_error("starting a read", e))?;
            let expiry = txn
                .open_table(EXPIRY)
                .map_err(|e| db_error("opening tables", e))?;
            let now = Timestamp::now().as_millis();
            let mut count = 0u64;
            for entry in expiry.range(..=(now, &[0xff; 32])).map_err(e)? {
                entry.map_err(e)?;
                count += 1;
            }
            Ok(count)
        })
        .await
    }

    async fn list(&self, filter: &ListFilter, page: PageRequest) -> Result<Page> {
        let filter = filter.clone();
        self.read(move |sessions, values, _| {
            let now = Timestamp::now();
            let e = |e| db_error("listing sessions", e);
            let after = page.after.map(|k| *k.as_bytes());
            let range = match &after {
                Some(after) => sessions.range::<&KeyBytes>(after..),
                None => sessions.range::<&KeyBytes>(..),
            }
            .map_err(e)?;
            let mut found = Vec::new();
            for entry in range {
                let (k, v) = entry.map_err(e)?;
                let key = SessionKey::from_bytes(*k.value());
                if page.after == Some(key) {
                    continue;
                }
                let Ok(mut record) = Record::from_blob(v.value()) else {
                    // Reported, not skipped: the caller names it (`Page::undecodable`).
                    found.push(Err(key));
                    if found.len() > page.limit {
                        break;
                    }
                    continue;
                };
                if record.moved_to.is_some()
                    || !filter.state.admits(record.expires_at, now)
                    || (filter.owner.is_some() && record.owner != filter.owner)
                {
                    continue;
                }
                record.data = read_values(values, &key, None)?;
                found.push(Ok(StoredSession { key, record }));
                if found.len() > page.limit {
                    break;
                }
            }
            Ok(Page::from_sorted_entries(found, page.limit))
        })
        .await
    }

    async fn by_owner(&self, owner: &str) -> Result<Vec<StoredSession>> {
        let owner = owner.to_owned();
        self.read(move |sessions, values, txn| {
            let owners = txn
                .open_table(OWNERS)
                .map_err(|e| db_error("opening tables", e))?;
            let e = |e| db_error("reading the owner index", e);
            let now = Timestamp::now();
            let mut found = Vec::new();
            for entry in owners
                .range((owner.as_str(), &[0u8; 32])..=(owner.as_str(), &[0xff; 32]))
                .map_err(e)?
            {
                let (k, _) = entry.map_err(e)?;
                let key = SessionKey::from_bytes(*k.value().1);
                if let Some(mut record) = live(read_meta(sessions, &key)?, now) {
                    record.data = read_values(values, &key, None)?;
                    found.push(StoredSession { key, record });
                }
            }
            Ok(found)
        })
        .await
    }

    async fn delete_by_owner(&self, owner: &str) -> Result<u64> {
        let owner = owner.to_owned();
        self.write(move |t| {
            let e = |e| db_error("revoking an owner's sessions", e);
            let mut keys = Vec::new();
            for entry in t
                .owners
                .range((owner.as_str(), &[0u8; 32])..=(owner.as_str(), &[0xff; 32]))
                .map_err(e)?
            {
                let (k, _) = entry.map_err(e)?;
                keys.push(SessionKey::from_bytes(*k.value().1));
            }
            let now = Timestamp::now();
            let mut live_count = 0;
            for key in keys {
                if t.delete(&key)?.is_some_and(|r| !r.is_expired(now)) {
                    live_count += 1;
                }
            }
            Ok(live_count)
        })
        .await
    }
}
