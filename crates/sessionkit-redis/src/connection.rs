//! One multiplexed connection to a standalone Redis server, reconnecting when it breaks.
//!
//! Every request of every task goes down one TCP connection: a request appends its encoded
//! command to a shared output buffer and joins the queue of waiters under one short lock (so
//! the bytes on the wire and the queue are in the same order), and a writer task sends
//! whatever has piled up in one `write`, or, once [`BATCH`] commands have piled up, the request
//! that completes the batch writes it at once (without waiting for the socket: what it does
//! not take is left to the writer task). A reader task parses the replies ([`crate::resp`]) and
//! hands each to the waiter at the front of the queue. Under load, many requests share each
//! system call on both sides, which on a 2-core machine beats a pool of connections.
//!
//! Failures: when the socket fails, closes, sends bytes that are not RESP2, or requests wait
//! and no reply has come for the timeout (the store's `timeout_ms`), the connection is marked
//! broken, every waiting request gets an I/O error (which the store reports as
//! `Unavailable`), and the next request opens a new connection. A request is never re-sent: a
//! write whose reply was lost may or may not have happened, and only the caller can tell
//! whether repeating it is safe.
//!
//! The timeout is watched per connection, not per request: replies come in order, so while
//! they keep coming every waiting request is moving towards its own. One watchdog that checks
//! ten times per timeout replaces a timer per request (registering and cancelling one cost
//! ~1,600 instructions a command). A request fails between one and 1.2 timeouts after the
//! last reply that came while it waited (or after it was sent, on a quiet connection).
//!
//! This replaces redis-rs's `ConnectionManager` for standalone servers (the cluster client is
//! still redis-rs's). The store's own commands are encoded by [`crate::command`] straight into
//! the output buffer ([`Multiplexed::query`]); it also implements redis-rs's
//! [`ConnectionLike`], for the rest (maintenance commands, loading scripts). What it saves is
//! redis-rs's reply parser and its sink/stream plumbing: about a third of the client's
//! instructions per request.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::sentinel::SentinelClient;
use redis::{
    Cmd, ConnectionInfo, ErrorKind, Pipeline, RedisConnectionInfo, RedisError, RedisFuture,
};
use redis::{RedisResult, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, oneshot};
use tokio::task::AbortHandle;

use crate::command::{self, Arg};
use crate::transport::{Address, Incoming, Outgoing, TlsWriter};

/// How many queued commands make a batch that the request completing it writes at once,
/// without waiting for the writer task: Redis starts on it while more queue up. Chosen by
/// measurement (4, 8, 16 and 32 against none: `docs/BENCHMARKS.md`, sixth round).
const BATCH: usize = 16;

/// The reader's buffer grows by at least this much per read.
const READ_CHUNK: usize = 16 * 1024;

/// One multiplexed, reconnecting connection to a standalone Redis server: the one
/// [`RedisStore`](crate::RedisStore) uses, for any redis-rs command (it implements
/// [`ConnectionLike`]). Clones share it.
///
/// Every concurrent request goes down one TCP connection, many to a write. When the socket
/// fails, the server sends something that is not RESP2, or requests wait `timeout` with no
/// reply coming, every waiting request fails with an I/O error and the next one opens a new
/// connection. A failed request is never re-sent: only the caller knows whether repeating it
/// is safe. TCP, TLS or a Unix socket; for Redis Cluster use redis-rs's client.
///
/// ```no_run
/// # async fn demo() -> redis::RedisResult<()> {
/// use std::time::Duration;
/// let info = redis::Client::open("redis://127.0.0.1:6379")?.get_connection_info().clone();
/// let mut conn = sessionkit_redis::Multiplexed::new(&info, Duration::from_secs(5))?;
/// conn.connect().await?;
/// let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Multiplexed {
    shared: Arc<Shared>,
}

struct Shared {
    address: Address,
    db: i64,
    username: Option<String>,
    password: Option<String>,
    /// How long opening a connection may take, and waiting requests may go without a reply.
    timeout: Duration,
    /// The connection in use, if one was opened and has not broken.
    current: Mutex<Option<Arc<Pipe>>>,
    /// Held while a new connection is opened, so concurrent requests open one, not many.
    opening: tokio::sync::Mutex<()>,
}

/// One TCP connection: what its two tasks and the requests share.
struct Pipe {
    state: Mutex<PipeState>,
    /// The socket's sending half: written to (without waiting) only by whoever holds `sending`
    /// (on TLS, only by the writer task).
    socket: Outgoing,
    /// Bytes taken from `out` and not yet all written; holding it is the right to write.
    sending: Mutex<Sending>,
    broken: AtomicBool,
    /// Counts the reads that delivered replies, so the watchdog can tell a slow queue from a
    /// stalled one.
    progress: AtomicU64,
    /// Wakes the writer when bytes are waiting (or the pipe broke).
    wake_writer: Notify,
    /// The reader, stopped when the pipe breaks elsewhere (a timeout, the store dropped), so a
    /// server that never answers again does not keep it and its socket forever. (Aborting it
    /// costs nothing per read, unlike waiting on a signal beside every read.)
    reader: Mutex<Option<AbortHandle>>,
}

#[derive(Default)]
struct PipeState {
    /// Encoded commands not yet handed to the socket.
    out: Vec<u8>,
    /// How many commands `out` holds.
    queued: usize,
    /// Who gets the next replies, in the order their commands were queued.
    waiters: VecDeque<Waiter>,
}

#[derive(Default)]
struct Sending {
    bytes: Vec<u8>,
    /// How much of `bytes` went out.
    written: usize,
}

/// What [`Pipe::write_queued`] left.
enum Written {
    /// Everything queued went out.
    All,
    /// The socket is full; the rest waits in `Sending`.
    Blocked,
}

/// A request waiting for its reply (or, for a pipeline, its replies).
struct Waiter {
    /// Replies to drop before the wanted ones (a transaction's `OK` and `QUEUED`s).
    skip: usize,
    /// How many replies the request wants.
    want: usize,
    got: Replies,
    /// The first error reply among the wanted ones: the request's result.
    error: Option<RedisError>,
    reply: oneshot::Sender<RedisResult<Replies>>,
}

/// The replies a request got: one, for all but pipelines, without a list of its own (an
/// allocation less per command).
#[derive(Default)]
enum Replies {
    #[default]
    None,
    One(Value),
    Many(Vec<Value>),
}

impl Replies {
    fn push(&mut self, value: Value) {
        *self = match std::mem::take(self) {
            Self::None => Self::One(value),
            Self::One(first) => Self::Many(vec![first, value]),
            Self::Many(mut all) => {
                all.push(value);
                Self::Many(all)
            }
        };
    }

    fn len(&self) -> usize {
        match self {
            Self::None => 0,
            Self::One(_) => 1,
            Self::Many(all) => all.len(),
        }
    }

    fn into_vec(self) -> Vec<Value> {
        match self {
            Self::None => Vec::new(),
            Self::One(value) => vec![value],
            Self::Many(all) => all,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn broken_pipe(what: &'static str) -> RedisError {
    RedisError::from(std::io::Error::new(std::io::ErrorKind::BrokenPipe, what))
}

fn timed_out(what: &'static str) -> RedisError {
    RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, what))
}

impl Pipe {
    fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// Marks the pipe broken and fails every waiting request with `error`.
    fn fail(&self, error: &RedisError) {
        let waiters = {
            let mut state = lock(&self.state);
            self.broken.store(true, Ordering::Release);
            state.out.clear();
            std::mem::take(&mut state.waiters)
        };
        self.wake_writer.notify_one();
        if let Some(reader) = lock(&self.reader).take() {
            reader.abort();
        }
        for waiter in waiters {
            let _ = waiter.reply.send(Err(error.clone()));
        }
    }

    /// Queues encoded commands whose replies go to one waiter.
    fn send(
        &self,
        encode: impl FnOnce(&mut Vec<u8>),
        skip: usize,
        want: usize,
    ) -> RedisResult<oneshot::Receiver<RedisResult<Replies>>> {
        let (reply, receiver) = oneshot::channel();
        let full;
        let was_idle = {
            let mut state = lock(&self.state);
            if self.is_broken() {
                return Err(broken_pipe("the Redis connection broke"));
            }
            let was_idle = state.out.is_empty();
            encode(&mut state.out);
            state.queued += 1;
            full = state.queued >= BATCH;
            state.waiters.push_back(Waiter {
                skip,
                want,
                got: Replies::None,
                error: None,
                reply,
            });
            was_idle
        };
        // A writer that already has bytes to send takes these with them.
        if was_idle {
            self.wake_writer.notify_one();
        }
        // A full batch goes now, so Redis starts on it while more queue up.
        if full {
            match self.write_queued() {
                Ok(Written::All) => {}
                Ok(Written::Blocked) => self.wake_writer.notify_one(),
                Err(err) => self.fail(&RedisError::from(err)),
            }
        }
        Ok(receiver)
    }

    /// Writes what is queued, as far as the socket takes it without waiting (on TLS, nothing:
    /// the writer task writes it all).
    fn write_queued(&self) -> std::io::Result<Written> {
        if matches!(self.socket, Outgoing::Tls) {
            return Ok(Written::Blocked);
        }
        let mut sending = lock(&self.sending);
        loop {
            if sending.written == sending.bytes.len() {
                sending.bytes.clear();
                sending.written = 0;
                let mut state = lock(&self.state);
                std::mem::swap(&mut sending.bytes, &mut state.out);
                state.queued = 0;
                if sending.bytes.is_empty() {
                    return Ok(Written::All);
                }
            }
            let at = sending.written;
            match self.socket.try_write(&sending.bytes[at..]) {
                Ok(n) => sending.written += n,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    return Ok(Written::Blocked);
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Writes what is queued, waiting for the socket when it is full, until nothing is left
    /// (or the pipe broke).
    async fn write_until_done(&self) -> std::io::Result<()> {
        while !self.is_broken() {
            match self.write_queued()? {
                Written::All => break,
                Written::Blocked => self.socket.writable().await?,
            }
        }
        Ok(())
    }

    /// Writes what is queued to the TLS stream until nothing is left (or the pipe broke), and
    /// flushes it: rustls may hold the last records back otherwise.
    async fn write_tls(&self, stream: &mut TlsWriter, bytes: &mut Vec<u8>) -> std::io::Result<()> {
        while !self.is_broken() {
            bytes.clear();
            {
                let mut state = lock(&self.state);
                std::mem::swap(bytes, &mut state.out);
                state.queued = 0;
            }
            if bytes.is_empty() {
                break;
            }
            stream.write_all(bytes).await?;
        }
        stream.flush().await
    }

    /// Hands parsed replies to the waiters at the front of the queue, in order.
    fn deliver(&self, replies: Vec<RedisResult<Value>>) {
        let mut done = Vec::new();
        let mut demoted = false;
        {
            let mut state = lock(&self.state);
            for value in replies {
                let Some(waiter) = state.waiters.front_mut() else {
                    drop(state);
                    self.fail(&RedisError::from((
                        ErrorKind::Parse,
                        "Redis sent a reply nobody asked for",
                    )));
                    return;
                };
                if waiter.skip > 0 {
                    waiter.skip -= 1;
                } else {
                    match value {
                        Ok(value) => waiter.got.push(value),
                        Err(err) => {
                            demoted |= err.code() == Some("READONLY");
                            waiter.error.get_or_insert(err);
                            waiter.got.push(Value::Nil);
                        }
                    }
                }
                if waiter.skip == 0 && waiter.got.len() == waiter.want {
                    done.extend(state.waiters.pop_front());
                }
            }
        }
        for waiter in done {
            let _ = waiter.reply.send(match waiter.error {
                Some(err) => Err(err),
                None => Ok(waiter.got),
            });
        }
        if demoted {
            // A replica now (a failover): the next request opens a new connection, which
            // behind Sentinel goes to the new master.
            self.fail(&broken_pipe("the Redis server is a read-only replica now"));
        }
    }
}

/// Reads replies until the socket fails or the pipe breaks.
async fn read_replies(pipe: Arc<Pipe>, mut socket: Incoming) {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let error = loop {
        buf.reserve(READ_CHUNK);
        match socket.read_buf(&mut buf).await {
            Ok(0) => break broken_pipe("Redis closed the connection"),
            Ok(_) => {}
            Err(err) => break RedisError::from(err),
        }
        let mut used = 0;
        let mut replies = Vec::new();
        let parsed = loop {
            match crate::resp::parse(&buf[used..]) {
                Ok(Some((value, len))) => {
                    replies.push(value);
                    used += len;
                }
                Ok(None) => break Ok(()),
                Err(err) => break Err(err),
            }
        };
        if !replies.is_empty() {
            pipe.progress.fetch_add(1, Ordering::Relaxed);
            pipe.deliver(replies);
        }
        if let Err(err) = parsed {
            break err;
        }
        buf.drain(..used);
        if pipe.is_broken() {
            return;
        }
    };
    pipe.fail(&error);
}

/// Sends queued commands until the pipe breaks: what requests left in the socket's buffer,
/// or on TLS, everything.
async fn write_commands(pipe: Arc<Pipe>, mut tls: Option<TlsWriter>) {
    // TLS: the bytes being written, swapped with the queue's each round.
    let mut bytes = Vec::new();
    loop {
        pipe.wake_writer.notified().await;
        // Let the tasks that are ready now queue their commands too, so they share the write.
        tokio::task::yield_now().await;
        let written = match &mut tls {
            None => pipe.write_until_done().await,
            Some(stream) => pipe.write_tls(stream, &mut bytes).await,
        };
        if let Err(err) = written {
            pipe.fail(&RedisError::from(err));
            return;
        }
        if pipe.is_broken() {
            return;
        }
    }
}

/// Breaks the pipe when requests have waited `timeout` without any reply arriving; ends when
/// the pipe breaks for any reason.
async fn watch_replies(pipe: Arc<Pipe>, timeout: Duration) {
    let mut seen = pipe.progress.load(Ordering::Relaxed);
    let mut stalled_since: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(timeout / 10);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let now = tick.tick().await;
        if pipe.is_broken() {
            return;
        }
        let progress = pipe.progress.load(Ordering::Relaxed);
        let waiting = !lock(&pipe.state).waiters.is_empty();
        if !waiting || progress != seen {
            seen = progress;
            stalled_since = None;
            continue;
        }
        // Waiting, and nothing delivered since the previous tick.
        let since = *stalled_since.get_or_insert(now);
        if now.duration_since(since) >= timeout {
            // A reply may still come, but every later one would wait behind it: start afresh.
            pipe.fail(&timed_out("Redis did not answer in time"));
            return;
        }
    }
}

impl Multiplexed {
    /// A connection to the server `info` names (`redis://` over TCP, `rediss://` over TLS
    /// verified with the system's roots, or a Unix socket), waiting at most `timeout` to
    /// connect and, while requests wait, for the next reply; nothing is opened until first use
    /// or [`Multiplexed::connect`].
    ///
    /// # Errors
    /// [`ErrorKind::InvalidClientConfig`] for an address of another kind, or a host name TLS
    /// cannot verify.
    pub fn new(info: &ConnectionInfo, timeout: Duration) -> RedisResult<Self> {
        Self::with_address(Address::new(info, None)?, info, timeout)
    }

    /// As [`Multiplexed::new`], for a `rediss://` address with a TLS configuration of your own
    /// (a CA file, a client certificate): `tls` replaces the system's roots and full
    /// verification that [`Multiplexed::new`] uses. Ignored for other addresses.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidClientConfig`] for an address of another kind than TCP, TLS or a
    /// Unix socket, or a host name TLS cannot verify.
    pub fn with_tls(
        info: &ConnectionInfo,
        timeout: Duration,
        tls: sessionkit_core::backend::tls::rustls::ClientConfig,
    ) -> RedisResult<Self> {
        Self::with_address(Address::new(info, Some(tls))?, info, timeout)
    }

    /// A connection to the master that `sentinels` names (built for
    /// [`SentinelServerType::Master`](redis::sentinel::SentinelServerType::Master)), logging
    /// in with `settings` (user, password, database), over TLS with `tls` if given (the server
    /// name checked is the address the Sentinels give). The Sentinels are asked for every new
    /// connection: when the master fails, requests fail (I/O errors) until the Sentinels have
    /// promoted a replica, and the next connection goes to it. A reply `READONLY` (the server
    /// became a replica while connected) breaks the connection too, so the next request asks
    /// again.
    pub fn with_sentinel(
        sentinels: SentinelClient,
        settings: &RedisConnectionInfo,
        timeout: Duration,
        tls: Option<sessionkit_core::backend::tls::rustls::ClientConfig>,
    ) -> Self {
        let address = Address::Sentinel {
            lookup: Arc::new(tokio::sync::Mutex::new(sentinels)),
            tls: tls.map(|config| tokio_rustls::TlsConnector::from(Arc::new(config))),
        };
        Self::with_settings(address, settings, timeout)
    }

    fn with_address(
        address: Address,
        info: &ConnectionInfo,
        timeout: Duration,
    ) -> RedisResult<Self> {
        Ok(Self::with_settings(address, info.redis_settings(), timeout))
    }

    fn with_settings(address: Address, settings: &RedisConnectionInfo, timeout: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                address,
                db: settings.db(),
                username: settings.username().map(str::to_owned),
                password: settings.password().map(str::to_owned),
                timeout,
                current: Mutex::new(None),
                opening: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Opens the connection now (to report an unreachable server at start-up).
    ///
    /// # Errors
    /// The I/O error, timeout or refused handshake (`AUTH`, `SELECT`) that kept it from opening.
    pub async fn connect(&self) -> RedisResult<()> {
        self.pipe().await.map(drop)
    }

    /// The open connection, opening one if there is none or it broke.
    async fn pipe(&self) -> RedisResult<Arc<Pipe>> {
        let healthy = |slot: &Option<Arc<Pipe>>| slot.as_ref().filter(|p| !p.is_broken()).cloned();
        if let Some(pipe) = healthy(&lock(&self.shared.current)) {
            return Ok(pipe);
        }
        let _opening = self.shared.opening.lock().await;
        if let Some(pipe) = healthy(&lock(&self.shared.current)) {
            return Ok(pipe); // another request opened it meanwhile
        }
        let pipe = tokio::time::timeout(self.shared.timeout, self.open())
            .await
            .map_err(|_| timed_out(self.shared.address.timeout_message()))??;
        *lock(&self.shared.current) = Some(Arc::clone(&pipe));
        Ok(pipe)
    }

    /// A new TCP connection with its tasks running and its handshake done.
    async fn open(&self) -> RedisResult<Arc<Pipe>> {
        let shared = &self.shared;
        let (read, write, tls) = shared.address.connect().await?;
        let pipe = Arc::new(Pipe {
            state: Mutex::new(PipeState::default()),
            socket: write,
            sending: Mutex::new(Sending::default()),
            broken: AtomicBool::new(false),
            progress: AtomicU64::new(0),
            wake_writer: Notify::new(),
            reader: Mutex::new(None),
        });
        let reader = tokio::spawn(read_replies(Arc::clone(&pipe), read));
        *lock(&pipe.reader) = Some(reader.abort_handle());
        tokio::spawn(write_commands(Arc::clone(&pipe), tls));
        tokio::spawn(watch_replies(Arc::clone(&pipe), shared.timeout));
        if let Some(password) = &shared.password {
            let auth: Vec<Arg<'_>> = std::iter::once("AUTH")
                .chain(shared.username.as_deref())
                .chain([password.as_str()])
                .map(Arg::from)
                .collect();
            self.exchange(&pipe, |out| command::write(out, &auth))
                .await?;
        }
        if shared.db != 0 {
            let select = [Arg::from("SELECT"), Arg::Int(shared.db)];
            self.exchange(&pipe, |out| command::write(out, &select))
                .await?;
        }
        Ok(pipe)
    }

    /// Sends through `pipe` and waits for `want` replies after skipping `skip`.
    async fn request(
        &self,
        pipe: &Pipe,
        encode: impl FnOnce(&mut Vec<u8>),
        skip: usize,
        want: usize,
    ) -> RedisResult<Replies> {
        if skip + want == 0 {
            return Ok(Replies::None); // an empty pipeline: nothing to send, nothing to wait for
        }
        // No timer here: the pipe's watchdog fails every waiter if replies stop coming.
        match pipe.send(encode, skip, want)?.await {
            Ok(replies) => replies,
            Err(_) => Err(broken_pipe("the Redis connection closed")),
        }
    }

    /// Sends one command through `pipe` and waits for its reply.
    async fn exchange(&self, pipe: &Pipe, encode: impl FnOnce(&mut Vec<u8>)) -> RedisResult<Value> {
        match self.request(pipe, encode, 0, 1).await? {
            Replies::One(value) => Ok(value),
            Replies::None | Replies::Many(_) => {
                Err(broken_pipe("a request got one reply too many or none"))
            }
        }
    }

    /// Sends the one command `encode` appends (RESP) and waits for its reply: the store's own
    /// commands, without a redis-rs `Cmd` or a boxed future.
    pub(crate) async fn query(&self, encode: impl FnOnce(&mut Vec<u8>)) -> RedisResult<Value> {
        self.exchange(&*self.pipe().await?, encode).await
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last handle is gone: stop the tasks (the writer closes its half on exit).
        if let Some(pipe) = lock(&self.current).take() {
            pipe.fail(&broken_pipe("the Redis store was dropped"));
        }
    }
}

impl ConnectionLike for Multiplexed {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(self.query(|out| cmd.write_packed_command(out)))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let pipe = self.pipe().await?;
            let encode = |out: &mut Vec<u8>| out.extend_from_slice(&pipeline.get_packed_pipeline());
            Ok(self.request(&pipe, encode, offset, count).await?.into_vec())
        })
    }

    fn get_db(&self) -> i64 {
        self.shared.db
    }
}
