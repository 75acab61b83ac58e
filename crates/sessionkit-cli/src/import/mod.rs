//! `sessionkit migrate --from tower-sessions+…://` and `--from actix-session+redis://`:
//! import the live sessions of other crates' stores (feature `import`).
//!
//! | source | what is read |
//! | --- | --- |
//! | `tower-sessions+postgres://USER@HOST/DB[?table=SCHEMA.TABLE]` | tower-sessions-sqlx-store's `PostgresStore` table (default `tower_sessions.session`) |
//! | `tower-sessions+mysql://USER@HOST/DB[?table=SCHEMA.TABLE]` | its `MySqlStore` table (default `tower_sessions.session`), MySQL or MariaDB |
//! | `tower-sessions+sqlite://FILE[?table=TABLE]` | its `SqliteStore` table (default `tower_sessions`) |
//! | `tower-sessions+redis://HOST[:PORT][/DB]` | tower-sessions-redis-store: every key that is a tower-sessions id |
//! | `actix-session+redis://HOST[:PORT][/DB][?prefix=PREFIX]` | actix-session's `RedisSessionStore`: every key `PREFIX` + a session key |
//!
//! (`rediss://` for Redis over TLS.) Every session is written to the destination as a sessionkit
//! session with its data and deadline; expired ones are skipped, and so are records that do not
//! decode, each counted under a typed [`Skip`] reason. Nothing is held in memory beyond one
//! page: SQL tables are read in pages ordered by id, Redis with `SCAN`.
//!
//! **tower-sessions** sessions are written through
//! [`TowerSessionsStore::import`](sessionkit_tower_sessions::TowerSessionsStore::import): under
//! the key that store derives from the id, with its value encoding, so they load through
//! `TowerSessionsStore` at once and move to sessionkit ids at the cut-over with its
//! `carry_over` middleware. **actix-session** sessions are written under
//! [`actix_session_key`] of their session key, each JSON value in sessionkit's codec; see the
//! CLI README for what the app does with its cookie at the cut-over.

mod redis;
mod sql;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use indicatif::ProgressBar;
use serde_json::Value;
use sessionkit::{SessionKey, Store, Timestamp};
use sessionkit_tower_sessions::{Imported, TowerSessionsStore, session_key_for_cookie};
use sha2::{Digest, Sha256};
use tower_sessions_core::session::Record as TowerRecord;
use tower_sessions_core::session_store::Error as TowerError;

use crate::CliError;
use crate::admin;
use crate::output::outln;

/// How many rows or keys one page of the source holds.
const PAGE: usize = 500;

/// What an actix-session session key is hashed after, ahead of the key itself.
pub const ACTIX_KEY_DOMAIN: &[u8] = b"actix-session:";

/// The sessionkit key an actix-session session is imported under: the SHA-256 of
/// [`ACTIX_KEY_DOMAIN`] followed by its session key (the value inside actix-session's cookie,
/// and its Redis key without the prefix). One-way, and apart from sessionkit's own keys and
/// from tower-sessions' ones.
pub fn actix_session_key(session_key: &str) -> SessionKey {
    let digest = Sha256::new()
        .chain_update(ACTIX_KEY_DOMAIN)
        .chain_update(session_key.as_bytes())
        .finalize();
    SessionKey::from_bytes(digest.into())
}

/// A source of sessions to import, as spelled after `--from`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// tower-sessions-sqlx-store's PostgreSQL table.
    TowerPostgres {
        /// The connection URL (`postgres://…`), without `table`.
        url: String,
        /// The schema and table.
        table: (String, String),
    },
    /// tower-sessions-sqlx-store's MySQL / MariaDB table.
    TowerMySql {
        /// The connection URL (`mysql://…`), without `table`.
        url: String,
        /// The schema (database) and table.
        table: (String, String),
    },
    /// tower-sessions-sqlx-store's SQLite table.
    TowerSqlite {
        /// The database file.
        path: String,
        /// The table.
        table: String,
    },
    /// tower-sessions-redis-store.
    TowerRedis {
        /// The connection URL (`redis://…` or `rediss://…`).
        url: String,
    },
    /// actix-session's `RedisSessionStore`.
    ActixRedis {
        /// The connection URL (`redis://…` or `rediss://…`), without `prefix`.
        url: String,
        /// What actix-session's `cache_keygen` put ahead of each session key (none by default).
        prefix: String,
    },
}

/// Why a session was not imported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Skip {
    /// A SQL row whose id is not an id tower-sessions issues.
    NotAnId,
    /// A value that is not a MessagePack tower-sessions record.
    NotATowerRecord,
    /// A tower-sessions record whose id is not the one it is stored under.
    IdMismatch,
    /// A Redis key of another type than a string.
    NotAString,
    /// An actix-session value that is not a JSON object of strings.
    NotAJsonMap,
    /// An actix-session entry whose value is not JSON.
    ValueNotJson,
    /// A Redis key without a time to live (actix-session always sets one).
    NoDeadline,
    /// Data sessionkit cannot store: a key it reserves or cannot hold, or too large.
    Unstorable,
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotAnId => "not a tower-sessions id",
            Self::NotATowerRecord => "not a tower-sessions record (MessagePack)",
            Self::IdMismatch => "a record under another id than its own",
            Self::NotAString => "not a string key",
            Self::NotAJsonMap => "not an actix-session state (a JSON object of strings)",
            Self::ValueNotJson => "an actix-session value that is not JSON",
            Self::NoDeadline => "no time to live",
            Self::Unstorable => {
                "data sessionkit cannot store (reserved or oversized key, value too large)"
            }
        })
    }
}

/// What an import did, in counts (never an id or a value).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Summary {
    /// Sessions written to the destination.
    pub imported: u64,
    /// Sessions already in the destination (an earlier, interrupted run), left as they were.
    pub already_there: u64,
    /// Sessions past their deadline (or gone from Redis while the import ran): not written.
    pub expired: u64,
    /// Redis keys that are not sessions of the source (other data in the same database).
    pub ignored: u64,
    /// Sessions not imported, by reason.
    pub skipped: BTreeMap<Skip, u64>,
}

impl Summary {
    /// How many sessions were skipped as undecodable or unstorable.
    pub fn undecodable(&self) -> u64 {
        self.skipped.values().sum()
    }

    fn skip(&mut self, reason: Skip) {
        *self.skipped.entry(reason).or_default() += 1;
    }

    fn progress(&self) -> String {
        format!(
            "importing: {} imported, {} already there, {} expired, {} undecodable",
            self.imported,
            self.already_there,
            self.expired,
            self.undecodable()
        )
    }
}

/// One entry read from a source, not decoded yet.
enum Entry {
    /// A tower-sessions record stored under `id` (a SQL row's id or a Redis key).
    Tower {
        /// The id it is stored under.
        id: String,
        /// The MessagePack record.
        value: Vec<u8>,
        /// Whether the id came from a SQL row (a Redis key that is no id is not read at all).
        checked_id: bool,
    },
    /// An actix-session state stored under `session_key`.
    Actix {
        /// The session key (the Redis key without the prefix).
        session_key: String,
        /// The JSON state.
        value: Vec<u8>,
        /// The key's time to live in milliseconds (Redis `PTTL`: -1 none, -2 gone).
        ttl_ms: i64,
    },
    /// A Redis key that vanished between `SCAN` and reading it.
    Gone,
    /// A key that was no session of this source.
    Ignored,
    /// A session that cannot be read at all.
    Skipped(Skip),
}

/// Reads a source in pages.
enum Reader {
    Sql(sql::SqlReader),
    Redis(redis::RedisReader),
}

impl Reader {
    async fn open(source: &Source) -> Result<Self, CliError> {
        Ok(match source {
            Source::TowerPostgres { .. }
            | Source::TowerMySql { .. }
            | Source::TowerSqlite { .. } => Self::Sql(sql::SqlReader::open(source).await?),
            Source::TowerRedis { url } => Self::Redis(redis::RedisReader::tower(url).await?),
            Source::ActixRedis { url, prefix } => {
                Self::Redis(redis::RedisReader::actix(url, prefix).await?)
            }
        })
    }

    /// The next page, or `None` after the last.
    async fn next(&mut self) -> Result<Option<Vec<Entry>>, CliError> {
        match self {
            Self::Sql(reader) => reader.next().await,
            Self::Redis(reader) => reader.next().await,
        }
    }
}

impl Source {
    /// Reads an import source from `--from`; `Ok(None)` if `from` is a sessionkit store URL
    /// (no `tower-sessions+` or `actix-session+` scheme).
    ///
    /// # Errors
    /// A [`CliError`] for an import scheme with a backend it does not support, an unknown
    /// option, or a table name that is not an identifier.
    pub fn parse(from: &str) -> Result<Option<Self>, CliError> {
        if let Some(rest) = from.strip_prefix("tower-sessions+") {
            let (url, mut options) = split_options(rest);
            let source = if let Some(path) = url.strip_prefix("sqlite://") {
                let table = options
                    .take("table")
                    .unwrap_or_else(|| "tower_sessions".into());
                options.none_left()?;
                Self::TowerSqlite {
                    path: path.to_owned(),
                    table: identifier(&table)?,
                }
            } else if ["postgres://", "postgresql://"]
                .iter()
                .any(|s| url.starts_with(s))
            {
                Self::TowerPostgres {
                    table: qualified(options.take("table"))?,
                    url: options.rejoin(url),
                }
            } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
                Self::TowerMySql {
                    table: qualified(options.take("table"))?,
                    url: options.rejoin(&url.replacen("mariadb://", "mysql://", 1)),
                }
            } else if is_redis(url) {
                Self::TowerRedis {
                    url: options.rejoin(url),
                }
            } else {
                return Err(CliError(
                    "tower-sessions sessions are imported from tower-sessions+postgres://, +mysql://, +sqlite:// or +redis:// (or +rediss://)".into(),
                ));
            };
            return Ok(Some(source));
        }
        if let Some(rest) = from.strip_prefix("actix-session+") {
            let (url, mut options) = split_options(rest);
            if !is_redis(url) {
                return Err(CliError(
                    "actix-session sessions are imported from its Redis store: actix-session+redis:// (or +rediss://)".into(),
                ));
            }
            let prefix = options.take("prefix").unwrap_or_default();
            let url = options.rejoin(url);
            return Ok(Some(Self::ActixRedis { url, prefix }));
        }
        Ok(None)
    }

    /// What the source is, for the summary (no URL: it may hold a password).
    fn describe(&self) -> &'static str {
        match self {
            Self::TowerPostgres { .. } => "tower-sessions (PostgreSQL)",
            Self::TowerMySql { .. } => "tower-sessions (MySQL)",
            Self::TowerSqlite { .. } => "tower-sessions (SQLite)",
            Self::TowerRedis { .. } => "tower-sessions (Redis)",
            Self::ActixRedis { .. } => "actix-session (Redis)",
        }
    }
}

fn is_redis(url: &str) -> bool {
    url.starts_with("redis://") || url.starts_with("rediss://")
}

/// A URL's query options, with the ones the importer takes out.
struct Options {
    pairs: Vec<(String, String)>,
    taken: Vec<&'static str>,
}

/// Splits `url?a=b&c=d` into the URL and its options.
fn split_options(url: &str) -> (&str, Options) {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let pairs = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (name.to_owned(), value.to_owned())
        })
        .collect();
    (
        base,
        Options {
            pairs,
            taken: Vec::new(),
        },
    )
}

impl Options {
    /// Takes the importer's own option `name` out of the URL.
    fn take(&mut self, name: &'static str) -> Option<String> {
        self.taken.push(name);
        let at = self.pairs.iter().position(|(n, _)| n == name)?;
        Some(self.pairs.remove(at).1)
    }

    /// The URL with the options left for the driver (`sslmode`, `ssl-mode`, …).
    fn rejoin(&self, base: &str) -> String {
        if self.pairs.is_empty() {
            return base.to_owned();
        }
        let query: Vec<String> = self.pairs.iter().map(|(n, v)| format!("{n}={v}")).collect();
        format!("{base}?{}", query.join("&"))
    }

    /// For a SQLite file, every option is the importer's own: others are refused.
    fn none_left(&self) -> Result<(), CliError> {
        match self.pairs.first() {
            None => Ok(()),
            Some((name, _)) => Err(CliError(format!(
                "unknown option {} for a tower-sessions SQLite source (it takes table=)",
                crate::admin::shown_argument(name)
            ))),
        }
    }
}

/// A table name tower-sessions-sqlx-store accepts: ASCII letters, digits and `_`.
fn identifier(name: &str) -> Result<String, CliError> {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(name.to_owned())
    } else {
        Err(CliError(
            "a table or schema name is ASCII letters, digits and _".into(),
        ))
    }
}

/// `?table=SCHEMA.TABLE` (or `TABLE` in the default schema), tower-sessions' default
/// `tower_sessions.session` without it.
fn qualified(table: Option<String>) -> Result<(String, String), CliError> {
    let table = table.unwrap_or_else(|| "tower_sessions.session".into());
    let (schema, name) = table.split_once('.').unwrap_or(("tower_sessions", &table));
    Ok((identifier(schema)?, identifier(name)?))
}

/// Imports every live session of `source` into the store at `to` (created and set up if
/// missing), page by page.
///
/// # Errors
/// A [`CliError`] if a store cannot be reached or fails; records that do not decode are not
/// errors but counted in the [`Summary`].
pub async fn import(source: &Source, to: &str) -> Result<Summary, CliError> {
    let mut reader = Reader::open(source).await?;
    let destination = admin::open(to).await?;
    destination.setup().await?;
    let destination = TowerSessionsStore::new(destination);
    let progress = admin::spinner("importing");
    let result = import_pages(&mut reader, &destination, &progress).await;
    progress.finish_and_clear();
    result
}

async fn import_pages(
    reader: &mut Reader,
    destination: &TowerSessionsStore<Arc<dyn Store>>,
    progress: &ProgressBar,
) -> Result<Summary, CliError> {
    let mut summary = Summary::default();
    while let Some(page) = reader.next().await? {
        for entry in page {
            let outcome = match entry {
                Entry::Tower {
                    id,
                    value,
                    checked_id,
                } => import_tower(destination, &id, &value, checked_id).await?,
                Entry::Actix {
                    session_key,
                    value,
                    ttl_ms,
                } => import_actix(destination, &session_key, &value, ttl_ms).await?,
                Entry::Gone => Ok(Imported::Expired),
                Entry::Ignored => {
                    summary.ignored += 1;
                    continue;
                }
                Entry::Skipped(reason) => Err(reason),
            };
            match outcome {
                Ok(Imported::Created) => summary.imported += 1,
                Ok(Imported::AlreadyThere) => summary.already_there += 1,
                Ok(Imported::Expired) => summary.expired += 1,
                Ok(_) => {}
                Err(reason) => summary.skip(reason),
            }
        }
        progress.set_message(summary.progress());
    }
    Ok(summary)
}

/// A session's fate: imported (or why not), or a store failure that ends the import.
type Outcome = Result<Result<Imported, Skip>, CliError>;

async fn import_tower(
    destination: &TowerSessionsStore<Arc<dyn Store>>,
    id: &str,
    value: &[u8],
    checked_id: bool,
) -> Outcome {
    if checked_id && session_key_for_cookie(id).is_none() {
        return Ok(Err(Skip::NotAnId));
    }
    let Ok(record) = rmp_serde::from_slice::<TowerRecord>(value) else {
        return Ok(Err(Skip::NotATowerRecord));
    };
    if record.id.to_string() != id {
        return Ok(Err(Skip::IdMismatch));
    }
    stored(destination.import(&record).await)
}

async fn import_actix(
    destination: &TowerSessionsStore<Arc<dyn Store>>,
    session_key: &str,
    value: &[u8],
    ttl_ms: i64,
) -> Outcome {
    let Ok(state) = serde_json::from_slice::<HashMap<String, String>>(value) else {
        return Ok(Err(Skip::NotAJsonMap));
    };
    let mut data = HashMap::with_capacity(state.len());
    for (name, json) in state {
        let Ok(value) = serde_json::from_str::<Value>(&json) else {
            return Ok(Err(Skip::ValueNotJson));
        };
        data.insert(name, value);
    }
    let expires_at = match ttl_ms {
        -1 => return Ok(Err(Skip::NoDeadline)),
        ..0 => return Ok(Ok(Imported::Expired)),
        ttl => Timestamp::now().saturating_add(Duration::from_millis(ttl.unsigned_abs())),
    };
    stored(
        destination
            .import_data(&actix_session_key(session_key), &data, expires_at)
            .await,
    )
}

/// An import's result: data sessionkit cannot store is skipped, a store failure ends it.
fn stored(result: Result<Imported, TowerError>) -> Outcome {
    match result {
        Ok(imported) => Ok(Ok(imported)),
        Err(TowerError::Encode(_)) => Ok(Err(Skip::Unstorable)),
        Err(err) => Err(CliError::from(err)),
    }
}

/// `sessionkit migrate --from <import source> --to URL`: imports, prints the summary, and
/// fails if any session could not be imported (after importing every other one).
pub(crate) async fn run(source: &Source, to: &str) -> Result<(), CliError> {
    let summary = import(source, to).await?;
    let mut line = format!(
        "imported {} session(s) from {} ({} already there); skipped {} expired",
        summary.imported,
        source.describe(),
        summary.already_there,
        summary.expired
    );
    if summary.ignored > 0 {
        line.push_str(&format!("; ignored {} other Redis key(s)", summary.ignored));
    }
    outln!("{line}")?;
    if summary.undecodable() > 0 {
        return Err(CliError(format!(
            "{} session(s) were not imported: {}",
            summary.undecodable(),
            undecodable_reasons(&summary)
        )));
    }
    Ok(())
}

/// `2 not a tower-sessions record (MessagePack), 1 no time to live`.
fn undecodable_reasons(summary: &Summary) -> String {
    summary
        .skipped
        .iter()
        .map(|(reason, n)| format!("{n} {reason}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_spelled_as_schemes() {
        assert_eq!(Source::parse("sqlite://x.db").ok(), Some(None));
        assert_eq!(
            Source::parse(
                "tower-sessions+postgres://root@127.0.0.1/test?table=app.sessions&sslmode=disable"
            )
            .ok()
            .flatten(),
            Some(Source::TowerPostgres {
                url: "postgres://root@127.0.0.1/test?sslmode=disable".into(),
                table: ("app".into(), "sessions".into()),
            })
        );
        assert_eq!(
            Source::parse("tower-sessions+mariadb://root@127.0.0.1/test")
                .ok()
                .flatten(),
            Some(Source::TowerMySql {
                url: "mysql://root@127.0.0.1/test".into(),
                table: ("tower_sessions".into(), "session".into()),
            })
        );
        assert_eq!(
            Source::parse("tower-sessions+sqlite://app.db?table=s")
                .ok()
                .flatten(),
            Some(Source::TowerSqlite {
                path: "app.db".into(),
                table: "s".into(),
            })
        );
        assert_eq!(
            Source::parse("actix-session+rediss://h/2?prefix=session:")
                .ok()
                .flatten(),
            Some(Source::ActixRedis {
                url: "rediss://h/2".into(),
                prefix: "session:".into(),
            })
        );
        assert!(Source::parse("tower-sessions+memcached://h").is_err());
        assert!(Source::parse("actix-session+postgres://h").is_err());
        assert!(Source::parse("tower-sessions+postgres://h?table=a;drop").is_err());
        assert!(Source::parse("tower-sessions+sqlite://app.db?mode=rwc").is_err());
    }

    #[test]
    fn actix_keys_are_tagged_hashes() {
        let expected: [u8; 32] = Sha256::digest(b"actix-session:abc").into();
        assert_eq!(actix_session_key("abc"), SessionKey::from_bytes(expected));
        let tower = sessionkit_tower_sessions::session_key_for_cookie("AAAAAAAAAAAAAAAAAAAAAA");
        assert!(tower.is_some());
        assert_ne!(Some(actix_session_key("AAAAAAAAAAAAAAAAAAAAAA")), tower);
    }
}
