//! # sessionkit-conformance
//!
//! The one conformance suite: every contract of [`Store`], written once, generic over the store,
//! run by every backend's tests. A backend's test file is one macro call:
//!
//! ```ignore
//! sessionkit_conformance::conformance_suite!(async { Some(MemoryStore::new()) });
//! ```
//!
//! The expression is evaluated once per test and must give a fresh, **isolated** store (its own
//! table, namespace or directory), because the suite counts what it finds: cleanup counts and
//! listings must see only the test's own sessions. It yields `None` to skip, which server-backed
//! stores do through [`server_unavailable`] (a skip outside CI, a failure with `CI=true`).
//!
//! Deadlines are real wall-clock times a few hundred milliseconds out, because stores judge
//! expiry by their own clock (for Redis and Memcached, the server's).

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod cleanup;
mod conditions;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "http")]
pub mod logs;
pub mod multiprocess;
mod purge_reports;

pub use conditions::*;
pub use purge_reports::*;

use std::collections::BTreeSet;
use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use sessionkit_core::store::list_all;
use sessionkit_core::{
    ApplyOutcome, Change, CycleOutcome, ErrorKind, ListFilter, ListState, PageRequest, Record,
    SessionId, SessionKey, Store, Timestamp,
};

/// Generates one `#[tokio::test]` per contract for the store that `$make` (an expression giving a
/// future of `Option<impl Store>`) builds.
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr) => {
        $crate::conformance_suite!(@each $make;
            create_then_load,
            create_on_a_taken_key_is_a_conflict,
            load_of_a_missing_key_is_none,
            expired_sessions_are_never_loaded,
            apply_sets_removes_and_clears_in_order,
            a_change_of_thousands_of_keys_applies_whole,
            apply_bumps_the_version_and_moves_deadline_and_owner,
            apply_to_a_missing_session_creates_nothing,
            apply_after_delete_resurrects_nothing,
            apply_after_expiry_resurrects_nothing,
            hundred_concurrent_applies_to_distinct_keys_all_survive,
            concurrent_applies_racing_a_delete_resurrect_nothing,
            conditional_apply_writes_when_unchanged,
            conditional_apply_conflicts_and_writes_nothing,
            conditional_apply_to_a_small_session_moves_all_or_nothing,
            conditions_see_removes_and_clears,
            conditional_apply_to_a_gone_session_is_gone,
            concurrent_conditional_increments_lose_nothing,
            touch_moves_only_the_deadline,
            delete_is_idempotent,
            cycle_moves_the_session,
            cycle_with_grace_leaves_a_pointer_that_expires,
            cycle_of_a_missing_session_is_gone,
            cycle_onto_a_taken_key_is_a_conflict,
            applies_racing_a_cycle_are_moved_or_refused_never_lost,
            delete_expired_counts_and_spares_live_sessions,
            delete_expired_in_batches_reaches_zero,
            count_expired_counts_what_delete_expired_deletes,
            delete_expired_reporting_lists_exactly_the_expired_sessions,
            delete_expired_reporting_in_small_batches_lists_each_session_once,
            delete_expired_reporting_racing_touches_lists_or_extends_each_session,
            extended_sessions_outlive_their_old_deadline,
            owner_index_lists_and_revokes,
            owner_index_follows_owner_changes,
            per_key_reads_return_only_the_asked_keys,
            listing_pages_cover_every_session_once,
            listing_filters_by_owner_and_state,
            values_of_any_bytes_and_size_round_trip,
            values_that_change_size_keep_one_copy,
            setup_is_idempotent
        );
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let Some(store) = ($make).await else { return };
                $crate::$name(::std::sync::Arc::new(store)).await;
            }
        )*
    };
}

/// For server-backed stores' test setup: the server at `url` could not be reached. With
/// `CI=true` this fails the test (CI must run every store); elsewhere it prints a loud notice
/// naming the server (its URL without the password) and returns `None` so the test is skipped.
///
/// # Panics
/// When the environment variable `CI` is `true`.
pub fn server_unavailable<T>(server: &str, url: &str, error: impl Display) -> Option<T> {
    let url = sessionkit_core::backend::redacted_url(url);
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{server} at {url} is required when CI=true, and it is not reachable: {error}");
    }
    eprintln!(
        "\n!!! SKIPPED: this test needs {server} at {url}, which is not reachable ({error}).\n\
         !!! Start it (see .ci/run) to run the test; CI=true makes this a failure.\n"
    );
    None
}

/// A fresh random session key.
pub fn fresh_key() -> SessionKey {
    SessionId::generate()
        .expect("the OS random number generator")
        .key()
}

fn now() -> Timestamp {
    Timestamp::now()
}

const HOUR: Duration = Duration::from_secs(3600);
/// How long "short-lived" test sessions live, and how long the suite waits for them to expire.
const SHORT: Duration = Duration::from_millis(400);
const PAST_SHORT: Duration = Duration::from_millis(900);

/// A live record (one hour) with the given data.
pub fn record_with(pairs: &[(&str, &[u8])]) -> Record {
    let mut record = Record::new(now(), now().saturating_add(HOUR));
    for (k, v) in pairs {
        record.data.insert((*k).to_owned(), v.to_vec());
    }
    record
}

fn short_lived(pairs: &[(&str, &[u8])]) -> Record {
    Record {
        expires_at: now().saturating_add(SHORT),
        ..record_with(pairs)
    }
}

fn owned(owner: &str) -> Record {
    Record {
        owner: Some(owner.to_owned()),
        ..record_with(&[("k", b"v")])
    }
}

async fn create<S: Store>(store: &S, record: &Record) -> SessionKey {
    let key = fresh_key();
    store.create(&key, record).await.expect("create");
    key
}

async fn load<S: Store>(store: &S, key: &SessionKey) -> Option<Record> {
    store.load(key).await.expect("load")
}

fn set(pairs: &[(&str, &[u8])]) -> Change {
    let mut change = Change::default();
    for (k, v) in pairs {
        change.set((*k).to_owned(), v.to_vec());
    }
    change
}

fn keys_of(record: &Record) -> Vec<&str> {
    record.data.keys().map(String::as_str).collect()
}

/// `create` stores everything; `load` returns it as created.
pub async fn create_then_load<S: Store>(store: Arc<S>) {
    let mut record = record_with(&[("user", b"alice"), ("cart", &[1, 2, 3])]);
    record.owner = Some("alice".into());
    let key = create(&*store, &record).await;
    let loaded = load(&*store, &key).await.expect("the session just created");
    assert_eq!(loaded, record);
}

/// `create` is insert-only: a taken key is a `Conflict` and the first session is untouched.
pub async fn create_on_a_taken_key_is_a_conflict<S: Store>(store: Arc<S>) {
    let first = record_with(&[("who", b"first")]);
    let key = create(&*store, &first).await;
    let err = store
        .create(&key, &record_with(&[("who", b"second")]))
        .await
        .expect_err("taken");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert_eq!(
        load(&*store, &key).await.expect("first session").data,
        first.data
    );
}

/// `load` of a key never created is `Ok(None)`.
pub async fn load_of_a_missing_key_is_none<S: Store>(store: Arc<S>) {
    assert_eq!(load(&*store, &fresh_key()).await, None);
    assert_eq!(
        store
            .load_keys(&fresh_key(), &["a"])
            .await
            .expect("load_keys"),
        None
    );
}

/// A session past its deadline is `Ok(None)`, whether it expired before or after creation.
pub async fn expired_sessions_are_never_loaded<S: Store>(store: Arc<S>) {
    let already = Record {
        expires_at: now().saturating_sub(Duration::from_secs(1)),
        ..record_with(&[])
    };
    let key = fresh_key();
    store
        .create(&key, &already)
        .await
        .expect("create an expired record");
    assert_eq!(load(&*store, &key).await, None);

    let key = create(&*store, &short_lived(&[("a", b"1")])).await;
    assert!(
        load(&*store, &key).await.is_some(),
        "live before its deadline"
    );
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(
        load(&*store, &key).await,
        None,
        "expired after its deadline"
    );
    assert_eq!(
        store.load_keys(&key, &["a"]).await.expect("load_keys"),
        None
    );
}

/// `apply` clears, then removes, then sets.
pub async fn apply_sets_removes_and_clears_in_order<S: Store>(store: Arc<S>) {
    let key = create(
        &*store,
        &record_with(&[("a", b"1"), ("b", b"2"), ("c", b"3")]),
    )
    .await;
    let mut change = set(&[("d", b"4"), ("a", b"10")]);
    change.remove("b");
    assert!(matches!(
        store.apply(&key, &change).await.expect("apply"),
        ApplyOutcome::Applied { .. }
    ));
    let loaded = load(&*store, &key).await.expect("live");
    assert_eq!(keys_of(&loaded), ["a", "c", "d"]);
    assert_eq!(loaded.data["a"], b"10");

    let mut clear = set(&[("only", b"x")]);
    clear.cleared = true;
    let _ = store.apply(&key, &clear).await.expect("apply clear");
    assert_eq!(keys_of(&load(&*store, &key).await.expect("live")), ["only"]);

    let mut empty = Change::default();
    empty.clear();
    let _ = store.apply(&key, &empty).await.expect("apply clear-all");
    assert!(
        load(&*store, &key)
            .await
            .expect("a cleared session still exists")
            .data
            .is_empty()
    );
}

/// One change that sets and removes thousands of keys applies whole (stores that pass keys as
/// arguments must not hit a limit on how many one statement or script call takes).
pub async fn a_change_of_thousands_of_keys_applies_whole<S: Store>(store: Arc<S>) {
    const KEYS: usize = 5000;
    let key = create(&*store, &record_with(&[("keep", b"1")])).await;
    let (mut sets, mut swaps) = (Change::default(), Change::default());
    for i in 0..KEYS {
        sets.set(format!("old{i}"), i.to_string().into_bytes());
        swaps.remove(&format!("old{i}"));
        swaps.set(format!("new{i}"), vec![b'n'; 8]);
    }
    for change in [&sets, &swaps] {
        let outcome = store
            .apply(&key, change)
            .await
            .expect("apply thousands of keys");
        assert!(matches!(outcome, ApplyOutcome::Applied { .. }));
    }
    let loaded = load(&*store, &key).await.expect("live");
    assert_eq!(
        loaded.data.len(),
        KEYS + 1,
        "keep + every new key, no old one"
    );
    assert!(
        loaded
            .data
            .keys()
            .all(|k| k == "keep" || k.starts_with("new"))
    );
    assert_eq!(loaded.data["new4999"], vec![b'n'; 8]);
}

/// `apply` bumps the version and sets deadline and owner when the change says so.
pub async fn apply_bumps_the_version_and_moves_deadline_and_owner<S: Store>(store: Arc<S>) {
    let created = record_with(&[("a", b"1")]);
    let key = create(&*store, &created).await;
    let later = created.expires_at.saturating_add(HOUR);
    let mut change = set(&[("b", b"2")]);
    change.expires_at = Some(later);
    change.owner = Some(Some("carol".into()));
    let outcome = store.apply(&key, &change).await.expect("apply");
    assert_eq!(outcome, ApplyOutcome::Applied { version: 2 });
    let loaded = load(&*store, &key).await.expect("live");
    assert_eq!(
        (loaded.version, loaded.expires_at, loaded.owner.as_deref()),
        (2, later, Some("carol"))
    );
    assert_eq!(
        loaded.created_at, created.created_at,
        "created_at never moves"
    );

    let drop_owner = Change {
        owner: Some(None),
        ..Change::default()
    };
    assert_eq!(
        store.apply(&key, &drop_owner).await.expect("apply"),
        ApplyOutcome::Applied { version: 3 }
    );
    assert_eq!(load(&*store, &key).await.expect("live").owner, None);
}

/// `apply` never upserts: a key nobody created stays absent.
pub async fn apply_to_a_missing_session_creates_nothing<S: Store>(store: Arc<S>) {
    let key = fresh_key();
    assert_eq!(
        store
            .apply(&key, &set(&[("a", b"1")]))
            .await
            .expect("apply"),
        ApplyOutcome::Gone
    );
    assert_eq!(
        store
            .touch(&key, now().saturating_add(HOUR))
            .await
            .expect("touch"),
        ApplyOutcome::Gone
    );
    assert_eq!(load(&*store, &key).await, None);
}

/// A save that lands after a logout does not bring the session back.
pub async fn apply_after_delete_resurrects_nothing<S: Store>(store: Arc<S>) {
    let key = create(&*store, &record_with(&[("a", b"1")])).await;
    assert!(store.delete(&key).await.expect("delete"));
    assert_eq!(
        store
            .apply(&key, &set(&[("a", b"2")]))
            .await
            .expect("apply"),
        ApplyOutcome::Gone
    );
    assert_eq!(load(&*store, &key).await, None);
}

/// A save that lands after expiry does not extend or revive the session.
pub async fn apply_after_expiry_resurrects_nothing<S: Store>(store: Arc<S>) {
    let key = create(&*store, &short_lived(&[("a", b"1")])).await;
    tokio::time::sleep(PAST_SHORT).await;
    let mut change = set(&[("a", b"2")]);
    change.expires_at = Some(now().saturating_add(HOUR));
    assert_eq!(
        store.apply(&key, &change).await.expect("apply"),
        ApplyOutcome::Gone
    );
    assert_eq!(
        store
            .touch(&key, now().saturating_add(HOUR))
            .await
            .expect("touch"),
        ApplyOutcome::Gone
    );
    assert_eq!(load(&*store, &key).await, None);
}

/// 100 tasks, each setting its own key of one session at the same time: all 100 survive.
pub async fn hundred_concurrent_applies_to_distinct_keys_all_survive<S: Store>(store: Arc<S>) {
    let key = create(&*store, &record_with(&[("base", b"0")])).await;
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let change = set(&[(&format!("k{i:03}"), format!("v{i}").as_bytes())]);
                store.apply(&key, &change).await
            })
        })
        .collect();
    for task in tasks {
        let outcome = task.await.expect("task").expect("apply");
        assert!(
            matches!(outcome, ApplyOutcome::Applied { .. }),
            "{outcome:?}"
        );
    }
    let loaded = load(&*store, &key).await.expect("live");
    assert_eq!(
        loaded.data.len(),
        101,
        "every concurrent write survives: {:?}",
        keys_of(&loaded)
    );
    for i in 0..100 {
        assert_eq!(loaded.data[&format!("k{i:03}")], format!("v{i}").as_bytes());
    }
    assert_eq!(loaded.version, 101, "each apply bumped the version once");
}

/// Applies racing a delete either land before it or find the session gone; none re-creates it.
pub async fn concurrent_applies_racing_a_delete_resurrect_nothing<S: Store>(store: Arc<S>) {
    let key = create(&*store, &record_with(&[])).await;
    let writers: Vec<_> = (0..20)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.apply(&key, &set(&[(&format!("k{i}"), b"v")])).await })
        })
        .collect();
    let deleter = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.delete(&key).await })
    };
    for writer in writers {
        let _ = writer.await.expect("task").expect("apply");
    }
    deleter.await.expect("task").expect("delete");
    assert_eq!(
        load(&*store, &key).await,
        None,
        "the deleted session stays deleted"
    );
}

/// `touch` moves the deadline and nothing else.
pub async fn touch_moves_only_the_deadline<S: Store>(store: Arc<S>) {
    let created = record_with(&[("a", b"1")]);
    let key = create(&*store, &created).await;
    let later = created.expires_at.saturating_add(HOUR);
    assert!(matches!(
        store.touch(&key, later).await.expect("touch"),
        ApplyOutcome::Applied { .. }
    ));
    let loaded = load(&*store, &key).await.expect("live");
    assert_eq!((loaded.expires_at, &loaded.data), (later, &created.data));
}

/// Deleting twice is fine; the second finds nothing.
pub async fn delete_is_idempotent<S: Store>(store: Arc<S>) {
    let key = create(&*store, &record_with(&[])).await;
    assert!(store.delete(&key).await.expect("delete"));
    assert!(!store.delete(&key).await.expect("delete again"));
    assert!(
        !store
            .delete(&fresh_key())
            .await
            .expect("delete never-created")
    );
}

/// `cycle` without grace: data, owner and deadline move; the old key is gone at once.
pub async fn cycle_moves_the_session<S: Store>(store: Arc<S>) {
    let created = Record {
        owner: Some("dave".into()),
        ..record_with(&[("a", b"1")])
    };
    let old = create(&*store, &created).await;
    let new = fresh_key();
    assert_eq!(
        store.cycle(&old, &new, None).await.expect("cycle"),
        CycleOutcome::Cycled
    );
    let moved = load(&*store, &new).await.expect("under the new key");
    assert_eq!(
        (
            &moved.data,
            &moved.owner,
            moved.expires_at,
            moved.created_at
        ),
        (
            &created.data,
            &created.owner,
            created.expires_at,
            created.created_at
        )
    );
    assert!(moved.version > created.version);
    assert_eq!(load(&*store, &old).await, None);
    assert_eq!(
        store
            .apply(&old, &set(&[("b", b"2")]))
            .await
            .expect("apply"),
        ApplyOutcome::Gone
    );
    if store.capabilities().owner_index {
        let owned: Vec<SessionKey> = store
            .by_owner("dave")
            .await
            .expect("by_owner")
            .into_iter()
            .map(|s| s.key)
            .collect();
        assert_eq!(owned, vec![new]);
    }
}

/// `cycle` with grace: the old key points at the new one until the grace ends, refuses writes,
/// and is never listed; then it is gone and the session lives on.
pub async fn cycle_with_grace_leaves_a_pointer_that_expires<S: Store>(store: Arc<S>) {
    let old = create(&*store, &record_with(&[("a", b"1")])).await;
    let new = fresh_key();
    let until = now().saturating_add(SHORT);
    assert_eq!(
        store.cycle(&old, &new, Some(until)).await.expect("cycle"),
        CycleOutcome::Cycled
    );
    let pointer = load(&*store, &old)
        .await
        .expect("a pointer during the grace period");
    assert_eq!(pointer.moved_to, Some(new));
    assert!(pointer.data.is_empty() && pointer.owner.is_none());
    assert_eq!(
        store
            .apply(&old, &set(&[("b", b"2")]))
            .await
            .expect("apply"),
        ApplyOutcome::Gone
    );
    let new_id_taken = store
        .create(&old, &record_with(&[]))
        .await
        .expect_err("pointer holds the key");
    assert_eq!(new_id_taken.kind(), ErrorKind::Conflict);
    if store.capabilities().iterable {
        let listed: Vec<SessionKey> = list_all(
            &*store,
            ListFilter {
                state: ListState::All,
                ..ListFilter::default()
            },
            10,
        )
        .map_ok(|s| s.key)
        .try_collect()
        .await
        .expect("list");
        assert!(!listed.contains(&old), "pointers are never listed");
        assert!(listed.contains(&new));
    }
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(
        load(&*store, &old).await,
        None,
        "the pointer is gone after the grace period"
    );
    assert_eq!(
        load(&*store, &new).await.expect("session lives on").data["a"],
        b"1"
    );
}

/// `cycle` of a missing or deleted session writes nothing.
pub async fn cycle_of_a_missing_session_is_gone<S: Store>(store: Arc<S>) {
    let new = fresh_key();
    assert_eq!(
        store.cycle(&fresh_key(), &new, None).await.expect("cycle"),
        CycleOutcome::Gone
    );
    assert_eq!(load(&*store, &new).await, None);
    let expired = create(&*store, &short_lived(&[])).await;
    tokio::time::sleep(PAST_SHORT).await;
    let new = fresh_key();
    assert_eq!(
        store
            .cycle(&expired, &new, Some(now().saturating_add(HOUR)))
            .await
            .expect("cycle"),
        CycleOutcome::Gone
    );
    assert_eq!(load(&*store, &new).await, None);
}

/// `cycle` onto a taken key is a `Conflict` and changes neither session.
pub async fn cycle_onto_a_taken_key_is_a_conflict<S: Store>(store: Arc<S>) {
    let a = create(&*store, &record_with(&[("who", b"a")])).await;
    let b = create(&*store, &record_with(&[("who", b"b")])).await;
    let err = store.cycle(&a, &b, None).await.expect_err("taken");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert_eq!(load(&*store, &a).await.expect("a").data["who"], b"a");
    assert_eq!(load(&*store, &b).await.expect("b").data["who"], b"b");
}

/// Applies racing a `cycle`: each either lands before the move (and is carried to the new key)
/// or finds the old key gone. None that reported `Applied` may be missing afterwards.
pub async fn applies_racing_a_cycle_are_moved_or_refused_never_lost<S: Store>(store: Arc<S>) {
    let old = create(&*store, &record_with(&[("base", b"0")])).await;
    let new = fresh_key();
    let writers: Vec<_> = (0..30)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let name = format!("k{i:02}");
                let outcome = store
                    .apply(&old, &set(&[(&name, b"v")]))
                    .await
                    .expect("apply");
                (name, outcome)
            })
        })
        .collect();
    tokio::task::yield_now().await;
    let cycled = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.cycle(&old, &new, None).await })
    };
    let mut applied = Vec::new();
    for writer in writers {
        let (name, outcome) = writer.await.expect("task");
        if matches!(outcome, ApplyOutcome::Applied { .. }) {
            applied.push(name);
        }
    }
    assert_eq!(
        cycled.await.expect("task").expect("cycle"),
        CycleOutcome::Cycled
    );
    let moved = load(&*store, &new)
        .await
        .expect("the session under its new key");
    for name in &applied {
        assert!(
            moved.data.contains_key(name),
            "{name} was applied but did not move with the session"
        );
    }
    assert_eq!(load(&*store, &old).await, None);
}

/// `delete_expired` deletes exactly the expired records (stores with native expiry may find
/// that their server already did) and spares live ones.
pub async fn delete_expired_counts_and_spares_live_sessions<S: Store>(store: Arc<S>) {
    let mut live = Vec::new();
    for _ in 0..3 {
        live.push(create(&*store, &record_with(&[("live", b"1")])).await);
    }
    for _ in 0..5 {
        create(&*store, &short_lived(&[("doomed", b"1")])).await;
    }
    tokio::time::sleep(PAST_SHORT).await;
    let count = store.delete_expired().await.expect("delete_expired");
    if store.capabilities().native_ttl {
        assert!(count <= 5, "{count}");
    } else {
        assert_eq!(count, 5);
    }
    assert_eq!(
        store.delete_expired().await.expect("again"),
        0,
        "nothing left the second time"
    );
    for key in &live {
        assert!(load(&*store, key).await.is_some());
    }
    if store.capabilities().iterable {
        let all = store
            .list(
                &ListFilter {
                    state: ListState::All,
                    ..ListFilter::default()
                },
                PageRequest::first(100),
            )
            .await
            .expect("list");
        assert_eq!(all.sessions.len(), 3, "only the live sessions remain");
    }
}

/// A deadline moved by `apply` or `touch` is the one expiry and cleanup go by: past the old
/// deadline, the session still loads and `delete_expired` leaves it (and its data) alone.
pub async fn extended_sessions_outlive_their_old_deadline<S: Store>(store: Arc<S>) {
    let by_apply = create(&*store, &short_lived(&[("a", b"1")])).await;
    let by_touch = create(&*store, &short_lived(&[("t", b"1")])).await;
    let later = now().saturating_add(HOUR);
    let mut change = set(&[("b", b"2")]);
    change.expires_at = Some(later);
    assert!(matches!(
        store.apply(&by_apply, &change).await.expect("apply"),
        ApplyOutcome::Applied { .. }
    ));
    assert!(matches!(
        store.touch(&by_touch, later).await.expect("touch"),
        ApplyOutcome::Applied { .. }
    ));
    tokio::time::sleep(PAST_SHORT).await;
    store.delete_expired().await.expect("delete_expired");
    let applied = load(&*store, &by_apply).await.expect("extended by apply");
    assert_eq!(
        (keys_of(&applied), applied.expires_at),
        (vec!["a", "b"], later)
    );
    let touched = load(&*store, &by_touch).await.expect("extended by touch");
    assert_eq!((keys_of(&touched), touched.expires_at), (vec!["t"], later));
}

/// Cleanup in small steps (what the CLI's progress bar drives) deletes the same sessions and
/// ends with a step that finds nothing.
pub async fn delete_expired_in_batches_reaches_zero<S: Store>(store: Arc<S>) {
    let live = create(&*store, &record_with(&[("live", b"1")])).await;
    for _ in 0..7 {
        create(&*store, &short_lived(&[])).await;
    }
    tokio::time::sleep(PAST_SHORT).await;
    let (mut total, mut steps) = (0, 0);
    loop {
        let deleted = store.delete_expired_batch(3).await.expect("batch");
        steps += 1;
        assert!(steps < 20, "batches never reached zero");
        if deleted == 0 {
            break;
        }
        total += deleted;
    }
    if store.capabilities().native_ttl {
        assert!(total <= 7, "{total}");
    } else {
        assert_eq!(total, 7);
    }
    assert!(load(&*store, &live).await.is_some());
}

/// `count_expired` counts what `delete_expired` then deletes: expired sessions and the
/// expired grace-period pointer a cycled id left, alike (what `sessionkit stats` shows before
/// `sessionkit purge`). Stores with native expiry may find that their server already dropped
/// them; a store that cannot list may answer `Unsupported`.
pub async fn count_expired_counts_what_delete_expired_deletes<S: Store>(store: Arc<S>) {
    let live = create(&*store, &record_with(&[("live", b"1")])).await;
    for _ in 0..3 {
        create(&*store, &short_lived(&[("doomed", b"1")])).await;
    }
    let cycled = create(&*store, &record_with(&[("a", b"1")])).await;
    let until = now().saturating_add(SHORT);
    assert_eq!(
        store
            .cycle(&cycled, &fresh_key(), Some(until))
            .await
            .expect("cycle"),
        CycleOutcome::Cycled
    );
    tokio::time::sleep(PAST_SHORT).await;
    let counted = match store.count_expired().await {
        Ok(counted) => counted,
        Err(err) if err.kind() == ErrorKind::Unsupported => {
            assert!(!store.capabilities().iterable, "a listable store counts");
            return;
        }
        Err(err) => panic!("count_expired: {err:?}"),
    };
    let deleted = store.delete_expired().await.expect("delete_expired");
    if store.capabilities().native_ttl {
        assert!(counted <= 4 && deleted <= 4, "{counted} {deleted}");
    } else {
        assert_eq!(
            (counted, deleted),
            (4, 4),
            "three sessions and one pointer, counted and deleted"
        );
    }
    assert_eq!(store.count_expired().await.expect("count again"), 0);
    assert!(load(&*store, &live).await.is_some());
}

/// The owner index lists an owner's live sessions and revokes them all.
pub async fn owner_index_lists_and_revokes<S: Store>(store: Arc<S>) {
    if !store.capabilities().owner_index {
        let err = store.by_owner("alice").await.expect_err("no owner index");
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        let err = store
            .delete_by_owner("alice")
            .await
            .expect_err("no owner index");
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        return;
    }
    let mut alice = BTreeSet::new();
    for _ in 0..3 {
        alice.insert(create(&*store, &owned("alice")).await);
    }
    let bob = create(&*store, &owned("bob")).await;
    let stale = Record {
        expires_at: now().saturating_add(SHORT),
        ..owned("alice")
    };
    create(&*store, &stale).await;
    tokio::time::sleep(PAST_SHORT).await;

    let listed: BTreeSet<SessionKey> = store
        .by_owner("alice")
        .await
        .expect("by_owner")
        .into_iter()
        .map(|s| s.key)
        .collect();
    assert_eq!(listed, alice, "exactly alice's live sessions");
    assert!(store.by_owner("nobody").await.expect("by_owner").is_empty());
    assert_eq!(store.delete_by_owner("alice").await.expect("revoke"), 3);
    assert!(store.by_owner("alice").await.expect("by_owner").is_empty());
    for key in &alice {
        assert_eq!(load(&*store, key).await, None);
    }
    assert!(
        load(&*store, &bob).await.is_some(),
        "other owners are untouched"
    );
    assert_eq!(
        store.delete_by_owner("alice").await.expect("revoke again"),
        0
    );
}

/// Changing a session's owner moves it in the index.
pub async fn owner_index_follows_owner_changes<S: Store>(store: Arc<S>) {
    if !store.capabilities().owner_index {
        return;
    }
    let key = create(&*store, &owned("erin")).await;
    let mut change = Change {
        owner: Some(Some("frank".into())),
        ..Change::default()
    };
    let _ = store.apply(&key, &change).await.expect("apply");
    assert!(store.by_owner("erin").await.expect("by_owner").is_empty());
    let frank = store.by_owner("frank").await.expect("by_owner");
    assert_eq!(frank.iter().map(|s| s.key).collect::<Vec<_>>(), vec![key]);
    assert_eq!(frank[0].record.data["k"], b"v");
    change.owner = Some(None);
    let _ = store.apply(&key, &change).await.expect("apply");
    assert!(store.by_owner("frank").await.expect("by_owner").is_empty());
    assert_eq!(store.delete_by_owner("frank").await.expect("revoke"), 0);
    assert!(
        load(&*store, &key).await.is_some(),
        "an unowned session is not revoked with its old owner"
    );
}

/// `load_keys` returns the asked keys (that exist) and full metadata.
pub async fn per_key_reads_return_only_the_asked_keys<S: Store>(store: Arc<S>) {
    let big = vec![7u8; 64 * 1024];
    let created = Record {
        owner: Some("gina".into()),
        ..record_with(&[("small", b"s"), ("big", &big), ("other", b"o")])
    };
    let key = create(&*store, &created).await;
    let partial = store
        .load_keys(&key, &["small", "other", "absent"])
        .await
        .expect("load_keys")
        .expect("live");
    assert_eq!(keys_of(&partial), ["other", "small"]);
    assert_eq!(partial.data["small"], b"s");
    assert_eq!(
        (
            partial.created_at,
            partial.expires_at,
            partial.owner.as_deref(),
            partial.version
        ),
        (
            created.created_at,
            created.expires_at,
            Some("gina"),
            created.version
        )
    );
    let none = store
        .load_keys(&key, &[])
        .await
        .expect("load_keys")
        .expect("live");
    assert!(none.data.is_empty());
}

/// Keyset pages: ascending keys, every session exactly once, `next` only when there is more.
pub async fn listing_pages_cover_every_session_once<S: Store>(store: Arc<S>) {
    if !store.capabilities().iterable {
        let err = store
            .list(&ListFilter::default(), PageRequest::first(10))
            .await
            .expect_err("not iterable");
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        return;
    }
    let mut created = BTreeSet::new();
    for _ in 0..25 {
        created.insert(create(&*store, &record_with(&[("k", b"v")])).await);
    }
    let mut seen = Vec::new();
    let mut request = PageRequest::first(10);
    let mut sizes = Vec::new();
    loop {
        let page = store
            .list(&ListFilter::default(), request)
            .await
            .expect("list");
        sizes.push(page.sessions.len());
        seen.extend(page.sessions.iter().map(|s| s.key));
        assert!(
            page.sessions.iter().all(|s| s.record.data["k"] == b"v"),
            "records come whole"
        );
        match page.next {
            Some(after) => {
                request = PageRequest {
                    after: Some(after),
                    limit: 10,
                }
            }
            None => break,
        }
    }
    assert_eq!(sizes, [10, 10, 5]);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "ascending key order");
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), created);
    let streamed: Vec<_> = list_all(&*store, ListFilter::default(), 7)
        .try_collect()
        .await
        .expect("stream");
    assert_eq!(streamed.len(), 25);
}

/// Listing filters by owner and by expiry state.
pub async fn listing_filters_by_owner_and_state<S: Store>(store: Arc<S>) {
    if !store.capabilities().iterable {
        return;
    }
    let hank = create(&*store, &owned("hank")).await;
    create(&*store, &owned("ivy")).await;
    let stale = create(&*store, &short_lived(&[])).await;
    tokio::time::sleep(PAST_SHORT).await;
    let page = PageRequest::first(100);
    let keys = |p: sessionkit_core::Page| p.sessions.into_iter().map(|s| s.key).collect::<Vec<_>>();
    let by_hank = ListFilter {
        owner: Some("hank".into()),
        ..ListFilter::default()
    };
    assert_eq!(
        keys(store.list(&by_hank, page).await.expect("list")),
        vec![hank]
    );
    let live = store
        .list(&ListFilter::default(), page)
        .await
        .expect("list");
    assert_eq!(live.sessions.len(), 2);
    let all = store
        .list(
            &ListFilter {
                state: ListState::All,
                ..ListFilter::default()
            },
            page,
        )
        .await
        .expect("list");
    let expired = store
        .list(
            &ListFilter {
                state: ListState::Expired,
                ..ListFilter::default()
            },
            page,
        )
        .await
        .expect("list");
    if store.capabilities().native_ttl {
        assert!(all.sessions.len() >= 2 && expired.sessions.len() <= 1);
    } else {
        assert_eq!(all.sessions.len(), 3);
        assert_eq!(keys(expired), vec![stale]);
    }
}

/// Keys and values of any bytes and of half a mebibyte round-trip unchanged.
pub async fn values_of_any_bytes_and_size_round_trip<S: Store>(store: Arc<S>) {
    let all_bytes: Vec<u8> = (0..=255).collect();
    let large: Vec<u8> = (0..512 * 1024).map(|i: u32| (i % 251) as u8).collect();
    let record = record_with(&[
        ("bytes", &all_bytes),
        ("empty", b""),
        ("ünïcödé key ✓", b"v"),
        ("with'quote\"and;semi", b"v"),
        ("large", &large),
    ]);
    let key = create(&*store, &record).await;
    assert_eq!(load(&*store, &key).await.expect("live").data, record.data);
    let mut change = set(&[("large", &large[..1000])]);
    change.set("more".into(), large.clone());
    let _ = store.apply(&key, &change).await.expect("apply");
    let loaded = load(&*store, &key).await.expect("live");
    assert_eq!(
        (loaded.data["large"].len(), &loaded.data["more"]),
        (1000, &large)
    );
}

/// A value that grows or shrinks past any size threshold a store uses (the SQL stores keep
/// small values inline and large ones in rows of their own) keeps exactly one copy, the
/// latest: through loads, per-key loads, removal, a cycle and clearing.
pub async fn values_that_change_size_keep_one_copy<S: Store>(store: Arc<S>) {
    let big = vec![b'b'; 8 * 1024];
    let bigger = vec![b'B'; 16 * 1024];
    let key = create(
        &*store,
        &record_with(&[
            ("grows", b"s"),
            ("shrinks", &big),
            ("gone", &big),
            ("stays", b"x"),
        ]),
    )
    .await;
    let mut change = set(&[("grows", &bigger), ("shrinks", b"small")]);
    change.remove("gone");
    let _ = store.apply(&key, &change).await.expect("apply");
    let loaded = load(&*store, &key).await.expect("live");
    assert_eq!(keys_of(&loaded), ["grows", "shrinks", "stays"]);
    assert_eq!(
        (&loaded.data["grows"], &loaded.data["shrinks"]),
        (&bigger, &b"small".to_vec())
    );
    let partial = store
        .load_keys(&key, &["grows", "shrinks", "gone"])
        .await
        .expect("load_keys")
        .expect("live");
    assert_eq!(partial.data, {
        let mut want = loaded.data.clone();
        want.remove("stays");
        want
    });

    let _ = store
        .apply(&key, &set(&[("grows", b"s2"), ("shrinks", &bigger)]))
        .await
        .expect("apply back");
    let back = load(&*store, &key).await.expect("live");
    assert_eq!(
        (&back.data["grows"], &back.data["shrinks"], back.data.len()),
        (&b"s2".to_vec(), &bigger, 3)
    );

    let moved = fresh_key();
    assert_eq!(
        store.cycle(&key, &moved, None).await.expect("cycle"),
        CycleOutcome::Cycled
    );
    assert_eq!(load(&*store, &moved).await.expect("moved").data, back.data);

    let mut clear = set(&[("after", &big), ("tiny", b"t")]);
    clear.cleared = true;
    let _ = store.apply(&moved, &clear).await.expect("apply clear");
    let cleared = load(&*store, &moved).await.expect("live");
    assert_eq!(keys_of(&cleared), ["after", "tiny"]);
    assert_eq!(cleared.data["after"], big);
}

/// `setup` can run again and again.
pub async fn setup_is_idempotent<S: Store>(store: Arc<S>) {
    store.setup().await.expect("setup");
    store.setup().await.expect("setup again");
    let key = create(&*store, &record_with(&[("a", b"1")])).await;
    store.setup().await.expect("setup with data present");
    assert!(
        load(&*store, &key).await.is_some(),
        "setup keeps existing sessions"
    );
}
