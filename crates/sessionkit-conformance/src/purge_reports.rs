//! The contracts of [`Store::delete_expired_batch_reporting`]: a cleanup that says which
//! sessions it deleted (for audit logs), exactly those, each once, atomically.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use sessionkit_core::{
    ApplyOutcome, CycleOutcome, ErrorKind, PurgeReport, Record, SessionKey, Store, Timestamp,
};

use crate::{HOUR, PAST_SHORT, create, fresh_key, load, now, record_with, short_lived};

/// Whether the store reports purged sessions; if it does not, checks that the operation says
/// `Unsupported` (and deletes nothing).
async fn reports<S: Store>(store: &S) -> bool {
    let doomed = create(store, &short_lived(&[("doomed", b"1")])).await;
    tokio::time::sleep(PAST_SHORT).await;
    match store.delete_expired_batch_reporting(10).await {
        Ok(report) => {
            assert!(
                store.capabilities().reports_purged,
                "a store without the reports_purged capability reported a cleanup: {report:?}"
            );
            let listed: Vec<SessionKey> = report.sessions.iter().map(|s| s.key).collect();
            if !store.capabilities().native_ttl {
                assert_eq!((report.deleted, listed), (1, vec![doomed]));
            }
            true
        }
        Err(err) => {
            assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
            assert!(
                !store.capabilities().reports_purged,
                "the store claims reports_purged and answers Unsupported"
            );
            false
        }
    }
}

/// Runs reporting steps of `limit` until one deletes nothing; returns every step's report.
async fn drain<S: Store>(store: &S, limit: usize) -> Vec<PurgeReport> {
    let mut steps = Vec::new();
    loop {
        let report = store
            .delete_expired_batch_reporting(limit)
            .await
            .expect("delete_expired_batch_reporting");
        assert!(
            report.deleted <= limit as u64,
            "a step of {limit} deleted {}",
            report.deleted
        );
        assert!(
            report.sessions.len() as u64 <= report.deleted,
            "a step listed more sessions ({}) than it deleted ({})",
            report.sessions.len(),
            report.deleted
        );
        if report.deleted == 0 {
            assert!(report.sessions.is_empty(), "{report:?}");
            return steps;
        }
        steps.push(report);
        assert!(steps.len() < 100, "reporting steps never reached zero");
    }
}

/// The reporting cleanup lists exactly the expired sessions, with their owners and deadlines:
/// not the grace-period pointer a cycled id left (counted, as `delete_expired` counts it), not
/// the live or extended sessions, not the session the pointer leads to. Those listed are gone,
/// the others untouched. A store without `reports_purged` answers `Unsupported`.
pub async fn delete_expired_reporting_lists_exactly_the_expired_sessions<S: Store>(store: Arc<S>) {
    if !reports(&*store).await {
        return;
    }
    let mut expected: BTreeMap<SessionKey, (Option<String>, Timestamp)> = BTreeMap::new();
    for owner in [Some("alice"), Some("bob"), None, None] {
        let record = Record {
            owner: owner.map(str::to_owned),
            ..short_lived(&[("doomed", b"1")])
        };
        let key = create(&*store, &record).await;
        expected.insert(key, (record.owner.clone(), record.expires_at));
    }
    let live = create(
        &*store,
        &Record {
            owner: Some("alice".into()),
            ..record_with(&[("live", b"1")])
        },
    )
    .await;
    let extended = create(&*store, &short_lived(&[("extended", b"1")])).await;
    assert!(matches!(
        store
            .touch(&extended, now().saturating_add(HOUR))
            .await
            .expect("touch"),
        ApplyOutcome::Applied { .. }
    ));
    let cycled = create(
        &*store,
        &Record {
            owner: Some("carol".into()),
            ..record_with(&[("a", b"1")])
        },
    )
    .await;
    let moved = fresh_key();
    assert_eq!(
        store
            .cycle(&cycled, &moved, Some(now().saturating_add(crate::SHORT)))
            .await
            .expect("cycle"),
        CycleOutcome::Cycled
    );
    tokio::time::sleep(PAST_SHORT).await;

    let steps = drain(&*store, 100).await;
    let deleted: u64 = steps.iter().map(|s| s.deleted).sum();
    let listed: Vec<_> = steps.iter().flat_map(|s| s.sessions.iter()).collect();
    let reported: BTreeMap<SessionKey, (Option<String>, Timestamp)> = listed
        .iter()
        .map(|s| (s.key, (s.owner.clone(), s.expires_at)))
        .collect();
    assert_eq!(reported.len(), listed.len(), "a session listed twice");
    for key in [live, extended, cycled, moved] {
        assert!(
            !reported.contains_key(&key),
            "listed a session that is not an expired session (live: {}, extended: {}, pointer: {}, moved: {})",
            key == live,
            key == extended,
            key == cycled,
            key == moved
        );
    }
    if store.capabilities().native_ttl {
        assert!(deleted <= 5, "{deleted}");
        assert!(reported.iter().all(|(k, v)| expected.get(k) == Some(v)));
    } else {
        assert_eq!(
            deleted, 5,
            "four expired sessions and one expired pointer deleted"
        );
        assert_eq!(
            reported, expected,
            "exactly the expired sessions, with their owners and deadlines"
        );
    }
    for key in expected.keys() {
        assert_eq!(load(&*store, key).await, None);
    }
    assert_eq!(
        store.delete_expired().await.expect("delete_expired"),
        0,
        "nothing expired is left behind"
    );
    if let Ok(count) = store.count_expired().await {
        assert_eq!(count, 0);
    }
    assert_eq!(
        load(&*store, &live).await.expect("the live session").data["live"],
        b"1"
    );
    assert!(load(&*store, &extended).await.is_some(), "extended session");
    let moved = load(&*store, &moved).await.expect("the cycled session");
    assert_eq!(moved.owner.as_deref(), Some("carol"));
    if store.capabilities().owner_index {
        let alice: Vec<SessionKey> = store
            .by_owner("alice")
            .await
            .expect("by_owner")
            .into_iter()
            .map(|s| s.key)
            .collect();
        assert_eq!(alice, vec![live], "the owner index lost the purged session");
        assert!(store.by_owner("bob").await.expect("by_owner").is_empty());
    }
}

/// Reporting steps with a small limit delete and list every expired session exactly once
/// between them, and stop at a step that deletes nothing.
pub async fn delete_expired_reporting_in_small_batches_lists_each_session_once<S: Store>(
    store: Arc<S>,
) {
    if !reports(&*store).await {
        return;
    }
    let mut expected = BTreeSet::new();
    for i in 0..7 {
        let record = Record {
            owner: (i % 2 == 0).then(|| format!("owner{i}")),
            ..short_lived(&[("doomed", b"1")])
        };
        expected.insert(create(&*store, &record).await);
    }
    for _ in 0..2 {
        let old = create(&*store, &record_with(&[("a", b"1")])).await;
        assert_eq!(
            store
                .cycle(&old, &fresh_key(), Some(now().saturating_add(crate::SHORT)))
                .await
                .expect("cycle"),
            CycleOutcome::Cycled
        );
    }
    let live = create(&*store, &record_with(&[("live", b"1")])).await;
    tokio::time::sleep(PAST_SHORT).await;

    let steps = drain(&*store, 3).await;
    let deleted: u64 = steps.iter().map(|s| s.deleted).sum();
    let mut reported = BTreeSet::new();
    for session in steps.iter().flat_map(|s| s.sessions.iter()) {
        assert!(reported.insert(session.key), "a session listed twice");
        assert!(
            expected.contains(&session.key),
            "listed a session not expired"
        );
    }
    if !store.capabilities().native_ttl {
        assert!(steps.len() >= 3, "9 records in steps of 3: {}", steps.len());
        assert_eq!(deleted, 9, "seven sessions and two pointers");
        assert_eq!(reported, expected);
    }
    assert!(load(&*store, &live).await.is_some());
}

/// Touches racing reporting cleanups at the deadline: every session is either extended (the
/// touch applied, the session lives on and was never listed) or listed (deleted, the touch
/// found it gone), never both, never neither.
pub async fn delete_expired_reporting_racing_touches_lists_or_extends_each_session<S: Store>(
    store: Arc<S>,
) {
    if !reports(&*store).await {
        return;
    }
    const SESSIONS: usize = 40;
    let deadline = now().saturating_add(Duration::from_millis(300));
    let mut keys = Vec::new();
    for _ in 0..SESSIONS {
        let record = Record {
            expires_at: deadline,
            ..record_with(&[("k", b"v")])
        };
        keys.push(create(&*store, &record).await);
    }
    let until = |at: Timestamp| at.duration_since(now());
    // Touches spread over 40 ms around the deadline; cleanups from just before it to after.
    let touches: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let (store, key) = (Arc::clone(&store), *key);
            let at = deadline
                .saturating_sub(Duration::from_millis(20))
                .saturating_add(Duration::from_millis(i as u64));
            tokio::spawn(async move {
                tokio::time::sleep(until(at)).await;
                let outcome = store
                    .touch(&key, now().saturating_add(HOUR))
                    .await
                    .expect("touch");
                (key, matches!(outcome, ApplyOutcome::Applied { .. }))
            })
        })
        .collect();
    let cleaners: Vec<_> = (0..2)
        .map(|_| {
            let store = Arc::clone(&store);
            let start = deadline.saturating_sub(Duration::from_millis(10));
            let end = deadline.saturating_add(Duration::from_millis(60));
            tokio::spawn(async move {
                tokio::time::sleep(until(start)).await;
                let mut listed = Vec::new();
                while now() < end {
                    let report = store
                        .delete_expired_batch_reporting(4)
                        .await
                        .expect("a reporting step racing touches");
                    listed.extend(report.sessions.iter().map(|s| s.key));
                    tokio::task::yield_now().await;
                }
                listed
            })
        })
        .collect();
    let mut extended = BTreeSet::new();
    for touch in touches {
        let (key, applied) = touch.await.expect("touch task");
        if applied {
            extended.insert(key);
        }
    }
    let mut listed = Vec::new();
    for cleaner in cleaners {
        listed.extend(cleaner.await.expect("cleaner task"));
    }
    tokio::time::sleep(until(deadline.saturating_add(Duration::from_millis(50)))).await;
    for report in drain(&*store, 100).await {
        listed.extend(report.sessions.iter().map(|s| s.key));
    }
    let reported: BTreeSet<SessionKey> = listed.iter().copied().collect();
    assert_eq!(reported.len(), listed.len(), "a session listed twice");
    for key in &extended {
        assert!(
            !reported.contains(key),
            "a session extended by a touch was listed as purged"
        );
        assert!(
            load(&*store, key).await.is_some(),
            "a session extended by a touch is gone"
        );
    }
    for key in &keys {
        if !extended.contains(key) {
            assert!(
                store.capabilities().native_ttl || reported.contains(key),
                "a session neither extended nor listed"
            );
            assert_eq!(load(&*store, key).await, None);
        }
    }
}
