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

/// Which bytes a [`presenting`] server expects before its TLS handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Before {
    /// None: TLS from the first byte (Redis, Memcached).
    Nothing,
    /// PostgreSQL's 8-byte `SSLRequest`, answered `S`.
    PostgresSslRequest,
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
                if before == Before::PostgresSslRequest {
                    let mut request = [0u8; 8];
                    if socket.read_exact(&mut request).await.is_err()
                        || socket.write_all(b"S").await.is_err()
                    {
                        return;
                    }
                }
                // The client refuses the certificate: the handshake fails here, as it should.
                let _ = acceptor.accept(socket).await;
            });
        }
    });
    address
}
