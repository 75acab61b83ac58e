//! The layout the SQL stores share (`sessionkit-postgres`, `sessionkit-mysql`): their URL
//! options, the inline document that holds a session's small values in its row, where a
//! change's values go, how rows become records, and how cleanup deletes in batches. Each store
//! writes its own SQL and reads its own driver's rows; what is here is plain data.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::Duration;

use super::{TRANSIENT_ATTEMPTS, split_options, validate_table_name};
use crate::{Change, Data, Error, Record, Result, SessionKey, StoredSession, Timestamp};

/// How many expired sessions one cleanup statement deletes.
pub const CLEANUP_BATCH: i64 = 500;

/// Options common to the SQL stores, parsed from the store URL's query string: `table`
/// (default `sessions`), `max_connections` (16), `shared_connections`, `acquire_timeout_ms`
/// (5000) and `setup`. Options the store does not know are passed through to the driver.
#[derive(Clone)]
pub struct SqlOptions {
    /// The URL without sessionkit's own options, for the driver.
    pub driver_url: String,
    /// The session table (validated: it is spliced into statements).
    pub table: String,
    /// The most connections the store opens.
    pub max_connections: u32,
    /// PostgreSQL: how many of `max_connections` are shared and pipelined (default: half the
    /// CPUs, at least one).
    pub shared_connections: Option<u32>,
    /// How long a request waits for a connection before `Unavailable`.
    pub acquire_timeout: Duration,
    /// Whether to create (or upgrade) the schema when the store opens.
    pub setup: bool,
}

impl SqlOptions {
    /// Parses the options of a store URL.
    ///
    /// # Errors
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) for an invalid value or table name.
    pub fn parse(url: &str) -> Result<Self> {
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

    /// Parses sessionkit's own options alone (`table=web_sessions&max_connections=8`, as in a
    /// store URL's query string), for a store built from a driver configuration made in code.
    ///
    /// # Errors
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) for an invalid value or table name, or an
    /// option of the driver's (set that on the driver's configuration instead).
    pub fn parse_own(options: &str) -> Result<Self> {
        const BASE: &str = "options:";
        let parsed = Self::parse(&format!("{BASE}?{options}"))?;
        match parsed
            .driver_url
            .strip_prefix(BASE)
            .and_then(|rest| rest.strip_prefix('?'))
        {
            Some(driver) => Err(Error::config(format!(
                "{} are not sessionkit options (table, max_connections, shared_connections, acquire_timeout_ms, setup): set driver options on the driver's configuration",
                crate::backend::redacted_url(&format!("?{driver}")).trim_start_matches('?')
            ))),
            None => Ok(parsed),
        }
    }
}

/// Without the driver URL, which holds the password.
impl std::fmt::Debug for SqlOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlOptions")
            .field("table", &self.table)
            .field("max_connections", &self.max_connections)
            .field("shared_connections", &self.shared_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("setup", &self.setup)
            .finish_non_exhaustive()
    }
}

fn bad_option(name: &str, value: &str) -> Error {
    Error::config(format!("invalid value {value:?} for store option {name}"))
}

/// The rules of a cleanup that deletes expired sessions in batches of [`CLEANUP_BATCH`]: it
/// ends when a batch comes back short; a batch the database aborted is simply run again (the
/// next round deletes what it did not), at most [`TRANSIENT_ATTEMPTS`] times in all. The store
/// runs each batch on its own connection (the one holding the cleanup's advisory lock) and
/// hands the outcome to [`BatchedCleanup::settle`]:
///
/// ```ignore
/// let mut cleanup = BatchedCleanup::default();
/// let deleted = loop {
///     let batch = delete_expired_on(&mut conn, CLEANUP_BATCH).await;
///     if let ControlFlow::Break(done) = cleanup.settle(batch, is_transient) {
///         break done;
///     }
/// };
/// ```
#[derive(Debug, Default)]
pub struct BatchedCleanup {
    deleted: u64,
    aborts: u32,
}

impl BatchedCleanup {
    /// Counts one batch's outcome: `Continue` to run the next batch, or `Break` with the total
    /// deleted (or the error that ends the cleanup: one that is not a transient abort, or the
    /// last abort).
    pub fn settle<E>(
        &mut self,
        batch: std::result::Result<u64, E>,
        is_transient: impl Fn(&E) -> bool,
    ) -> ControlFlow<std::result::Result<u64, E>> {
        match batch {
            Ok(n) if n < CLEANUP_BATCH.unsigned_abs() => ControlFlow::Break(Ok(self.deleted + n)),
            Ok(n) => {
                self.deleted += n;
                ControlFlow::Continue(())
            }
            Err(err) if is_transient(&err) && self.aborts < TRANSIENT_ATTEMPTS => {
                self.aborts += 1;
                ControlFlow::Continue(())
            }
            Err(err) => ControlFlow::Break(Err(err)),
        }
    }
}

/// Values up to this many bytes live inline in the session's row (one JSON object of base64
/// strings, read and written with the row itself); larger ones get a row of their own in
/// `<table>_values`, so saving one key of a large session never rewrites the rest.
pub const INLINE_MAX: usize = 1024;

/// Whether a value lives inline in the session row.
pub fn is_inline(value: &[u8]) -> bool {
    value.len() <= INLINE_MAX
}

/// The inline document for `values` (those [`is_inline`] keeps), plus a JSON `null` for each
/// of `nulls` (a JSON merge patch's way to say "remove").
pub fn inline_doc<'a>(
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
pub fn inline_conditions(change: &Change) -> Option<(String, Vec<&str>)> {
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
pub fn encode_inline(value: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(value)
}

/// An inline document's entries, still encoded.
fn parse_inline(doc: &str) -> Result<BTreeMap<String, String>> {
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
pub fn read_inline(doc: &str, data: &mut Data) -> Result<()> {
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
pub fn inline_witness<'a>(change: &'a Change, doc: &str) -> Result<(Data, Vec<&'a str>)> {
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
pub struct Placement<'a> {
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
pub fn place<'a>(set: &'a Data, removed: impl IntoIterator<Item = &'a String>) -> Placement<'a> {
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

/// The metadata columns of a session row and its inline document, as a store's driver read
/// them: `created_at, expires_at, owner, version, moved_to, data`.
#[derive(Debug, Clone, Default)]
pub struct SessionColumns {
    /// `created_at`, in milliseconds.
    pub created_at: i64,
    /// `expires_at`, in milliseconds.
    pub expires_at: i64,
    /// `owner`.
    pub owner: Option<String>,
    /// `version`.
    pub version: i64,
    /// `moved_to`: the key a cycled session moved to.
    pub moved_to: Option<Vec<u8>>,
    /// `data`: the inline document ([`inline_doc`]).
    pub data: Option<String>,
}

impl SessionColumns {
    /// The record these columns describe, with its inline values.
    ///
    /// # Errors
    /// [`ErrorKind::Codec`](crate::ErrorKind::Codec) for a row no store wrote.
    pub fn into_record(self) -> Result<Record> {
        let mut record = Record {
            data: Data::new(),
            created_at: Timestamp::from_millis(self.created_at),
            expires_at: Timestamp::from_millis(self.expires_at),
            owner: self.owner,
            version: u64::try_from(self.version)
                .map_err(|_| Error::corrupt("a negative session version"))?,
            moved_to: self
                .moved_to
                .as_deref()
                .map(SessionKey::from_slice)
                .transpose()?,
        };
        let doc = self
            .data
            .ok_or_else(|| Error::corrupt("a session row without its inline document"))?;
        read_inline(&doc, &mut record.data)?;
        Ok(record)
    }
}

/// A session's record from its load: the session row's columns, and the `(name, value)` of
/// each values-table row joined to it (`(None, None)` where there was none), as the store's
/// driver reads them (so they are read once, not collected); `only` keeps the inline values
/// of those names (the query filtered the values table's).
///
/// # Errors
/// As [`SessionColumns::into_record`]; the first error reading a joined row; `Codec` for a
/// `NULL` value.
pub fn fold_joined(
    session: SessionColumns,
    joined: impl IntoIterator<Item = Result<(Option<String>, Option<Vec<u8>>)>>,
    only: Option<&[&str]>,
) -> Result<Record> {
    let mut record = session.into_record()?;
    if let Some(names) = only {
        record.data.retain(|name, _| names.contains(&name.as_str()));
    }
    for joined in joined {
        if let (Some(name), value) = joined? {
            let value = value.ok_or_else(|| Error::corrupt("a NULL session value"))?;
            record.data.insert(name, value);
        }
    }
    Ok(record)
}

/// One row of a session listing: the key, the session's columns, and whether it has rows in
/// the values table.
#[derive(Debug, Clone)]
pub struct ListedRow {
    /// The session's key (`NULL` only in a corrupt table).
    pub key: Option<Vec<u8>>,
    /// The session's columns.
    pub session: SessionColumns,
    /// The `spilled` flag.
    pub spilled: bool,
}

/// Reads listing rows into sessions, and the keys of those with rows in the values table (to
/// be attached with [`attach_values`]).
///
/// # Errors
/// As [`SessionColumns::into_record`]; `Codec` for a row without a valid key.
pub fn listed_sessions(
    rows: impl IntoIterator<Item = ListedRow>,
) -> Result<(Vec<StoredSession>, Vec<Vec<u8>>)> {
    let rows = rows.into_iter();
    let mut sessions = Vec::with_capacity(rows.size_hint().0);
    let mut spilled = Vec::new();
    for row in rows {
        let key = row
            .key
            .ok_or_else(|| Error::corrupt("a session row without a key"))?;
        sessions.push(StoredSession {
            key: SessionKey::from_slice(&key)?,
            record: row.session.into_record()?,
        });
        if row.spilled {
            spilled.push(key);
        }
    }
    Ok((sessions, spilled))
}

/// Attaches `(session, name, value)` rows to the sessions they belong to.
///
/// # Errors
/// `Codec` for a row whose session key is not a key.
pub fn attach_values(
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

/// A record's version as the `BIGINT` column holds it.
///
/// # Errors
/// `Codec` beyond 2^63.
pub fn version_param(version: u64) -> Result<i64> {
    i64::try_from(version).map_err(|_| Error::corrupt("a session version beyond 2^63"))
}

/// Now, in the milliseconds the `expires_at` columns hold.
pub fn now_ms() -> i64 {
    Timestamp::now().as_millis()
}

/// A stable 63-bit number for a table name, for advisory locks.
pub fn lock_id(table: &str) -> i64 {
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
    fn own_options_take_no_driver_option() {
        let options = SqlOptions::parse_own("table=web&max_connections=4").expect("own options");
        assert_eq!(
            (options.table.as_str(), options.max_connections),
            ("web", 4)
        );
        assert_eq!(SqlOptions::parse_own("").expect("none").table, "sessions");
        let err = SqlOptions::parse_own("table=web&sslmode=require&password=pw")
            .expect_err("a driver option");
        assert_eq!(err.kind(), crate::ErrorKind::Config);
        let shown = err.to_string();
        assert!(
            shown.contains("sslmode=require") && !shown.contains("pw"),
            "{shown}"
        );
    }

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
    fn debug_never_shows_the_driver_url() {
        let o =
            SqlOptions::parse("postgres://app:hunter2@db.internal/app?table=web").expect("parse");
        let shown = format!("{o:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("db.internal"),
            "{shown}"
        );
        assert!(shown.contains("web"), "{shown}");
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
