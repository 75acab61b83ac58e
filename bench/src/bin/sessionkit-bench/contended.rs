//! One session under contention: many connections incrementing the same counter at once.
//!
//! `sessionkit-bench contended` serves each library in turn, creates one session, and drives
//! `/incr` on that one cookie from `--connections` concurrent clients for `--seconds`, with its
//! own client (not wrk), so every response is counted: the final counter must equal the
//! number of 200 responses (plus the one that created the session). sessionkit's server counts
//! the conflicts its store reported (`/conflicts`), which gives the retries per request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sessionkit::{
    ApplyOutcome, Capabilities, Change, CycleOutcome, ListFilter, Page, PageRequest, Record,
    Result, SessionKey, Store, StoredSession, Timestamp, async_trait,
};

use crate::driver::{LIBS, PORT, get_status, new_session, start, tempdir};

/// A store that counts the conflicts its inner store reports.
pub(crate) struct CountingStore {
    inner: Arc<dyn Store>,
    conflicts: Arc<AtomicU64>,
}

impl CountingStore {
    pub(crate) fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            conflicts: Arc::default(),
        }
    }

    /// The conflict counter, for the `/conflicts` route.
    pub(crate) fn conflicts(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.conflicts)
    }
}

#[async_trait]
impl Store for CountingStore {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn create(&self, key: &SessionKey, record: &Record) -> Result<()> {
        self.inner.create(key, record).await
    }
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.inner.load(key).await
    }
    async fn load_keys(&self, key: &SessionKey, keys: &[&str]) -> Result<Option<Record>> {
        self.inner.load_keys(key, keys).await
    }
    async fn apply(&self, key: &SessionKey, change: &Change) -> Result<ApplyOutcome> {
        let outcome = self.inner.apply(key, change).await?;
        if outcome == ApplyOutcome::Conflict {
            self.conflicts.fetch_add(1, Ordering::Relaxed);
        }
        Ok(outcome)
    }
    async fn touch(&self, key: &SessionKey, expires_at: Timestamp) -> Result<ApplyOutcome> {
        self.inner.touch(key, expires_at).await
    }
    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        self.inner.delete(key).await
    }
    async fn cycle(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        grace_until: Option<Timestamp>,
    ) -> Result<CycleOutcome> {
        self.inner.cycle(old, new, grace_until).await
    }
    async fn setup(&self) -> Result<()> {
        self.inner.setup().await
    }
    async fn delete_expired(&self) -> Result<u64> {
        self.inner.delete_expired().await
    }
    async fn list(&self, filter: &ListFilter, page: PageRequest) -> Result<Page> {
        self.inner.list(filter, page).await
    }
    async fn by_owner(&self, owner: &str) -> Result<Vec<StoredSession>> {
        self.inner.by_owner(owner).await
    }
    async fn delete_by_owner(&self, owner: &str) -> Result<u64> {
        self.inner.delete_by_owner(owner).await
    }
}

/// What one library did under contention.
struct Outcome {
    ok: u64,
    failed: u64,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `connections` clients sending `/incr` with `cookie` until `duration` has passed; every
/// response is awaited and counted.
async fn hammer(base: &str, cookie: &str, connections: usize, duration: Duration) -> Outcome {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(connections)
        .build()
        .expect("client");
    let started = Instant::now();
    let deadline = started + duration;
    let clients: Vec<_> = (0..connections)
        .map(|_| {
            let (client, url, cookie) = (client.clone(), format!("{base}/incr"), cookie.to_owned());
            tokio::spawn(async move {
                let (mut ok, mut failed, mut latencies) = (0u64, 0u64, Vec::new());
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    match get_status(&client, &url, &cookie).await {
                        200 => ok += 1,
                        _ => failed += 1,
                    }
                    latencies.push(sent.elapsed());
                }
                (ok, failed, latencies)
            })
        })
        .collect();
    let (mut ok, mut failed, mut latencies) = (0, 0, Vec::new());
    for client in clients {
        let (o, f, l) = client.await.expect("client task");
        ok += o;
        failed += f;
        latencies.extend(l);
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    Outcome {
        ok,
        failed,
        seconds,
        p50_ms: at(0.50),
        p99_ms: at(0.99),
    }
}

pub(crate) async fn run(stores: &str, seconds: u32, connections: usize, baseline: Option<&str>) {
    let workdir = tempdir();
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    println!(
        "| store | library | req/s | p50 | p99 | 200s | errors | final counter | every 200 counted once? | conflicts per request |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for store in stores.split(',') {
        for lib in LIBS
            .into_iter()
            .chain(baseline.map(|_| "sessionkit-before"))
        {
            let server = start(lib, store, &workdir, PORT, baseline, true).await;
            let base = server.base();
            let cookie = new_session(&client, &server).await;
            let before = conflicts(&client, &base, &cookie).await;
            let outcome = hammer(
                &base,
                &cookie,
                connections,
                Duration::from_secs(seconds.into()),
            )
            .await;
            let counter: u64 = get_body(&client, &format!("{base}/read"), &cookie)
                .await
                .trim()
                .parse()
                .unwrap_or(0);
            let retries = conflicts(&client, &base, &cookie).await.zip(before).map_or(
                "n/a".to_owned(),
                |(after, before)| {
                    format!("{:.3}", (after - before) as f64 / outcome.ok.max(1) as f64)
                },
            );
            let exact = if counter == outcome.ok + 1 {
                "yes".to_owned()
            } else {
                format!("**no: {} lost**", (outcome.ok + 1).saturating_sub(counter))
            };
            println!(
                "| {store} | {lib} | {:.0} | {:.2} ms | {:.2} ms | {} | {} | {counter} | {exact} | {retries} |",
                outcome.ok as f64 / outcome.seconds,
                outcome.p50_ms,
                outcome.p99_ms,
                outcome.ok,
                outcome.failed,
            );
        }
    }
}

/// The server's conflict count, if it keeps one (sessionkit's does).
async fn conflicts(client: &reqwest::Client, base: &str, cookie: &str) -> Option<u64> {
    get_body(client, &format!("{base}/conflicts"), cookie)
        .await
        .trim()
        .parse()
        .ok()
}

async fn get_body(client: &reqwest::Client, url: &str, cookie: &str) -> String {
    match client.get(url).header("cookie", cookie).send().await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}
