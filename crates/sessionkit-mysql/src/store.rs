//! The MySQL / MariaDB store.

use std::ops::ControlFlow;
use std::sync::Arc;

use sessionkit_core::{
    ApplyOutcome, Capabilities, Change, CycleOutcome, Error, ListFilter, ListState, OpenMode, Page,
    PageRequest, PurgeReport, PurgedSession, Record, Result, SessionKey, Store, StoredSession,
    Timestamp, async_trait,
};
use sqlx::mysql::{MySql, MySqlConnectOptions, MySqlConnection, MySqlRow};
use sqlx::{AssertSqlSafe, Connection, Executor, Row};

use sessionkit_core::backend::sql::{
    BatchedCleanup, CLEANUP_BATCH, ListedRow, Placement, SessionColumns, SqlOptions, attach_values,
    fold_joined, inline_conditions, inline_doc, inline_witness, listed_sessions, lock_id, now_ms,
    place, version_param,
};

use crate::driver::{Sql, checked, is_transient, probe, retry, sql_error};
use crate::pool::{ConnPool, with_conn};

/// 1: values in `<table>_values` only. 2: small values inline in the session row (`data`,
/// `spilled`); `setup` upgrades a version-1 table in place.
const SCHEMA_VERSION: i32 = 2;

struct Statements {
    ddl: Vec<Sql>,
    add_inline_columns: Sql,
    insert_session: Sql,
    load: Sql,
    patch_small: Sql,
    patch_small_if: Sql,
    patch: Sql,
    replace: Sql,
    clear: Sql,
    touch: Sql,
    delete: Sql,
    lock_live: Sql,
    lock_data: Sql,
    cycle_copy: Sql,
    move_values: Sql,
    make_pointer: Sql,
    expired_keys: Sql,
    meta_columns: String,
    by_owner: Sql,
    count_owner_live: Sql,
    delete_owner: Sql,
    values_table: String,
    table: String,
}

impl Statements {
    fn new(t: &str) -> Self {
        let v = format!("{t}_values");
        let meta = "created_at, expires_at, owner, version, moved_to";
        let live = "WHERE `key` = ? AND expires_at > ? AND moved_to IS NULL";
        // LAST_INSERT_ID(expr) hands the new version back in the OK packet: no extra SELECT.
        let bump = "version = LAST_INSERT_ID(version + 1), expires_at = COALESCE(?, expires_at), \
                    owner = CASE WHEN ? THEN ? ELSE owner END";
        Self {
            ddl: vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS {t} (\n\
                     \x20   `key`      BINARY(32)   NOT NULL PRIMARY KEY,  -- SHA-256 of the session id\n\
                     \x20   created_at BIGINT       NOT NULL,              -- ms since the Unix epoch\n\
                     \x20   expires_at BIGINT       NOT NULL,              -- ms since the Unix epoch\n\
                     \x20   owner      VARCHAR(255) NULL,\n\
                     \x20   version    BIGINT       NOT NULL,\n\
                     \x20   moved_to   BINARY(32)   NULL,                  -- grace-period pointer target\n\
                     \x20   data       LONGTEXT     NOT NULL DEFAULT ('{{}}'), -- values up to 1 KiB: JSON name -> base64\n\
                     \x20   spilled    BOOLEAN      NOT NULL DEFAULT TRUE,   -- may have rows in {v}\n\
                     \x20   INDEX {t}_expires (expires_at),\n\
                     \x20   INDEX {t}_owner (owner)\n\
                     ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
                )
                .into(),
                format!(
                    "CREATE TABLE IF NOT EXISTS {v} (  -- values over 1 KiB, one row each\n\
                     \x20   session BINARY(32)   NOT NULL,\n\
                     \x20   name    VARCHAR(255) NOT NULL,\n\
                     \x20   value   LONGBLOB     NOT NULL,\n\
                     \x20   PRIMARY KEY (session, name),\n\
                     \x20   FOREIGN KEY (session) REFERENCES {t} (`key`) ON DELETE CASCADE\n\
                     ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
                )
                .into(),
                "CREATE TABLE IF NOT EXISTS sessionkit_schema (\n\
                 \x20   table_name VARCHAR(64) NOT NULL PRIMARY KEY,\n\
                 \x20   version    INT         NOT NULL\n\
                 ) ENGINE=InnoDB"
                    .into(),
            ],
            // For a version-1 table (MySQL has no `ADD COLUMN IF NOT EXISTS`: setup checks first).
            add_inline_columns: format!(
                "ALTER TABLE {t} ADD COLUMN data LONGTEXT NOT NULL DEFAULT ('{{}}'), \
                 ADD COLUMN spilled BOOLEAN NOT NULL DEFAULT TRUE"
            )
            .into(),
            insert_session: format!(
                "INSERT INTO {t} (`key`, {meta}, data, spilled) VALUES (?, ?, ?, ?, ?, NULL, ?, ?)"
            )
            .into(),
            // The join condition on `s.spilled` is a constant once the session row is read
            // (a primary-key lookup), so a small session's load never touches the values table.
            load: format!(
                "SELECT s.created_at, s.expires_at, s.owner, s.version, s.moved_to, s.data, v.name, v.value \
                 FROM {t} s LEFT JOIN {v} v ON v.session = s.`key` AND s.spilled \
                 WHERE s.`key` = ? AND s.expires_at > ?"
            )
            .into(),
            // The common apply, one statement and no transaction: a session with nothing in
            // the values table takes a change with nothing for it. Anything else (or a gone
            // session: zero rows either way) goes the transactional way.
            patch_small: format!(
                "UPDATE {t} SET {bump}, data = JSON_MERGE_PATCH(data, ?) {live} AND spilled = FALSE"
            )
            .into(),
            // `patch_small` for a conditional change whose conditions all expect small values
            // (the steady state of an `update`): they are in the inline document if
            // JSON_CONTAINS finds them (it compares the base64 texts, one spelling per value).
            // InnoDB evaluates an UPDATE's WHERE on the newest row version, under its lock, so
            // the check and the write are one step. Zero rows (gone, spilled, or a condition
            // failed) goes the transactional way, which tells them apart, and so does a
            // condition that a key is absent (MariaDB before 10.9 and MySQL before 8.0.17 have
            // no JSON_OVERLAPS to ask that in one expression).
            patch_small_if: format!(
                "UPDATE {t} SET {bump}, data = JSON_MERGE_PATCH(data, ?) {live} AND spilled = FALSE \
                 AND JSON_CONTAINS(data, ?)"
            )
            .into(),
            patch: format!(
                "UPDATE {t} SET {bump}, data = JSON_MERGE_PATCH(data, ?), spilled = spilled OR ? {live}"
            )
            .into(),
            replace: format!("UPDATE {t} SET {bump}, data = ?, spilled = ? {live}").into(),
            clear: format!("DELETE FROM {v} WHERE session = ?").into(),
            touch: format!(
                "UPDATE {t} SET version = LAST_INSERT_ID(version + 1), expires_at = ? {live}"
            )
            .into(),
            delete: format!("DELETE FROM {t} WHERE `key` = ?").into(),
            lock_live: format!("SELECT 1 FROM {t} {live} FOR UPDATE").into(),
            lock_data: format!("SELECT data, spilled FROM {t} {live} FOR UPDATE").into(),
            cycle_copy: format!(
                "INSERT INTO {t} (`key`, {meta}, data, spilled) \
                 SELECT ?, created_at, expires_at, owner, version + 1, NULL, data, spilled \
                 FROM {t} WHERE `key` = ?"
            )
            .into(),
            move_values: format!("UPDATE {v} SET session = ? WHERE session = ?").into(),
            make_pointer: format!(
                "UPDATE {t} SET moved_to = ?, owner = NULL, created_at = ?, expires_at = ?, version = 1, \
                 data = '{{}}', spilled = FALSE WHERE `key` = ?"
            )
            .into(),
            expired_keys: format!("SELECT `key` FROM {t} WHERE expires_at <= ? ORDER BY expires_at LIMIT ?").into(),
            meta_columns: format!("SELECT `key`, {meta}, data, spilled FROM {t} WHERE moved_to IS NULL"),
            by_owner: format!(
                "SELECT `key`, {meta}, data, spilled FROM {t} WHERE owner = ? AND expires_at > ? AND moved_to IS NULL"
            )
            .into(),
            count_owner_live: format!("SELECT COUNT(*) FROM {t} WHERE owner = ? AND expires_at > ?").into(),
            delete_owner: format!("DELETE FROM {t} WHERE owner = ?").into(),
            values_table: v,
            table: t.to_owned(),
        }
    }

    /// `IN (?, ?, …)` with `n` placeholders (at least one, so the SQL stays valid).
    fn placeholders(n: usize) -> String {
        let mut list = "?, ".repeat(n.max(1));
        list.truncate(list.len() - 2);
        format!("({list})")
    }

    fn upsert(&self, rows: usize) -> String {
        let mut values = "(?, ?, ?), ".repeat(rows.max(1));
        values.truncate(values.len() - 2);
        format!(
            "INSERT INTO {} (session, name, value) VALUES {values} ON DUPLICATE KEY UPDATE value = VALUES(value)",
            self.values_table
        )
    }
}

/// The MySQL / MariaDB store. URL: `mysql://user@host:3306/db?table=sessions` (`mariadb://`
/// works too; options: `table`, `max_connections`, `acquire_timeout_ms`, `setup=true`).
#[derive(Clone)]
pub struct MySqlStore {
    pool: ConnPool<MySqlConnection>,
    sql: Arc<Statements>,
}

impl std::fmt::Debug for MySqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MySqlStore")
            .field("table", &self.sql.table)
            .finish_non_exhaustive()
    }
}

/// Reads the session tables' columns from a row, as typed store errors.
trait Columns {
    fn value_at<'r, T>(&'r self, at: usize) -> Result<T>
    where
        T: sqlx::Decode<'r, MySql> + sqlx::Type<MySql>;
}

impl Columns for MySqlRow {
    fn value_at<'r, T>(&'r self, at: usize) -> Result<T>
    where
        T: sqlx::Decode<'r, MySql> + sqlx::Type<MySql>,
    {
        self.try_get(at)
            .map_err(|e| sql_error("reading a session row", e))
    }
}

/// `created_at, expires_at, owner, version, moved_to, data` from `row`, starting at `at`.
fn session_columns(row: &MySqlRow, at: usize) -> Result<SessionColumns> {
    Ok(SessionColumns {
        created_at: row.value_at(at)?,
        expires_at: row.value_at(at + 1)?,
        owner: row.value_at(at + 2)?,
        version: row.value_at(at + 3)?,
        moved_to: row.value_at(at + 4)?,
        data: row.value_at(at + 5)?,
    })
}

/// Sets the large values (parallel `names` and `values`) with one multi-row upsert.
async fn upsert<'e, E: Executor<'e, Database = MySql>>(
    sql: &Statements,
    executor: E,
    key: &SessionKey,
    names: &[String],
    values: &[Vec<u8>],
) -> std::result::Result<(), sqlx::Error> {
    if names.is_empty() {
        return Ok(());
    }
    let statement = sql.upsert(names.len());
    let mut query = sqlx::query(AssertSqlSafe(statement));
    for (name, value) in names.iter().zip(values) {
        query = query
            .bind(key.as_bytes().as_slice())
            .bind(name.as_str())
            .bind(value.as_slice());
    }
    query.execute(executor).await.map(|_| ())
}

/// Releases a named lock this connection took with `GET_LOCK`.
async fn release_lock(
    conn: &mut MySqlConnection,
    lock: &str,
) -> std::result::Result<(), sqlx::Error> {
    sqlx::query("SELECT RELEASE_LOCK(?)")
        .bind(lock)
        .execute(conn)
        .await
        .map(|_| ())
}

/// Deletes up to `limit` expired sessions. A plain read picks the batch; the delete locks
/// only those rows by primary key and re-checks the deadline, so a session extended meanwhile
/// survives.
async fn delete_expired_on(
    sql: &Statements,
    conn: &mut MySqlConnection,
    limit: i64,
) -> std::result::Result<u64, sqlx::Error> {
    let keys: Vec<Vec<u8>> = sqlx::query_scalar(checked(&sql.expired_keys))
        .bind(now_ms())
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    if keys.is_empty() {
        return Ok(0);
    }
    let statement = format!(
        "DELETE FROM {} WHERE expires_at <= ? AND `key` IN {}",
        sql.table,
        Statements::placeholders(keys.len())
    );
    let mut query = sqlx::query(AssertSqlSafe(statement)).bind(now_ms());
    for key in &keys {
        query = query.bind(key.as_slice());
    }
    // A batch shortened by sessions extended meanwhile ends this round early; the next
    // cleanup finds what is left.
    Ok(query.execute(conn).await?.rows_affected())
}

/// A row `delete_expired_reporting_on` deleted: key, owner, deadline, grace pointer or not.
type PurgedRow = (Vec<u8>, Option<String>, i64, bool);

/// Deletes up to `limit` expired records and hands back what it deleted. A plain read picks
/// the batch (as `delete_expired_on`); then one transaction locks those rows by primary key,
/// re-checking the deadline on their newest committed version (`FOR UPDATE` is a current
/// read), deletes exactly the rows it locked, and commits. No `DELETE … RETURNING` (MySQL has
/// none) and no `SKIP LOCKED` (MySQL < 8 and MariaDB < 10.6 have none): a row a live request
/// holds is waited for, as `delete_expired_on`'s delete waits for it, and a session that
/// request extended is then neither deleted nor returned.
async fn delete_expired_reporting_on(
    sql: &Statements,
    conn: &mut MySqlConnection,
    limit: i64,
) -> std::result::Result<Vec<PurgedRow>, sqlx::Error> {
    let keys: Vec<Vec<u8>> = sqlx::query_scalar(checked(&sql.expired_keys))
        .bind(now_ms())
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = conn.begin().await?;
    let lock = format!(
        "SELECT `key`, owner, expires_at, moved_to FROM {} WHERE expires_at <= ? AND `key` IN {} \
         FOR UPDATE",
        sql.table,
        Statements::placeholders(keys.len())
    );
    let mut query = sqlx::query(AssertSqlSafe(lock)).bind(now_ms());
    for key in &keys {
        query = query.bind(key.as_slice());
    }
    let mut purged = Vec::with_capacity(keys.len());
    for row in query.fetch_all(&mut *tx).await? {
        let moved_to: Option<Vec<u8>> = row.try_get(3)?;
        purged.push((
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            moved_to.is_some(),
        ));
    }
    if purged.is_empty() {
        return Ok(purged); // every one extended meanwhile; the dropped transaction rolls back
    }
    let delete = format!(
        "DELETE FROM {} WHERE `key` IN {}",
        sql.table,
        Statements::placeholders(purged.len())
    );
    let mut query = sqlx::query(AssertSqlSafe(delete));
    for (key, ..) in &purged {
        query = query.bind(key.as_slice());
    }
    let deleted = query.execute(&mut *tx).await?.rows_affected();
    if deleted != purged.len() as u64 {
        // Cannot happen while the rows are locked; never report what was not deleted.
        return Err(sqlx::Error::Protocol(format!(
            "locked {} expired sessions but deleted {deleted}",
            purged.len()
        )));
    }
    tx.commit().await?;
    Ok(purged)
}

impl MySqlStore {
    /// Connects to the database a `mysql://` (or `mariadb://`) URL names.
    ///
    /// # Errors
    /// [`ErrorKind::Config`](sessionkit_core::ErrorKind::Config) for bad options,
    /// [`ErrorKind::Unavailable`](sessionkit_core::ErrorKind::Unavailable) if the server cannot be
    /// reached; with `?setup=true`, whatever [`Store::setup`] returns.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with_mode(url, OpenMode::Create).await
    }

    /// Connects to the database a `mysql://` (or `mariadb://`) URL names, in `mode`:
    /// [`OpenMode::Create`] as [`MySqlStore::open`]; [`OpenMode::Existing`] creates nothing
    /// (`setup=true` is not run) and checks that the session table and its values table exist
    /// with every column this library reads.
    ///
    /// # Errors
    /// As [`MySqlStore::open`]; in [`OpenMode::Existing`],
    /// [`ErrorKind::Config`](sessionkit_core::ErrorKind::Config) for a missing or outdated
    /// schema (the message says to run `sessionkit setup`).
    pub async fn open_with_mode(url: &str, mode: OpenMode) -> Result<Self> {
        let url = url
            .strip_prefix("mariadb:")
            .map_or_else(|| url.to_owned(), |rest| format!("mysql:{rest}"));
        let mut options = SqlOptions::parse(&url)?;
        if mode == OpenMode::Existing {
            options.setup = false;
        }
        crate::driver::check_driver_options(&options.driver_url)?;
        let connect: MySqlConnectOptions = options
            .driver_url
            .parse()
            .map_err(|e| Error::config_with("invalid MySQL URL", e))?;
        let store = Self::connect(connect, &options).await?;
        if mode == OpenMode::Existing {
            store.check_schema().await?;
        }
        Ok(store)
    }

    /// Checks, creating nothing, that the session table and its values table exist with
    /// every column this library reads.
    async fn check_schema(&self) -> Result<()> {
        const CONTEXT: &str = "checking the session schema";
        let t = &self.sql.table;
        for probe in [
            format!(
                "SELECT `key`, created_at, expires_at, owner, version, moved_to, data, spilled FROM {t} WHERE FALSE"
            ),
            format!("SELECT session, name, value FROM {t}_values WHERE FALSE"),
        ] {
            let checked = with_conn!(self.pool, |c| sqlx::query(AssertSqlSafe(probe))
                .fetch_all(c))
            .await;
            match checked {
                Ok(_) => {}
                // ER_BAD_FIELD_ERROR: a version-1 table, without the inline columns.
                Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42S22") => {
                    return Err(Error::config(format!(
                        "{CONTEXT}: table {t} has an older schema (upgrade it with `sessionkit setup`)"
                    )));
                }
                Err(err) => return Err(sql_error(CONTEXT, err)),
            }
        }
        Ok(())
    }

    /// Connects with sqlx connect options built in code (host, user, password, `ssl_mode`,
    /// `ssl_ca`, client certificate, …), for what a URL cannot say or an application that
    /// already has them. `options` are sessionkit's own, as in the URL's query string
    /// (`table`, `max_connections`, `acquire_timeout_ms`, `setup`).
    ///
    /// ```no_run
    /// # async fn demo() -> sessionkit_core::Result<()> {
    /// use sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};
    ///
    /// let connect = MySqlConnectOptions::new()
    ///     .host("db.example.com")
    ///     .username("app")
    ///     .password(&std::env::var("DB_PASSWORD").unwrap_or_default())
    ///     .database("app")
    ///     .ssl_mode(MySqlSslMode::VerifyIdentity)
    ///     .ssl_ca("/etc/ssl/db-ca.pem");
    /// let store = sessionkit_mysql::MySqlStore::with_options(connect, "table=web_sessions").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`MySqlStore::open`]; `Config` for an option that is not sessionkit's.
    pub async fn with_options(connect: MySqlConnectOptions, options: &str) -> Result<Self> {
        Self::connect(connect, &SqlOptions::parse_own(options)?).await
    }

    async fn connect(connect: MySqlConnectOptions, options: &SqlOptions) -> Result<Self> {
        probe::<MySqlConnection>(&connect, options.acquire_timeout, "MySQL").await?;
        let pool = ConnPool::new(
            connect,
            options.max_connections,
            options.acquire_timeout,
            Some(Arc::new(|conn: &mut MySqlConnection| {
                Box::pin(async move {
                    // No gap locks: cleanup and inserts never block each other on index ranges.
                    conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                        .await
                        .map(|_| ())
                })
            })),
        );
        let store = Self {
            pool,
            sql: Arc::new(Statements::new(&options.table)),
        };
        if options.setup {
            store.setup().await?;
        }
        Ok(store)
    }

    /// For a conditional change, in the transaction `tx`: locks the session's row if it is
    /// live and checks the change's conditions against the values it holds now. `None` if they
    /// hold (the caller writes, still under the lock, so nothing lands between the check and
    /// the write), else what to answer: `Gone`, or `Conflict`. The inner error is a stored
    /// document that does not decode.
    ///
    /// A locking read is what makes the check current: under READ COMMITTED the statements
    /// after it read what is committed when they start, and every writer of a session's values
    /// locks its session row first and holds it to its commit, so values-table rows read
    /// under this lock are the current ones.
    async fn check_locked(
        &self,
        tx: &mut MySqlConnection,
        key: &SessionKey,
        change: &Change,
        now: i64,
    ) -> std::result::Result<Result<Option<ApplyOutcome>>, sqlx::Error> {
        let row = sqlx::query(checked(&self.sql.lock_data))
            .bind(key.as_bytes().as_slice())
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(Ok(Some(ApplyOutcome::Gone)));
        };
        let doc: String = row.try_get(0)?;
        let spilled: bool = row.try_get(1)?;
        let (mut current, elsewhere) = match inline_witness(change, &doc) {
            Ok(found) => found,
            Err(err) => return Ok(Err(err)),
        };
        if spilled && !elsewhere.is_empty() {
            let statement = format!(
                "SELECT name, value FROM {} WHERE session = ? AND name IN {}",
                self.sql.values_table,
                Statements::placeholders(elsewhere.len())
            );
            let mut query =
                sqlx::query_as(AssertSqlSafe(statement)).bind(key.as_bytes().as_slice());
            for name in &elsewhere {
                query = query.bind(*name);
            }
            let values: Vec<(String, Vec<u8>)> = query.fetch_all(&mut *tx).await?;
            current.extend(values);
        }
        Ok(Ok(
            (!change.holds(&current)).then_some(ApplyOutcome::Conflict)
        ))
    }

    async fn sessions_with_values(&self, rows: Vec<MySqlRow>) -> Result<Vec<StoredSession>> {
        let listed = rows
            .iter()
            .map(|row| {
                Ok(ListedRow {
                    key: row.value_at(0)?,
                    session: session_columns(row, 1)?,
                    spilled: row.value_at(7)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let (mut sessions, spilled) = listed_sessions(listed)?;
        if spilled.is_empty() {
            return Ok(sessions);
        }
        let statement = format!(
            "SELECT session, name, value FROM {} WHERE session IN {}",
            self.sql.values_table,
            Statements::placeholders(spilled.len())
        );
        let mut query = sqlx::query_as(AssertSqlSafe(statement));
        for key in spilled {
            query = query.bind(key);
        }
        let values: Vec<(Vec<u8>, String, Vec<u8>)> = with_conn!(self.pool, |c| query.fetch_all(c))
            .await
            .map_err(|e| sql_error("reading values", e))?;
        attach_values(&mut sessions, values)?;
        Ok(sessions)
    }
}

/// The session in the rows of `load` or `load_keys` (its columns, the inline document, then a
/// values-table row's name and value, or NULLs), keeping only the values of `only` if given.
fn fold(rows: &[MySqlRow], only: Option<&[&str]>) -> Result<Option<Record>> {
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let joined = rows
        .iter()
        .map(|row| Ok((row.value_at(6)?, row.value_at(7)?)));
    fold_joined(session_columns(first, 0)?, joined, only).map(Some)
}

#[async_trait]
impl Store for MySqlStore {
    fn name(&self) -> &'static str {
        "mysql"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all().with_reports_purged(true)
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<()> {
        let version = version_param(record.version)?;
        let Placement {
            large_names,
            large_values,
            ..
        } = place(&record.data, []);
        let doc = inline_doc(&record.data, []);
        retry("creating a session", || {
            with_conn!(self.pool, |c| async {
                let insert = sqlx::query(checked(&self.sql.insert_session))
                    .bind(key.as_bytes().as_slice())
                    .bind(record.created_at.as_millis())
                    .bind(record.expires_at.as_millis())
                    .bind(record.owner.as_deref())
                    .bind(version)
                    .bind(&doc)
                    .bind(!large_names.is_empty());
                if large_names.is_empty() {
                    return insert.execute(&mut *c).await.map(|_| ());
                }
                let mut tx = c.begin().await?;
                insert.execute(&mut *tx).await?;
                upsert(&self.sql, &mut *tx, key, &large_names, &large_values).await?;
                tx.commit().await
            })
        })
        .await
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let rows = with_conn!(self.pool, |c| sqlx::query(checked(&self.sql.load))
            .bind(key.as_bytes().as_slice())
            .bind(now_ms())
            .fetch_all(c))
        .await
        .map_err(|e| sql_error("loading a session", e))?;
        fold(&rows, None)
    }

    async fn load_keys(&self, key: &SessionKey, keys: &[&str]) -> Result<Option<Record>> {
        // One statement: the session row (inline values), and the asked values of the values
        // table when the session has rows there. Session keys are 1 to 255 bytes, so "" names
        // none and keeps the list non-empty.
        let names: &[&str] = if keys.is_empty() { &[""] } else { keys };
        let statement = format!(
            "SELECT s.created_at, s.expires_at, s.owner, s.version, s.moved_to, s.data, v.name, v.value \
             FROM {} s LEFT JOIN {} v ON v.session = s.`key` AND s.spilled AND v.name IN {} \
             WHERE s.`key` = ? AND s.expires_at > ?",
            self.sql.table,
            self.sql.values_table,
            Statements::placeholders(names.len())
        );
        let mut query = sqlx::query(AssertSqlSafe(statement));
        for name in names {
            query = query.bind(*name);
        }
        let query = query.bind(key.as_bytes().as_slice()).bind(now_ms());
        let rows = with_conn!(self.pool, |c| query.fetch_all(c))
            .await
            .map_err(|e| sql_error("loading a session", e))?;
        fold(&rows, Some(keys))
    }

    async fn apply(&self, key: &SessionKey, change: &Change) -> Result<ApplyOutcome> {
        let expires = change.expires_at.map(Timestamp::as_millis);
        let owner_changes = change.owner.is_some();
        let owner = change.owner.clone().flatten();
        let placed = place(&change.set, &change.removed);
        let has_large = !placed.large_names.is_empty();
        let conditional = !change.expected.is_empty();
        // A merge patch: the inline values, and `null` for the names leaving the document.
        let patch = inline_doc(&change.set, placed.leaving_doc.iter().copied());
        // A cleared change replaces the whole document.
        let doc = change.cleared.then(|| inline_doc(&change.set, []));
        // The conditions as `patch_small_if` checks them: the values expected present.
        let inline = conditional
            .then(|| inline_conditions(change))
            .flatten()
            .filter(|(_, absent)| absent.is_empty())
            .map(|(present, _)| present);
        retry("applying a change", || {
            with_conn!(self.pool, |c| async {
                if (!conditional || inline.is_some()) && !change.cleared && !has_large {
                    let statement = match inline {
                        None => &self.sql.patch_small,
                        Some(_) => &self.sql.patch_small_if,
                    };
                    let mut query = sqlx::query(checked(statement))
                        .bind(expires)
                        .bind(owner_changes)
                        .bind(owner.as_deref())
                        .bind(&patch)
                        .bind(key.as_bytes().as_slice())
                        .bind(now_ms());
                    if let Some(present) = &inline {
                        query = query.bind(present);
                    }
                    let patched = query.execute(&mut *c).await?;
                    if patched.rows_affected() > 0 {
                        return Ok(Ok(ApplyOutcome::Applied {
                            version: patched.last_insert_id(),
                        }));
                    }
                }
                // One `now` for the lock and the write: a session live when locked is still
                // live for the write.
                let now = now_ms();
                let mut tx = c.begin().await?;
                if conditional {
                    match self.check_locked(&mut tx, key, change, now).await? {
                        Ok(None) => {} // the conditions hold: write, still under the lock
                        Ok(Some(settled)) => {
                            tx.rollback().await?;
                            return Ok(Ok(settled));
                        }
                        Err(err) => {
                            tx.rollback().await?;
                            return Ok(Err(err));
                        }
                    }
                }
                let bump = if change.cleared {
                    sqlx::query(checked(&self.sql.replace))
                        .bind(expires)
                        .bind(owner_changes)
                        .bind(owner.as_deref())
                        .bind(doc.as_deref())
                } else {
                    sqlx::query(checked(&self.sql.patch))
                        .bind(expires)
                        .bind(owner_changes)
                        .bind(owner.as_deref())
                        .bind(&patch)
                };
                let bumped = bump
                    .bind(has_large)
                    .bind(key.as_bytes().as_slice())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                if bumped.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(Ok(ApplyOutcome::Gone));
                }
                if change.cleared {
                    sqlx::query(checked(&self.sql.clear))
                        .bind(key.as_bytes().as_slice())
                        .execute(&mut *tx)
                        .await?;
                } else if !placed.leaving_table.is_empty() {
                    let statement = format!(
                        "DELETE FROM {} WHERE session = ? AND name IN {}",
                        self.sql.values_table,
                        Statements::placeholders(placed.leaving_table.len())
                    );
                    let mut query =
                        sqlx::query(AssertSqlSafe(statement)).bind(key.as_bytes().as_slice());
                    for name in &placed.leaving_table {
                        query = query.bind(*name);
                    }
                    query.execute(&mut *tx).await?;
                }
                upsert(
                    &self.sql,
                    &mut *tx,
                    key,
                    &placed.large_names,
                    &placed.large_values,
                )
                .await?;
                tx.commit().await?;
                Ok(Ok(ApplyOutcome::Applied {
                    version: bumped.last_insert_id(),
                }))
            })
        })
        .await?
    }

    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<ApplyOutcome> {
        let result = retry("extending a session", || {
            with_conn!(self.pool, |c| sqlx::query(checked(&self.sql.touch))
                .bind(expires_at.as_millis())
                .bind(key.as_bytes().as_slice())
                .bind(now_ms())
                .execute(c))
        })
        .await?;
        Ok(if result.rows_affected() == 0 {
            ApplyOutcome::Gone
        } else {
            ApplyOutcome::Applied {
                version: result.last_insert_id(),
            }
        })
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let result = retry("deleting a session", || {
            with_conn!(self.pool, |c| sqlx::query(checked(&self.sql.delete))
                .bind(key.as_bytes().as_slice())
                .execute(c))
        })
        .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn cycle(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        grace_until: Option<Timestamp>,
    ) -> Result<CycleOutcome> {
        retry("cycling a session id", || {
            with_conn!(self.pool, |c| async {
                let now = now_ms();
                let mut tx = c.begin().await?;
                let live = sqlx::query(checked(&self.sql.lock_live))
                    .bind(old.as_bytes().as_slice())
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                if live.is_none() {
                    return Ok(CycleOutcome::Gone);
                }
                sqlx::query(checked(&self.sql.cycle_copy))
                    .bind(new.as_bytes().as_slice())
                    .bind(old.as_bytes().as_slice())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(checked(&self.sql.move_values))
                    .bind(new.as_bytes().as_slice())
                    .bind(old.as_bytes().as_slice())
                    .execute(&mut *tx)
                    .await?;
                match grace_until {
                    Some(until) => {
                        sqlx::query(checked(&self.sql.make_pointer))
                            .bind(new.as_bytes().as_slice())
                            .bind(now)
                            .bind(until.as_millis())
                            .bind(old.as_bytes().as_slice())
                            .execute(&mut *tx)
                            .await?
                    }
                    None => {
                        sqlx::query(checked(&self.sql.delete))
                            .bind(old.as_bytes().as_slice())
                            .execute(&mut *tx)
                            .await?
                    }
                };
                tx.commit().await?;
                Ok(CycleOutcome::Cycled)
            })
        })
        .await
    }

    async fn setup(&self) -> Result<()> {
        let lock = format!("sessionkit_setup_{}", lock_id(&self.sql.table));
        let found = with_conn!(self.pool, |c| async {
            // Several app servers may start at once: one creates, the others wait and find it.
            sqlx::query("SELECT GET_LOCK(?, 30)")
                .bind(&lock)
                .execute(&mut *c)
                .await?;
            let result = async {
                for statement in &self.sql.ddl {
                    sqlx::query(checked(statement)).execute(&mut *c).await?;
                }
                let inline_columns: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM information_schema.columns \
                     WHERE table_schema = DATABASE() AND table_name = ? AND column_name = 'data'",
                )
                .bind(&self.sql.table)
                .fetch_one(&mut *c)
                .await?;
                if inline_columns == 0 {
                    // A version-1 table: its sessions keep their values in the values table
                    // (`spilled` defaults to TRUE for them).
                    sqlx::query(checked(&self.sql.add_inline_columns))
                        .execute(&mut *c)
                        .await?;
                }
                sqlx::query(
                    "INSERT INTO sessionkit_schema (table_name, version) VALUES (?, ?) \
                     ON DUPLICATE KEY UPDATE version = GREATEST(version, VALUES(version))",
                )
                .bind(&self.sql.table)
                .bind(SCHEMA_VERSION)
                .execute(&mut *c)
                .await?;
                sqlx::query_scalar::<_, i32>(
                    "SELECT version FROM sessionkit_schema WHERE table_name = ?",
                )
                .bind(&self.sql.table)
                .fetch_one(&mut *c)
                .await
            }
            .await;
            release_lock(&mut *c, &lock).await?;
            result
        })
        .await
        .map_err(|e| sql_error("creating the session schema", e))?;
        if found > SCHEMA_VERSION {
            return Err(Error::config(format!(
                "table {} has schema version {found}; this sessionkit knows {SCHEMA_VERSION}",
                self.sql.table
            )));
        }
        Ok(())
    }

    fn schema(&self) -> Option<String> {
        Some(self.sql.ddl.iter().map(|s| format!("{s};\n")).collect())
    }

    async fn delete_expired(&self) -> Result<u64> {
        let lock = format!("sessionkit_cleanup_{}", lock_id(&self.sql.table));
        // GET_LOCK belongs to this connection's session, so every batch runs on it.
        with_conn!(self.pool, |c| async {
            let mine: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, 0)")
                .bind(&lock)
                .fetch_one(&mut *c)
                .await?;
            if mine != Some(1) {
                return Ok(0); // another app server is cleaning right now
            }
            let result = {
                let mut cleanup = BatchedCleanup::default();
                loop {
                    let batch = delete_expired_on(&self.sql, &mut *c, CLEANUP_BATCH).await;
                    if let ControlFlow::Break(done) = cleanup.settle(batch, is_transient) {
                        break done;
                    }
                }
            };
            release_lock(&mut *c, &lock).await?;
            result
        })
        .await
        .map_err(|e| sql_error("cleaning up expired sessions", e))
    }

    async fn delete_expired_batch(&self, limit: usize) -> Result<u64> {
        let limit = i64::try_from(limit.max(1)).unwrap_or(CLEANUP_BATCH);
        retry("deleting expired sessions", || {
            with_conn!(self.pool, |c| delete_expired_on(&self.sql, c, limit))
        })
        .await
    }

    async fn delete_expired_batch_reporting(&self, limit: usize) -> Result<PurgeReport> {
        let limit = i64::try_from(limit.max(1)).unwrap_or(CLEANUP_BATCH);
        let rows = retry("deleting expired sessions", || {
            with_conn!(self.pool, |c| delete_expired_reporting_on(
                &self.sql, c, limit
            ))
        })
        .await?;
        let mut sessions = Vec::with_capacity(rows.len());
        for (key, owner, expires_at, pointer) in &rows {
            if !pointer {
                sessions.push(PurgedSession::new(
                    SessionKey::from_slice(key)?,
                    owner.clone(),
                    Timestamp::from_millis(*expires_at),
                ));
            }
        }
        Ok(PurgeReport::new(rows.len() as u64, sessions))
    }

    async fn count_expired(&self) -> Result<u64> {
        // Sessions and grace-period pointers alike: what `delete_expired` deletes.
        let statement = format!(
            "SELECT COUNT(*) FROM {} WHERE expires_at <= ?",
            self.sql.table
        );
        let count: i64 = retry("counting expired sessions", || {
            with_conn!(self.pool, |c| sqlx::query_scalar(AssertSqlSafe(
                statement.clone()
            ))
            .bind(now_ms())
            .fetch_one(c))
        })
        .await?;
        Ok(count.unsigned_abs())
    }

    async fn list(&self, filter: &ListFilter, page: PageRequest) -> Result<Page> {
        let mut sql = self.sql.meta_columns.clone();
        match filter.state {
            ListState::Live => sql.push_str(" AND expires_at > ?"),
            ListState::Expired => sql.push_str(" AND expires_at <= ?"),
            ListState::All => {}
        }
        if page.after.is_some() {
            sql.push_str(" AND `key` > ?");
        }
        if filter.owner.is_some() {
            sql.push_str(" AND owner = ?");
        }
        sql.push_str(" ORDER BY `key` LIMIT ?");
        let mut query = sqlx::query(AssertSqlSafe(sql));
        if filter.state != ListState::All {
            query = query.bind(now_ms());
        }
        if let Some(after) = page.after {
            query = query.bind(after.as_bytes().to_vec());
        }
        if let Some(owner) = &filter.owner {
            query = query.bind(owner.clone());
        }
        let rows = with_conn!(self.pool, |c| query
            .bind(i64::try_from(page.limit.saturating_add(1)).unwrap_or(i64::MAX))
            .fetch_all(c))
        .await
        .map_err(|e| sql_error("listing sessions", e))?;
        Ok(Page::from_sorted(
            self.sessions_with_values(rows).await?,
            page.limit,
        ))
    }

    async fn by_owner(&self, owner: &str) -> Result<Vec<StoredSession>> {
        let rows = with_conn!(self.pool, |c| sqlx::query(checked(&self.sql.by_owner))
            .bind(owner)
            .bind(now_ms())
            .fetch_all(c))
        .await
        .map_err(|e| sql_error("listing an owner's sessions", e))?;
        self.sessions_with_values(rows).await
    }

    async fn delete_by_owner(&self, owner: &str) -> Result<u64> {
        retry("revoking an owner's sessions", || {
            with_conn!(self.pool, |c| async {
                let mut tx = c.begin().await?;
                let live: i64 = sqlx::query_scalar(checked(&self.sql.count_owner_live))
                    .bind(owner)
                    .bind(now_ms())
                    .fetch_one(&mut *tx)
                    .await?;
                sqlx::query(checked(&self.sql.delete_owner))
                    .bind(owner)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(live.unsigned_abs())
            })
        })
        .await
    }
}
