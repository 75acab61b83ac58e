//! The one writer thread: group commit of every queued write.
//!
//! SQLite allows one writer per database file at a time. Instead of letting every request fight
//! for the write lock (and pay one fsync each), all writes of this process go to one thread that
//! owns one connection. It takes every job waiting in its queue, runs them in a single
//! `BEGIN IMMEDIATE … COMMIT`, each inside its own savepoint so one job's failure (a create
//! collision) rolls back only that job, and answers each job after the commit, so nobody hears
//! "done" before their write is durable. Under load that turns N fsyncs into one. Other
//! processes' writers wait on SQLite's busy handler (busy_timeout) and then on this thread's
//! bounded retry of `BEGIN`.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode};
use sessionkit_core::{Error, Result};
use tokio::sync::oneshot;

/// The most jobs one transaction takes, so one commit never holds the lock for long.
const MAX_BATCH: usize = 256;
/// How long the writer keeps retrying a busy database before failing the batch.
const BUSY_DEADLINE: Duration = Duration::from_secs(30);

/// A write that runs inside the batch transaction and is answered after the commit.
trait Job: Send {
    /// Runs the work; `false` means it failed and its savepoint must be rolled back.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller: with its own result if the batch committed, else with `failure`.
    fn finish(self: Box<Self>, failure: Option<&Arc<rusqlite::Error>>);
}

struct WriteJob<T, F> {
    work: Option<F>,
    output: Option<Result<T>>,
    /// Whether an `Ok` output's writes stand (else its savepoint is rolled back).
    keep: fn(&T) -> bool,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for WriteJob<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let output = match self.work.take() {
            Some(work) => work(conn),
            None => Err(Error::conflict("a write job ran twice")),
        };
        let keep = output.as_ref().is_ok_and(self.keep);
        self.output = Some(output);
        keep
    }

    fn finish(self: Box<Self>, failure: Option<&Arc<rusqlite::Error>>) {
        let result = match failure {
            Some(err) if is_busy(err) => Err(Error::unavailable(
                "the database stayed locked by another process",
                Arc::clone(err),
            )),
            Some(err) => Err(Error::backend("committing session writes", Arc::clone(err))),
            None => self
                .output
                .unwrap_or_else(|| Err(Error::conflict("a write job never ran"))),
        };
        // The caller may have gone away (request cancelled); the write stands either way.
        let _ = self.reply.send(result);
    }
}

/// The handle requests use to queue writes. Dropping every handle stops the thread.
#[derive(Clone)]
pub(crate) struct Writer {
    queue: Sender<Box<dyn Job>>,
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub(crate) fn spawn(conn: Connection, name: String) -> Result<Self> {
        let (queue, jobs) = channel();
        std::thread::Builder::new()
            .name(name)
            .spawn(move || run(&conn, &jobs))
            .map_err(|e| Error::backend("starting the SQLite writer thread", e))?;
        Ok(Self { queue })
    }

    /// Runs `work` in the next batch transaction and returns its result once committed.
    pub(crate) async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.write_if(work, |_| true).await
    }

    /// As [`Writer::write`], but an `Ok` result for which `keep` is false has its writes
    /// rolled back (a job that found half-way that it must write nothing).
    pub(crate) async fn write_if<T, F>(&self, work: F, keep: fn(&T) -> bool) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(WriteJob {
            work: Some(work),
            output: None,
            keep,
            reply,
        });
        self.queue.send(job).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> Error {
    Error::Unavailable {
        message: "the SQLite writer thread has stopped".into(),
        source: None,
    }
}

fn run(conn: &Connection, jobs: &Receiver<Box<dyn Job>>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let failure = commit_batch(conn, &mut batch).err().map(Arc::new);
        if let Some(err) = &failure {
            tracing::warn!(error = %err, jobs = batch.len(), "SQLite session write batch failed");
        }
        for job in batch {
            job.finish(failure.as_ref());
        }
    }
}

fn commit_batch(conn: &Connection, batch: &mut [Box<dyn Job>]) -> rusqlite::Result<()> {
    retry_busy(|| conn.execute_batch("BEGIN IMMEDIATE"))?;
    let ran = (|| {
        for job in batch.iter_mut() {
            run_cached(conn, "SAVEPOINT job")?;
            if !job.run(conn) {
                run_cached(conn, "ROLLBACK TO job")?;
            }
            run_cached(conn, "RELEASE job")?;
        }
        retry_busy(|| conn.execute_batch("COMMIT"))
    })();
    if ran.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    ran
}

/// Runs one statement without parameters, prepared once per connection (these run for every
/// job, and `execute_batch` would parse them each time).
fn run_cached(conn: &Connection, statement: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(statement)?.execute([]).map(|_| ())
}

/// Retries `op` while the database is busy or locked by another process, up to a deadline
/// (on top of the connection's busy_timeout, which already waited inside each attempt).
pub(crate) fn retry_busy<T>(mut op: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match op() {
            Err(err) if is_busy(&err) && started.elapsed() < BUSY_DEADLINE => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

pub(crate) fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}
