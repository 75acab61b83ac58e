//! `setup`, `list`, `show`, `delete`, `revoke`, `purge`, `stats`, `migrate`.

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use sessionkit::store::list_all;
use sessionkit::{
    Capabilities, ErrorKind, ListFilter, ListState, PageRequest, SessionId, SessionKey, Store,
    StoredSession, Timestamp, codec,
};

use crate::CliError;
use crate::format;

/// How many sessions a listing page or purge step holds.
const PAGE: usize = 500;

pub(crate) async fn open(url: &str) -> Result<Arc<dyn Store>, CliError> {
    sessionkit::open(url).await.map_err(CliError::from)
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

fn spinner(what: &str) -> ProgressBar {
    let spinner = ProgressBar::new_spinner();
    spinner.set_message(what.to_owned());
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner
}

pub(crate) async fn setup(url: &str, print_ddl: bool) -> Result<(), CliError> {
    let store = open(url).await?;
    if print_ddl {
        match store.schema() {
            Some(ddl) => print!("{ddl}"),
            None => println!("-- the {} store has no schema", store.name()),
        }
        return Ok(());
    }
    store.setup().await?;
    println!("{} store is set up", store.name());
    Ok(())
}

pub(crate) async fn list(
    url: &str,
    owner: Option<String>,
    expired: bool,
    limit: usize,
    json: bool,
) -> Result<(), CliError> {
    let store = open(url).await?;
    require(&*store, "list sessions", |c| c.iterable)?;
    let state = if expired {
        ListState::Expired
    } else {
        ListState::Live
    };
    let page = store
        .list(&ListFilter { owner, state }, PageRequest::first(limit))
        .await?;
    if json {
        for session in &page.sessions {
            println!("{}", summary_json(session));
        }
        return Ok(());
    }
    println!(
        "{:<12}  {:<20}  {:<19}  {:<19}  {:>4}  {:>9}",
        "KEY", "OWNER", "CREATED", "EXPIRES", "KEYS", "BYTES"
    );
    for StoredSession { key, record } in &page.sessions {
        println!(
            "{:<12}  {:<20}  {:<19}  {:<19}  {:>4}  {:>9}",
            key.short(),
            record.owner.as_deref().unwrap_or("-"),
            format::time(record.created_at),
            format::time(record.expires_at),
            record.data.len(),
            format::bytes(record.size_bytes()),
        );
    }
    let more = if page.next.is_some() {
        format!(" (more: raise --limit above {limit})")
    } else {
        String::new()
    };
    println!("{} session(s){more}", page.sessions.len());
    Ok(())
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

/// A cookie value, a full key, or a unique key prefix (searched in listable stores).
async fn resolve(store: &dyn Store, text: &str) -> Result<SessionKey, CliError> {
    if let Ok(id) = SessionId::parse(text) {
        return Ok(id.key());
    }
    if let Ok(key) = SessionKey::from_hex(text) {
        return Ok(key);
    }
    let prefix = text.to_ascii_lowercase();
    if prefix.len() < 4 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CliError(format!(
            "{text:?} is not a session id (32 characters), a key (64 hex digits) or a key prefix (4+ hex digits)"
        )));
    }
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
    let store = open(url).await?;
    let key = resolve(&*store, id).await?;
    let Some(record) = store.load(&key).await? else {
        return Err(CliError(format!(
            "no live session with key {}",
            key.to_hex()
        )));
    };
    println!("key:      {}", key.to_hex());
    if let Some(target) = record.moved_to {
        println!(
            "moved to: {} (grace period until {})",
            target.to_hex(),
            format::time(record.expires_at)
        );
        return Ok(());
    }
    println!("owner:    {}", record.owner.as_deref().unwrap_or("-"));
    println!("created:  {}", format::time(record.created_at));
    println!("expires:  {}", format::time(record.expires_at));
    println!("version:  {}", record.version);
    println!("size:     {}", format::bytes(record.size_bytes()));
    for (name, value) in &record.data {
        let shown = match codec::value_to_json(name, value) {
            Ok(json) => json.to_string(),
            Err(err) => format!("<{} bytes that do not decode: {err}>", value.len()),
        };
        println!("  {name} = {shown}");
    }
    Ok(())
}

pub(crate) async fn delete(url: &str, id: &str) -> Result<(), CliError> {
    let store = open(url).await?;
    let key = resolve(&*store, id).await?;
    if store.delete(&key).await? {
        println!("deleted session {}", key.short());
        Ok(())
    } else {
        Err(CliError(format!("no session with key {}", key.to_hex())))
    }
}

pub(crate) async fn revoke(url: &str, owner: &str) -> Result<(), CliError> {
    let store = open(url).await?;
    require(&*store, "find sessions by owner", |c| c.owner_index)?;
    let ended = store.delete_by_owner(owner).await?;
    println!("revoked {ended} session(s) of {owner}");
    Ok(())
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

pub(crate) async fn purge(url: &str) -> Result<(), CliError> {
    let store = open(url).await?;
    let expected = if store.capabilities().iterable {
        count(&*store, ListState::Expired, "counting expired sessions").await?
    } else {
        0
    };
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
    println!("purged {total} expired session(s)");
    Ok(())
}

pub(crate) async fn stats(url: &str) -> Result<(), CliError> {
    let store = open(url).await?;
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
    let spinner = spinner("reading sessions");
    let now = Timestamp::now();
    let (mut live, mut expired, mut total, mut largest) = (0u64, 0u64, 0usize, 0usize);
    let mut owners = std::collections::BTreeSet::new();
    let mut histogram = [0u64; BUCKETS.len()];
    let mut sessions = std::pin::pin!(list_all(
        &*store,
        ListFilter {
            owner: None,
            state: ListState::All
        },
        PAGE
    ));
    while let Some(session) = sessions.try_next().await? {
        if session.record.is_expired(now) {
            expired += 1;
            continue;
        }
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
    spinner.finish_and_clear();
    println!(
        "store:            {} ({})",
        store.name(),
        store.capabilities()
    );
    println!("live sessions:    {live}");
    println!("expired (unpurged): {expired}");
    println!("owners:           {}", owners.len());
    println!("total size:       {}", format::bytes(total));
    println!("largest session:  {}", format::bytes(largest));
    if live > 0 {
        println!(
            "average size:     {}",
            format::bytes(total / usize::try_from(live).unwrap_or(1))
        );
    }
    println!("size histogram (live):");
    let widest = histogram.iter().copied().max().unwrap_or(0).max(1);
    for ((_, label), n) in BUCKETS.iter().zip(histogram) {
        let width = usize::try_from(n * 40 / widest).unwrap_or(40);
        println!("  {label:>10} {n:>8} {}", "#".repeat(width));
    }
    Ok(())
}

pub(crate) async fn migrate(from: &str, to: &str) -> Result<(), CliError> {
    let source = open(from).await?;
    let destination = open(to).await?;
    require(
        &*source,
        "list sessions (it cannot be migrated from)",
        |c| c.iterable,
    )?;
    destination.setup().await?;
    let expected = count(&*source, ListState::Live, "counting live sessions").await?;
    let progress = bar(expected, "migrating");
    let (mut copied, mut present) = (0u64, 0u64);
    let mut keys = Vec::new();
    let mut sessions = std::pin::pin!(list_all(&*source, ListFilter::default(), PAGE));
    while let Some(session) = sessions.try_next().await? {
        // The key is the hash of the browser's id, so migrated sessions keep working with the
        // cookies browsers already hold.
        match destination.create(&session.key, &session.record).await {
            Ok(()) => copied += 1,
            Err(err) if err.kind() == ErrorKind::Conflict => present += 1, // an earlier, interrupted run
            Err(err) => {
                progress.abandon();
                return Err(CliError::from(err));
            }
        }
        keys.push(session.key);
        progress.inc(1);
    }
    progress.finish_and_clear();
    let mut verified = 0u64;
    for key in &keys {
        if destination.load(key).await?.is_some() {
            verified += 1;
        }
    }
    println!(
        "migrated {copied} session(s) from {} to {} ({present} already there); verified {verified} of {} live in the destination",
        source.name(),
        destination.name(),
        keys.len()
    );
    if verified < keys.len() as u64 {
        return Err(CliError(format!(
            "{} session(s) are missing in the destination (some may have expired during the copy)",
            keys.len() as u64 - verified
        )));
    }
    Ok(())
}
