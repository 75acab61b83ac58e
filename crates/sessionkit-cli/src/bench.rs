//! `sessionkit bench URL`: a load generator against a store.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use sessionkit::{ApplyOutcome, Change, Record, SessionId, SessionKey, Store, Timestamp};

use crate::CliError;
use crate::admin::open;

/// The load to generate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    pub tasks: usize,
    pub duration: Duration,
    pub sessions: usize,
    pub write_ratio: f64,
}

#[derive(Default)]
struct Counters {
    ops: AtomicU64,
    errors: AtomicU64,
}

pub(crate) async fn run(url: &str, load: Load) -> Result<(), CliError> {
    let store = open(url).await?;
    let keys = seed(&store, load.sessions).await?;
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let deadline = started + load.duration;
    let workers: Vec<_> = (0..load.tasks)
        .map(|_| {
            let (store, keys, counters) = (Arc::clone(&store), keys.clone(), Arc::clone(&counters));
            tokio::spawn(async move {
                work(&*store, &keys, &counters, deadline, load.write_ratio).await
            })
        })
        .collect();
    let line = ProgressBar::new_spinner();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let elapsed = started.elapsed().as_secs_f64();
        let ops = counters.ops.load(Ordering::Relaxed);
        line.set_message(format!(
            "{elapsed:5.1}s  {ops} ops  {:.0} ops/s",
            ops as f64 / elapsed
        ));
        line.tick();
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(
            worker
                .await
                .map_err(|e| CliError(format!("a load task failed: {e}")))?,
        );
    }
    line.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let percentile = |p: f64| {
        let index = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies
            .get(index)
            .copied()
            .map_or(0.0, |us| f64::from(us) / 1000.0)
    };
    let errors = counters.errors.load(Ordering::Relaxed);
    let printed = crate::output::outln!(
        "{} store, {} tasks, {:.0}% writes, {:.1} s: {} ops, {:.0} ops/s, p50 {:.3} ms, p99 {:.3} ms, {} errors",
        store.name(),
        load.tasks,
        load.write_ratio * 100.0,
        elapsed,
        latencies.len(),
        latencies.len() as f64 / elapsed,
        percentile(0.50),
        percentile(0.99),
        errors
    );
    for key in keys.iter() {
        let _ = store.delete(key).await;
    }
    printed?;
    if errors > 0 {
        return Err(CliError(format!("{errors} operations failed")));
    }
    Ok(())
}

async fn seed(store: &Arc<dyn Store>, sessions: usize) -> Result<Arc<Vec<SessionKey>>, CliError> {
    let mut keys = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        let key = SessionId::generate()?.key();
        let mut record = Record::new(
            Timestamp::now(),
            Timestamp::now().saturating_add(Duration::from_secs(3600)),
        );
        record.data.insert("profile".into(), vec![b'p'; 150]);
        record
            .data
            .insert("counter".into(), 0u64.to_le_bytes().to_vec());
        store.create(&key, &record).await?;
        keys.push(key);
    }
    Ok(Arc::new(keys))
}

/// One task's loop; returns its latencies in microseconds.
async fn work(
    store: &dyn Store,
    keys: &[SessionKey],
    counters: &Counters,
    deadline: Instant,
    write_ratio: f64,
) -> Vec<u32> {
    let mut latencies = Vec::new();
    let mut n = 0u64;
    while Instant::now() < deadline {
        let key = &keys[rand::random_range(0..keys.len())];
        let started = Instant::now();
        let ok = if rand::random::<f64>() < write_ratio {
            n += 1;
            let mut change = Change::default();
            change.set("counter".into(), n.to_le_bytes().to_vec());
            matches!(
                store.apply(key, &change).await,
                Ok(ApplyOutcome::Applied { .. })
            )
        } else {
            matches!(store.load(key).await, Ok(Some(_)))
        };
        latencies.push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
        counters.ops.fetch_add(1, Ordering::Relaxed);
        if !ok {
            counters.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    latencies
}
