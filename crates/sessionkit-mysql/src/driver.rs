//! What the store needs from sqlx beyond its queries: which errors are transient, how a
//! driver error maps to a store error, a first connection that reports a bad URL or password
//! at once, and SQL built from a validated table name.

use std::future::Future;
use std::sync::Arc;

use sessionkit_core::backend::tls;
use sessionkit_core::backend::{retry_transient, split_options};
use sessionkit_core::{Error, Result};

/// The URL options sqlx's MySQL driver reads (sqlx-mysql 0.9). It ignores any other, so a
/// misspelt option (`ssl_mode=VERIFY_IDENTITY`) would silently do nothing: refused instead.
const DRIVER_OPTIONS: [&str; 14] = [
    "sslmode",
    "ssl-mode",
    "sslca",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "charset",
    "collation",
    "statement-cache-capacity",
    "socket",
    "timezone",
    "time-zone",
];

/// Refuses a driver URL with an option that is neither sessionkit's (already taken out) nor
/// one the driver reads. Only option names are shown, never values.
pub(crate) fn check_driver_options(driver_url: &str) -> Result<()> {
    let (_, options) = split_options(driver_url);
    let unknown: Vec<&str> = options
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| !DRIVER_OPTIONS.contains(name))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(Error::config(format!(
        "unknown MySQL URL option(s) {unknown:?}: sessionkit's are table, max_connections, \
         shared_connections, acquire_timeout_ms and setup; the driver's are {}",
        DRIVER_OPTIONS.join(", ")
    )))
}

/// SQL built from a validated table name, shared by reference between connections.
pub(crate) type Sql = Arc<str>;

/// Wraps SQL built from a validated table name for sqlx (which refuses unchecked strings).
pub(crate) fn checked(sql: &Sql) -> sqlx::AssertSqlSafe<Sql> {
    sqlx::AssertSqlSafe(Arc::clone(sql))
}

/// Whether the database aborted the transaction and running it again may succeed.
pub(crate) fn is_transient(err: &sqlx::Error) -> bool {
    let Some(db) = err.as_database_error() else {
        return false;
    };
    // serialization_failure (40001, which InnoDB also reports for a deadlock), or
    // ER_LOCK_WAIT_TIMEOUT (1205)
    db.code().as_deref() == Some("40001")
        || db
            .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
            .is_some_and(|e| e.number() == 1205)
}

/// Maps a driver error to the sessionkit kinds: connection trouble is `Unavailable` (503), a
/// duplicate key is `Conflict`, a missing table is `Config` (run setup), the rest `Backend`.
pub(crate) fn sql_error(context: &str, err: sqlx::Error) -> Error {
    let err = match login_error(context, err) {
        Ok(config) => return config,
        Err(other) => other,
    };
    match &err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => Error::unavailable(context.to_owned(), err),
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            Error::conflict(format!("{context}: {db}"))
        }
        sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("42S02")) => {
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

/// A connection the URL cannot make, whatever is retried: the TLS handshake refused a
/// certificate, the server does not offer the TLS `ssl-mode` requires, or the server refused
/// the login (a wrong password, an unknown user or database, a user that must use TLS): the
/// `Config` error, or `err` back if it is none of these.
fn login_error(context: &str, err: sqlx::Error) -> std::result::Result<Error, sqlx::Error> {
    let why = if let Some(why) = tls::handshake_refusal(&err) {
        why
    } else if matches!(err, sqlx::Error::Tls(_)) {
        "TLS as ssl-mode asks for it is not possible"
    } else if err
        .as_database_error()
        .and_then(|db| db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        // ER_DBACCESS_DENIED_ERROR, ER_ACCESS_DENIED_ERROR, ER_BAD_DB_ERROR
        .is_some_and(|db| matches!(db.number(), 1044 | 1045 | 1049))
    {
        "the server refused the login"
    } else {
        return Err(err);
    };
    Ok(Error::config_with(format!("{context}: {why}"), err))
}

/// Opens one direct connection and closes it: an unreachable server or a bad password is then
/// reported as the driver says it (connection refused, …), at once, rather than as a pool
/// timeout later.
pub(crate) async fn probe<C: sqlx::Connection>(
    connect: &C::Options,
    timeout: std::time::Duration,
    server: &str,
) -> Result<()> {
    let connected = tokio::time::timeout(timeout, C::connect_with(connect))
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
        Err(e) => Err(match login_error(&format!("connecting to {server}"), e) {
            Ok(config) => config,
            Err(e) => Error::unavailable(format!("connecting to {server}"), e),
        }),
    }
}

/// Runs `attempt` again while the database aborts it (deadlock, lock wait timeout).
pub(crate) async fn retry<T, F, Fut>(context: &str, attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, sqlx::Error>>,
{
    retry_transient(context, is_transient, sql_error, attempt).await
}
