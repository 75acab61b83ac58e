//! The on-disk layout and every statement the store runs, built once per table name.
//!
//! Layout (for table name `sessions`):
//!
//! - `sessions`: one row per session or grace-period pointer, `WITHOUT ROWID` keyed by the
//!   32-byte SHA-256 of the id. `expires_at` is integer milliseconds since the epoch, indexed
//!   (`sessions_expires`) so cleanup is a range scan; `owner` has a partial index
//!   (`sessions_owner`) over owned rows only.
//! - `sessions_values`: one row per data key, `(session, name) → value`, with `ON DELETE
//!   CASCADE` from `sessions`. A change rewrites only the keys it touches, so saving one small
//!   key of a 1 MiB session writes a few hundred bytes, and per-key reads fetch only the keys
//!   asked for. (An ordinary rowid table: values can be large, which `WITHOUT ROWID` handles
//!   badly.)
//! - `sessionkit_schema`: which layout version each sessions table has, for future migrations.

pub(crate) const SCHEMA_VERSION: i64 = 1;

/// The statements for one table name (validated before this is built).
pub(crate) struct Sql {
    pub ddl: String,
    pub schema_version: String,
    pub record_version: String,
    pub insert_session: String,
    pub upsert_value: String,
    pub load: String,
    /// `load` with only the values named in the JSON array ?3 (`load_keys`).
    pub load_named: String,
    pub load_values: String,
    /// One value of a session, by name (`load_keys`).
    pub load_value: String,
    pub bump: String,
    pub update_value_if: String,
    pub insert_value_if_absent: String,
    pub clear_values: String,
    pub remove_value: String,
    pub delete: String,
    pub live: String,
    pub cycle_copy: String,
    pub move_values: String,
    pub make_pointer: String,
    pub delete_expired_batch: String,
    /// As `delete_expired_batch`, handing back what it deleted (`delete_expired_batch_reporting`).
    pub delete_expired_reporting: String,
    pub list_prefix: String,
    pub by_owner: String,
    pub count_owner_live: String,
    pub delete_owner: String,
}

impl Sql {
    pub(crate) fn new(t: &str) -> Self {
        let v = format!("{t}_values");
        let meta = "created_at, expires_at, owner, version, moved_to";
        Self {
            ddl: format!(
                "CREATE TABLE IF NOT EXISTS {t} (\n\
                 \x20   key        BLOB    NOT NULL PRIMARY KEY,  -- SHA-256 of the session id\n\
                 \x20   created_at INTEGER NOT NULL,              -- ms since the Unix epoch\n\
                 \x20   expires_at INTEGER NOT NULL,              -- ms since the Unix epoch\n\
                 \x20   owner      TEXT,\n\
                 \x20   version    INTEGER NOT NULL,\n\
                 \x20   moved_to   BLOB                           -- grace-period pointer target\n\
                 ) WITHOUT ROWID;\n\
                 CREATE INDEX IF NOT EXISTS {t}_expires ON {t} (expires_at);\n\
                 CREATE INDEX IF NOT EXISTS {t}_owner ON {t} (owner) WHERE owner IS NOT NULL;\n\
                 CREATE TABLE IF NOT EXISTS {v} (\n\
                 \x20   session BLOB NOT NULL REFERENCES {t} (key) ON DELETE CASCADE,\n\
                 \x20   name    TEXT NOT NULL,\n\
                 \x20   value   BLOB NOT NULL,\n\
                 \x20   PRIMARY KEY (session, name)\n\
                 );\n\
                 CREATE TABLE IF NOT EXISTS sessionkit_schema (\n\
                 \x20   table_name TEXT NOT NULL PRIMARY KEY,\n\
                 \x20   version    INTEGER NOT NULL\n\
                 );\n"
            ),
            schema_version: "SELECT version FROM sessionkit_schema WHERE table_name = ?1".into(),
            record_version: "INSERT INTO sessionkit_schema (table_name, version) VALUES (?1, ?2) \
                             ON CONFLICT (table_name) DO NOTHING"
                .into(),
            insert_session: format!(
                "INSERT INTO {t} (key, {meta}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            ),
            upsert_value: format!(
                "INSERT INTO {v} (session, name, value) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (session, name) DO UPDATE SET value = excluded.value"
            ),
            load: format!(
                "SELECT s.created_at, s.expires_at, s.owner, s.version, s.moved_to, v.name, v.value \
                 FROM {t} s LEFT JOIN {v} v ON v.session = s.key \
                 WHERE s.key = CAST(?1 AS BLOB) AND s.expires_at > ?2"
            ),
            // One statement (no transaction around several): the named values by their
            // primary key, the others never read.
            load_named: format!(
                "SELECT s.created_at, s.expires_at, s.owner, s.version, s.moved_to, v.name, v.value \
                 FROM {t} s LEFT JOIN {v} v ON v.session = s.key AND v.name IN (SELECT value FROM json_each(?3)) \
                 WHERE s.key = CAST(?1 AS BLOB) AND s.expires_at > ?2"
            ),
            load_values: format!("SELECT name, value FROM {v} WHERE session = ?1"),
            load_value: format!("SELECT value FROM {v} WHERE session = ?1 AND name = ?2"),
            bump: format!(
                "UPDATE {t} SET version = version + 1, expires_at = coalesce(?3, expires_at), \
                 owner = CASE WHEN ?4 THEN ?5 ELSE owner END \
                 WHERE key = ?1 AND expires_at > ?2 AND moved_to IS NULL RETURNING version"
            ),
            // An `update`'s write of its one key, guarded by its condition: no row changed
            // means the key no longer holds what the request read (or, inserting, is present).
            update_value_if: format!(
                "UPDATE {v} SET value = ?3 WHERE session = ?1 AND name = ?2 AND value = ?4"
            ),
            insert_value_if_absent: format!(
                "INSERT INTO {v} (session, name, value) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING"
            ),
            clear_values: format!("DELETE FROM {v} WHERE session = ?1"),
            remove_value: format!("DELETE FROM {v} WHERE session = ?1 AND name = ?2"),
            delete: format!("DELETE FROM {t} WHERE key = ?1"),
            live: format!(
                "SELECT 1 FROM {t} WHERE key = ?1 AND expires_at > ?2 AND moved_to IS NULL"
            ),
            cycle_copy: format!(
                "INSERT INTO {t} (key, {meta}) \
                 SELECT ?2, created_at, expires_at, owner, version + 1, NULL FROM {t} WHERE key = ?1"
            ),
            move_values: format!("UPDATE {v} SET session = ?2 WHERE session = ?1"),
            make_pointer: format!(
                "UPDATE {t} SET moved_to = ?2, owner = NULL, created_at = ?3, expires_at = ?4, \
                 version = 1 WHERE key = ?1"
            ),
            delete_expired_batch: format!(
                "DELETE FROM {t} WHERE key IN \
                 (SELECT key FROM {t} WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)"
            ),
            // The same batch; the outer condition re-checks each row as it is deleted, in the
            // same statement (and the one writer's transaction), so what comes back is what went.
            delete_expired_reporting: format!(
                "DELETE FROM {t} WHERE expires_at <= ?1 AND key IN \
                 (SELECT key FROM {t} WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2) \
                 RETURNING key, owner, expires_at, moved_to IS NOT NULL"
            ),
            list_prefix: format!("SELECT key, {meta} FROM {t} WHERE moved_to IS NULL"),
            by_owner: format!(
                "SELECT key, {meta} FROM {t} WHERE owner = ?1 AND expires_at > ?2 AND moved_to IS NULL"
            ),
            count_owner_live: format!(
                "SELECT count(*) FROM {t} WHERE owner = ?1 AND expires_at > ?2 AND moved_to IS NULL"
            ),
            delete_owner: format!("DELETE FROM {t} WHERE owner = ?1"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(conn: &rusqlite::Connection, sql: &str, params: &[&dyn rusqlite::ToSql]) -> String {
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("explain");
        let rows = stmt
            .query_map(params, |row| row.get::<_, String>(3))
            .expect("plan rows");
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .expect("plan")
            .join(" | ")
    }

    #[test]
    fn cleanup_and_owner_queries_use_their_indexes() {
        let conn = rusqlite::Connection::open_in_memory().expect("db");
        let sql = Sql::new("sessions");
        conn.execute_batch(&sql.ddl).expect("ddl");
        let cleanup = plan(&conn, &sql.delete_expired_batch, &[&0i64, &500i64]);
        assert!(
            cleanup.contains("INDEX sessions_expires (expires_at<?)"),
            "{cleanup}"
        );
        assert!(
            !cleanup.contains("SCAN"),
            "cleanup never scans the table: {cleanup}"
        );
        let reporting = plan(&conn, &sql.delete_expired_reporting, &[&0i64, &500i64]);
        assert!(
            reporting.contains("INDEX sessions_expires (expires_at<?)")
                && !reporting.contains("SCAN"),
            "the reporting cleanup never scans the table: {reporting}"
        );
        let owner = plan(&conn, &sql.by_owner, &[&"alice", &0i64]);
        assert!(owner.contains("INDEX sessions_owner (owner=?)"), "{owner}");
        let load = plan(&conn, &sql.load, &[&[0u8; 32].as_slice(), &0i64]);
        assert!(
            load.contains("USING PRIMARY KEY") || load.contains("USING INDEX"),
            "{load}"
        );
        assert!(!load.contains("SCAN"), "a load never scans: {load}");
        let named = plan(
            &conn,
            &sql.load_named,
            &[&[0u8; 32].as_slice(), &0i64, &"[\"a\"]"],
        );
        assert!(
            !named.contains("SCAN s") && named.contains("USING PRIMARY KEY"),
            "a per-key load never scans the sessions: {named}"
        );
        assert!(
            named.contains("(session=? AND name=?)"),
            "and reads the named values by key: {named}"
        );
    }

    /// The SQLite that rusqlite 0.43 bundles (3.54) re-prepares (parses and plans again) a join
    /// whose key is compared with a bare parameter each time the statement comes back from the
    /// statement cache with new bindings: `load` was parsed on every call, and `/read` fell to
    /// 0.36 of its speed after the upgrade. With the parameter cast to the column's type, the
    /// prepared statement is reused.
    #[test]
    fn a_load_is_prepared_once() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.db");
        let sql = Sql::new("sessions");
        let created = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(crate::SqliteStore::open(&path));
        drop(created.expect("the store creates its schema"));
        let writer = rusqlite::Connection::open(&path).expect("db");
        writer
            .execute(
                "INSERT INTO sessions (key, created_at, expires_at, version) VALUES (?1, 0, 5000, 1)",
                [[7u8; 32].as_slice()],
            )
            .expect("a session");
        let reader = rusqlite::Connection::open(&path).expect("db");
        let mut reprepared = 0;
        for now in [1_000i64, 2_000, 3_000] {
            // As the store reads: the statement comes from the cache and goes back to it.
            let mut stmt = reader.prepare_cached(&sql.load).expect("prepare");
            let mut rows = stmt
                .query(rusqlite::params![[7u8; 32].as_slice(), now])
                .expect("query");
            while rows.next().expect("step").is_some() {}
            drop(rows);
            reprepared = stmt.get_status(rusqlite::StatementStatus::RePrepare);
        }
        assert_eq!(reprepared, 0, "{}", sql.load);
    }

    #[test]
    fn table_names_end_up_in_every_statement() {
        let sql = Sql::new("web_sessions");
        assert!(
            sql.ddl
                .contains("CREATE TABLE IF NOT EXISTS web_sessions (")
        );
        assert!(sql.ddl.contains("web_sessions_values"));
        assert!(sql.bump.starts_with("UPDATE web_sessions "));
    }
}
