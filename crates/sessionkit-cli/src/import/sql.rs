//! tower-sessions-sqlx-store's tables (`id`, `data`, `expiry_date`), read in pages by id.
//!
//! The deadline is taken from the record in `data` (the one tower-sessions itself goes by),
//! not from `expiry_date`, so that expired rows are counted rather than filtered out unseen.

use sqlx::{Connection as _, Row as _};

use super::{Entry, PAGE, Source};
use crate::CliError;

/// A connection to one of the three databases, and where the last page ended.
pub(super) struct SqlReader {
    connection: Connection,
    /// The `select` of a page: rows after a given id, ordered by id, at most [`PAGE`].
    query: String,
    after: String,
    done: bool,
}

enum Connection {
    Postgres(tokio_postgres::Client),
    MySql(sqlx::MySqlConnection),
    /// Taken out while a page is read on a blocking thread.
    Sqlite(Option<rusqlite::Connection>),
}

impl SqlReader {
    pub(super) async fn open(source: &Source) -> Result<Self, CliError> {
        let (connection, query) = match source {
            Source::TowerPostgres {
                url,
                table: (schema, table),
            } => {
                let (client, driver) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .map_err(|err| source_error("PostgreSQL", &err))?;
                tokio::spawn(async move {
                    if let Err(err) = driver.await {
                        tracing::warn!(error = %err, "the PostgreSQL import connection failed");
                    }
                });
                let query = format!(
                    r#"select id, data from "{schema}"."{table}" where id > $1 order by id limit {PAGE}"#
                );
                (Connection::Postgres(client), query)
            }
            Source::TowerMySql {
                url,
                table: (schema, table),
            } => {
                let options: sqlx::mysql::MySqlConnectOptions =
                    url.parse().map_err(|err| source_error("MySQL", &err))?;
                let connection = sqlx::MySqlConnection::connect_with(&options)
                    .await
                    .map_err(|err| source_error("MySQL", &err))?;
                // `id` is the primary key, unique under the column's collation, so ordering and
                // comparing by that collation pages through every row exactly once.
                let query = format!(
                    "select id, data from `{schema}`.`{table}` where id > ? order by id limit {PAGE}"
                );
                (Connection::MySql(connection), query)
            }
            Source::TowerSqlite { path, table } => {
                let path = path.clone();
                let connection = tokio::task::spawn_blocking(move || {
                    rusqlite::Connection::open_with_flags(
                        path,
                        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                    )
                })
                .await
                .map_err(CliError::from)?
                .map_err(|err| source_error("SQLite", &err))?;
                let query = format!(
                    r#"select id, data from "{table}" where id > ?1 order by id limit {PAGE}"#
                );
                (Connection::Sqlite(Some(connection)), query)
            }
            Source::TowerRedis { .. } | Source::ActixRedis { .. } => {
                return Err(CliError("not a SQL source".into()));
            }
        };
        Ok(Self {
            connection,
            query,
            after: String::new(),
            done: false,
        })
    }

    pub(super) async fn next(&mut self) -> Result<Option<Vec<Entry>>, CliError> {
        if self.done {
            return Ok(None);
        }
        let rows = match &mut self.connection {
            Connection::Postgres(client) => client
                .query(&self.query, &[&self.after])
                .await
                .map_err(|err| source_error("PostgreSQL", &err))?
                .iter()
                .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                .collect::<Result<Vec<(String, Vec<u8>)>, tokio_postgres::Error>>()
                .map_err(|err| source_error("PostgreSQL", &err))?,
            // The query's only dynamic parts are the schema and table, checked as identifiers.
            Connection::MySql(connection) => sqlx::query(sqlx::AssertSqlSafe(self.query.as_str()))
                .bind(&self.after)
                .fetch_all(&mut *connection)
                .await
                .map_err(|err| source_error("MySQL", &err))?
                .iter()
                .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                .collect::<Result<Vec<(String, Vec<u8>)>, sqlx::Error>>()
                .map_err(|err| source_error("MySQL", &err))?,
            Connection::Sqlite(slot) => {
                let connection = slot
                    .take()
                    .ok_or_else(|| CliError("an earlier SQLite page failed".into()))?;
                let (query, after) = (self.query.clone(), self.after.clone());
                let (connection, rows) = tokio::task::spawn_blocking(move || {
                    let rows = sqlite_page(&connection, &query, &after);
                    (connection, rows)
                })
                .await
                .map_err(CliError::from)?;
                *slot = Some(connection);
                rows.map_err(|err| source_error("SQLite", &err))?
            }
        };
        self.done = rows.len() < PAGE;
        if let Some((last, _)) = rows.last() {
            self.after.clone_from(last);
        }
        let entries = rows
            .into_iter()
            .map(|(id, value)| Entry::Tower {
                id,
                value,
                checked_id: true,
            })
            .collect();
        Ok(Some(entries))
    }
}

fn sqlite_page(
    connection: &rusqlite::Connection,
    query: &str,
    after: &str,
) -> rusqlite::Result<Vec<(String, Vec<u8>)>> {
    let mut statement = connection.prepare_cached(query)?;
    let rows = statement.query_map([after], |row| Ok((row.get(0)?, row.get(1)?)))?;
    rows.collect()
}

/// A failure of the source database, with its cause (drivers' messages name no row values).
fn source_error(database: &str, err: &dyn std::error::Error) -> CliError {
    let CliError(cause) = CliError::from(err);
    CliError(format!("reading tower-sessions' {database} table: {cause}"))
}
