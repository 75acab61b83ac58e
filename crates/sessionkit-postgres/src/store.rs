//! The PostgreSQL store (tokio-postgres).

use std::ops::ControlFlow;
use std::sync::Arc;

use sessionkit_core::{
    ApplyOutcome, Capabilities, Change, CycleOutcome, Error, ListFilter, ListState, OpenMode, Page,
    PageRequest, PurgeReport, PurgedSession, Record, Result, SessionKey, Store, StoredSession,
    Timestamp, async_trait,
};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row, Transaction};

use crate::connections::{PgClient, PgConnections, PgFailure, Sql};
use sessionkit_core::backend::retry_transient;
use sessionkit_core::backend::sql::{
    BatchedCleanup, CLEANUP_BATCH, ListedRow, Placement, SessionColumns, SqlOptions, attach_values,
    encode_inline, fold_joined, inline_conditions, inline_doc, inline_witness, listed_sessions,
    lock_id, now_ms, place, version_param,
};
use sessionkit_core::backend::tls;

/// 1: values in `<table>_values` only. 2: small values inline in the session row (`data`,
/// `spilled`); `setup` upgrades a version-1 table in place.
const SCHEMA_VERSION: i32 = 2;

struct Statements {
    ddl: Sql,
    create: Sql,
    load: Sql,
    load_keys: Sql,
    apply: Sql,
    apply_if: Sql,
    patch_small: Sql,
    patch_small_if: Sql,
    patch_small_if_one: Sql,
    replace: Sql,
    clear: Sql,
    upsert: Sql,
    touch: Sql,
    delete: Sql,
    lock_live: Sql,
    lock_data: Sql,
    values_named: Sql,
    cycle_copy: Sql,
    move_values: Sql,
    make_pointer: Sql,
    delete_expired: Sql,
    delete_expired_reporting: Sql,
    meta_columns: String,
    values_of: Sql,
    by_owner: Sql,
    delete_owner: Sql,
    table: String,
}

impl Statements {
    fn new(t: &str) -> Self {
        let v = format!("{t}_values");
        let meta = "created_at, expires_at, owner, version, moved_to";
        let columns = "created_at, expires_at, owner, version, moved_to, data::text";
        let live = "WHERE key = $1 AND expires_at > $2 AND moved_to IS NULL";
        let bump = "version = version + 1, expires_at = COALESCE($3::bigint, expires_at), \
                    owner = CASE WHEN $4::boolean THEN $5::text ELSE owner END";
        // Whether every condition holds for the inline document of `row`: $10 is a document
        // of the values expected present (in their inline text, which is canonical, see
        // `encode_inline`, so containment of a string compares bytes), $11 the names expected
        // absent. A name the document lacks is absent: the caller has made sure the session
        // has nothing in the values table. Operators on the row's own column, no subquery: a
        // NOT EXISTS over the conditions would be planned as an anti-join, and EvalPlanQual
        // re-checks a join against the other side's rows it found the first time, i.e.
        // against the old version of the row.
        let holds_inline = |row: &str| {
            format!("({row}.data @> $10::text::jsonb AND NOT ({row}.data ?| $11::text[]))")
        };
        // `s` is a FROM item with the session's key: joining it means a gone session (no row
        // in `s`) inserts nothing.
        let upsert_from = |s_item: &str, names: &str, values: &str| {
            format!(
                "INSERT INTO {v} (session, name, value) SELECT s.key, u.name, u.value \
                 FROM {s_item}, UNNEST({names}::text[], {values}::bytea[]) AS u(name, value) \
                 ON CONFLICT (session, name) DO UPDATE SET value = EXCLUDED.value"
            )
        };
        // The values table is read only for sessions that have rows there: `OFFSET 0` keeps
        // the planner from flattening the subquery, so `s.spilled` becomes a one-time filter
        // and a small session's load never probes the values index (EXPLAIN: "never executed").
        let spilled_of = |extra: &str| {
            format!(
                "LEFT JOIN LATERAL (SELECT name, value FROM {v} WHERE session = s.key AND s.spilled{extra} OFFSET 0) v ON TRUE"
            )
        };
        Self {
            ddl: format!(
                "CREATE TABLE IF NOT EXISTS {t} (\n\
                 \x20   key        BYTEA   NOT NULL PRIMARY KEY, -- SHA-256 of the session id\n\
                 \x20   created_at BIGINT  NOT NULL,             -- ms since the Unix epoch\n\
                 \x20   expires_at BIGINT  NOT NULL,             -- ms since the Unix epoch\n\
                 \x20   owner      TEXT,\n\
                 \x20   version    BIGINT  NOT NULL,\n\
                 \x20   moved_to   BYTEA,                        -- grace-period pointer target\n\
                 \x20   data       JSONB   NOT NULL DEFAULT '{{}}', -- values up to 1 KiB: name -> base64\n\
                 \x20   spilled    BOOLEAN NOT NULL DEFAULT TRUE -- may have rows in {v}\n\
                 );\n\
                 -- A version-1 table (values in {v} only) gains the inline columns.\n\
                 ALTER TABLE {t} ADD COLUMN IF NOT EXISTS data JSONB NOT NULL DEFAULT '{{}}',\n\
                 \x20   ADD COLUMN IF NOT EXISTS spilled BOOLEAN NOT NULL DEFAULT TRUE;\n\
                 CREATE INDEX IF NOT EXISTS {t}_expires ON {t} (expires_at);\n\
                 CREATE INDEX IF NOT EXISTS {t}_owner ON {t} (owner) WHERE owner IS NOT NULL;\n\
                 CREATE TABLE IF NOT EXISTS {v} (              -- values over 1 KiB, one row each\n\
                 \x20   session BYTEA NOT NULL REFERENCES {t} (key) ON DELETE CASCADE,\n\
                 \x20   name    TEXT  NOT NULL,\n\
                 \x20   value   BYTEA NOT NULL,\n\
                 \x20   PRIMARY KEY (session, name)\n\
                 );\n\
                 CREATE TABLE IF NOT EXISTS sessionkit_schema (\n\
                 \x20   table_name TEXT    NOT NULL PRIMARY KEY,\n\
                 \x20   version    INTEGER NOT NULL\n\
                 );\n"
            )
            .into(),
            // $6/$7: the large values; $8: the inline document.
            create: format!(
                "WITH s AS (INSERT INTO {t} (key, {meta}, data, spilled) \
                 VALUES ($1, $2, $3, $4, $5, NULL, $8::text::jsonb, cardinality($6::text[]) > 0) RETURNING key) \
                 INSERT INTO {v} (session, name, value) SELECT s.key, u.name, u.value \
                 FROM s, UNNEST($6::text[], $7::bytea[]) AS u(name, value)"
            )
            .into(),
            load: format!(
                "SELECT {columns}, v.name, v.value FROM {t} s {} \
                 WHERE s.key = $1 AND s.expires_at > $2",
                spilled_of("")
            )
            .into(),
            load_keys: format!(
                "SELECT {columns}, v.name, v.value FROM {t} s {} \
                 WHERE s.key = $1 AND s.expires_at > $2",
                spilled_of(" AND name = ANY($3)")
            )
            .into(),
            // One statement: bump the live session (or nothing) and patch its inline document;
            // drop the names that moved inline or were removed from the values table (only if
            // the session has rows there), and upsert the large values. The three
            // sub-statements touch different rows: $10 and $6 never share a name.
            // $6/$7 large values, $8 names leaving the document, $9 inline patch,
            // $10 names leaving the values table.
            apply: format!(
                "WITH s AS (UPDATE {t} SET {bump}, data = (data - $8::text[]) || $9::text::jsonb, \
                 spilled = spilled OR cardinality($6::text[]) > 0 {live} RETURNING key, version, spilled), \
                 r AS (DELETE FROM {v} WHERE session IN (SELECT key FROM s WHERE spilled) AND name = ANY($10)), \
                 i AS ({}) SELECT version FROM s",
                upsert_from("s", "$6", "$7")
            )
            .into(),
            // A conditional change in one statement, for a session with nothing in the values
            // table: `apply`'s UPDATE with the conditions in its WHERE. Under READ COMMITTED an
            // UPDATE that finds the row changed by a concurrent commit re-evaluates its WHERE
            // on the newest row version (EvalPlanQual), so a condition on the row's own `data`
            // is checked against what it writes over: check and write are one step. That would
            // not hold for a condition on a `<table>_values` row (a subquery reads the
            // statement's older snapshot), hence `NOT spilled`: spilled sessions take the
            // locked way (`apply_locked`).
            // The final SELECT says why no row was updated, from the statement's snapshot: not
            // live there is `Gone`; live, not spilled and a condition failing there is a
            // `Conflict` as of that snapshot (nothing was written). Live, not spilled and the
            // conditions holding means a commit after the snapshot changed the row: run again.
            // $6/$7 large values, $8 names leaving the document, $9 inline patch, $10/$11 the
            // conditions (see `holds_inline`).
            apply_if: format!(
                "WITH s AS (UPDATE {t} SET {bump}, data = (data - $8::text[]) || $9::text::jsonb, \
                 spilled = spilled OR cardinality($6::text[]) > 0 {live} AND NOT spilled AND {} \
                 RETURNING key, version), \
                 i AS ({}) \
                 SELECT (SELECT version FROM s), c.spilled, {} FROM (VALUES (1)) AS one (x) \
                 LEFT JOIN {t} c ON c.key = $1 AND c.expires_at > $2 AND c.moved_to IS NULL",
                holds_inline(t),
                upsert_from("s", "$6", "$7"),
                holds_inline("c"),
            )
            .into(),
            // The common apply, a plain UPDATE: a session with nothing in the values table
            // takes a change with nothing for it. Zero rows (gone, or spilled) falls back to
            // `apply`. $6 names leaving the document, $7 inline patch.
            patch_small: format!(
                "UPDATE {t} SET {bump}, data = (data - $6::text[]) || $7::text::jsonb \
                 {live} AND NOT spilled RETURNING version"
            )
            .into(),
            // `patch_small` for a conditional change (the steady state of an `update`): the
            // same plain UPDATE, its conditions on the row's own document in the WHERE, which
            // READ COMMITTED re-checks on the newest row version (see `apply_if`). Zero rows
            // (gone, spilled, or a condition failing) goes to `apply_if`, which tells them
            // apart. $8/$9 the conditions (values expected present, names expected absent).
            patch_small_if: format!(
                "UPDATE {t} SET {bump}, data = (data - $6::text[]) || $7::text::jsonb \
                 {live} AND NOT spilled AND data @> $8::text::jsonb AND NOT (data ?| $9::text[]) \
                 RETURNING version"
            )
            .into(),
            // The same for the most common condition, one key (an `update` of one key): its
            // base64 text in the document, or NULL for absent, compared as text rather than
            // by building and matching a document. $8 the name, $9 the text or NULL.
            patch_small_if_one: format!(
                "UPDATE {t} SET {bump}, data = (data - $6::text[]) || $7::text::jsonb \
                 {live} AND NOT spilled AND (data ->> $8::text) IS NOT DISTINCT FROM $9::text \
                 RETURNING version"
            )
            .into(),
            // A cleared change: the document becomes the change's inline values, and the
            // values table is emptied (`clear`) in the same transaction.
            replace: format!(
                "UPDATE {t} SET {bump}, data = $6::text::jsonb, spilled = $7::boolean {live} RETURNING version"
            )
            .into(),
            clear: format!("DELETE FROM {v} WHERE session = $1").into(),
            upsert: upsert_from("(SELECT $1::bytea AS key) s", "$2", "$3").into(),
            touch: format!(
                "UPDATE {t} SET version = version + 1, expires_at = $3 {live} RETURNING version"
            )
            .into(),
            delete: format!("DELETE FROM {t} WHERE key = $1").into(),
            lock_live: format!("SELECT 1 FROM {t} {live} FOR UPDATE").into(),
            lock_data: format!("SELECT data::text, spilled FROM {t} {live} FOR UPDATE").into(),
            values_named: format!("SELECT name, value FROM {v} WHERE session = $1 AND name = ANY($2)")
                .into(),
            cycle_copy: format!(
                "INSERT INTO {t} (key, {meta}, data, spilled) \
                 SELECT $2, created_at, expires_at, owner, version + 1, NULL, data, spilled \
                 FROM {t} WHERE key = $1"
            )
            .into(),
            move_values: format!("UPDATE {v} SET session = $2 WHERE session = $1").into(),
            make_pointer: format!(
                "UPDATE {t} SET moved_to = $2, owner = NULL, created_at = $3, expires_at = $4, version = 1, \
                 data = '{{}}', spilled = FALSE WHERE key = $1"
            )
            .into(),
            // SKIP LOCKED: rows a live request holds are left for the next round, so cleanup
            // never waits on (or deadlocks with) traffic.
            delete_expired: format!(
                "DELETE FROM {t} WHERE key IN (SELECT key FROM {t} WHERE expires_at <= $1 \
                 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
            )
            .into(),
            // The same batch, handing back what it deleted. The outer deadline check is
            // re-evaluated on the newest version of a row a concurrent commit changed, so a
            // session extended meanwhile is neither deleted nor returned.
            delete_expired_reporting: format!(
                "DELETE FROM {t} WHERE expires_at <= $1 AND key IN (SELECT key FROM {t} \
                 WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
                 RETURNING key, owner, expires_at, moved_to IS NOT NULL"
            )
            .into(),
            meta_columns: format!("SELECT key, {columns}, spilled FROM {t} WHERE moved_to IS NULL"),
            values_of: format!("SELECT session, name, value FROM {v} WHERE session = ANY($1)").into(),
            by_owner: format!(
                "SELECT key, {columns}, spilled FROM {t} WHERE owner = $1 AND expires_at > $2 AND moved_to IS NULL"
            )
            .into(),
            delete_owner: format!(
                "WITH d AS (DELETE FROM {t} WHERE owner = $1 RETURNING expires_at) \
                 SELECT count(*) FILTER (WHERE expires_at > $2) FROM d"
            )
            .into(),
            table: t.to_owned(),
        }
    }
}

/// The PostgreSQL store. URL: `postgres://user@host:5432/db?table=sessions` (options:
/// `table`, `max_connections`, `shared_connections`, `acquire_timeout_ms`, `setup=true`; others
/// go to the driver:
/// `sslmode`, `connect_timeout`, `application_name`, …, as tokio-postgres reads them).
#[derive(Clone)]
pub struct PostgresStore {
    conns: PgConnections,
    sql: Arc<Statements>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("table", &self.sql.table)
            .finish_non_exhaustive()
    }
}

impl PgFailure {
    /// Whether the database aborted the transaction and running it again may succeed.
    fn is_transient(&self) -> bool {
        matches!(
            self.code(),
            Some(code) if *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
        )
    }

    /// Connection trouble is `Unavailable` (503), a duplicate key `Conflict`, a missing table
    /// `Config` (run setup), the rest `Backend`.
    pub(crate) fn into_store_error(self, context: &str) -> Error {
        let err = match self {
            Self::TimedOut => {
                return Error::unavailable(
                    context.to_owned(),
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no PostgreSQL connection within the acquire timeout",
                    ),
                );
            }
            Self::Db(err) => err,
        };
        let Some(db) = err.as_db_error() else {
            // No server error: the TLS handshake refused a certificate, the socket or the
            // connection broke, or a value did not convert.
            return if let Some(why) = tls::handshake_refusal(&err) {
                Error::config_with(format!("{context}: {why}"), err)
            } else if tls_refused(&err) {
                Error::config_with(
                    format!("{context}: the server does not offer TLS, which sslmode requires"),
                    err,
                )
            } else if err.is_closed()
                || std::error::Error::source(&err).is_some_and(|s| s.is::<std::io::Error>())
            {
                Error::unavailable(context.to_owned(), err)
            } else {
                Error::backend(context.to_owned(), err)
            };
        };
        let code = db.code().clone();
        if code == SqlState::INVALID_PASSWORD
            || code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            || code == SqlState::INVALID_CATALOG_NAME
        {
            // A wrong password, a user or database that does not exist, a connection
            // pg_hba.conf rejects: the URL is wrong, retrying does not help.
            Error::config_with(format!("{context}: the server refused the login"), err)
        } else if code == SqlState::UNIQUE_VIOLATION {
            Error::conflict(format!("{context}: {db}"))
        } else if code == SqlState::UNDEFINED_TABLE {
            Error::config_with(
                format!(
                    "{context}: the session schema is missing (run `sessionkit setup` or open with ?setup=true)"
                ),
                err,
            )
        } else if code.code().starts_with("08") || code.code().starts_with("57") {
            Error::unavailable(context.to_owned(), err)
        } else {
            Error::backend(context.to_owned(), err)
        }
    }
}

/// Reads the session tables' columns from a row, as typed store errors.
trait Columns {
    fn value_at<'a, T: tokio_postgres::types::FromSql<'a>>(&'a self, at: usize) -> Result<T>;
}

impl Columns for Row {
    fn value_at<'a, T: tokio_postgres::types::FromSql<'a>>(&'a self, at: usize) -> Result<T> {
        self.try_get(at)
            .map_err(|e| PgFailure::Db(e).into_store_error("reading a session row"))
    }
}

/// `created_at, expires_at, owner, version, moved_to, data` from `row`, starting at `at`.
fn session_columns(row: &Row, at: usize) -> Result<SessionColumns> {
    Ok(SessionColumns {
        created_at: row.value_at(at)?,
        expires_at: row.value_at(at + 1)?,
        owner: row.value_at(at + 2)?,
        version: row.value_at(at + 3)?,
        moved_to: row.value_at(at + 4)?,
        data: row.value_at(at + 5)?,
    })
}

/// A session's load (`meta…, data, name, value`: the session row joined with its values-table
/// rows, if any) as a record.
fn fold(rows: &[Row], only: Option<&[&str]>) -> Result<Option<Record>> {
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let joined = rows
        .iter()
        .map(|row| Ok((row.value_at(6)?, row.value_at(7)?)));
    fold_joined(session_columns(first, 0)?, joined, only).map(Some)
}

/// Runs `attempt` again while PostgreSQL aborts it (deadlock, serialization failure).
pub(crate) async fn retry<T, F, Fut>(context: &str, attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, PgFailure>>,
{
    retry_transient(
        context,
        PgFailure::is_transient,
        |context, err: PgFailure| err.into_store_error(context),
        attempt,
    )
    .await
}

/// Whether the server answered that it does not do TLS, for an `sslmode` that requires it
/// (tokio-postgres reports it as a TLS error with a message, not an I/O error; its kinds are
/// private, so its `Display` is what tells).
fn tls_refused(err: &tokio_postgres::Error) -> bool {
    err.to_string()
        .starts_with("error performing TLS handshake")
        && !std::error::Error::source(err).is_some_and(|s| s.is::<std::io::Error>())
}

fn failed(context: &'static str) -> impl FnOnce(PgFailure) -> Error {
    move |err| err.into_store_error(context)
}

impl PostgresStore {
    /// Connects to the database a `postgres://` URL names.
    ///
    /// # Errors
    /// [`ErrorKind::Config`](sessionkit_core::ErrorKind::Config) for bad options,
    /// [`ErrorKind::Unavailable`](sessionkit_core::ErrorKind::Unavailable) if the server cannot be
    /// reached; with `?setup=true`, whatever [`Store::setup`] returns.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with_mode(url, OpenMode::Create).await
    }

    /// Connects to the database a `postgres://` URL names, in `mode`: [`OpenMode::Create`] as
    /// [`PostgresStore::open`]; [`OpenMode::Existing`] creates nothing (`setup=true` is not
    /// run) and checks that the session table and its values table exist with every column
    /// this library reads.
    ///
    /// # Errors
    /// As [`PostgresStore::open`]; in [`OpenMode::Existing`],
    /// [`ErrorKind::Config`](sessionkit_core::ErrorKind::Config) for a missing or outdated
    /// schema (the message says to run `sessionkit setup`).
    pub async fn open_with_mode(url: &str, mode: OpenMode) -> Result<Self> {
        let mut options = SqlOptions::parse(url)?;
        if mode == OpenMode::Existing {
            options.setup = false;
        }
        let (driver_url, tls) = crate::tls::take(&options.driver_url)?;
        let mut config: tokio_postgres::Config = driver_url
            .replacen("postgresql:", "postgres:", 1)
            .parse()
            .map_err(|e| Error::config_with("invalid PostgreSQL URL", e))?;
        config.ssl_mode(tls.mode);
        let store = Self::connect(config, tls.connector, &options).await?;
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
        let client = self.conns.shared().await.map_err(failed(CONTEXT))?;
        for probe in [
            format!(
                "SELECT key, created_at, expires_at, owner, version, moved_to, data, spilled FROM {t} WHERE false"
            ),
            format!("SELECT session, name, value FROM {t}_values WHERE false"),
        ] {
            match client.query_unprepared(&probe, &[]).await {
                Ok(_) => {}
                Err(PgFailure::Db(err)) if err.code() == Some(&SqlState::UNDEFINED_COLUMN) => {
                    return Err(Error::config_with(
                        format!(
                            "{CONTEXT}: table {t} has an older schema (upgrade it with `sessionkit setup`)"
                        ),
                        err,
                    ));
                }
                Err(err) => return Err(err.into_store_error(CONTEXT)),
            }
        }
        Ok(())
    }

    /// Connects with a driver configuration built in code, for what a URL cannot say or an
    /// application that already has one. The configuration's `ssl_mode` decides whether TLS
    /// is used (`Disable`, `Prefer`, `Require`, as tokio-postgres reads them); `tls` decides
    /// how the server is verified: `None` verifies the chain and host name against the
    /// system's roots. `options` are sessionkit's own, as in the URL's query string (`table`,
    /// `max_connections`, `shared_connections`, `acquire_timeout_ms`, `setup`).
    ///
    /// ```no_run
    /// # async fn demo() -> sessionkit_core::Result<()> {
    /// use sessionkit_core::backend::tls::{client_config, TlsFiles, Verify};
    /// use sessionkit_postgres::PostgresStore;
    ///
    /// let mut config = tokio_postgres::Config::new();
    /// config
    ///     .host("db.example.com")
    ///     .user("app")
    ///     .password(std::env::var("DB_PASSWORD").unwrap_or_default())
    ///     .dbname("app")
    ///     .ssl_mode(tokio_postgres::config::SslMode::Require);
    /// let files = TlsFiles { ca: Some("/etc/ssl/db-ca.pem".into()), ..TlsFiles::default() };
    /// let tls = client_config(&files, Verify::Full)?;
    /// let store = PostgresStore::with_config(config, Some(tls), "table=web_sessions").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`PostgresStore::open`]; `Config` for an option that is not sessionkit's.
    pub async fn with_config(
        config: tokio_postgres::Config,
        tls: Option<tls::rustls::ClientConfig>,
        options: &str,
    ) -> Result<Self> {
        let options = SqlOptions::parse_own(options)?;
        let tls = match tls {
            Some(tls) => tls,
            None => tls::client_config(&tls::TlsFiles::default(), tls::Verify::Full)?,
        };
        Self::connect(
            config,
            tokio_postgres_rustls::MakeRustlsConnect::new(tls),
            &options,
        )
        .await
    }

    async fn connect(
        config: tokio_postgres::Config,
        tls: tokio_postgres_rustls::MakeRustlsConnect,
        options: &SqlOptions,
    ) -> Result<Self> {
        let conns = PgConnections::new(
            config,
            tls,
            options.max_connections,
            options.shared_connections,
            options.acquire_timeout,
        );
        // Connect now: an unreachable server or a bad password is reported at once, as the
        // driver says it, rather than by the first request.
        conns
            .shared()
            .await
            .map_err(failed("connecting to PostgreSQL"))?;
        let store = Self {
            conns,
            sql: Arc::new(Statements::new(&options.table)),
        };
        if options.setup {
            store.setup().await?;
        }
        Ok(store)
    }

    /// Runs one prepared statement on a shared connection; its rows.
    async fn query(
        &self,
        sql: &Sql,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, PgFailure> {
        self.conns.shared().await?.query(sql, params).await
    }

    /// Runs one prepared statement on a shared connection; its row, if any.
    async fn query_opt(
        &self,
        sql: &Sql,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, PgFailure> {
        self.conns.shared().await?.query_opt(sql, params).await
    }

    /// A conditional change as one plain UPDATE, where it can be (a small session, a small
    /// change, small values expected): the new version, or `None` for `apply_conditional` to
    /// settle (gone, spilled, or a condition failing).
    async fn patch_small_if(&self, change: &Change, w: &Write<'_>) -> Result<Option<i64>> {
        let Some((present, absent)) = inline_conditions(change) else {
            return Ok(None);
        };
        if change.cleared || w.has_large() {
            return Ok(None);
        }
        // One condition: its name and its inline text (None: absent).
        let one = match change.expected.iter().next() {
            Some((name, seen)) if change.expected.len() == 1 => {
                Some((name, seen.as_deref().map(encode_inline)))
            }
            _ => None,
        };
        let row = retry("applying a change", || async {
            let client = self.conns.exclusive().await?;
            let now = now_ms();
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![
                &w.key,
                &now,
                &w.expires,
                &w.owner_changes,
                &w.owner,
                &w.placed.leaving_doc,
                &w.doc,
            ];
            let statement = match &one {
                Some((name, text)) => {
                    params.extend([*name as &(dyn ToSql + Sync), text]);
                    &self.sql.patch_small_if_one
                }
                None => {
                    params.extend([&present as &(dyn ToSql + Sync), &absent]);
                    &self.sql.patch_small_if
                }
            };
            client.query_opt(statement, &params).await
        })
        .await?;
        row.map(|row| row.value_at::<i64>(0)).transpose()
    }

    /// `apply` for a change with conditions: `apply_if` when it can settle it in one
    /// statement, else `apply_locked`.
    async fn apply_conditional(&self, change: &Change, w: &Write<'_>) -> Result<ApplyOutcome> {
        let conditions = inline_conditions(change).filter(|_| !change.cleared);
        retry("applying a change", || async {
            let now = now_ms();
            let mut conn = self.conns.exclusive().await?;
            if let Some((present, absent)) = &conditions {
                // `apply`'s parameters but the last, then the conditions.
                let mut params: Vec<&(dyn ToSql + Sync)> = w.apply_params(&now)[..9].to_vec();
                params.extend([present as &(dyn ToSql + Sync), absent]);
                // A race (a commit between the statement's snapshot and its UPDATE) is met by
                // running the statement again on a fresh snapshot, a round trip, rather than by
                // a transaction that holds the row across four; the locked way is the last
                // resort that always settles.
                for _ in 0..FAST_TRIES {
                    let row = conn.query_opt(&self.sql.apply_if, &params).await?;
                    match row.as_ref().map(settled).transpose()? {
                        Some(Settled::Done(outcome)) => return Ok(outcome),
                        Some(Settled::Raced) => {}
                        Some(Settled::Spilled) | None => break,
                    }
                }
            }
            self.apply_locked(&mut conn, change, w, now).await
        })
        .await?
    }

    /// A conditional change under its session row's lock: the way for spilled sessions (a
    /// condition may be on a row of the values table), for cleared changes, and for what
    /// `apply_if` could not settle. The lock is taken by a statement of its own, first: under
    /// READ COMMITTED every later statement takes a fresh snapshot, which then holds every
    /// write to this session's values that committed before (each writer of the values table
    /// locks the session row first and keeps it locked until its commit), and no new one can
    /// start until this transaction ends. So the values read here are the current ones and
    /// stay so until the write. The outer error is the driver's (retried if transient), the
    /// inner one a stored document that does not decode.
    async fn apply_locked(
        &self,
        conn: &mut PgClient,
        change: &Change,
        w: &Write<'_>,
        now: i64,
    ) -> Result<Result<ApplyOutcome>, PgFailure> {
        let lock = conn.statement(&self.sql.lock_data).await?;
        let named = conn.statement(&self.sql.values_named).await?;
        let apply = if change.cleared {
            None
        } else {
            Some(conn.statement(&self.sql.apply).await?)
        };
        let tx = conn.client().transaction().await?;
        let Some(row) = tx.query_opt(&lock, &[&w.key, &now]).await? else {
            return Ok(Ok(ApplyOutcome::Gone));
        };
        let doc: String = row.try_get(0)?;
        let spilled: bool = row.try_get(1)?;
        let (mut current, elsewhere) = match inline_witness(change, &doc) {
            Ok(found) => found,
            Err(err) => return Ok(Err(err)),
        };
        if spilled && !elsewhere.is_empty() {
            for row in tx.query(&named, &[&w.key, &elsewhere]).await? {
                current.insert(row.try_get(0)?, row.try_get(1)?);
            }
        }
        if !change.holds(&current) {
            return Ok(Ok(ApplyOutcome::Conflict)); // the dropped transaction rolls back
        }
        // The row is locked and was live at `now`, so the write finds it.
        let bumped = match &apply {
            Some(apply) => tx.query_opt(apply, &w.apply_params(&now)).await?,
            None => replace_all(&self.sql, &tx, w, now).await?,
        };
        tx.commit().await?;
        Ok(match bumped {
            Some(row) => row.try_get(0).map(applied)?,
            None => Ok(ApplyOutcome::Gone),
        })
    }

    async fn sessions_with_values(&self, rows: Vec<Row>) -> Result<Vec<StoredSession>> {
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
        let (mut sessions, keys) = listed_sessions(listed)?;
        if keys.is_empty() {
            return Ok(sessions);
        }
        let rows = self
            .query(&self.sql.values_of, &[&keys])
            .await
            .map_err(failed("reading values"))?;
        let mut values = Vec::with_capacity(rows.len());
        for row in &rows {
            let missing = || Error::corrupt("a NULL in the values table");
            values.push((
                row.value_at::<Option<Vec<u8>>>(0)?.ok_or_else(missing)?,
                row.value_at::<Option<String>>(1)?.ok_or_else(missing)?,
                row.value_at::<Option<Vec<u8>>>(2)?.ok_or_else(missing)?,
            ));
        }
        attach_values(&mut sessions, values)?;
        Ok(sessions)
    }
}

/// A change as `apply`'s statements take it.
struct Write<'a> {
    key: &'a [u8],
    expires: Option<i64>,
    owner_changes: bool,
    owner: Option<&'a str>,
    placed: Placement<'a>,
    /// The change's inline values: a patch, or a cleared change's whole document.
    doc: String,
}

impl<'a> Write<'a> {
    fn new(key: &'a SessionKey, change: &'a Change) -> Self {
        Self {
            key: key.as_bytes().as_slice(),
            expires: change.expires_at.map(Timestamp::as_millis),
            owner_changes: change.owner.is_some(),
            owner: change.owner.as_ref().and_then(Option::as_deref),
            placed: place(&change.set, &change.removed),
            doc: inline_doc(&change.set, []),
        }
    }

    fn has_large(&self) -> bool {
        !self.placed.large_names.is_empty()
    }

    /// The parameters of the `apply` statement.
    fn apply_params<'b>(&'b self, now: &'b i64) -> [&'b (dyn ToSql + Sync); 10] {
        [
            &self.key,
            now,
            &self.expires,
            &self.owner_changes,
            &self.owner,
            &self.placed.large_names,
            &self.placed.large_values,
            &self.placed.leaving_doc,
            &self.doc,
            &self.placed.leaving_table,
        ]
    }
}

/// A cleared change, in `tx`: the document becomes the change's inline values and the values
/// table holds only its large ones. `None` (nothing written) if the session is not live.
async fn replace_all(
    sql: &Statements,
    tx: &Transaction<'_>,
    w: &Write<'_>,
    now: i64,
) -> Result<Option<Row>, tokio_postgres::Error> {
    let has_large = w.has_large();
    let bumped = tx
        .query_opt(
            &*sql.replace,
            &[
                &w.key,
                &now,
                &w.expires,
                &w.owner_changes,
                &w.owner,
                &w.doc,
                &has_large,
            ],
        )
        .await?;
    if bumped.is_some() {
        tx.execute(&*sql.clear, &[&w.key]).await?;
        if has_large {
            tx.execute(
                &*sql.upsert,
                &[&w.key, &w.placed.large_names, &w.placed.large_values],
            )
            .await?;
        }
    }
    Ok(bumped)
}

/// How many times a conditional change runs `apply_if` while commits of other requests keep
/// changing the session under it, before it takes the locked way.
const FAST_TRIES: usize = 3;

/// What `apply_if` found (see its statement).
enum Settled {
    /// The outcome (or a stored version that does not decode).
    Done(Result<ApplyOutcome>),
    /// The session has rows in the values table: the locked way.
    Spilled,
    /// Not settled on the statement's snapshot: a commit after it changed what the UPDATE saw.
    Raced,
}

fn settled(row: &Row) -> Result<Settled, PgFailure> {
    let version: Option<i64> = row.try_get(0)?;
    let spilled: Option<bool> = row.try_get(1)?;
    let holds: Option<bool> = row.try_get(2)?;
    Ok(match (version, spilled, holds) {
        (Some(version), _, _) => Settled::Done(applied(version)),
        (None, None, _) => Settled::Done(Ok(ApplyOutcome::Gone)),
        (None, Some(true), _) => Settled::Spilled,
        (None, Some(false), Some(false)) => Settled::Done(Ok(ApplyOutcome::Conflict)),
        (None, Some(false), _) => Settled::Raced,
    })
}

/// The outcome for a session now at `version`.
fn applied(version: i64) -> Result<ApplyOutcome> {
    let version =
        u64::try_from(version).map_err(|_| Error::corrupt("a negative session version"))?;
    Ok(ApplyOutcome::Applied { version })
}

/// Deletes up to `limit` expired sessions, oldest first.
async fn delete_expired_on(
    sql: &Statements,
    client: &impl GenericClient,
    limit: i64,
) -> Result<u64, PgFailure> {
    Ok(client
        .execute(&*sql.delete_expired, &[&now_ms(), &limit])
        .await?)
}

#[async_trait]
impl Store for PostgresStore {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all().with_reports_purged(true)
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<()> {
        let Placement {
            large_names: names,
            large_values: values,
            ..
        } = place(&record.data, []);
        let doc = inline_doc(&record.data, []);
        let version = version_param(record.version)?;
        let key = key.as_bytes().as_slice();
        let (created, expires) = (record.created_at.as_millis(), record.expires_at.as_millis());
        let owner = record.owner.as_deref();
        retry("creating a session", || async {
            let client = self.conns.shared().await?;
            client
                .execute(
                    &self.sql.create,
                    &[
                        &key, &created, &expires, &owner, &version, &names, &values, &doc,
                    ],
                )
                .await
        })
        .await?;
        Ok(())
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let rows = self
            .query(&self.sql.load, &[&key.as_bytes().as_slice(), &now_ms()])
            .await
            .map_err(failed("loading a session"))?;
        fold(&rows, None)
    }

    async fn load_keys(&self, key: &SessionKey, keys: &[&str]) -> Result<Option<Record>> {
        let rows = self
            .query(
                &self.sql.load_keys,
                &[&key.as_bytes().as_slice(), &now_ms(), &keys],
            )
            .await
            .map_err(failed("loading a session"))?;
        fold(&rows, Some(keys))
    }

    async fn apply(&self, key: &SessionKey, change: &Change) -> Result<ApplyOutcome> {
        let w = Write::new(key, change);
        if !change.expected.is_empty() {
            if let Some(version) = self.patch_small_if(change, &w).await? {
                return applied(version);
            }
            return self.apply_conditional(change, &w).await;
        }
        let row: Option<Row> = retry("applying a change", || async {
            if !change.cleared && !w.has_large() {
                let client = self.conns.exclusive().await?;
                let patched = client
                    .query_opt(
                        &self.sql.patch_small,
                        &[
                            &w.key,
                            &now_ms(),
                            &w.expires,
                            &w.owner_changes,
                            &w.owner,
                            &w.placed.leaving_doc,
                            &w.doc,
                        ],
                    )
                    .await?;
                if patched.is_some() {
                    return Ok(patched);
                }
            }
            if !change.cleared {
                let client = self.conns.exclusive().await?;
                return client
                    .query_opt(&self.sql.apply, &w.apply_params(&now_ms()))
                    .await;
            }
            let mut conn = self.conns.exclusive().await?;
            let tx = conn.client().transaction().await?;
            let bumped = replace_all(&self.sql, &tx, &w, now_ms()).await?;
            if bumped.is_some() {
                tx.commit().await?;
            }
            Ok(bumped) // if not, the dropped transaction rolls back
        })
        .await?;
        row.map_or(Ok(ApplyOutcome::Gone), |row| {
            applied(row.value_at::<i64>(0)?)
        })
    }

    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<ApplyOutcome> {
        let key = key.as_bytes().as_slice();
        let expires = expires_at.as_millis();
        let row = retry("extending a session", || async {
            self.query_opt(&self.sql.touch, &[&key, &now_ms(), &expires])
                .await
        })
        .await?;
        row.map_or(Ok(ApplyOutcome::Gone), |row| {
            applied(row.value_at::<i64>(0)?)
        })
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let key = key.as_bytes().as_slice();
        let deleted = retry("deleting a session", || async {
            self.conns
                .shared()
                .await?
                .execute(&self.sql.delete, &[&key])
                .await
        })
        .await?;
        Ok(deleted > 0)
    }

    async fn cycle(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        grace_until: Option<Timestamp>,
    ) -> Result<CycleOutcome> {
        let (old, new) = (old.as_bytes().as_slice(), new.as_bytes().as_slice());
        retry("cycling a session id", || async {
            let now = now_ms();
            let mut conn = self.conns.exclusive().await?;
            let tx = conn.client().transaction().await?;
            if tx
                .query_opt(&*self.sql.lock_live, &[&old, &now])
                .await?
                .is_none()
            {
                return Ok::<_, PgFailure>(CycleOutcome::Gone);
            }
            tx.execute(&*self.sql.cycle_copy, &[&old, &new]).await?;
            tx.execute(&*self.sql.move_values, &[&old, &new]).await?;
            match grace_until {
                Some(until) => {
                    tx.execute(
                        &*self.sql.make_pointer,
                        &[&old, &new, &now, &until.as_millis()],
                    )
                    .await?
                }
                None => tx.execute(&*self.sql.delete, &[&old]).await?,
            };
            tx.commit().await?;
            Ok(CycleOutcome::Cycled)
        })
        .await
    }

    async fn setup(&self) -> Result<()> {
        let table = self.sql.table.as_str();
        let found: i32 = retry("creating the session schema", || async {
            let mut conn = self.conns.exclusive().await?;
            let tx = conn.client().transaction().await?;
            // Several app servers may start at once: one creates, the others wait and find it.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_id(table)])
                .await?;
            tx.batch_execute(&self.sql.ddl).await?;
            tx.execute(
                "INSERT INTO sessionkit_schema (table_name, version) VALUES ($1, $2) \
                 ON CONFLICT (table_name) DO UPDATE SET version = GREATEST(sessionkit_schema.version, EXCLUDED.version)",
                &[&table, &SCHEMA_VERSION],
            )
            .await?;
            let found: i32 = tx
                .query_one(
                    "SELECT version FROM sessionkit_schema WHERE table_name = $1",
                    &[&table],
                )
                .await?
                .try_get(0)?;
            tx.commit().await?;
            Ok::<_, PgFailure>(found)
        })
        .await?;
        if found > SCHEMA_VERSION {
            return Err(Error::config(format!(
                "table {table} has schema version {found}; this sessionkit knows {SCHEMA_VERSION}"
            )));
        }
        Ok(())
    }

    fn schema(&self) -> Option<String> {
        Some(self.sql.ddl.to_string())
    }

    async fn delete_expired(&self) -> Result<u64> {
        let lock = lock_id(&self.sql.table);
        let mut conn = self
            .conns
            .exclusive()
            .await
            .map_err(failed("starting cleanup"))?;
        let client = conn.client();
        // The advisory lock belongs to this connection's session, so every batch runs on it.
        let mine: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&lock])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(|e| PgFailure::Db(e).into_store_error("starting cleanup"))?;
        if !mine {
            return Ok(0); // another app server is cleaning right now
        }
        let result: Result<u64, PgFailure> = {
            let mut cleanup = BatchedCleanup::default();
            loop {
                let batch = delete_expired_on(&self.sql, &*client, CLEANUP_BATCH).await;
                if let ControlFlow::Break(done) = cleanup.settle(batch, PgFailure::is_transient) {
                    break done;
                }
            }
        };
        let _ = client
            .execute("SELECT pg_advisory_unlock($1)", &[&lock])
            .await;
        result.map_err(failed("deleting expired sessions"))
    }

    async fn delete_expired_batch(&self, limit: usize) -> Result<u64> {
        let limit = i64::try_from(limit.max(1)).unwrap_or(CLEANUP_BATCH);
        retry("deleting expired sessions", || async {
            let client = self.conns.shared().await?;
            client
                .execute(&self.sql.delete_expired, &[&now_ms(), &limit])
                .await
        })
        .await
    }

    async fn delete_expired_batch_reporting(&self, limit: usize) -> Result<PurgeReport> {
        let limit = i64::try_from(limit.max(1)).unwrap_or(CLEANUP_BATCH);
        // One statement, its own transaction: the rows come back only if it committed.
        let rows = retry("deleting expired sessions", || async {
            self.query(&self.sql.delete_expired_reporting, &[&now_ms(), &limit])
                .await
        })
        .await?;
        let mut sessions = Vec::with_capacity(rows.len());
        for row in &rows {
            if !row.value_at::<bool>(3)? {
                let key: &[u8] = row.value_at(0)?;
                sessions.push(PurgedSession::new(
                    SessionKey::from_slice(key)?,
                    row.value_at(1)?,
                    Timestamp::from_millis(row.value_at(2)?),
                ));
            }
        }
        Ok(PurgeReport::new(rows.len() as u64, sessions))
    }

    async fn count_expired(&self) -> Result<u64> {
        // Sessions and grace-period pointers alike: what `delete_expired` deletes.
        let statement = format!(
            "SELECT count(*) FROM {} WHERE expires_at <= $1",
            self.sql.table
        );
        let rows = retry("counting expired sessions", || async {
            let client = self.conns.shared().await?;
            client.query_unprepared(&statement, &[&now_ms()]).await
        })
        .await?;
        let count: i64 = rows.first().map_or(Ok(0), |row| row.value_at(0))?;
        Ok(count.unsigned_abs())
    }

    async fn list(&self, filter: &ListFilter, page: PageRequest) -> Result<Page> {
        let mut sql = self.sql.meta_columns.clone();
        let now = now_ms();
        let after = page.after.map(|key| key.as_bytes().to_vec());
        let limit = i64::try_from(page.limit.saturating_add(1)).unwrap_or(i64::MAX);
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
        match filter.state {
            ListState::Live => sql.push_str(" AND expires_at > $1"),
            ListState::Expired => sql.push_str(" AND expires_at <= $1"),
            ListState::All => {}
        }
        if filter.state != ListState::All {
            params.push(&now);
        }
        if let Some(after) = &after {
            params.push(after);
            sql.push_str(&format!(" AND key > ${}", params.len()));
        }
        if let Some(owner) = &filter.owner {
            params.push(owner);
            sql.push_str(&format!(" AND owner = ${}", params.len()));
        }
        params.push(&limit);
        sql.push_str(&format!(" ORDER BY key LIMIT ${}", params.len()));
        let client = self
            .conns
            .shared()
            .await
            .map_err(failed("listing sessions"))?;
        // Admin listings vary their filters: run unprepared rather than fill the cache.
        let rows = client
            .query_unprepared(&sql, &params)
            .await
            .map_err(failed("listing sessions"))?;
        Ok(Page::from_sorted(
            self.sessions_with_values(rows).await?,
            page.limit,
        ))
    }

    async fn by_owner(&self, owner: &str) -> Result<Vec<StoredSession>> {
        let rows = self
            .query(&self.sql.by_owner, &[&owner, &now_ms()])
            .await
            .map_err(failed("listing an owner's sessions"))?;
        self.sessions_with_values(rows).await
    }

    async fn delete_by_owner(&self, owner: &str) -> Result<u64> {
        let row = retry("revoking an owner's sessions", || async {
            self.query_opt(&self.sql.delete_owner, &[&owner, &now_ms()])
                .await
        })
        .await?;
        let live = row
            .map(|row| row.value_at::<i64>(0))
            .transpose()?
            .unwrap_or(0);
        Ok(live.unsigned_abs())
    }
}
