//! The TLS test servers `.ci/services` starts, their throwaway CA and certificates
//! (`.ci/certs`), and a loopback server that presents a certificate of the test's choosing
//! (expired, for another host) and then closes: the failure tests' other end.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where `.ci/certs` put the CA and the certificates (`SESSIONKIT_TLS_DIR`, default
/// `/tmp/sessionkit-tls`).
pub fn dir() -> PathBuf {
    std::env::var_os("SESSIONKIT_TLS_DIR")
        .map_or_else(|| "/tmp/sessionkit-tls".into(), PathBuf::from)
}

/// The path of one of the files `.ci/certs` makes (`ca.pem`, `client.key`, …), as a string
/// for a URL.
///
/// # Panics
/// If the path is not UTF-8.
pub fn file(name: &str) -> String {
    dir()
        .join(name)
        .into_os_string()
        .into_string()
        .expect("a UTF-8 path")
}

/// The PostgreSQL user that may log in only over TLS, with a SCRAM password, and its password.
pub const POSTGRES_TLS_USER: (&str, &str) = ("sktest_scram", "scram-secret-1");

/// The PostgreSQL user that may log in only over TLS with a client certificate of the test
/// CA, and its password.
pub const POSTGRES_MTLS_USER: (&str, &str) = ("sktest_mtls", "mtls-secret-1");

/// The TLS-only test PostgreSQL, as [`POSTGRES_TLS_USER`], verifying the server's
/// certificate and host name (`SESSIONKIT_POSTGRES_TLS_URL`).
pub fn postgres_url() -> String {
    std::env::var("SESSIONKIT_POSTGRES_TLS_URL").unwrap_or_else(|_| {
        let (user, password) = POSTGRES_TLS_USER;
        format!(
            "postgres://{user}:{password}@localhost:5432/test?sslmode=verify-full&sslrootcert={}",
            file("ca.pem")
        )
    })
}

/// The MariaDB/MySQL user that must log in over TLS, and its password.
pub const MYSQL_TLS_USER: (&str, &str) = ("sktest_tls", "tls-secret-1");

/// The MariaDB/MySQL user that must log in over TLS with a client certificate of the test CA,
/// and its password.
pub const MYSQL_X509_USER: (&str, &str) = ("sktest_x509", "x509-secret-1");

/// The test MariaDB/MySQL over TLS, as [`MYSQL_TLS_USER`], verifying the server's certificate
/// and host name (`SESSIONKIT_MYSQL_TLS_URL`).
pub fn mysql_url() -> String {
    std::env::var("SESSIONKIT_MYSQL_TLS_URL").unwrap_or_else(|_| {
        let (user, password) = MYSQL_TLS_USER;
        format!(
            "mysql://{user}:{password}@localhost:3306/test?ssl-mode=VERIFY_IDENTITY&ssl-ca={}",
            file("ca.pem")
        )
    })
}

/// The ACL user of the TLS-only test Redis (its default user is off), and its password.
pub const REDIS_TLS_USER: (&str, &str) = ("sessionkit", "acl-secret-1");

/// The TLS-only test Redis on port 6380, as [`REDIS_TLS_USER`], verifying the server's
/// certificate and host name (`SESSIONKIT_REDIS_TLS_URL`).
pub fn redis_url() -> String {
    std::env::var("SESSIONKIT_REDIS_TLS_URL").unwrap_or_else(|_| {
        let (user, password) = REDIS_TLS_USER;
        format!(
            "rediss://{user}:{password}@localhost:6380?tls_ca={}",
            file("ca.pem")
        )
    })
}

/// The TLS-only test Redis Cluster on ports 7101-7103, verifying each node's certificate
/// (`SESSIONKIT_REDIS_TLS_CLUSTER_URL`).
pub fn redis_cluster_url() -> String {
    std::env::var("SESSIONKIT_REDIS_TLS_CLUSTER_URL").unwrap_or_else(|_| {
        format!(
            "rediss+cluster://127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103?tls_ca={}",
            file("ca.pem")
        )
    })
}

/// The Unix socket of the TLS test Redis (`SESSIONKIT_REDIS_SOCKET`); its users are those of
/// the TLS port.
pub fn redis_socket() -> String {
    std::env::var("SESSIONKIT_REDIS_SOCKET")
        .unwrap_or_else(|_| "/tmp/sessionkit-redis-tls/redis.sock".into())
}

/// The TLS test Memcached on port 11214, verifying its certificate and host name
/// (`SESSIONKIT_MEMCACHED_TLS_URL`).
pub fn memcached_url() -> String {
    std::env::var("SESSIONKIT_MEMCACHED_TLS_URL")
        .unwrap_or_else(|_| format!("memcached+tls://localhost:11214?tls_ca={}", file("ca.pem")))
}

/// Which bytes a [`presenting`] server expects before its TLS handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Before {
    /// None: TLS from the first byte (Redis, Memcached).
    Nothing,
    /// PostgreSQL's 8-byte `SSLRequest`, answered `S`.
    PostgresSslRequest,
    /// MySQL's greeting ([`mysql_greeting`] offering TLS), then the client's `SSLRequest`.
    MysqlGreeting,
}

/// A MySQL protocol-10 greeting, offering TLS if `tls`: what a server sends first.
pub fn mysql_greeting(tls: bool) -> Vec<u8> {
    // CLIENT_LONG_PASSWORD | CONNECT_WITH_DB | PROTOCOL_41 | TRANSACTIONS | SECURE_CONNECTION
    // | PLUGIN_AUTH, and CLIENT_SSL if offered.
    let capabilities: u32 =
        0x1 | 0x8 | 0x200 | 0x2000 | 0x8000 | 0x8_0000 | if tls { 0x800 } else { 0 };
    let [c0, c1, c2, c3] = capabilities.to_le_bytes();
    let mut payload = vec![10];
    payload.extend_from_slice(b"5.7.99-sessionkit-test\0");
    payload.extend_from_slice(&1u32.to_le_bytes()); // connection id
    payload.extend_from_slice(b"abcdefgh\0"); // first 8 bytes of the scramble
    payload.extend_from_slice(&[c0, c1, 45, 2, 0, c2, c3, 21]); // charset, status, scramble length
    payload.extend_from_slice(&[0; 10]);
    payload.extend_from_slice(b"ijklmnopqrst\0"); // the other 12 bytes of the scramble
    payload.extend_from_slice(b"mysql_native_password\0");
    let len = u32::try_from(payload.len()).expect("short").to_le_bytes();
    let mut packet = vec![len[0], len[1], len[2], 0];
    packet.extend_from_slice(&payload);
    packet
}

/// A loopback server that presents the certificate `name` (`expired`, `wrong-host`, … of
/// [`dir`]) to every client and then closes the connection; its `127.0.0.1:port`.
///
/// # Panics
/// If the certificate cannot be read or no port can be bound.
pub async fn presenting(name: &str, before: Before) -> String {
    let chain = CertificateDer::pem_file_iter(dir().join(format!("{name}.pem")))
        .expect("certificate")
        .collect::<Result<Vec<_>, _>>()
        .expect("certificate");
    let key = PrivateKeyDer::from_pem_file(dir().join(format!("{name}.key"))).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let ready = match before {
                    Before::Nothing => true,
                    Before::PostgresSslRequest => {
                        let mut request = [0u8; 8];
                        socket.read_exact(&mut request).await.is_ok()
                            && socket.write_all(b"S").await.is_ok()
                    }
                    Before::MysqlGreeting => {
                        // The client's SSLRequest: a 4-byte header and 32 bytes.
                        let mut request = [0u8; 36];
                        socket.write_all(&mysql_greeting(true)).await.is_ok()
                            && socket.read_exact(&mut request).await.is_ok()
                    }
                };
                if !ready {
                    return;
                }
                // The client refuses the certificate: the handshake fails here, as it should.
                let _ = acceptor.accept(socket).await;
            });
        }
    });
    address
}
