//! The PostgreSQL store.

use std::sync::Arc;

use sessionkit_core::{
    ApplyOutcome, Capabilities, Change, CycleOutcome, Error, ListFilter, ListState, Page,
    PageRequest, Record, Result, SessionKey, Store, StoredSession, Timestamp, async_trait,
};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};
use sqlx::{AssertSqlSafe, Connection};

use crate::common::{
    CLEANUP_BATCH, Placement, Sql, SqlOptions, attach_values, checked, delete_in_batches,
    fold_joined, inline_doc, listed_sessions, lock_id, now_ms, place, probe, retry_transient,
    sql_error, version_param,
};
use crate::pool::{ConnPool, with_conn};

/// 1: values in `<table>_values` only. 2: small values inline in the session row (`data`,
/// `spilled`); `setup` upgrades a version-1 table in place.
const SCHEMA_VERSION: i32 = 2;

struct Statements {
    ddl: Sql,
    create: Sql,
    load: Sql,
    load_keys: Sql,
    apply: Sql,
    replace: Sql,
    clear: Sql,
    upsert: Sql,
    touch: Sql,
    delete: Sql,
    lock_live: Sql,
    cycle_copy: Sql,
    move_values: Sql,
    make_pointer: Sql,
    delete_expired: Sql,
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
                 VALUES ($1, $2, $3, $4, $5, NULL, $8::jsonb, cardinality($6::text[]) > 0) RETURNING key) \
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
                "WITH s AS (UPDATE {t} SET {bump}, data = (data - $8::text[]) || $9::jsonb, \
                 spilled = spilled OR cardinality($6::text[]) > 0 {live} RETURNING key, version, spilled), \
                 r AS (DELETE FROM {v} WHERE session IN (SELECT key FROM s WHERE spilled) AND name = ANY($10)), \
                 i AS ({}) SELECT version FROM s",
                upsert_from("s", "$6", "$7")
            )
            .into(),
            // A cleared change: the document becomes the change's inline values, and the
            // values table is emptied (`clear`) in the same transaction.
            replace: format!(
                "UPDATE {t} SET {bump}, data = $6::jsonb, spilled = $7::boolean {live} RETURNING version"
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
/// `table`, `max_connections`, `acquire_timeout_ms`, `setup=true`; others go to the driver).
#[derive(Clone)]
pub struct PostgresStore {
    pool: ConnPool<PgConnection>,
    sql: Arc<Statements>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("table", &self.sql.table)
            .finish_non_exhaustive()
    }
}

/// Deletes up to `limit` expired sessions, oldest first.
async fn delete_expired_on(
    sql: &Statements,
    conn: &mut PgConnection,
    limit: i64,
) -> std::result::Result<u64, sqlx::Error> {
    let done = sqlx::query(checked(&sql.delete_expired))
        .bind(now_ms())
        .bind(limit)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}

impl PostgresStore {
    /// Connects to the database a `postgres://` URL names.
    ///
    /// # Errors
    /// [`ErrorKind::Config`](sessionkit_core::ErrorKind::Config) for bad options,
    /// [`ErrorKind::Unavailable`](sessionkit_core::ErrorKind::Unavailable) if the server cannot be
    /// reached; with `?setup=true`, whatever [`Store::setup`] returns.
    pub async fn open(url: &str) -> Result<Self> {
        let options = SqlOptions::parse(url)?;
        let connect: PgConnectOptions = options
            .driver_url
            .parse()
            .map_err(|e| Error::config_with("invalid PostgreSQL URL", e))?;
        probe::<PgConnection>(&options, "PostgreSQL").await?;
        let pool = ConnPool::new(
            connect,
            options.max_connections,
            options.acquire_timeout,
            None,
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

    async fn sessions_with_values(&self, rows: Vec<PgRow>) -> Result<Vec<StoredSession>> {
        let (mut sessions, keys) = listed_sessions(&rows)?;
        if keys.is_empty() {
            return Ok(sessions);
        }
        let values: Vec<(Vec<u8>, String, Vec<u8>)> = with_conn!(self.pool, |c| async {
            sqlx::query_as(checked(&self.sql.values_of))
                .bind(keys)
                .fetch_all(c)
                .await
        })
        .await
        .map_err(|e| sql_error("reading values", e))?;
        attach_values(&mut sessions, values)?;
        Ok(sessions)
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<()> {
        let Placement {
            large_names: names,
            large_values: values,
            ..
        } = place(&record.data, []);
        let doc = inline_doc(&record.data, []);
        let version = version_param(record.version)?;
        retry_transient("creating a session", || {
            with_conn!(self.pool, |c| async {
                sqlx::query(checked(&self.sql.create))
                    .bind(key.as_bytes().as_slice())
                    .bind(record.created_at.as_millis())
                    .bind(record.expires_at.as_millis())
                    .bind(record.owner.as_deref())
                    .bind(version)
                    .bind(&names)
                    .bind(&values)
                    .bind(&doc)
                    .execute(c)
                    .await
            })
        })
        .await?;
        Ok(())
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let rows = with_conn!(self.pool, |c| async {
            sqlx::query(checked(&self.sql.load))
                .bind(key.as_bytes().as_slice())
                .bind(now_ms())
                .fetch_all(c)
                .await
        })
        .await
        .map_err(|e| sql_error("loading a session", e))?;
        fold_joined(&rows, None)
    }

    async fn load_keys(&self, key: &SessionKey, keys: &[&str]) -> Result<Option<Record>> {
        let rows = with_conn!(self.pool, |c| async {
            sqlx::query(checked(&self.sql.load_keys))
                .bind(key.as_bytes().as_slice())
                .bind(now_ms())
                .bind(keys)
                .fetch_all(c)
                .await
        })
        .await
        .map_err(|e| sql_error("loading a session", e))?;
        fold_joined(&rows, Some(keys))
    }

    async fn apply(&self, key: &SessionKey, change: &Change) -> Result<ApplyOutcome> {
        let Placement {
            large_names: names,
            large_values: values,
            leaving_doc,
            leaving_table,
        } = place(&change.set, &change.removed);
        let doc = inline_doc(&change.set, []);
        let expires = change.expires_at.map(Timestamp::as_millis);
        let owner_changes = change.owner.is_some();
        let owner = change.owner.clone().flatten();
        let version: Option<i64> = retry_transient("applying a change", || async {
            if !change.cleared {
                return with_conn!(self.pool, |c| async {
                    sqlx::query_scalar(checked(&self.sql.apply))
                        .bind(key.as_bytes().as_slice())
                        .bind(now_ms())
                        .bind(expires)
                        .bind(owner_changes)
                        .bind(owner.as_deref())
                        .bind(&names)
                        .bind(&values)
                        .bind(&leaving_doc)
                        .bind(&doc)
                        .bind(&leaving_table)
                        .fetch_optional(c)
                        .await
                })
                .await;
            }
            with_conn!(self.pool, |c| async {
                let mut tx = c.begin().await?;
                let version: Option<i64> = sqlx::query_scalar(checked(&self.sql.replace))
                    .bind(key.as_bytes().as_slice())
                    .bind(now_ms())
                    .bind(expires)
                    .bind(owner_changes)
                    .bind(owner.as_deref())
                    .bind(&doc)
                    .bind(!names.is_empty())
                    .fetch_optional(&mut *tx)
                    .await?;
                if version.is_none() {
                    return Ok(None);
                }
                sqlx::query(checked(&self.sql.clear))
                    .bind(key.as_bytes().as_slice())
                    .execute(&mut *tx)
                    .await?;
                if !names.is_empty() {
                    sqlx::query(checked(&self.sql.upsert))
                        .bind(key.as_bytes().as_slice())
                        .bind(&names)
                        .bind(&values)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(version)
            })
            .await
        })
        .await?;
        Ok(match version {
            Some(version) => ApplyOutcome::Applied {
                version: u64::try_from(version).unwrap_or_default(),
            },
            None => ApplyOutcome::Gone,
        })
    }

    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<ApplyOutcome> {
        let version: Option<i64> = retry_transient("extending a session", || {
            with_conn!(self.pool, |c| async {
                sqlx::query_scalar(checked(&self.sql.touch))
                    .bind(key.as_bytes().as_slice())
                    .bind(now_ms())
                    .bind(expires_at.as_millis())
                    .fetch_optional(c)
                    .await
            })
        })
        .await?;
        Ok(
            version.map_or(ApplyOutcome::Gone, |v| ApplyOutcome::Applied {
                version: u64::try_from(v).unwrap_or_default(),
            }),
        )
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let result = retry_transient("deleting a session", || {
            with_conn!(self.pool, |c| async {
                sqlx::query(checked(&self.sql.delete))
                    .bind(key.as_bytes().as_slice())
                    .execute(c)
                    .await
            })
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
        retry_transient("cycling a session id", || {
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
                    .bind(old.as_bytes().as_slice())
                    .bind(new.as_bytes().as_slice())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(checked(&self.sql.move_values))
                    .bind(old.as_bytes().as_slice())
                    .bind(new.as_bytes().as_slice())
                    .execute(&mut *tx)
                    .await?;
                match grace_until {
                    Some(until) => {
                        sqlx::query(checked(&self.sql.make_pointer))
                            .bind(old.as_bytes().as_slice())
                            .bind(new.as_bytes().as_slice())
                            .bind(now)
                            .bind(until.as_millis())
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
        let found: i32 = retry_transient("creating the session schema", || with_conn!(self.pool, |c| async {
            let mut tx = c.begin().await?;
            // Several app servers may start at once: one creates, the others wait and find it.
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(lock_id(&self.sql.table)).execute(&mut *tx).await?;
            sqlx::raw_sql(checked(&self.sql.ddl)).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO sessionkit_schema (table_name, version) VALUES ($1, $2) \
                 ON CONFLICT (table_name) DO UPDATE SET version = GREATEST(sessionkit_schema.version, EXCLUDED.version)",
            )
            .bind(&self.sql.table)
            .bind(SCHEMA_VERSION)
            .execute(&mut *tx)
            .await?;
            let found = sqlx::query_scalar("SELECT version FROM sessionkit_schema WHERE table_name = $1")
                .bind(&self.sql.table)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(found)
        }))
        .await?;
        if found > SCHEMA_VERSION {
            return Err(Error::config(format!(
                "table {} has schema version {found}; this sessionkit knows {SCHEMA_VERSION}",
                self.sql.table
            )));
        }
        Ok(())
    }

    fn schema(&self) -> Option<String> {
        Some(self.sql.ddl.to_string())
    }

    async fn delete_expired(&self) -> Result<u64> {
        let lock = lock_id(&self.sql.table);
        // The advisory lock belongs to this connection's session, so every batch runs on it.
        with_conn!(self.pool, |c| async {
            let mine: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(lock)
                .fetch_one(&mut *c)
                .await?;
            if !mine {
                return Ok(0); // another app server is cleaning right now
            }
            let result =
                delete_in_batches!(delete_expired_on(&self.sql, &mut *c, CLEANUP_BATCH)).await;
            sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(lock)
                .execute(&mut *c)
                .await?;
            result
        })
        .await
        .map_err(|e| sql_error("cleaning up expired sessions", e))
    }

    async fn delete_expired_batch(&self, limit: usize) -> Result<u64> {
        let limit = i64::try_from(limit.max(1)).unwrap_or(CLEANUP_BATCH);
        retry_transient("deleting expired sessions", || {
            with_conn!(self.pool, |c| delete_expired_on(&self.sql, c, limit))
        })
        .await
    }

    async fn list(&self, filter: &ListFilter, page: PageRequest) -> Result<Page> {
        let mut sql = self.sql.meta_columns.clone();
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        match filter.state {
            ListState::Live => sql.push_str(&format!(" AND expires_at > {}", next())),
            ListState::Expired => sql.push_str(&format!(" AND expires_at <= {}", next())),
            ListState::All => {}
        }
        if page.after.is_some() {
            sql.push_str(&format!(" AND key > {}", next()));
        }
        if filter.owner.is_some() {
            sql.push_str(&format!(" AND owner = {}", next()));
        }
        sql.push_str(&format!(" ORDER BY key LIMIT {}", next()));
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
        let rows = with_conn!(self.pool, |c| async {
            query
                .bind(i64::try_from(page.limit.saturating_add(1)).unwrap_or(i64::MAX))
                .fetch_all(c)
                .await
        })
        .await
        .map_err(|e| sql_error("listing sessions", e))?;
        Ok(Page::from_sorted(
            self.sessions_with_values(rows).await?,
            page.limit,
        ))
    }

    async fn by_owner(&self, owner: &str) -> Result<Vec<StoredSession>> {
        let rows = with_conn!(self.pool, |c| async {
            sqlx::query(checked(&self.sql.by_owner))
                .bind(owner)
                .bind(now_ms())
                .fetch_all(c)
                .await
        })
        .await
        .map_err(|e| sql_error("listing an owner's sessions", e))?;
        self.sessions_with_values(rows).await
    }

    async fn delete_by_owner(&self, owner: &str) -> Result<u64> {
        let live: i64 = retry_transient("revoking an owner's sessions", || {
            with_conn!(self.pool, |c| async {
                sqlx::query_scalar(checked(&self.sql.delete_owner))
                    .bind(owner)
                    .bind(now_ms())
                    .fetch_one(c)
                    .await
            })
        })
        .await?;
        Ok(live.unsigned_abs())
    }
}
