//! `setup`, `list`, `show`, `delete`, `revoke`, `purge`, `stats`, `migrate`.
//!
//! Only `setup` (and `migrate`'s destination) may create a store: every other command opens
//! its store with [`sessionkit::open_existing`], so a mistyped path or table is reported, not
//! created.

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use sessionkit::store::list_all;
use sessionkit::{
    Capabilities, ErrorKind, ListFilter, ListState, Page, PageRequest, SessionId, SessionKey,
    Store, StoredSession, codec,
};

use crate::CliError;
use crate::format;
use crate::output::{self, outln};

/// How many sessions a listing page or purge step holds.
const PAGE: usize = 500;
/// How many keys of records that do not decode a report names (it counts them all).
const NAMED_UNDECODABLE: usize = 20;
/// How many characters of an argument that is not an id an error message repeats.
const SHOWN_ARGUMENT: usize = 12;

/// Opens a store as `setup`, `migrate --to` and `bench` do: creating it if it is missing.
pub(crate) async fn open(url: &str) -> Result<Arc<dyn Store>, CliError> {
    sessionkit::open(url).await.map_err(CliError::from)
}

/// Opens a store for a command that only reads or cleans it: nothing is created, and a
/// missing file, directory or schema is an error that says to run `sessionkit setup`.
pub(crate) async fn open_existing(url: &str) -> Result<Arc<dyn Store>, CliError> {
    sessionkit::open_existing(url).await.map_err(CliError::from)
}

/// The pages of a listing, one at a time.
struct Pages<'a> {
    store: &'a dyn Store,
    filter: ListFilter,
    after: Option<SessionKey>,
    done: bool,
}

impl<'a> Pages<'a> {
    fn new(store: &'a dyn Store, filter: ListFilter) -> Self {
        Self {
            store,
            filter,
            after: None,
            done: false,
        }
    }

    /// The next page of at most `size` entries, or `None` after the last.
    async fn next(&mut self, size: usize) -> Result<Option<Page>, CliError> {
        if self.done {
            return Ok(None);
        }
        let request = PageRequest {
            after: self.after,
            limit: size.max(1),
        };
        let page = self.store.list(&self.filter, request).await?;
        self.after = page.next;
        self.done = page.next.is_none();
        Ok(Some(page))
    }

    /// Whether there is more to list.
    fn more(&self) -> bool {
        !self.done
    }
}

/// `3 record(s) that do not decode: 1a2b3c4d5e6f, …`: their count and short keys (hashes of
/// the ids, never the ids), at most [`NAMED_UNDECODABLE`] of them.
fn undecodable_report(keys: &[SessionKey]) -> String {
    let mut named: Vec<String> = keys
        .iter()
        .take(NAMED_UNDECODABLE)
        .map(SessionKey::short)
        .collect();
    if keys.len() > NAMED_UNDECODABLE {
        named.push(format!("and {} more", keys.len() - NAMED_UNDECODABLE));
    }
    format!(
        "{} record(s) that do not decode: {}",
        keys.len(),
        named.join(", ")
    )
}

/// An argument as an error message repeats it: quoted, and cut after [`SHOWN_ARGUMENT`]
/// characters (it may be most of a session id, or megabytes long).
pub(crate) fn shown_argument(text: &str) -> String {
    let length = text.chars().count();
    if length <= SHOWN_ARGUMENT {
        format!("{text:?}")
    } else {
        let start: String = text.chars().take(SHOWN_ARGUMENT).collect();
        format!("{start:?}… ({length} characters)")
    }
}

fn require(
    store: &dyn Store,
    what: &str,
    has: impl Fn(Capabilities) -> bool,
) -> Result<(), CliError> {
    if has(store.capabilities()) {
        Ok(())
    } else {
        Err(CliError(format!(
            "the {} store cannot {what}",
            store.name()
        )))
    }
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(
        "{spinner} {msg} [{bar:30}] {pos}/{len} ({per_sec}, {eta} left)",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what.to_owned());
    bar
}

pub(crate) fn spinner(what: &str) -> ProgressBar {
    let spinner = ProgressBar::new_spinner();
    spinner.set_message(what.to_owned());
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner
}

pub(crate) async fn setup(url: &str, print_ddl: bool) -> Result<(), CliError> {
    let store = open(url).await?;
    if print_ddl {
        return match store.schema() {
            Some(ddl) => output::write(&ddl),
            None => outln!("-- the {} store has no schema", store.name()),
        };
    }
    store.setup().await?;
    outln!("{} store is set up", store.name())
}

pub(crate) async fn list(
    url: &str,
    owner: Option<String>,
    expired: bool,
    limit: usize,
    json: bool,
) -> Result<(), CliError> {
    let store = open_existing(url).await?;
    require(&*store, "list sessions", |c| c.iterable)?;
    let state = if expired {
        ListState::Expired
    } else {
        ListState::Live
    };
    if !json {
        outln!(
            "{:<12}  {:<20}  {:<19}  {:<19}  {:>4}  {:>9}",
            "KEY",
            "OWNER",
            "CREATED",
            "EXPIRES",
            "KEYS",
            "BYTES"
        )?;
    }
    // `--limit 0` lists every session.
    let wanted = if limit == 0 { usize::MAX } else { limit };
    let (mut shown, mut undecodable) = (0usize, Vec::new());
    let mut pages = Pages::new(&*store, ListFilter { owner, state });
    while shown < wanted {
        let Some(page) = pages.next(PAGE.min(wanted - shown)).await? else {
            break;
        };
        let mut text = String::new();
        for session in &page.sessions {
            let line = if json {
                summary_json(session).to_string()
            } else {
                summary_row(session)
            };
            text.push_str(&line);
            text.push('\n');
        }
        output::write(&text)?;
        shown += page.sessions.len();
        undecodable.extend(page.undecodable);
    }
    if json {
        if !undecodable.is_empty() {
            eprintln!("warning: {} (not listed)", undecodable_report(&undecodable));
        }
        return Ok(());
    }
    let more = if pages.more() {
        format!(" (more: raise --limit above {limit}, or 0 for all)")
    } else {
        String::new()
    };
    outln!("{shown} session(s){more}")?;
    if !undecodable.is_empty() {
        outln!("{} (not listed)", undecodable_report(&undecodable))?;
    }
    Ok(())
}

fn summary_row(StoredSession { key, record }: &StoredSession) -> String {
    format!(
        "{:<12}  {:<20}  {:<19}  {:<19}  {:>4}  {:>9}",
        key.short(),
        record.owner.as_deref().unwrap_or("-"),
        format::time(record.created_at),
        format::time(record.expires_at),
        record.data.len(),
        format::bytes(record.size_bytes()),
    )
}

fn summary_json(session: &StoredSession) -> serde_json::Value {
    serde_json::json!({
        "key": session.key.to_hex(),
        "owner": session.record.owner,
        "created_at": session.record.created_at.as_millis(),
        "expires_at": session.record.expires_at.as_millis(),
        "keys": session.record.data.keys().collect::<Vec<_>>(),
        "bytes": session.record.size_bytes(),
    })
}

/// The session a `show` or `delete` argument names.
enum Target {
    /// A cookie value or a full key.
    Key(SessionKey),
    /// A key prefix (lowercase hex digits), to search for.
    Prefix(String),
}

/// Reads a cookie value, a full key, or a key prefix, before any store is opened.
fn target(text: &str) -> Result<Target, CliError> {
    if let Ok(id) = SessionId::parse(text) {
        return Ok(Target::Key(id.key()));
    }
    if let Ok(key) = SessionKey::from_hex(text) {
        return Ok(Target::Key(key));
    }
    let prefix = text.to_ascii_lowercase();
    if !(4..64).contains(&prefix.len()) || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CliError(format!(
            "{} is not a session id (32 characters), a key (64 hex digits) or a key prefix (4+ hex digits)",
            shown_argument(text)
        )));
    }
    Ok(Target::Prefix(prefix))
}

/// The key a [`Target`] names: a prefix is searched for in listable stores and must match
/// exactly one session.
async fn resolve(store: &dyn Store, target: Target) -> Result<SessionKey, CliError> {
    let prefix = match target {
        Target::Key(key) => return Ok(key),
        Target::Prefix(prefix) => prefix,
    };
    require(
        store,
        "find a session by key prefix (give the full key or the cookie value)",
        |c| c.iterable,
    )?;
    let filter = ListFilter {
        owner: None,
        state: ListState::All,
    };
    let matches: Vec<SessionKey> = list_all(store, filter, PAGE)
        .try_filter(|s| futures::future::ready(s.key.to_hex().starts_with(&prefix)))
        .map_ok(|s| s.key)
        .try_collect()
        .await?;
    match matches.as_slice() {
        [key] => Ok(*key),
        [] => Err(CliError(format!("no session key starts with {prefix}"))),
        _ => Err(CliError(format!(
            "{} sessions match {prefix}: give more digits",
            matches.len()
        ))),
    }
}

pub(crate) async fn show(url: &str, id: &str) -> Result<(), CliError> {
    let target = target(id)?;
    let store = open_existing(url).await?;
    let key = resolve(&*store, target).await?;
    let Some(record) = store.load(&key).await? else {
        return Err(CliError(format!(
            "no live session with key {}",
            key.to_hex()
        )));
    };
    outln!("key:      {}", key.to_hex())?;
    if let Some(target) = record.moved_to {
        return outln!(
            "moved to: {} (grace period until {})",
            target.to_hex(),
            format::time(record.expires_at)
        );
    }
    let mut text = format!(
        "owner:    {}\ncreated:  {}\nexpires:  {}\nversion:  {}\nsize:     {}\n",
        record.owner.as_deref().unwrap_or("-"),
        format::time(record.created_at),
        format::time(record.expires_at),
        record.version,
        format::bytes(record.size_bytes())
    );
    for (name, value) in &record.data {
        let shown = match codec::value_to_json(name, value) {
            Ok(json) => json.to_string(),
            Err(err) => format!("<{} bytes that do not decode: {err}>", value.len()),
        };
        text.push_str(&format!("  {name} = {shown}\n"));
    }
    output::write(&text)
}

pub(crate) async fn delete(url: &str, id: &str) -> Result<(), CliError> {
    let target = target(id)?;
    let store = open_existing(url).await?;
    let key = resolve(&*store, target).await?;
    if store.delete(&key).await? {
        outln!("deleted session {}", key.short())
    } else {
        Err(CliError(format!("no session with key {}", key.to_hex())))
    }
}

pub(crate) async fn revoke(url: &str, owner: &str) -> Result<(), CliError> {
    let store = open_existing(url).await?;
    require(&*store, "find sessions by owner", |c| c.owner_index)?;
    let ended = store.delete_by_owner(owner).await?;
    outln!("revoked {ended} session(s) of {owner}")
}

async fn count(store: &dyn Store, state: ListState, what: &str) -> Result<u64, CliError> {
    let spinner = spinner(what);
    let filter = ListFilter { owner: None, state };
    let total = list_all(store, filter, PAGE)
        .try_fold(0u64, |n, _| async move { Ok(n + 1) })
        .await;
    spinner.finish_and_clear();
    Ok(total?)
}

/// What `stats` reports as expired and `purge` deletes: expired sessions and expired
/// grace-period pointers ([`Store::count_expired`]); `None` if the store cannot count them.
async fn count_expired(store: &dyn Store) -> Result<Option<u64>, CliError> {
    let spinner = spinner("counting expired sessions");
    let counted = store.count_expired().await;
    spinner.finish_and_clear();
    match counted {
        Ok(n) => Ok(Some(n)),
        Err(err) if err.kind() == ErrorKind::Unsupported => Ok(None),
        Err(err) => Err(err.into()),
    }
}

pub(crate) async fn purge(url: &str) -> Result<(), CliError> {
    let store = open_existing(url).await?;
    let expected = count_expired(&*store).await?.unwrap_or(0);
    let progress = if expected > 0 {
        bar(expected, "purging")
    } else {
        spinner("purging")
    };
    let mut total = 0u64;
    loop {
        let deleted = store.delete_expired_batch(PAGE).await?;
        if deleted == 0 {
            break;
        }
        total += deleted;
        progress.set_position(total.min(expected.max(total)));
    }
    progress.finish_and_clear();
    outln!("purged {total} expired session(s)")
}

pub(crate) async fn stats(url: &str) -> Result<(), CliError> {
    let store = open_existing(url).await?;
    require(&*store, "list sessions", |c| c.iterable)?;
    const BUCKETS: [(usize, &str); 7] = [
        (1 << 10, "< 1 KiB"),
        (4 << 10, "< 4 KiB"),
        (16 << 10, "< 16 KiB"),
        (64 << 10, "< 64 KiB"),
        (256 << 10, "< 256 KiB"),
        (1 << 20, "< 1 MiB"),
        (usize::MAX, ">= 1 MiB"),
    ];
    // Counted as `purge` counts what it deletes: expired sessions and grace-period pointers.
    let expired = count_expired(&*store).await?;
    let spinner = spinner("reading sessions");
    let (mut live, mut total, mut largest) = (0u64, 0usize, 0usize);
    let mut owners = std::collections::BTreeSet::new();
    let mut histogram = [0u64; BUCKETS.len()];
    let mut undecodable = Vec::new();
    let mut pages = Pages::new(&*store, ListFilter::default());
    while let Some(page) = pages.next(PAGE).await? {
        undecodable.extend(page.undecodable);
        for session in page.sessions {
            live += 1;
            let size = session.record.size_bytes();
            total += size;
            largest = largest.max(size);
            if let Some(owner) = session.record.owner {
                owners.insert(owner);
            }
            if let Some(bucket) = BUCKETS.iter().position(|(limit, _)| size < *limit) {
                histogram[bucket] += 1;
            }
        }
    }
    spinner.finish_and_clear();
    let mut text = format!(
        "store:            {} ({})\nlive sessions:    {live}\n",
        store.name(),
        store.capabilities()
    );
    text.push_str(&match expired {
        Some(n) => format!("expired (unpurged): {n}\n"),
        None => "expired (unpurged): unknown (the store cannot count them)\n".to_owned(),
    });
    text.push_str(&if undecodable.is_empty() {
        "undecodable:      0\n".to_owned()
    } else {
        format!("undecodable:      {}\n", undecodable_report(&undecodable))
    });
    text.push_str(&format!(
        "owners:           {}\ntotal size:       {}\nlargest session:  {}\n",
        owners.len(),
        format::bytes(total),
        format::bytes(largest)
    ));
    if live > 0 {
        text.push_str(&format!(
            "average size:     {}\n",
            format::bytes(total / usize::try_from(live).unwrap_or(1))
        ));
    }
    text.push_str("size histogram (live):\n");
    let widest = histogram.iter().copied().max().unwrap_or(0).max(1);
    for ((_, label), n) in BUCKETS.iter().zip(histogram) {
        let width = usize::try_from(n * 40 / widest).unwrap_or(40);
        text.push_str(&format!("  {label:>10} {n:>8} {}\n", "#".repeat(width)));
    }
    output::write(&text)
}

pub(crate) async fn migrate(from: &str, to: &str) -> Result<(), CliError> {
    #[cfg(feature = "import")]
    if let Some(source) = crate::import::Source::parse(from)? {
        return crate::import::run(&source, to).await;
    }
    #[cfg(not(feature = "import"))]
    if from.starts_with("tower-sessions+") || from.starts_with("actix-session+") {
        return Err(CliError(
            "importing tower-sessions or actix-session sessions needs sessionkit-cli built with the `import` feature".into(),
        ));
    }
    let source = open_existing(from).await?;
    require(
        &*source,
        "list sessions (it cannot be migrated from)",
        |c| c.iterable,
    )?;
    let destination = open(to).await?;
    destination.setup().await?;
    let expected = count(&*source, ListState::Live, "counting live sessions").await?;
    let progress = bar(expected, "migrating");
    let copy = copy_all(&*source, &*destination, |done| {
        progress.set_position(done.listed);
    })
    .await;
    let Copied {
        copied,
        present,
        verified,
        listed,
        undecodable,
    } = match copy {
        Ok(copy) => copy,
        Err(err) => {
            progress.abandon();
            return Err(err);
        }
    };
    progress.finish_and_clear();
    outln!(
        "migrated {copied} session(s) from {} to {} ({present} already there); verified {verified} of {} live in the destination",
        source.name(),
        destination.name(),
        listed
    )?;
    if !undecodable.is_empty() {
        return Err(CliError(format!(
            "{} in the source were not copied",
            undecodable_report(&undecodable)
        )));
    }
    if verified < listed {
        return Err(CliError(format!(
            "{} session(s) are missing in the destination (some may have expired during the copy)",
            listed - verified
        )));
    }
    Ok(())
}

/// Sessions a migration writes, or reads back, at once.
const MIGRATE_CONCURRENCY: usize = 16;

/// What [`copy_all`] did.
#[derive(Debug, Default, PartialEq, Eq)]
struct Copied {
    /// Created in the destination.
    copied: u64,
    /// Already in the destination (an earlier, interrupted run).
    present: u64,
    /// Read back from the destination after the copy.
    verified: u64,
    /// Live sessions listed in the source.
    listed: u64,
    /// Source records that do not decode (not copied).
    undecodable: Vec<SessionKey>,
}

/// Copies every live session of `source` into `destination` page by page: a page's sessions
/// are created (insert-only, [`MIGRATE_CONCURRENCY`] at a time) and then read back before
/// the next page is listed, so memory holds one page whatever the store's size; `counted`
/// hears after each page, so a progress bar fed from it advances only for sessions that are
/// copied and verified: its rate and ETA are the whole job's, and it reaches the end when the
/// work does.
async fn copy_all(
    source: &dyn Store,
    destination: &dyn Store,
    mut counted: impl FnMut(&Copied),
) -> Result<Copied, CliError> {
    use futures::StreamExt as _;
    let mut done = Copied::default();
    let mut pages = Pages::new(source, ListFilter::default());
    while let Some(page) = pages.next(PAGE).await? {
        done.undecodable.extend(page.undecodable);
        // The key is the hash of the browser's id, so migrated sessions keep working with the
        // cookies browsers already hold.
        let created: Vec<sessionkit::Result<()>> = futures::stream::iter(&page.sessions)
            .map(|session| destination.create(&session.key, &session.record))
            .buffered(MIGRATE_CONCURRENCY)
            .collect()
            .await;
        for outcome in created {
            match outcome {
                Ok(()) => done.copied += 1,
                Err(err) if err.kind() == ErrorKind::Conflict => done.present += 1,
                Err(err) => return Err(CliError::from(err)),
            }
        }
        let loaded: Vec<_> = futures::stream::iter(&page.sessions)
            .map(|session| destination.load(&session.key))
            .buffered(MIGRATE_CONCURRENCY)
            .collect()
            .await;
        for found in loaded {
            done.verified += u64::from(found?.is_some());
        }
        done.listed += page.sessions.len() as u64;
        counted(&done);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use sessionkit::{MemoryStore, Record, SessionId, Timestamp};

    use super::*;

    /// Progress is reported per page, after the page is copied *and* read back: a bar fed from
    /// it never stands at the end while verification is still to come (it did: a million
    /// reads ran after a full bar with "0s left").
    #[tokio::test]
    async fn migrate_progress_counts_verified_sessions_page_by_page() {
        let (source, destination) = (MemoryStore::new(), MemoryStore::new());
        let now = Timestamp::now();
        let sessions = (PAGE * 2 + 7) as u64;
        for _ in 0..sessions {
            let record = Record::new(now, now.saturating_add(Duration::from_secs(3600)));
            let key = SessionId::generate().expect("id").key();
            source.create(&key, &record).await.expect("create");
        }
        let mut reports = Vec::new();
        let done = copy_all(&source, &destination, |done| {
            reports.push((done.listed, done.copied, done.verified));
        })
        .await
        .expect("copy");
        assert_eq!(
            (done.copied, done.verified, done.listed),
            (sessions, sessions, sessions)
        );
        let page = PAGE as u64;
        assert_eq!(
            reports,
            [
                (page, page, page),
                (2 * page, 2 * page, 2 * page),
                (sessions, sessions, sessions)
            ]
        );
    }
}
