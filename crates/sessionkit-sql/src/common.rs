//! What the PostgreSQL and MySQL stores really share: options, error mapping, retries of
//! transient failures, and turning rows into records. Their SQL is their own.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sessionkit_core::registry::split_options;
use sessionkit_core::store::validate_table_name;
use sessionkit_core::{Change, Data, Error, Record, Result, SessionKey, StoredSession, Timestamp};

/// How many times a transaction that the database aborted (deadlock, serialization failure,
/// lock wait timeout) is run again before the error reaches the caller.
pub(crate) const TRANSIENT_ATTEMPTS: u32 = 6;
/// How many expired sessions one cleanup statement deletes.
pub const CLEANUP_BATCH: i64 = 500;

/// Options common to both SQL stores, parsed from the store URL's query string. Options the
/// store does not know are passed through to the driver.
#[derive(Clone, Debug)]
pub(crate) struct SqlOptions {
    /// The URL without sessionkit's own options, for the driver.
    pub driver_url: String,
    pub table: String,
    pub max_connections: u32,
    /// PostgreSQL: how many of `max_connections` are shared and pipelined (default: half the
    /// CPUs, at least one).
    pub shared_connections: Option<u32>,
    pub acquire_timeout: Duration,
    pub setup: bool,
}

impl SqlOptions {
    pub(crate) fn parse(url: &str) -> Result<Self> {
        let (_, options) = split_options(url);
        let base = url.split_once('?').map_or(url, |(base, _)| base);
        let mut parsed = Self {
            driver_url: base.to_owned(),
            table: "sessions".into(),
            max_connections: 16,
            shared_connections: None,
            acquire_timeout: Duration::from_secs(5),
            setup: false,
        };
        let mut passthrough = Vec::new();
        for (name, value) in options {
            match name.as_str() {
                "table" => parsed.table = value,
                "max_connections" => {
                    parsed.max_connections = value
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad_option(&name, &value))?;
                }
                "shared_connections" => {
                    parsed.shared_connections = Some(
                        value
                            .parse()
                            .ok()
                            .filter(|n| *n > 0)
                            .ok_or_else(|| bad_option(&name, &value))?,
                    );
                }
                "acquire_timeout_ms" => {
                    parsed.acquire_timeout = value
                        .parse()
                        .map(Duration::from_millis)
                        .map_err(|_| bad_option(&name, &value))?;
                }
                "setup" => parsed.setup = matches!(value.as_str(), "" | "true" | "1"),
                _ => passthrough.push(format!("{name}={value}")),
            }
        }
        validate_table_name(&parsed.table)?;
        if !passthrough.is_empty() {
            parsed.driver_url = format!("{base}?{}", passthrough.join("&"));
        }
        Ok(parsed)
    }
}

fn bad_option(name: &str, value: &str) -> Error {
    Error::config(format!("invalid value {value:?} for store option {name}"))
}

/// Whether the database aborted the transaction and running it again may succeed.
pub(crate) fn is_transient(err: &sqlx::Error) -> bool {
    let Some(db) = err.as_database_error() else {
        return false;
    };
    match db.code().as_deref() {
        // serialization_failure (both), deadlock_detected (PostgreSQL)
        Some("40001" | "40P01") => true,
        _ => mysql_lock_wait_timeout(db),
    }
}

#[cfg(feature = "mysql")]
fn mysql_lock_wait_timeout(db: &dyn sqlx::error::DatabaseError) -> bool {
    db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
        .is_some_and(|e| e.number() == 1205)
}

#[cfg(not(feature = "mysql"))]
fn mysql_lock_wait_timeout(_: &dyn sqlx::error::DatabaseError) -> bool {
    false
}

/// Maps a driver error to the sessionkit kinds: connection trouble is `Unavailable` (503), a
/// duplicate key is `Conflict`, a missing table is `Config` (run setup), the rest `Backend`.
pub(crate) fn sql_error(context: &str, err: sqlx::Error) -> Error {
    match &err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => Error::unavailable(context.to_owned(), err),
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            Error::conflict(format!("{context}: {db}"))
        }
        sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("42P01" | "42S02")) => {
            Error::config_with(
                format!(
                    "{context}: the session schema is missing (run `sessionkit setup` or open with ?setup=true)"
                ),
                err,
            )
        }
        _ => Error::backend(context.to_owned(), err),
    }
}

/// Opens one direct connection and closes it: an unreachable server or a bad password is then
/// reported as the driver says it (connection refused, …), at once, rather than as a pool
/// timeout later.
#[cfg(feature = "mysql")]
pub(crate) async fn probe<C: sqlx::Connection>(options: &SqlOptions, server: &str) -> Result<()> {
    let connected = tokio::time::timeout(options.acquire_timeout, C::connect(&options.driver_url))
        .await
        .map_err(|elapsed| Error::unavailable(format!("connecting to {server}"), elapsed))?;
    match connected {
        Ok(conn) => {
            let _ = conn.close().await;
            Ok(())
        }
        Err(e @ sqlx::Error::Configuration(_)) => {
            Err(Error::config_with(format!("invalid {server} URL"), e))
        }
        Err(e) => Err(Error::unavailable(format!("connecting to {server}"), e)),
    }
}

/// A driver's error as the retry loop sees it.
pub(crate) trait DriverError: std::fmt::Display {
    /// Whether the database aborted the transaction and running it again may succeed.
    fn is_transient(&self) -> bool;
    /// The store error for it, with `context` saying what was being done.
    fn into_store_error(self, context: &str) -> Error;
}

impl DriverError for sqlx::Error {
    fn is_transient(&self) -> bool {
        is_transient(self)
    }
    fn into_store_error(self, context: &str) -> Error {
        sql_error(context, self)
    }
}

/// Runs `attempt` again while the database reports a transient abort, with growing, jittered
/// pauses, at most [`TRANSIENT_ATTEMPTS`] times.
pub(crate) async fn retry_transient<T, E, F, Fut>(context: &str, mut attempt: F) -> Result<T>
where
    E: DriverError,
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
{
    let mut pause = Duration::from_millis(2);
    for left in (0..TRANSIENT_ATTEMPTS).rev() {
        match attempt().await {
            Err(err) if left > 0 && err.is_transient() => {
                tracing::debug!(error = %err, context, "transient database abort; retrying");
                let jitter = rand::random_range(0..=pause.as_millis() as u64);
                tokio::time::sleep(pause + Duration::from_millis(jitter)).await;
                pause *= 2;
            }
            other => return other.map_err(|e| e.into_store_error(context)),
        }
    }
    Err(Error::conflict(format!(
        "{context}: still aborted after {TRANSIENT_ATTEMPTS} attempts"
    )))
}

/// Runs `$batch` (a future of one cleanup statement deleting at most [`CLEANUP_BATCH`] rows,
/// built afresh each round) until a batch comes back short; yields the total. A batch the
/// database aborts is simply run again (the next round deletes what it did not), at most
/// [`TRANSIENT_ATTEMPTS`] times in all. A macro rather than a function taking a closure: the
/// batch borrows a connection the caller holds, and the store's futures must stay `Send`.
macro_rules! delete_in_batches {
    ($batch:expr) => {
        async {
            let (mut total, mut aborts) = (0u64, 0);
            loop {
                match $batch.await {
                    Ok(n) if n < $crate::common::CLEANUP_BATCH.unsigned_abs() => {
                        break Ok(total + n);
                    }
                    Ok(n) => total += n,
                    Err(err)
                        if $crate::common::DriverError::is_transient(&err)
                            && aborts < $crate::common::TRANSIENT_ATTEMPTS =>
                    {
                        aborts += 1;
                    }
                    Err(err) => break Err(err),
                }
            }
        }
    };
}
pub(crate) use delete_in_batches;

/// Values up to this many bytes live inline in the session's row (one JSON object of base64
/// strings, read and written with the row itself); larger ones get a row of their own in
/// `<table>_values`, so saving one key of a large session never rewrites the rest.
pub const INLINE_MAX: usize = 1024;

/// Whether a value lives inline in the session row.
pub(crate) fn is_inline(value: &[u8]) -> bool {
    value.len() <= INLINE_MAX
}

/// The inline document for `values` (those [`is_inline`] keeps), plus a JSON `null` for each
/// of `nulls` (a JSON merge patch's way to say "remove").
pub(crate) fn inline_doc<'a>(
    values: impl IntoIterator<Item = (&'a String, &'a Vec<u8>)>,
    nulls: impl IntoIterator<Item = &'a str>,
) -> String {
    let mut doc = serde_json::Map::new();
    for name in nulls {
        doc.insert(name.to_owned(), serde_json::Value::Null);
    }
    for (name, value) in values {
        if is_inline(value) {
            doc.insert(name.clone(), encode_inline(value).into());
        }
    }
    serde_json::Value::Object(doc).to_string()
}

/// A change's conditions as one statement can check them on an unspilled session's inline
/// document: a document of the values expected present, and the names expected absent (a
/// name the document lacks is absent only if the session has nothing in the values table,
/// which the statement checks too). `None` if one expects a value too large to live inline:
/// only a spilled session can hold it, and that takes the locked way.
pub(crate) fn inline_conditions(change: &Change) -> Option<(String, Vec<&str>)> {
    let mut present = Vec::with_capacity(change.expected.len());
    let mut absent = Vec::new();
    for (name, seen) in &change.expected {
        match seen {
            Some(value) if is_inline(value) => present.push((name, value)),
            Some(_) => return None,
            None => absent.push(name.as_str()),
        }
    }
    Some((inline_doc(present, []), absent))
}

/// A value as the inline document holds it: base64 without padding. One text per value (the
/// decoder rejects any other spelling), so comparing texts compares values: PostgreSQL checks
/// a change's conditions on inline values that way, in SQL.
pub(crate) fn encode_inline(value: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(value)
}

/// An inline document's entries, still encoded.
fn parse_inline(doc: &str) -> Result<std::collections::BTreeMap<String, String>> {
    serde_json::from_str(doc).map_err(|e| {
        Error::codec(
            None,
            "a stored inline session document is not valid JSON",
            e,
        )
    })
}

/// One inline entry's value.
fn decode_inline(name: &str, value: &str) -> Result<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(value)
        .map_err(|e| Error::codec(Some(name), "a stored inline value is not base64", e))
}

/// Adds the values of an inline document (as [`inline_doc`] wrote it) to `data`.
pub(crate) fn read_inline(doc: &str, data: &mut Data) -> Result<()> {
    for (name, value) in parse_inline(doc)? {
        let value = decode_inline(&name, &value)?;
        data.insert(name, value);
    }
    Ok(())
}

/// The first half of checking a conditional change against a session row locked for it: the
/// current values of the names `change.expected` lists, as far as the row's inline document
/// `doc` holds them, and the names it does not hold. A name not in the document may still
/// live in the values table (a large value, or a small one a version-1 table put there), so
/// if the session is spilled the caller reads those names from there, under the same lock
/// (every writer of a session's values locks its session row first, so that read is
/// current), adds them, and checks with [`Change::holds`]; a name found in neither is absent.
/// Only the conditions' names are decoded, not the whole document.
pub(crate) fn inline_witness<'a>(change: &'a Change, doc: &str) -> Result<(Data, Vec<&'a str>)> {
    let mut inline = parse_inline(doc)?;
    let mut current = Data::new();
    let mut elsewhere = Vec::new();
    for name in change.expected.keys() {
        match inline.remove(name) {
            Some(value) => {
                let value = decode_inline(name, &value)?;
                current.insert(name.clone(), value);
            }
            None => elsewhere.push(name.as_str()),
        }
    }
    Ok((current, elsewhere))
}

/// Where a change's names go in the inline layout.
pub(crate) struct Placement<'a> {
    /// The values too large to live inline, as parallel name and value lists.
    pub large_names: Vec<String>,
    /// See `large_names`.
    pub large_values: Vec<Vec<u8>>,
    /// Names leaving the inline document: removed, or now too large for it.
    pub leaving_doc: Vec<&'a str>,
    /// Names leaving the values table: removed, or now small enough to live inline.
    pub leaving_table: Vec<&'a str>,
}

/// Sorts a change's (or a new record's) names by where they live.
pub(crate) fn place<'a>(
    set: &'a Data,
    removed: impl IntoIterator<Item = &'a String>,
) -> Placement<'a> {
    let removed: Vec<&str> = removed.into_iter().map(String::as_str).collect();
    let (large_names, large_values): (Vec<String>, Vec<Vec<u8>>) = set
        .iter()
        .filter(|(_, value)| !is_inline(value))
        .map(|(name, value)| (name.clone(), value.clone()))
        .unzip();
    let mut leaving_doc = removed.clone();
    let mut leaving_table = removed;
    for (name, value) in set {
        if is_inline(value) {
            leaving_table.push(name);
        } else {
            leaving_doc.push(name);
        }
    }
    Placement {
        large_names,
        large_values,
        leaving_doc,
        leaving_table,
    }
}

pub(crate) fn now_ms() -> i64 {
    Timestamp::now().as_millis()
}

/// Builds a record's metadata from its columns.
pub(crate) fn record_from(
    created_at: i64,
    expires_at: i64,
    owner: Option<String>,
    version: i64,
    moved_to: Option<Vec<u8>>,
) -> Result<Record> {
    Ok(Record {
        data: Data::new(),
        created_at: Timestamp::from_millis(created_at),
        expires_at: Timestamp::from_millis(expires_at),
        owner,
        version: u64::try_from(version)
            .map_err(|_| Error::corrupt("a negative session version"))?,
        moved_to: moved_to
            .as_deref()
            .map(SessionKey::from_slice)
            .transpose()?,
    })
}

pub(crate) fn version_param(version: u64) -> Result<i64> {
    i64::try_from(version).map_err(|_| Error::corrupt("a session version beyond 2^63"))
}

/// The columns the session tables hold, read from a row of either driver; errors are typed
/// store errors.
pub(crate) trait SessionRow {
    /// A `BIGINT` column.
    fn int(&self, at: usize) -> Result<i64>;
    /// A `BOOLEAN` column.
    fn flag(&self, at: usize) -> Result<bool>;
    /// A text column that may be `NULL`.
    fn text(&self, at: usize) -> Result<Option<String>>;
    /// A binary column that may be `NULL`.
    fn bytes(&self, at: usize) -> Result<Option<Vec<u8>>>;
}

/// Reads `created_at, expires_at, owner, version, moved_to, data` from `row`, starting at
/// column `at`: the record with its inline values.
pub(crate) fn record_of(row: &impl SessionRow, at: usize) -> Result<Record> {
    let mut record = record_from(
        row.int(at)?,
        row.int(at + 1)?,
        row.text(at + 2)?,
        row.int(at + 3)?,
        row.bytes(at + 4)?,
    )?;
    let doc = row
        .text(at + 5)?
        .ok_or_else(|| Error::corrupt("a session row without its inline document"))?;
    read_inline(&doc, &mut record.data)?;
    Ok(record)
}

/// Folds the rows of one session's load (`meta…, data, name, value`: the session row joined
/// with its values-table rows, if any) into a record; `only` keeps the inline values of those
/// names (the query filtered the values table's).
pub(crate) fn fold_joined(
    rows: &[impl SessionRow],
    only: Option<&[&str]>,
) -> Result<Option<Record>> {
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let mut record = record_of(first, 0)?;
    if let Some(names) = only {
        record.data.retain(|name, _| names.contains(&name.as_str()));
    }
    for row in rows {
        if let Some(name) = row.text(6)? {
            let value = row
                .bytes(7)?
                .ok_or_else(|| Error::corrupt("a NULL session value"))?;
            record.data.insert(name, value);
        }
    }
    Ok(Some(record))
}

/// Reads listing rows (`key, meta…, data, spilled`) into sessions, and the keys of those with
/// rows in the values table (to be attached with [`attach_values`]).
pub(crate) fn listed_sessions(
    rows: &[impl SessionRow],
) -> Result<(Vec<StoredSession>, Vec<Vec<u8>>)> {
    let mut sessions = Vec::with_capacity(rows.len());
    let mut spilled = Vec::new();
    for row in rows {
        let key = row
            .bytes(0)?
            .ok_or_else(|| Error::corrupt("a session row without a key"))?;
        let session = StoredSession {
            key: SessionKey::from_slice(&key)?,
            record: record_of(row, 1)?,
        };
        if row.flag(7)? {
            spilled.push(key);
        }
        sessions.push(session);
    }
    Ok((sessions, spilled))
}

/// Attaches `(session, name, value)` rows to the sessions they belong to.
pub(crate) fn attach_values(
    sessions: &mut [StoredSession],
    rows: impl IntoIterator<Item = (Vec<u8>, String, Vec<u8>)>,
) -> Result<()> {
    for (session, name, value) in rows {
        let key = SessionKey::from_slice(&session)?;
        if let Some(found) = sessions.iter_mut().find(|s| s.key == key) {
            found.record.data.insert(name, value);
        }
    }
    Ok(())
}

/// SQL built from a validated table name, shared by reference between connections.
pub(crate) type Sql = Arc<str>;

/// Wraps SQL built from a validated table name for sqlx (which refuses unchecked strings).
#[cfg(feature = "mysql")]
pub(crate) fn checked(sql: &Sql) -> sqlx::AssertSqlSafe<Sql> {
    sqlx::AssertSqlSafe(Arc::clone(sql))
}

/// A stable 63-bit number for a table name, for advisory locks.
pub(crate) fn lock_id(table: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("sessionkit:{table}").bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    i64::try_from(hash >> 1).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_split_from_the_driver_url() {
        let o = SqlOptions::parse(
            "postgres://root@127.0.0.1/test?table=web&sslmode=disable&max_connections=4",
        )
        .expect("parse");
        assert_eq!(o.table, "web");
        assert_eq!(o.max_connections, 4);
        assert_eq!(
            o.driver_url,
            "postgres://root@127.0.0.1/test?sslmode=disable"
        );
        let plain = SqlOptions::parse("mysql://root@127.0.0.1/test").expect("parse");
        assert_eq!(
            (plain.table.as_str(), plain.driver_url.as_str()),
            ("sessions", "mysql://root@127.0.0.1/test")
        );
        assert!(SqlOptions::parse("postgres://h/db?table=x;drop").is_err());
        assert!(SqlOptions::parse("postgres://h/db?max_connections=0").is_err());
        let shared = SqlOptions::parse("postgres://h/db?shared_connections=2").expect("parse");
        assert_eq!(
            (shared.shared_connections, shared.driver_url.as_str()),
            (Some(2), "postgres://h/db")
        );
        assert!(SqlOptions::parse("postgres://h/db?shared_connections=0").is_err());
    }

    #[test]
    fn the_inline_witness_decodes_only_the_conditions_names() {
        let mut set = Data::new();
        set.insert("n".into(), b"1".to_vec());
        set.insert("empty".into(), Vec::new());
        set.insert("other".into(), b"x".to_vec());
        let doc = inline_doc(&set, []);
        let mut change = Change::default();
        change.expect("n", Some(b"1"));
        change.expect("empty", None);
        change.expect("large", Some(&[0; 2000]));
        let (current, elsewhere) = inline_witness(&change, &doc).expect("witness");
        assert_eq!(current.keys().collect::<Vec<_>>(), ["empty", "n"]);
        assert_eq!(current["empty"], b"", "an empty value is present");
        assert_eq!(elsewhere, ["large"]);
        assert!(!change.holds(&current), "empty is present, not absent");
        assert!(inline_witness(&change, "not json").is_err());
    }

    #[test]
    fn lock_ids_differ_per_table() {
        assert_ne!(lock_id("a"), lock_id("b"));
        assert!(lock_id("sessions") >= 0);
    }
}

/// Real deadlocks on real servers: the retry turns them into success.
#[cfg(test)]
mod deadlock_tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use sqlx::{AssertSqlSafe, Executor};

    use super::retry_transient;
    use crate::testing::scratch_table;

    /// Two transactions lock two rows in opposite orders; the database kills one, the retry
    /// runs it again, and both end up committed.
    async fn opposite_order_updates<DB: sqlx::Database>(pool: sqlx::Pool<DB>, table: &str)
    where
        for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
        for<'c> &'c sqlx::Pool<DB>: Executor<'c, Database = DB>,
        for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
        i64: for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB>,
        usize: sqlx::ColumnIndex<DB::Row>,
    {
        let attempts = Arc::new(AtomicU32::new(0));
        let run = |first: i64, second: i64| {
            let (pool, attempts, table) = (pool.clone(), Arc::clone(&attempts), table.to_owned());
            tokio::spawn(async move {
                retry_transient("deadlock test", || async {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    let mut tx = pool.begin().await?;
                    for (i, id) in [first, second].into_iter().enumerate() {
                        let sql = format!("UPDATE {table} SET n = n + 1 WHERE id = {id}");
                        tx.execute(AssertSqlSafe(sql)).await?;
                        if i == 0 {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                        }
                    }
                    tx.commit().await
                })
                .await
            })
        };
        let (a, b) = (run(1, 2), run(2, 1));
        a.await
            .expect("task")
            .expect("the first transaction committed");
        b.await
            .expect("task")
            .expect("the second transaction committed");
        assert!(
            attempts.load(Ordering::SeqCst) >= 3,
            "a deadlock happened and was retried"
        );
        let counts: Vec<i64> =
            sqlx::query_scalar(AssertSqlSafe(format!("SELECT n FROM {table} ORDER BY id")))
                .fetch_all(&pool)
                .await
                .expect("read the counters");
        assert_eq!(counts, [2, 2], "both transactions applied exactly once");
        let _ = pool
            .execute(AssertSqlSafe(format!("DROP TABLE {table}")))
            .await;
    }

    #[cfg(feature = "mysql")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mysql_deadlocks_are_retried() {
        let url = crate::testing::mysql_url();
        let pool = match sqlx::MySqlPool::connect(&url).await {
            Ok(pool) => pool,
            Err(err) => {
                return sessionkit_conformance::server_unavailable("MariaDB/MySQL", &url, err)
                    .unwrap_or(());
            }
        };
        let table = scratch_table();
        pool.execute(AssertSqlSafe(format!(
            "CREATE TABLE {table} (id BIGINT PRIMARY KEY, n BIGINT NOT NULL) ENGINE=InnoDB"
        )))
        .await
        .expect("table");
        pool.execute(AssertSqlSafe(format!(
            "INSERT INTO {table} VALUES (1, 0), (2, 0)"
        )))
        .await
        .expect("rows");
        opposite_order_updates(pool, &table).await;
    }
}
