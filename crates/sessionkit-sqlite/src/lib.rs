//! # sessionkit-sqlite
//!
//! The SQLite [`Store`] for sessionkit, and the embedded default: one file, no server. URL:
//! `sqlite://path/to/sessions.db` (relative) or `sqlite:///var/lib/app/sessions.db` (absolute),
//! with options `?table=sessions&synchronous=normal|full&setup=true|false`.
//!
//! Opening creates the file if it is missing, as an application wants. Opened in
//! [`OpenMode::Existing`] (through [`sessionkit_core::Registry::open_existing`], or
//! [`SqliteStoreBuilder::mode`]), it creates nothing: a missing file, or a file without this
//! table's schema, is an [`ErrorKind::Config`](sessionkit_core::ErrorKind::Config) error that
//! says to run `sessionkit setup`.
//!
//! ```no_run
//! # async fn demo() -> sessionkit_core::Result<()> {
//! use sessionkit_sqlite::SqliteStore;
//! let store = SqliteStore::builder("sessions.db").table("sessions").open().await?;
//! let manager = sessionkit_core::SessionManager::builder(store).build()?;
//! # Ok(()) }
//! ```
//!
//! ## Layout
//! A sessions table plus a per-key values table; see the `schema` module docs or
//! [`Store::schema`] for the DDL. The per-key layout was measured against one row holding a JSON
//! document patched with `json_set` (see `docs/BENCHMARKS.md`): on a small session the two are
//! close, and on a 1 MiB session a one-key save is far cheaper per-key, because the document
//! layout rewrites the whole megabyte.
//!
//! ## Concurrency and durability
//! - WAL journal: readers never block the writer or each other.
//! - All writes of a process go through one writer thread that commits every queued write in one
//!   transaction (group commit), each write in its own savepoint; a caller hears back only after
//!   the commit. `apply` is one `UPDATE … WHERE live … RETURNING` plus the key rows, so it is
//!   atomic and never creates a session.
//! - Several processes may share the file (`capabilities().multiprocess_safe`): writes take the
//!   lock with `BEGIN IMMEDIATE`, wait in SQLite's busy handler (busy_timeout, 5 s), and the
//!   writer retries a still-busy database for up to 30 s before reporting an error.
//! - `synchronous=normal` (default): with WAL, a committed write survives a crash of the
//!   process; a power loss may lose the last moments of commits but never corrupts the file.
//!   `synchronous=full` makes each commit durable against power loss too, at one fsync per batch.
//! - `delete_expired` deletes in batches of [`CLEANUP_BATCH`], each its own short write, so
//!   cleanup interleaves with live traffic instead of holding the lock.
//! - **Reports purged sessions** (`capabilities().reports_purged`):
//!   [`Store::delete_expired_batch_reporting`] is one `DELETE … RETURNING` in the writer's
//!   transaction, so the sessions it lists (key, owner, deadline; grace pointers counted but
//!   not listed) are exactly the rows it deleted, and the list is handed back only after the
//!   commit.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use sessionkit_core::backend::split_options;
use sessionkit_core::backend::{blocking, validate_table_name};
use sessionkit_core::{
    ApplyOutcome, Capabilities, Change, CycleOutcome, Data, Error, ListFilter, ListState, OpenMode,
    Page, PageRequest, PurgeReport, PurgedSession, Record, Registry, Result, SessionKey, Store,
    StoredSession, Timestamp, async_trait,
};

use crate::schema::{SCHEMA_VERSION, Sql};
use crate::writer::{Writer, retry_busy};

/// How many expired sessions one cleanup transaction deletes.
pub const CLEANUP_BATCH: i64 = 500;
/// How long a connection waits for another process's lock before the writer's own retries.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle reader connections kept open.
const MAX_IDLE_READERS: usize = 8;

/// How hard SQLite works to make each commit durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// Durable against process crashes; the last commits may be lost on power loss (default).
    #[default]
    Normal,
    /// Durable against power loss: one fsync per commit batch.
    Full,
}

/// Options for opening a [`SqliteStore`].
#[derive(Clone, Debug)]
#[must_use]
pub struct SqliteStoreBuilder {
    path: PathBuf,
    table: String,
    synchronous: Synchronous,
    setup: bool,
    mode: OpenMode,
}

impl SqliteStoreBuilder {
    /// The sessions table's name (default `sessions`; the values table is `<name>_values`).
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// Durability (default [`Synchronous::Normal`]).
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// Whether opening creates or migrates the schema (default true: the file is the app's own).
    /// Turn it off when a migration tool owns the schema; then operations on a missing schema
    /// fail with a configuration error that says to run setup.
    pub fn setup(mut self, setup: bool) -> Self {
        self.setup = setup;
        self
    }

    /// Whether opening may create anything (default [`OpenMode::Create`]: the file if it is
    /// missing, and the schema when `setup` is on). With [`OpenMode::Existing`] nothing is
    /// created: the file must exist and hold this table's schema at the version this library
    /// writes, and `setup` is not run.
    pub fn mode(mut self, mode: OpenMode) -> Self {
        self.mode = mode;
        self
    }

    /// Opens (creating if needed, unless the [mode](Self::mode) is [`OpenMode::Existing`]) the
    /// database file and starts the writer thread.
    ///
    /// # Errors
    /// [`ErrorKind::Config`](sessionkit_core::ErrorKind::Config) for an invalid table name or a
    /// schema newer than this library, and in [`OpenMode::Existing`] for a missing file or
    /// schema (or an older schema, which `setup` upgrades);
    /// [`ErrorKind::Unavailable`](sessionkit_core::ErrorKind::Unavailable) if the file cannot be
    /// opened.
    pub async fn open(self) -> Result<SqliteStore> {
        validate_table_name(&self.table)?;
        let sql = Arc::new(Sql::new(&self.table));
        let synchronous = self.synchronous;
        let create = self.mode == OpenMode::Create;
        if !create {
            // Before the writer connection, which switches the file to WAL: a file that is not
            // this store's is left as it is.
            let (path, table) = (self.path.clone(), self.table.clone());
            blocking("sqlite", move || check_existing(&path, synchronous, &table)).await?;
        }
        let path = self.path.clone();
        let writer_conn =
            blocking("sqlite", move || connect(&path, synchronous, true, create)).await?;
        let writer = Writer::spawn(writer_conn, format!("sessionkit-sqlite-{}", self.table))?;
        let store = SqliteStore {
            inner: Arc::new(Inner {
                path: self.path,
                table: self.table,
                synchronous,
                create,
                sql,
                readers: Mutex::new(Vec::new()),
                writer,
            }),
        };
        if self.setup && create {
            store.setup().await?;
        } else {
            store.check_schema().await?;
        }
        Ok(store)
    }
}

/// The SQLite store. Cheap to clone; clones share the writer thread and the reader pool.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    table: String,
    synchronous: Synchronous,
    /// Whether connections may create the file ([`OpenMode::Create`]).
    create: bool,
    sql: Arc<Sql>,
    readers: Mutex<Vec<Connection>>,
    writer: Writer,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("table", &self.inner.table)
            .field("synchronous", &self.inner.synchronous)
            .finish_non_exhaustive()
    }
}

/// A connection to the file at `path`, creating the file only if `create` is set (without it,
/// a missing file is a `Config` error that says to run setup).
fn connect(
    path: &Path,
    synchronous: Synchronous,
    writer: bool,
    create: bool,
) -> Result<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags).map_err(|e| {
        if !create && !path.exists() {
            Error::config(format!(
                "the SQLite database {} does not exist (create it with `sessionkit setup`)",
                path.display()
            ))
        } else {
            Error::unavailable(format!("opening SQLite database {}", path.display()), e)
        }
    })?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| sql_error("setting busy_timeout", e))?;
    // Room for every statement of `Sql` and the writer's own: rusqlite keeps 16 by default,
    // and a statement evicted from the cache is parsed again at its next use.
    conn.set_prepared_statement_cache_capacity(64);
    let sync = match synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    let mut pragmas = format!("PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON;");
    if writer {
        // Switching to WAL needs the write lock once per file; retry while another process has it.
        retry_busy(|| {
            conn.query_row("PRAGMA journal_mode = WAL", [], |row| {
                row.get::<_, String>(0)
            })
        })
        .map_err(|e| sql_error("switching to WAL", e))?;
        // Every job of a batch runs in its own savepoint, whose statement journal SQLite keeps
        // in a temporary file by default: its buffer was allocated and freed at each job,
        // moving the heap's end (`brk`) once or twice per job (docs/BENCHMARKS.md, thirteenth
        // round). In memory it holds the pages one job changes, and nothing after its release.
        pragmas.push_str(" PRAGMA journal_size_limit = 67108864; PRAGMA temp_store = MEMORY;");
    }
    conn.execute_batch(&pragmas)
        .map_err(|e| sql_error("setting pragmas", e))?;
    Ok(conn)
}

/// For [`OpenMode::Existing`]: checks, creating nothing, that the file at `path` exists and
/// holds `table`'s schema at this library's version (its version row, and both tables with
/// every column the store reads).
fn check_existing(path: &Path, synchronous: Synchronous, table: &str) -> Result<()> {
    let conn = connect(path, synchronous, false, false)?;
    let sql = Sql::new(table);
    let missing = || {
        Error::config(format!(
            "the SQLite database {} has no session schema for table {table} (create it with `sessionkit setup`)",
            path.display()
        ))
    };
    let version = match conn
        .query_row(&sql.schema_version, [table], |row| row.get::<_, i64>(0))
        .optional()
    {
        Ok(version) => version,
        Err(err) if err.to_string().contains("no such table") => None,
        Err(err) => return Err(sql_error("reading the schema version", err)),
    };
    match version {
        Some(SCHEMA_VERSION) => {}
        Some(newer) if newer > SCHEMA_VERSION => {
            return Err(Error::config(format!(
                "table {table} has schema version {newer}; this sessionkit knows {SCHEMA_VERSION}"
            )));
        }
        Some(older) => {
            return Err(Error::config(format!(
                "table {table} has schema version {older}; upgrade it to {SCHEMA_VERSION} with `sessionkit setup`"
            )));
        }
        None => return Err(missing()),
    }
    for probe in [
        format!(
            "SELECT key, created_at, expires_at, owner, version, moved_to FROM {table} WHERE 0"
        ),
        format!("SELECT session, name, value FROM {table}_values WHERE 0"),
    ] {
        conn.prepare(&probe).map_err(|_| missing())?;
    }
    Ok(())
}

/// Runs `work` in one read transaction, so the statements it makes see one snapshot.
fn in_snapshot<T>(
    conn: &mut Connection,
    sql: &Sql,
    work: impl FnOnce(&Connection, &Sql) -> Result<T>,
) -> Result<T> {
    let tx = conn
        .transaction()
        .map_err(|e| sql_error("starting a read", e))?;
    let out = work(&tx, sql)?;
    tx.finish().map_err(|e| sql_error("ending a read", e))?;
    Ok(out)
}

/// The session in the rows of `load` or `load_named` (its columns, then a value's name and
/// bytes, or NULLs), if there is one.
fn read_joined(mut rows: rusqlite::Rows<'_>) -> Result<Option<Record>> {
    let failed = |e| sql_error("loading a session", e);
    let mut record: Option<Record> = None;
    while let Some(row) = rows.next().map_err(failed)? {
        let record = match &mut record {
            Some(record) => record,
            None => record.insert(meta_of(row, 0)?),
        };
        let name: Option<String> = row.get(5).map_err(failed)?;
        if let Some(name) = name {
            record.data.insert(name, row.get(6).map_err(failed)?);
        }
    }
    Ok(record)
}

/// Maps a SQLite error to the sessionkit error kinds.
fn sql_error(context: &str, err: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode as C;
    match err.sqlite_error_code() {
        Some(C::DatabaseBusy | C::DatabaseLocked | C::CannotOpen) => {
            Error::unavailable(context.to_owned(), err)
        }
        Some(C::ConstraintViolation) => Error::conflict(format!("{context}: {err}")),
        _ if err.to_string().contains("no such table") => Error::config_with(
            format!(
                "{context}: the session schema is missing (run `sessionkit setup` or open with setup=true)"
            ),
            err,
        ),
        _ => Error::backend(context.to_owned(), err),
    }
}

fn key_of(row: &Row<'_>, index: usize) -> Result<SessionKey> {
    let raw: Vec<u8> = row
        .get(index)
        .map_err(|e| sql_error("reading a session key", e))?;
    SessionKey::from_slice(&raw)
}

/// Reads `created_at, expires_at, owner, version, moved_to` starting at column `at`.
fn meta_of(row: &Row<'_>, at: usize) -> Result<Record> {
    let read = |e| sql_error("reading a session row", e);
    let version: i64 = row.get(at + 3).map_err(read)?;
    let moved_to: Option<Vec<u8>> = row.get(at + 4).map_err(read)?;
    Ok(Record {
        data: Data::new(),
        created_at: Timestamp::from_millis(row.get(at).map_err(read)?),
        expires_at: Timestamp::from_millis(row.get(at + 1).map_err(read)?),
        owner: row.get(at + 2).map_err(read)?,
        version: u64::try_from(version)
            .map_err(|_| Error::corrupt("a negative session version"))?,
        moved_to: moved_to
            .as_deref()
            .map(SessionKey::from_slice)
            .transpose()?,
    })
}

fn now_ms() -> i64 {
    Timestamp::now().as_millis()
}

impl SqliteStore {
    /// Options for the database file at `path`.
    pub fn builder(path: impl Into<PathBuf>) -> SqliteStoreBuilder {
        SqliteStoreBuilder {
            path: path.into(),
            table: "sessions".into(),
            synchronous: Synchronous::default(),
            setup: true,
            mode: OpenMode::Create,
        }
    }

    /// Opens `path` with the default options.
    ///
    /// # Errors
    /// As [`SqliteStoreBuilder::open`].
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self> {
        Self::builder(path).open().await
    }

    /// Opens the store a `sqlite://` URL names.
    ///
    /// # Errors
    /// [`ErrorKind::Config`](sessionkit_core::ErrorKind::Config) for a URL without a path or with
    /// an unknown option; otherwise as [`SqliteStoreBuilder::open`].
    pub async fn open_url(url: &str) -> Result<Self> {
        Self::open_url_with_mode(url, OpenMode::Create).await
    }

    /// Opens the store a `sqlite://` URL names, in `mode` (see [`SqliteStoreBuilder::mode`]).
    ///
    /// # Errors
    /// As [`SqliteStore::open_url`].
    pub async fn open_url_with_mode(url: &str, mode: OpenMode) -> Result<Self> {
        let (path, options) = split_options(url);
        if path.is_empty() {
            return Err(Error::config(format!(
                "{url:?} names no file (sqlite://path/to/file.db)"
            )));
        }
        let mut builder = Self::builder(path).mode(mode);
        for (name, value) in options {
            builder = match (name.as_str(), value.as_str()) {
                ("table", table) => builder.table(table),
                ("synchronous", "normal") => builder.synchronous(Synchronous::Normal),
                ("synchronous", "full") => builder.synchronous(Synchronous::Full),
                ("setup", "true" | "1" | "") => builder.setup(true),
                ("setup", "false" | "0") => builder.setup(false),
                _ => {
                    return Err(Error::config(format!(
                        "unknown sqlite option {name}={value} (table, synchronous=normal|full, setup=true|false)"
                    )));
                }
            };
        }
        builder.open().await
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs a read of several statements on a pooled reader connection, in one read
    /// transaction, so all statements see one snapshot.
    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection, &Sql) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.read_on_reader(move |conn, sql| in_snapshot(conn, sql, work))
            .await
    }

    /// Runs a read on a pooled reader connection. A single statement is its own snapshot.
    async fn read_on_reader<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection, &Sql) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = Arc::clone(&self.inner);
        blocking("sqlite", move || {
            let pooled = inner
                .readers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => connect(&inner.path, inner.synchronous, false, inner.create)?,
            };
            let result = work(&mut conn, &inner.sql);
            let mut idle = inner.readers.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
            result
        })
        .await
    }

    /// Runs a point read (an indexed lookup of one session) on the calling task when an idle
    /// reader connection is at hand. With WAL, readers never wait for the writer, and a warm
    /// point read takes a few microseconds, far less than the 25-35 µs hop to a blocking thread
    /// and back (docs/BENCHMARKS.md); without an idle connection it takes the blocking path.
    async fn point_read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection, &Sql) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let pooled = self
            .inner
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let Some(mut conn) = pooled else {
            return self.read_on_reader(work).await;
        };
        let result = work(&mut conn, &self.inner.sql);
        let mut idle = self
            .inner
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        result
    }

    /// Runs a write in the writer thread's next batch transaction.
    async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection, &Sql) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let sql = Arc::clone(&self.inner.sql);
        self.inner.writer.write(move |conn| work(conn, &sql)).await
    }

    /// As [`SqliteStore::write`], with the writer's `keep` (see [`Writer::write_if`]).
    async fn write_if<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection, &Sql) -> Result<T> + Send + 'static,
        keep: fn(&T) -> bool,
    ) -> Result<T> {
        let sql = Arc::clone(&self.inner.sql);
        self.inner
            .writer
            .write_if(move |conn| work(conn, &sql), keep)
            .await
    }

    async fn check_schema(&self) -> Result<()> {
        let table = self.inner.table.clone();
        let found = match self
            .read(move |conn, sql| {
                conn.query_row(&sql.schema_version, [&table], |row| row.get::<_, i64>(0))
                    .optional()
                    .map_err(|e| sql_error("reading the schema version", e))
            })
            .await
        {
            Err(err) if err.kind() == sessionkit_core::ErrorKind::Config => None, // no schema table yet
            other => other?,
        };
        match found {
            Some(SCHEMA_VERSION) => Ok(()),
            Some(newer) => Err(Error::config(format!(
                "table {} has schema version {newer}; this sessionkit knows {SCHEMA_VERSION}",
                self.inner.table
            ))),
            // Like the server stores: opening works (so `setup --print-ddl` can run), and each
            // operation reports the missing schema with the fix.
            None => Ok(()),
        }
    }
}

/// The URL schemes this store opens.
pub const SCHEMES: [&str; 1] = ["sqlite"];

/// Registers [`SCHEMES`] with `registry`.
pub fn register(registry: &mut Registry) {
    registry.register_store(&SCHEMES, |url, mode| async move {
        SqliteStore::open_url_with_mode(&url, mode).await
    });
}

/// One key's write guarded by its condition: the name, the value expected (`None`: absent),
/// the value to write.
type GuardedWrite<'a> = (&'a String, &'a Option<Vec<u8>>, &'a Vec<u8>);

/// The change's one condition, if it has exactly one and on a key it sets (an `update` of one
/// key): that key's write is then guarded by the condition itself, with no extra statement.
fn guarded_write(change: &Change) -> Option<GuardedWrite<'_>> {
    let mut conditions = change.expected.iter();
    match (conditions.next(), conditions.next()) {
        (Some((name, seen)), None) => change.set.get(name).map(|value| (name, seen, value)),
        _ => None,
    }
}

/// Writes `value` under `name` if the key still holds `seen` (`None`: is absent); whether it
/// did.
fn put_if(
    conn: &Connection,
    sql: &Sql,
    key: &SessionKey,
    (name, seen, value): GuardedWrite<'_>,
) -> Result<bool> {
    let written = match seen {
        Some(seen) => conn
            .prepare_cached(&sql.update_value_if)
            .and_then(|mut s| s.execute(params![key.as_bytes(), name, value, seen])),
        None => conn
            .prepare_cached(&sql.insert_value_if_absent)
            .and_then(|mut s| s.execute(params![key.as_bytes(), name, value])),
    }
    .map_err(|e| sql_error("applying a change", e))?;
    Ok(written == 1)
}

/// Whether a live session is stored under `key`.
fn is_live(conn: &Connection, sql: &Sql, key: &SessionKey, now: i64) -> Result<bool> {
    conn.prepare_cached(&sql.live)
        .and_then(|mut s| {
            s.query_row(params![key.as_bytes(), now], |_| Ok(()))
                .optional()
        })
        .map(|row| row.is_some())
        .map_err(|e| sql_error("checking a session", e))
}

/// For a change with several conditions: `Gone` if the session is not live, `Conflict` if a
/// key no longer holds what the change expects, `None` to go on.
fn check_conditions(
    conn: &Connection,
    sql: &Sql,
    key: &SessionKey,
    change: &Change,
) -> Result<Option<ApplyOutcome>> {
    if change.expected.is_empty() {
        return Ok(None);
    }
    let e = |e| sql_error("checking a conditional change", e);
    if !is_live(conn, sql, key, now_ms())? {
        return Ok(Some(ApplyOutcome::Gone));
    }
    let mut current = conn.prepare_cached(&sql.load_value).map_err(e)?;
    for (name, seen) in &change.expected {
        let value: Option<Vec<u8>> = current
            .query_row(params![key.as_bytes(), name], |row| row.get(0))
            .optional()
            .map_err(e)?;
        if value != *seen {
            return Ok(Some(ApplyOutcome::Conflict));
        }
    }
    Ok(None)
}

fn load_values(conn: &Connection, sql: &Sql, key: &SessionKey) -> Result<Data> {
    let mut stmt = conn
        .prepare_cached(&sql.load_values)
        .map_err(|e| sql_error("loading values", e))?;
    let rows = stmt
        .query_map([key.as_bytes()], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?))
        })
        .map_err(|e| sql_error("loading values", e))?;
    rows.collect::<rusqlite::Result<Data>>()
        .map_err(|e| sql_error("loading values", e))
}

fn sessions_with_values(
    conn: &Connection,
    sql: &Sql,
    stmt_sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<Vec<StoredSession>> {
    let mut stmt = conn
        .prepare_cached(stmt_sql)
        .map_err(|e| sql_error("listing sessions", e))?;
    let mut rows = stmt
        .query(params)
        .map_err(|e| sql_error("listing sessions", e))?;
    let mut sessions = Vec::new();
    while let Some(row) = rows.next().map_err(|e| sql_error("listing sessions", e))? {
        sessions.push(StoredSession {
            key: key_of(row, 0)?,
            record: meta_of(row, 1)?,
        });
    }
    for session in &mut sessions {
        session.record.data = load_values(conn, sql, &session.key)?;
    }
    Ok(sessions)
}

#[async_trait]
impl Store for SqliteStore {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all().with_reports_purged(true)
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<()> {
        let (key, record) = (*key, record.clone());
        self.write(move |conn, sql| {
            conn.prepare_cached(&sql.insert_session)
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        key.as_bytes(),
                        record.created_at.as_millis(),
                        record.expires_at.as_millis(),
                        record.owner,
                        i64::try_from(record.version).unwrap_or(i64::MAX),
                        record.moved_to.as_ref().map(SessionKey::as_bytes),
                    ])
                })
                .map_err(|e| sql_error("creating a session", e))?;
            let mut upsert = conn
                .prepare_cached(&sql.upsert_value)
                .map_err(|e| sql_error("creating a session", e))?;
            for (name, value) in &record.data {
                upsert
                    .execute(params![key.as_bytes(), name, value])
                    .map_err(|e| sql_error("creating a session", e))?;
            }
            Ok(())
        })
        .await
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let key = *key;
        self.point_read(move |conn, sql| {
            let mut stmt = conn
                .prepare_cached(&sql.load)
                .map_err(|e| sql_error("loading a session", e))?;
            let rows = stmt
                .query(params![key.as_bytes(), now_ms()])
                .map_err(|e| sql_error("loading a session", e))?;
            read_joined(rows)
        })
        .await
    }

    async fn load_keys(&self, key: &SessionKey, keys: &[&str]) -> Result<Option<Record>> {
        let key = *key;
        let names = serde_json::to_string(keys)
            .map_err(|e| Error::codec(None, "the asked keys do not encode", e))?;
        self.point_read(move |conn, sql| {
            let failed = |e| sql_error("loading a session", e);
            let mut stmt = conn.prepare_cached(&sql.load_named).map_err(failed)?;
            let rows = stmt
                .query(params![key.as_bytes(), now_ms(), names])
                .map_err(failed)?;
            read_joined(rows)
        })
        .await
    }

    async fn apply(&self, key: &SessionKey, change: &Change) -> Result<ApplyOutcome> {
        let (key, change) = (*key, change.clone());
        self.write_if(
            move |conn, sql| {
                let e = |e| sql_error("applying a change", e);
                let guarded = guarded_write(&change);
                if guarded.is_none()
                    && let Some(refused) = check_conditions(conn, sql, &key, &change)?
                {
                    return Ok(refused);
                }
                let owner_changes = change.owner.is_some();
                let owner = change.owner.clone().flatten();
                let version: Option<i64> = conn
                    .prepare_cached(&sql.bump)
                    .and_then(|mut stmt| {
                        stmt.query_row(
                            params![
                                key.as_bytes(),
                                now_ms(),
                                change.expires_at.map(Timestamp::as_millis),
                                owner_changes,
                                owner
                            ],
                            |row| row.get(0),
                        )
                        .optional()
                    })
                    .map_err(e)?;
                let Some(version) = version else {
                    return Ok(ApplyOutcome::Gone);
                };
                if let Some(write) = guarded
                    && !put_if(conn, sql, &key, write)?
                {
                    // The writer rolls the bump back: a conflict writes nothing.
                    return Ok(ApplyOutcome::Conflict);
                }
                if change.cleared {
                    conn.prepare_cached(&sql.clear_values)
                        .and_then(|mut s| s.execute([key.as_bytes()]))
                        .map_err(e)?;
                }
                if !change.removed.is_empty() {
                    let mut remove = conn.prepare_cached(&sql.remove_value).map_err(e)?;
                    for name in &change.removed {
                        remove.execute(params![key.as_bytes(), name]).map_err(e)?;
                    }
                }
                if !change.set.is_empty() {
                    let mut upsert = conn.prepare_cached(&sql.upsert_value).map_err(e)?;
                    for (name, value) in &change.set {
                        if guarded.is_some_and(|(written, ..)| written == name) {
                            continue; // written by `put_if`
                        }
                        upsert
                            .execute(params![key.as_bytes(), name, value])
                            .map_err(e)?;
                    }
                }
                Ok(ApplyOutcome::Applied {
                    version: u64::try_from(version).unwrap_or_default(),
                })
            },
            |outcome| *outcome != ApplyOutcome::Conflict,
        )
        .await
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let key = *key;
        self.write(move |conn, sql| {
            conn.prepare_cached(&sql.delete)
                .and_then(|mut stmt| stmt.execute([key.as_bytes()]))
                .map(|n| n > 0)
                .map_err(|e| sql_error("deleting a session", e))
        })
        .await
    }

    async fn cycle(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        grace_until: Option<Timestamp>,
    ) -> Result<CycleOutcome> {
        let (old, new) = (*old, *new);
        self.write(move |conn, sql| {
            let e = |e| sql_error("cycling a session id", e);
            let now = now_ms();
            let live = conn
                .prepare_cached(&sql.live)
                .and_then(|mut s| {
                    s.query_row(params![old.as_bytes(), now], |_| Ok(()))
                        .optional()
                })
                .map_err(e)?;
            if live.is_none() {
                return Ok(CycleOutcome::Gone);
            }
            conn.prepare_cached(&sql.cycle_copy)
                .and_then(|mut s| s.execute(params![old.as_bytes(), new.as_bytes()]))
                .map_err(e)?;
            conn.prepare_cached(&sql.move_values)
                .and_then(|mut s| s.execute(params![old.as_bytes(), new.as_bytes()]))
                .map_err(e)?;
            match grace_until {
                Some(until) => conn.prepare_cached(&sql.make_pointer).and_then(|mut s| {
                    s.execute(params![
                        old.as_bytes(),
                        new.as_bytes(),
                        now,
                        until.as_millis()
                    ])
                }),
                None => conn
                    .prepare_cached(&sql.delete)
                    .and_then(|mut s| s.execute([old.as_bytes()])),
            }
            .map_err(e)?;
            Ok(CycleOutcome::Cycled)
        })
        .await
    }

    async fn setup(&self) -> Result<()> {
        let table = self.inner.table.clone();
        let found = self
            .write(move |conn, sql| {
                conn.execute_batch(&sql.ddl)
                    .map_err(|e| sql_error("creating the session schema", e))?;
                conn.execute(&sql.record_version, params![table, SCHEMA_VERSION])
                    .map_err(|e| sql_error("recording the schema version", e))?;
                conn.query_row(&sql.schema_version, [&table], |row| row.get::<_, i64>(0))
                    .map_err(|e| sql_error("reading the schema version", e))
            })
            .await?;
        if found > SCHEMA_VERSION {
            return Err(Error::config(format!(
                "table {} has schema version {found}; this sessionkit knows {SCHEMA_VERSION}",
                self.inner.table
            )));
        }
        Ok(())
    }

    fn schema(&self) -> Option<String> {
        Some(self.inner.sql.ddl.clone())
    }

    async fn delete_expired(&self) -> Result<u64> {
        let mut total = 0u64;
        loop {
            let deleted = self
                .delete_expired_batch(CLEANUP_BATCH.unsigned_abs() as usize)
                .await?;
            total += deleted;
            if deleted < CLEANUP_BATCH.unsigned_abs() {
                return Ok(total);
            }
        }
    }

    async fn delete_expired_batch(&self, limit: usize) -> Result<u64> {
        let limit = i64::try_from(limit.max(1)).unwrap_or(CLEANUP_BATCH);
        let deleted = self
            .write(move |conn, sql| {
                conn.prepare_cached(&sql.delete_expired_batch)
                    .and_then(|mut s| s.execute(params![now_ms(), limit]))
                    .map_err(|e| sql_error("deleting expired sessions", e))
            })
            .await?;
        Ok(deleted as u64)
    }

    async fn delete_expired_batch_reporting(&self, limit: usize) -> Result<PurgeReport> {
        let limit = i64::try_from(limit.max(1)).unwrap_or(CLEANUP_BATCH);
        self.write(move |conn, sql| {
            let failed = |e| sql_error("deleting expired sessions", e);
            let mut stmt = conn
                .prepare_cached(&sql.delete_expired_reporting)
                .map_err(failed)?;
            let mut rows = stmt.query(params![now_ms(), limit]).map_err(failed)?;
            let (mut deleted, mut sessions) = (0u64, Vec::new());
            while let Some(row) = rows.next().map_err(failed)? {
                deleted += 1;
                let pointer: bool = row.get(3).map_err(failed)?;
                if !pointer {
                    sessions.push(PurgedSession::new(
                        key_of(row, 0)?,
                        row.get(1).map_err(failed)?,
                        Timestamp::from_millis(row.get(2).map_err(failed)?),
                    ));
                }
            }
            Ok(PurgeReport::new(deleted, sessions))
        })
        .await
    }

    async fn count_expired(&self) -> Result<u64> {
        // Sessions and grace-period pointers alike: what `delete_expired_batch` deletes.
        let statement = format!(
            "SELECT count(*) FROM {} WHERE expires_at <= ?1",
            self.inner.table
        );
        let count: i64 = self
            .read_on_reader(move |conn, _| {
                conn.query_row(&statement, [now_ms()], |row| row.get(0))
                    .map_err(|e| sql_error("counting expired sessions", e))
            })
            .await?;
        Ok(count.unsigned_abs())
    }

    async fn list(&self, filter: &ListFilter, page: PageRequest) -> Result<Page> {
        let filter = filter.clone();
        self.read(move |conn, sql| {
            let now = now_ms();
            let mut query = sql.list_prefix.clone();
            let mut params: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
            match filter.state {
                ListState::Live => query.push_str(" AND expires_at > ?"),
                ListState::Expired => query.push_str(" AND expires_at <= ?"),
                ListState::All => query.push_str(" AND ?1 = ?1"),
            }
            params.push(Box::new(now));
            if let Some(after) = page.after {
                query.push_str(" AND key > ?");
                params.push(Box::new(after.as_bytes().to_vec()));
            }
            if let Some(owner) = filter.owner {
                query.push_str(" AND owner = ?");
                params.push(Box::new(owner));
            }
            query.push_str(" ORDER BY key LIMIT ?");
            params.push(Box::new(
                i64::try_from(page.limit.saturating_add(1)).unwrap_or(i64::MAX),
            ));
            let refs: Vec<&dyn rusqlite::ToSql> = params.iter().map(|p| p.as_ref()).collect();
            let sessions = sessions_with_values(conn, sql, &query, &refs)?;
            Ok(Page::from_sorted(sessions, page.limit))
        })
        .await
    }

    async fn by_owner(&self, owner: &str) -> Result<Vec<StoredSession>> {
        let owner = owner.to_owned();
        self.read(move |conn, sql| {
            sessions_with_values(conn, sql, &sql.by_owner, &[&owner, &now_ms()])
        })
        .await
    }

    async fn delete_by_owner(&self, owner: &str) -> Result<u64> {
        let owner = owner.to_owned();
        self.write(move |conn, sql| {
            let e = |e| sql_error("revoking an owner's sessions", e);
            let live: i64 = conn
                .query_row(&sql.count_owner_live, params![owner, now_ms()], |row| {
                    row.get(0)
                })
                .map_err(e)?;
            conn.prepare_cached(&sql.delete_owner)
                .and_then(|mut s| s.execute([&owner]))
                .map_err(e)?;
            Ok(u64::try_from(live).unwrap_or_default())
        })
        .await
    }
}
