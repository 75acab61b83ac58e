//! Cleanup under load, from several app servers at once.

use std::sync::Arc;
use std::time::Duration;

use sessionkit_core::{ApplyOutcome, Change, Record, SessionKey, Store, Timestamp};

use crate::{fresh_key, record_with};

const EXPIRED: usize = 2_000;
const LIVE: usize = 16;
const WRITES_PER_SESSION: usize = 40;

async fn seed(store: &Arc<dyn Store>) -> Vec<SessionKey> {
    let past = Timestamp::now().saturating_sub(Duration::from_secs(60));
    let seeders: Vec<_> = (0..16)
        .map(|_| {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                for _ in 0..EXPIRED / 16 {
                    let record = Record {
                        expires_at: past,
                        ..record_with(&[("stale", b"x")])
                    };
                    store
                        .create(&fresh_key(), &record)
                        .await
                        .expect("seed an expired session");
                }
            })
        })
        .collect();
    for seeder in seeders {
        seeder.await.expect("seeder");
    }
    let mut live = Vec::new();
    for _ in 0..LIVE {
        let key = fresh_key();
        store
            .create(&key, &record_with(&[("live", b"1")]))
            .await
            .expect("seed a live session");
        live.push(key);
    }
    live
}

/// Several app servers' stores on one table (`servers`) clean up thousands of expired
/// sessions at once while requests keep writing to live ones: zero deadlocks and zero errors
/// reach the callers, every expired row goes, every write stays. For stores with a cleanup
/// that several servers may run at once (the SQL stores).
///
/// # Panics
/// When a check fails.
pub async fn cleanup_while_writing(servers: Vec<Arc<dyn Store>>) {
    let live = seed(&servers[0]).await;
    let writers: Vec<_> = live
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let (store, key) = (Arc::clone(&servers[i % servers.len()]), *key);
            tokio::spawn(async move {
                for n in 0..WRITES_PER_SESSION {
                    let mut change = Change::default();
                    change.set(format!("w{n:02}"), vec![1]);
                    change.expires_at =
                        Some(Timestamp::now().saturating_add(Duration::from_secs(3600)));
                    let outcome = store
                        .apply(&key, &change)
                        .await
                        .expect("apply under cleanup");
                    assert!(matches!(outcome, ApplyOutcome::Applied { .. }));
                    // New sessions keep landing in the expiry index next to the cleanup's range.
                    store
                        .create(&fresh_key(), &record_with(&[("new", b"1")]))
                        .await
                        .expect("create under cleanup");
                }
            })
        })
        .collect();
    let cleaners: Vec<_> = servers
        .iter()
        .map(|store| {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                let mut deleted = 0;
                for _ in 0..50 {
                    deleted += store.delete_expired().await.expect("cleanup under load");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                deleted
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    let mut deleted = 0;
    for cleaner in cleaners {
        deleted += cleaner.await.expect("cleaner");
    }
    deleted += servers[0].delete_expired().await.expect("final cleanup");
    assert_eq!(
        deleted, EXPIRED as u64,
        "every expired session deleted exactly once"
    );
    for key in &live {
        let record = servers[0]
            .load(key)
            .await
            .expect("load")
            .expect("live sessions survive cleanup");
        assert_eq!(
            record.data.len(),
            1 + WRITES_PER_SESSION,
            "every write survived"
        );
    }
}
