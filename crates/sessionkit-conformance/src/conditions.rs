//! The contracts of conditional changes ([`Change::expected`]): what makes a read-modify-write
//! of one key safe across requests and processes.

use std::sync::Arc;

use sessionkit_core::{ApplyOutcome, Change, CycleOutcome, Record, SessionKey, Store};

use crate::{HOUR, PAST_SHORT, create, fresh_key, keys_of, load, now, record_with, short_lived};

/// A change that sets `key` to `value` if it still holds `seen`.
fn set_if(key: &str, seen: Option<&[u8]>, value: &[u8]) -> Change {
    let mut change = Change::default();
    change.expect(key, seen);
    change.set(key.to_owned(), value.to_vec());
    change
}

/// What a conditional change must leave alone when it conflicts: everything.
fn unchanged(before: &Record, after: &Record) {
    assert_eq!(after.data, before.data, "a conflicting change wrote data");
    assert_eq!(
        after.version, before.version,
        "a conflict bumped the version"
    );
    assert_eq!(
        after.expires_at, before.expires_at,
        "a conflict moved the deadline"
    );
    assert_eq!(after.owner, before.owner, "a conflict changed the owner");
}

/// A conditional change whose conditions hold is applied whole: present values, absent keys,
/// empty values and values large enough to live apart from the session row.
pub async fn conditional_apply_writes_when_unchanged<S: Store>(store: Arc<S>) {
    let large = vec![7u8; 300 * 1024];
    let key = create(
        &*store,
        &record_with(&[("n", b"1"), ("empty", b""), ("large", &large)]),
    )
    .await;
    let mut change = set_if("n", Some(b"1"), b"2");
    change.expect("fresh", None);
    change.set("fresh".into(), b"new".to_vec());
    change.expect("empty", Some(b""));
    change.set("empty".into(), b"filled".to_vec());
    change.expect("large", Some(&large));
    change.set("large".into(), vec![8u8; 2000]);
    change.set("blind".into(), b"b".to_vec());
    let outcome = store.apply(&key, &change).await.expect("apply");
    assert_eq!(outcome, ApplyOutcome::Applied { version: 2 });
    let loaded = load(&*store, &key).await.expect("live");
    assert_eq!(keys_of(&loaded), ["blind", "empty", "fresh", "large", "n"]);
    assert_eq!(loaded.data["n"], b"2");
    assert_eq!(loaded.data["empty"], b"filled");
    assert_eq!(loaded.data["large"], vec![8u8; 2000]);

    let mut remove = Change::default();
    remove.expect("fresh", Some(b"new"));
    remove.remove("fresh");
    assert_eq!(
        store
            .apply(&key, &remove)
            .await
            .expect("conditional remove"),
        ApplyOutcome::Applied { version: 3 }
    );
    assert!(
        !load(&*store, &key)
            .await
            .expect("live")
            .data
            .contains_key("fresh")
    );
}

/// A condition that no longer holds is a `Conflict`, and nothing of that change is written:
/// not its other keys, not its deadline, not its owner, not a version bump.
pub async fn conditional_apply_conflicts_and_writes_nothing<S: Store>(store: Arc<S>) {
    let large = vec![3u8; 5000];
    let key = create(
        &*store,
        &record_with(&[("n", b"1"), ("empty", b""), ("large", &large)]),
    )
    .await;
    assert!(matches!(
        store
            .apply(&key, &set_if("n", Some(b"1"), b"2"))
            .await
            .expect("first"),
        ApplyOutcome::Applied { .. }
    ));
    let before = load(&*store, &key).await.expect("live");

    let mut stale = set_if("n", Some(b"1"), b"3");
    stale.set("other".into(), b"x".to_vec());
    stale.remove("empty");
    stale.expires_at = Some(before.expires_at.saturating_add(HOUR));
    stale.owner = Some(Some("mallory".into()));
    let mut absent_but_present = set_if("n", None, b"4");
    absent_but_present.set("other".into(), b"y".to_vec());
    let mut empty_is_not_absent = set_if("empty", None, b"z");
    empty_is_not_absent.set("other".into(), b"z".to_vec());
    let present_but_absent = set_if("missing", Some(b""), b"w");
    let large_changed = set_if("large", Some(&vec![4u8; 5000]), b"v");
    let mut one_of_two = set_if("n", Some(b"2"), b"5");
    one_of_two.expect("large", Some(&large[..4999]));
    one_of_two.set("large".into(), b"u".to_vec());
    for (what, change) in [
        ("a stale value", stale),
        ("a present key expected absent", absent_but_present),
        ("an empty value expected absent", empty_is_not_absent),
        ("an absent key expected present", present_but_absent),
        ("a large value that changed", large_changed),
        ("one failing condition of two", one_of_two),
    ] {
        assert_eq!(
            store.apply(&key, &change).await.expect("apply"),
            ApplyOutcome::Conflict,
            "{what}"
        );
        unchanged(&before, &load(&*store, &key).await.expect("live"));
    }
}

/// On a session of small values only (stores that keep small values inline settle those in
/// one statement): a conditional change that holds moves the deadline and the owner with its
/// data; one that does not writes nothing, and the owner index does not list the session
/// under the owner the failed change named.
pub async fn conditional_apply_to_a_small_session_moves_all_or_nothing<S: Store>(store: Arc<S>) {
    let key = create(&*store, &record_with(&[("n", b"1"), ("s", b"x")])).await;
    let later = now().saturating_add(HOUR).saturating_add(HOUR);
    let mut holds = set_if("n", Some(b"1"), b"2");
    holds.expect("fresh", None);
    holds.set("fresh".into(), b"f".to_vec());
    holds.expires_at = Some(later);
    holds.owner = Some(Some("carol".into()));
    assert_eq!(
        store.apply(&key, &holds).await.expect("apply"),
        ApplyOutcome::Applied { version: 2 }
    );
    let before = load(&*store, &key).await.expect("live");
    assert_eq!(
        (
            before.data["n"].as_slice(),
            before.expires_at,
            before.owner.as_deref()
        ),
        (&b"2"[..], later, Some("carol"))
    );
    let mut stale = set_if("n", Some(b"1"), b"3");
    stale.expires_at = Some(later.saturating_add(HOUR));
    stale.owner = Some(Some("mallory".into()));
    let mut present = set_if("s", None, b"y");
    present.owner = Some(Some("mallory".into()));
    for (what, change) in [
        ("a stale value", stale),
        ("a present key expected absent", present),
    ] {
        assert_eq!(
            store.apply(&key, &change).await.expect("apply"),
            ApplyOutcome::Conflict,
            "{what}"
        );
        unchanged(&before, &load(&*store, &key).await.expect("live"));
    }
    if store.capabilities().owner_index {
        assert!(
            store
                .by_owner("mallory")
                .await
                .expect("by_owner")
                .is_empty()
        );
        assert_eq!(store.by_owner("carol").await.expect("by_owner").len(), 1);
    }
}

/// Conditions see what blind removes and clears did: a removed or cleared key no longer holds
/// its old value, and is absent.
pub async fn conditions_see_removes_and_clears<S: Store>(store: Arc<S>) {
    let key = create(&*store, &record_with(&[("a", b"1"), ("b", b"2")])).await;
    let mut remove = Change::default();
    remove.remove("a");
    let _ = store.apply(&key, &remove).await.expect("remove");
    assert_eq!(
        store
            .apply(&key, &set_if("a", Some(b"1"), b"9"))
            .await
            .expect("apply"),
        ApplyOutcome::Conflict
    );
    assert!(matches!(
        store
            .apply(&key, &set_if("a", None, b"3"))
            .await
            .expect("apply"),
        ApplyOutcome::Applied { .. }
    ));
    let mut clear = Change::default();
    clear.clear();
    let _ = store.apply(&key, &clear).await.expect("clear");
    for (name, seen) in [("a", &b"3"[..]), ("b", &b"2"[..])] {
        assert_eq!(
            store
                .apply(&key, &set_if(name, Some(seen), b"9"))
                .await
                .expect("apply"),
            ApplyOutcome::Conflict,
            "{name} was cleared"
        );
    }
    assert!(load(&*store, &key).await.expect("live").data.is_empty());
}

/// A conditional change to a session that is gone is `Gone`, never `Conflict`, and never
/// re-creates it: deleted, expired, or cycled away (the grace pointer holds no data). Under the
/// new key, the conditions see the data that moved.
pub async fn conditional_apply_to_a_gone_session_is_gone<S: Store>(store: Arc<S>) {
    let deleted = create(&*store, &record_with(&[("n", b"1")])).await;
    assert!(store.delete(&deleted).await.expect("delete"));
    let expired = create(&*store, &short_lived(&[("n", b"1")])).await;
    tokio::time::sleep(PAST_SHORT).await;
    let old = create(&*store, &record_with(&[("n", b"1")])).await;
    let new = fresh_key();
    assert_eq!(
        store
            .cycle(&old, &new, Some(now().saturating_add(HOUR)))
            .await
            .expect("cycle"),
        CycleOutcome::Cycled
    );
    for (what, key) in [
        ("deleted", deleted),
        ("expired", expired),
        ("cycled away", old),
        ("never created", fresh_key()),
    ] {
        for seen in [Some(&b"1"[..]), Some(&b"0"[..]), None] {
            assert_eq!(
                store
                    .apply(&key, &set_if("n", seen, b"2"))
                    .await
                    .expect("apply"),
                ApplyOutcome::Gone,
                "{what}, expecting {seen:?}"
            );
        }
    }
    assert_eq!(load(&*store, &deleted).await, None, "never re-created");
    assert_eq!(load(&*store, &expired).await, None, "never re-created");
    assert_eq!(
        store
            .apply(&new, &set_if("n", None, b"2"))
            .await
            .expect("apply"),
        ApplyOutcome::Conflict,
        "the data moved with the session"
    );
    assert!(matches!(
        store
            .apply(&new, &set_if("n", Some(b"1"), b"2"))
            .await
            .expect("apply"),
        ApplyOutcome::Applied { .. }
    ));
    assert_eq!(load(&*store, &new).await.expect("live").data["n"], b"2");
}

/// Many tasks incrementing one counter by read, conditional write and retry on conflict: every
/// increment lands exactly once, and every conflict wrote nothing.
pub async fn concurrent_conditional_increments_lose_nothing<S: Store>(store: Arc<S>) {
    const TASKS: u64 = 40;
    let key = create(&*store, &record_with(&[("n", b"0")])).await;
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { increment(&*store, &key).await })
        })
        .collect();
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await.expect("task");
    }
    let loaded = load(&*store, &key).await.expect("live");
    assert_eq!(
        loaded.data["n"],
        TASKS.to_string().as_bytes(),
        "{conflicts} conflicts"
    );
    assert_eq!(
        loaded.version,
        TASKS + 1,
        "each increment applied once, each conflict not at all"
    );
}

/// Increments the decimal counter `n` of `key` until a conditional write lands; returns how
/// many conflicts it met (bounded: a store that never applies fails the test).
async fn increment<S: Store>(store: &S, key: &SessionKey) -> u32 {
    for conflicts in 0..10_000 {
        let record = store
            .load_keys(key, &["n"])
            .await
            .expect("load_keys")
            .expect("live");
        let seen = record.data.get("n").cloned();
        let n: u64 = seen
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| s.parse().ok())
            .expect("a decimal counter");
        let change = set_if("n", seen.as_deref(), (n + 1).to_string().as_bytes());
        match store.apply(key, &change).await.expect("apply") {
            ApplyOutcome::Applied { .. } => return conflicts,
            ApplyOutcome::Conflict => tokio::task::yield_now().await,
            ApplyOutcome::Gone => panic!("the counter's session is gone"),
        }
    }
    panic!("an increment met 10,000 conflicts in a row")
}
