//! Just enough of the memcached text protocol: `gets`, `add`, `set`, `cas`, `delete`, with a
//! small connection pool per server and a timeout on every exchange, over TCP or TLS.

use std::sync::Mutex;
use std::time::Duration;

use sessionkit_core::backend::tls;
use sessionkit_core::{Error, Result};
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

const TIMEOUT: Duration = Duration::from_secs(5);
/// The largest item memcached stores (its `-I` tops out at 1 GiB): a reply announcing a longer
/// value is not from memcached.
const MAX_ITEM_BYTES: usize = 1 << 30;
const IDLE_CONNECTIONS: usize = 16;
/// The longest reply line read: memcached's are a few dozen bytes (`VALUE <key> <flags>
/// <bytes> <cas>`, keys at most 250 bytes).
const MAX_LINE_BYTES: u64 = 1024;

/// The outcome of a storage command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreReply {
    Stored,
    /// `add` found the key, or `cas` found it changed.
    Exists,
    /// `cas` found no item.
    NotFound,
}

/// A connection's bytes: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One connection, buffered for reading lines. (A struct, not an alias: the read closures
/// take it by reference, and a `dyn` type in their signature would need its lifetime spelled.)
struct Connection(BufReader<Box<dyn Io>>);

impl std::ops::Deref for Connection {
    type Target = BufReader<Box<dyn Io>>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Connection {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// How connections to a server are secured: the connector and the name its certificate must
/// carry.
#[derive(Clone)]
pub(crate) struct Tls {
    pub(crate) connector: TlsConnector,
    pub(crate) name: ServerName<'static>,
}

/// One memcached server and its idle connections.
pub(crate) struct Server {
    pub(crate) address: String,
    tls: Option<Tls>,
    idle: Mutex<Vec<Connection>>,
}

fn unavailable(address: &str, err: impl Into<sessionkit_core::BoxError>) -> Error {
    Error::unavailable(format!("talking to memcached at {address}"), err)
}

/// A failed TLS connect: `Config` when the handshake was refused for good (a certificate, a
/// port without TLS), else `Unavailable`.
fn tls_failed(address: &str, err: std::io::Error) -> Error {
    match tls::handshake_refusal(&err) {
        Some(why) => {
            Error::config_with(format!("connecting to memcached at {address}: {why}"), err)
        }
        None => unavailable(address, err),
    }
}

fn protocol_error(address: &str, line: &str) -> Error {
    let err = std::io::Error::new(std::io::ErrorKind::InvalidData, line.trim_end().to_owned());
    if line.contains("too large") {
        Error::TooLarge {
            what: "session item (memcached refused it)".into(),
            size: 0,
            limit: 0,
        }
    } else {
        Error::backend(format!("memcached at {address} answered unexpectedly"), err)
    }
}

impl Server {
    pub(crate) fn new(address: String, tls: Option<Tls>) -> Self {
        Self {
            address,
            tls,
            idle: Mutex::new(Vec::new()),
        }
    }

    async fn connect(&self) -> Result<Connection> {
        let stream = TcpStream::connect(&self.address)
            .await
            .map_err(|e| unavailable(&self.address, e))?;
        let _ = stream.set_nodelay(true);
        let stream: Box<dyn Io> = match &self.tls {
            None => Box::new(stream),
            Some(tls) => Box::new(
                tls.connector
                    .connect(tls.name.clone(), stream)
                    .await
                    .map_err(|e| tls_failed(&self.address, e))?,
            ),
        };
        Ok(Connection(BufReader::new(stream)))
    }

    async fn connection(&self) -> Result<Connection> {
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        match pooled {
            Some(conn) => Ok(conn),
            None => tokio::time::timeout(TIMEOUT, self.connect())
                .await
                .map_err(|e| unavailable(&self.address, e))?,
        }
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < IDLE_CONNECTIONS {
            idle.push(conn);
        }
    }

    /// Sends `request` and reads the reply with `read`. Only a connection whose reply was read
    /// whole goes back to the pool: after any error, where the next reply starts is unknown,
    /// and a later request must never read the rest of this one's reply as its own.
    async fn exchange<T>(
        &self,
        request: &[u8],
        read: impl AsyncFnOnce(&mut Connection) -> Result<T>,
    ) -> Result<T> {
        let mut conn = self.connection().await?;
        let result = tokio::time::timeout(TIMEOUT, async {
            // The flush sends what TLS holds back; on TCP it does nothing.
            let stream = conn.get_mut();
            stream
                .write_all(request)
                .await
                .map_err(|e| unavailable(&self.address, e))?;
            stream
                .flush()
                .await
                .map_err(|e| unavailable(&self.address, e))?;
            read(&mut conn).await
        })
        .await
        .map_err(|e| unavailable(&self.address, e))?;
        if result.is_ok() {
            self.give_back(conn);
        }
        result
    }

    /// `gets`: the value and its cas token, or `None`.
    pub(crate) async fn gets(&self, key: &str) -> Result<Option<(Vec<u8>, u64)>> {
        let address = self.address.clone();
        self.exchange(format!("gets {key}\r\n").as_bytes(), async move |conn| {
            read_value(&mut **conn, &address).await
        })
        .await
    }

    /// `add`, `set` or `cas <token>` of `value` with `exptime`.
    pub(crate) async fn store(
        &self,
        command: &str,
        key: &str,
        value: &[u8],
        exptime: i64,
        cas: Option<u64>,
    ) -> Result<StoreReply> {
        let mut request = match cas {
            Some(token) => format!("{command} {key} 0 {exptime} {} {token}\r\n", value.len()),
            None => format!("{command} {key} 0 {exptime} {}\r\n", value.len()),
        }
        .into_bytes();
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
        let address = self.address.clone();
        self.exchange(&request, async move |conn| {
            read_store_reply(&mut **conn, &address).await
        })
        .await
    }

    /// `delete`: whether the key was there.
    pub(crate) async fn delete(&self, key: &str) -> Result<bool> {
        let address = self.address.clone();
        self.exchange(format!("delete {key}\r\n").as_bytes(), async move |conn| {
            read_delete_reply(&mut **conn, &address).await
        })
        .await
    }
}

/// The reply to `gets`: the value and its cas token, or `None` (`END`).
pub(crate) async fn read_value<R: AsyncBufRead + Unpin + ?Sized>(
    conn: &mut R,
    address: &str,
) -> Result<Option<(Vec<u8>, u64)>> {
    let line = read_line(conn, address).await?;
    if line == "END\r\n" {
        return Ok(None);
    }
    let parts: Vec<&str> = line.split_whitespace().collect();
    let (Some(&"VALUE"), Some(bytes), Some(cas)) = (parts.first(), parts.get(3), parts.get(4))
    else {
        return Err(protocol_error(address, &line));
    };
    let (Ok(bytes), Ok(cas)) = (bytes.parse::<usize>(), cas.parse::<u64>()) else {
        return Err(protocol_error(address, &line));
    };
    if bytes > MAX_ITEM_BYTES {
        return Err(protocol_error(address, &line));
    }
    // Kept as the bytes come, not allocated as announced: a wrong server could announce any
    // length, and never send it.
    let mut value = Vec::new();
    (&mut *conn)
        .take(bytes as u64 + 2)
        .read_to_end(&mut value)
        .await
        .map_err(|e| unavailable(address, e))?;
    if value.len() < bytes + 2 {
        return Err(unavailable(
            address,
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"),
        ));
    }
    if !value.ends_with(b"\r\n") {
        return Err(protocol_error(address, "a value longer than its length"));
    }
    value.truncate(bytes);
    let end = read_line(conn, address).await?;
    if end != "END\r\n" {
        return Err(protocol_error(address, &end));
    }
    Ok(Some((value, cas)))
}

/// The reply to `add`, `set` or `cas`.
pub(crate) async fn read_store_reply<R: AsyncBufRead + Unpin + ?Sized>(
    conn: &mut R,
    address: &str,
) -> Result<StoreReply> {
    let line = read_line(conn, address).await?;
    match line.as_str() {
        "STORED\r\n" => Ok(StoreReply::Stored),
        "NOT_STORED\r\n" | "EXISTS\r\n" => Ok(StoreReply::Exists),
        "NOT_FOUND\r\n" => Ok(StoreReply::NotFound),
        other => Err(protocol_error(address, other)),
    }
}

/// The reply to `delete`: whether the key was there.
pub(crate) async fn read_delete_reply<R: AsyncBufRead + Unpin + ?Sized>(
    conn: &mut R,
    address: &str,
) -> Result<bool> {
    let line = read_line(conn, address).await?;
    match line.as_str() {
        "DELETED\r\n" => Ok(true),
        "NOT_FOUND\r\n" => Ok(false),
        other => Err(protocol_error(address, other)),
    }
}

async fn read_line<R: AsyncBufRead + Unpin + ?Sized>(
    conn: &mut R,
    address: &str,
) -> Result<String> {
    let mut line = String::new();
    let read = (&mut *conn)
        .take(MAX_LINE_BYTES)
        .read_line(&mut line)
        .await
        .map_err(|e| unavailable(address, e))?;
    if read == 0 {
        return Err(unavailable(
            address,
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"),
        ));
    }
    if !line.ends_with('\n') {
        return Err(protocol_error(address, "a reply line without its end"));
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessionkit_core::ErrorKind;

    async fn gets(reply: &[u8]) -> Result<Option<(Vec<u8>, u64)>> {
        read_value(&mut &reply[..], "test").await
    }

    #[tokio::test]
    async fn gets_replies_are_read() {
        let hit = gets(b"VALUE k 0 3 7\r\nabc\r\nEND\r\n")
            .await
            .expect("a hit");
        assert_eq!(hit, Some((b"abc".to_vec(), 7)));
        assert_eq!(gets(b"END\r\n").await.expect("a miss"), None);
    }

    /// Found by the `memcached_reply` fuzz target: the length a reply announces was allocated
    /// before any byte of the value came, so one line from a wrong server (or any service on
    /// the port) overflowed the length or asked for terabytes.
    #[tokio::test]
    async fn announced_lengths_are_not_allocated_up_front() {
        for line in [
            &b"VALUE k 0 18446744073709551615 1\r\n"[..],
            b"VALUE 3 11111 111111111111111 3 111DELETED\r\n",
            b"VALUE k 0 1073741825 1\r\n",
        ] {
            let err = gets(line)
                .await
                .expect_err("no memcached item is that large");
            assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
        }
        // Within memcached's limit, but the bytes never come: the connection broke.
        let err = gets(b"VALUE k 0 1000000000 1\r\nabc")
            .await
            .expect_err("cut short");
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        // The value's bytes must end where the reply said.
        let err = gets(b"VALUE k 0 3 1\r\nabcXYEND\r\n")
            .await
            .expect_err("too long a value");
        assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    }

    #[tokio::test]
    async fn reply_lines_are_bounded() {
        let endless = vec![b'x'; 64 * 1024];
        let err = gets(&endless)
            .await
            .expect_err("no reply line is that long");
        assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    }

    /// A loopback server that answers every `gets` of each connection with `reply`, and counts
    /// the connections it accepted.
    async fn replying(
        reply: &'static [u8],
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::AsyncBufReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let accepted = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut stream = tokio::io::BufReader::new(stream);
                    let mut line = String::new();
                    while matches!(stream.read_line(&mut line).await, Ok(n) if n > 0) {
                        line.clear();
                        if stream.get_mut().write_all(reply).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (address, accepted)
    }

    #[tokio::test]
    async fn a_connection_whose_reply_failed_is_not_reused() {
        use std::sync::atomic::Ordering;
        // The value runs past its length: where the next reply starts is unknown.
        let (address, accepted) = replying(b"VALUE k 0 3 1\r\nabcXYEND\r\n").await;
        let server = Server::new(address, None);
        for round in 1..=2 {
            let err = server.gets("k").await.expect_err("a protocol error");
            assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
            assert_eq!(
                accepted.load(Ordering::SeqCst),
                round,
                "a new connection each time"
            );
        }
        // A reply read whole leaves its connection for the next request.
        let (address, accepted) = replying(b"END\r\n").await;
        let server = Server::new(address, None);
        for _ in 0..2 {
            assert_eq!(server.gets("k").await.expect("a miss"), None);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }
}
