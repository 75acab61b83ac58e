//! How the multiplexed connection reaches its server: TCP, TLS over TCP (tokio-rustls), a
//! Unix socket, or the master a set of Redis Sentinels names (asked anew for every connection,
//! so a connection opened after a failover goes to the promoted replica). The pipe in
//! `connection.rs` is the same for all of them; what differs is who may write: on TCP and Unix sockets a request that completes a batch writes it without waiting
//! (`try_write`), while a TLS stream is written only by the connection's writer task, which
//! owns its sending half (rustls keeps state between writes).

use std::path::PathBuf;
use std::sync::Arc;

use redis::sentinel::SentinelClient;
use redis::{ConnectionAddr, ConnectionInfo, ErrorKind, RedisError, RedisResult};
use sessionkit_core::backend::tls::rustls::ClientConfig;
use sessionkit_core::backend::tls::{self, TlsFiles, Verify};
use tokio::io::{AsyncRead, WriteHalf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;

/// Where the connection goes.
#[derive(Clone)]
pub(crate) enum Address {
    Tcp {
        host: String,
        port: u16,
    },
    Tls {
        host: String,
        port: u16,
        name: ServerName<'static>,
        connector: TlsConnector,
    },
    Unix(PathBuf),
    /// The master the Sentinels name, over TLS with `tls` if given.
    Sentinel {
        lookup: Arc<tokio::sync::Mutex<SentinelClient>>,
        tls: Option<TlsConnector>,
    },
}

/// The receiving half of a connection.
pub(crate) type Incoming = Box<dyn AsyncRead + Send + Unpin>;

/// The sending half of a TLS connection, owned by the writer task.
pub(crate) type TlsWriter = WriteHalf<TlsStream<TcpStream>>;

/// The sending half as requests see it.
pub(crate) enum Outgoing {
    Tcp(tokio::net::tcp::OwnedWriteHalf),
    Unix(tokio::net::unix::OwnedWriteHalf),
    /// Written by the writer task only (see [`TlsWriter`]).
    Tls,
}

impl Outgoing {
    /// Writes what the socket takes without waiting; `WouldBlock` when it takes nothing (and
    /// always on TLS, which the writer task writes).
    pub(crate) fn try_write(&self, bytes: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Tcp(socket) => socket.try_write(bytes),
            Self::Unix(socket) => socket.try_write(bytes),
            Self::Tls => Err(std::io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Waits until the socket takes bytes again.
    pub(crate) async fn writable(&self) -> std::io::Result<()> {
        match self {
            Self::Tcp(socket) => socket.writable().await,
            Self::Unix(socket) => socket.writable().await,
            Self::Tls => Ok(()),
        }
    }
}

impl Address {
    /// The address `info` names. A `rediss://` address is verified with the system's roots
    /// (or not at all, for redis-rs's `#insecure`) unless `tls` is given.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidClientConfig`] when the TLS configuration cannot be built.
    pub(crate) fn new(info: &ConnectionInfo, tls: Option<ClientConfig>) -> RedisResult<Self> {
        Ok(match info.addr() {
            ConnectionAddr::Tcp(host, port) => Self::Tcp {
                host: host.clone(),
                port: *port,
            },
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                ..
            } => {
                let config = match tls {
                    Some(config) => config,
                    None => {
                        let verify = if *insecure {
                            Verify::Nothing
                        } else {
                            Verify::Full
                        };
                        tls::client_config(&TlsFiles::default(), verify).map_err(invalid)?
                    }
                };
                Self::Tls {
                    host: host.clone(),
                    port: *port,
                    name: tls::server_name(host).map_err(invalid)?,
                    connector: TlsConnector::from(Arc::new(config)),
                }
            }
            ConnectionAddr::Unix(path) => Self::Unix(path.clone()),
            _ => return Err(unknown_address()),
        })
    }

    /// What a connection that did not open in time is reported as: over TLS, the likely cause
    /// too (a plain-text port never answers the handshake).
    pub(crate) fn timeout_message(&self) -> &'static str {
        match self {
            Self::Tls { .. } => {
                "connecting to Redis over TLS timed out (is that port a TLS port? a plain-text one never answers the handshake)"
            }
            Self::Sentinel { .. } => {
                "finding the master through Redis Sentinel and connecting to it timed out"
            }
            Self::Tcp { .. } | Self::Unix(_) => "connecting to Redis timed out",
        }
    }

    /// Opens a connection: its halves, and for TLS the writer task's half.
    ///
    /// # Errors
    /// The I/O error, or for Sentinel, the error of finding the master.
    pub(crate) async fn connect(&self) -> RedisResult<Connected> {
        Ok(match self {
            Self::Tcp { host, port } => tcp(host, *port).await?,
            Self::Tls {
                host,
                port,
                name,
                connector,
            } => tls_over_tcp(host, *port, name.clone(), connector).await?,
            Self::Unix(path) => {
                let (read, write) = UnixStream::connect(path).await?.into_split();
                (Box::new(read), Outgoing::Unix(write), None)
            }
            Self::Sentinel { lookup, tls } => {
                // Checked by the Sentinel client: the server it names says it is the master.
                let master = lookup.lock().await.async_get_client().await?;
                let (host, port) = match master.get_connection_info().addr() {
                    ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                        (host.clone(), *port)
                    }
                    _ => return Err(unknown_address()),
                };
                match tls {
                    None => tcp(&host, port).await?,
                    Some(connector) => {
                        let name = tls::server_name(&host).map_err(invalid)?;
                        tls_over_tcp(&host, port, name, connector).await?
                    }
                }
            }
        })
    }
}

/// An open connection: its receiving half, its sending half, and for TLS the writer task's half.
pub(crate) type Connected = (Incoming, Outgoing, Option<TlsWriter>);

async fn tcp(host: &str, port: u16) -> std::io::Result<Connected> {
    let socket = TcpStream::connect((host, port)).await?;
    socket.set_nodelay(true)?;
    let (read, write) = socket.into_split();
    Ok((Box::new(read), Outgoing::Tcp(write), None))
}

async fn tls_over_tcp(
    host: &str,
    port: u16,
    name: ServerName<'static>,
    connector: &TlsConnector,
) -> std::io::Result<Connected> {
    let socket = TcpStream::connect((host, port)).await?;
    socket.set_nodelay(true)?;
    let stream = connector.connect(name, socket).await?;
    let (read, write) = tokio::io::split(stream);
    Ok((Box::new(read), Outgoing::Tls, Some(write)))
}

fn unknown_address() -> RedisError {
    RedisError::from((
        ErrorKind::InvalidClientConfig,
        "an address this connection does not know",
    ))
}

fn invalid(err: sessionkit_core::Error) -> RedisError {
    RedisError::from((
        ErrorKind::InvalidClientConfig,
        "the TLS configuration",
        err.to_string(),
    ))
}
