//! TLS for the network stores: one rustls client configuration built from a store URL's
//! options, so every store verifies servers the same way (feature `tls`).
//!
//! Trust comes from the CA file the URL names, or else from the system's root certificates.
//! What is checked of the server's certificate is a [`Verify`]; each store maps its own URL
//! conventions onto it (PostgreSQL's `sslmode`, `rediss://`, …). The crypto is rustls's `ring`
//! provider, chosen explicitly, so a process that also links another provider needs no
//! process-wide default.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::{Error, Result};

pub use rustls;

/// How much of the server's certificate a connection checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verify {
    /// The chain up to a trusted root, the validity dates and the host name: what every store
    /// does when TLS is asked for and the URL does not say otherwise.
    Full,
    /// The chain and the dates, not the host name: any certificate a trusted CA issued
    /// (PostgreSQL `verify-ca`, MySQL `VERIFY_CA`). Only safe with a CA file of your own.
    Chain,
    /// Nothing: the traffic is encrypted but the server is not authenticated, so a machine
    /// in the middle can read it (PostgreSQL `prefer`/`require` without `sslrootcert`, as
    /// libpq does).
    Nothing,
}

/// The files a TLS connection takes its trust and its own identity from (PEM).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificates to trust instead of the system's roots.
    pub ca: Option<PathBuf>,
    /// A client certificate chain, for servers that authenticate clients (mutual TLS).
    pub cert: Option<PathBuf>,
    /// The private key of `cert`.
    pub key: Option<PathBuf>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn unreadable(
    what: &str,
    path: &Path,
    err: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::config_with(format!("cannot read the {what} {}", path.display()), err)
}

fn roots(ca: Option<&Path>) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let Some(ca) = ca else {
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(Error::config(
                "no system root certificates were found: name a CA file in the store URL",
            ));
        }
        return Ok(roots);
    };
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| unreadable("CA file", ca, e))? {
        let cert = cert.map_err(|e| unreadable("CA file", ca, e))?;
        roots.add(cert).map_err(|e| unreadable("CA file", ca, e))?;
    }
    if roots.is_empty() {
        return Err(Error::config(format!(
            "the CA file {} holds no certificate",
            ca.display()
        )));
    }
    Ok(roots)
}

fn identity(
    files: &TlsFiles,
) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>> {
    let (cert, key) = match (&files.cert, &files.key) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (cert, key),
        _ => {
            return Err(Error::config(
                "a client certificate needs both its certificate and its key file",
            ));
        }
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| unreadable("client certificate", cert, e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| unreadable("client certificate", cert, e))?;
    if chain.is_empty() {
        return Err(Error::config(format!(
            "the client certificate file {} holds no certificate",
            cert.display()
        )));
    }
    // The key's contents never reach an error message: only its path does.
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| unreadable("client key", key, e))?;
    Ok(Some((chain, key)))
}

/// The client configuration for `files` and `verify`.
///
/// # Errors
/// [`ErrorKind::Config`](crate::ErrorKind::Config) when a file cannot be read or holds no
/// certificate or key, when only one of the client certificate and key is given, or when no
/// CA file is given and the system has no root certificates.
pub fn client_config(files: &TlsFiles, verify: Verify) -> Result<ClientConfig> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config_with("the TLS provider", e))?;
    let verifier: Arc<dyn ServerCertVerifier> = match verify {
        Verify::Nothing => Arc::new(NoVerification(Arc::clone(&provider))),
        Verify::Full | Verify::Chain => {
            let webpki = WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots(files.ca.as_deref())?),
                Arc::clone(&provider),
            )
            .build()
            .map_err(|e| Error::config_with("the TLS certificate verifier", e))?;
            if verify == Verify::Full {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match identity(files)? {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| Error::config_with("the client certificate and key do not match", e))?,
        None => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// The name a connection to `host` verifies the server's certificate against (a DNS name or
/// an IP address).
///
/// # Errors
/// [`ErrorKind::Config`](crate::ErrorKind::Config) when `host` is neither.
pub fn server_name(host: &str) -> Result<ServerName<'static>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_owned())
        .map_err(|e| Error::config_with(format!("{host:?} is not a host name for TLS"), e))
}

/// Why the TLS handshake failed, if `err` or one of its sources says it did for a reason
/// that retrying does not fix: a refused certificate (wrong CA, wrong host, expired; or the
/// server refused ours), a server that does not speak TLS on that port, or no protocol
/// version or cipher in common. Stores report these as `Config` errors, with this reason.
pub fn handshake_refusal(err: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    use rustls::AlertDescription as Alert;
    let mut next = Some(err);
    while let Some(mut err) = next {
        // A shared error (redis-rs keeps its I/O errors in an `Arc`) is the error it shares.
        if let Some(shared) = err.downcast_ref::<Arc<dyn std::error::Error + Send + Sync>>() {
            err = &**shared;
        }
        // An I/O error's `source` skips the error it wraps (tokio-rustls wraps rustls's).
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            err = inner;
        }
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return match tls {
                rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::AlertReceived(
                    Alert::BadCertificate
                    | Alert::CertificateRequired
                    | Alert::UnknownCA
                    | Alert::CertificateExpired
                    | Alert::CertificateUnknown,
                ) => Some("the TLS handshake refused a certificate"),
                rustls::Error::InvalidMessage(_) => {
                    Some("the server does not speak TLS on that port")
                }
                rustls::Error::PeerIncompatible(_)
                | rustls::Error::AlertReceived(Alert::ProtocolVersion | Alert::HandshakeFailure) => {
                    Some("the server and sessionkit have no TLS version or cipher in common")
                }
                _ => None,
            };
        }
        next = err.source();
    }
    None
}

/// Checks the chain and the dates, and accepts a certificate for another host name.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        // webpki checks the name after the chain: a name error means the chain was good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            verified => verified,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Accepts any certificate; the handshake's signatures are still checked, so the session
/// keys are the server's (whoever it is).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn missing_or_empty_files_and_half_an_identity_are_config_errors() {
        let dir = std::env::temp_dir().join(format!("sessionkit-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let cases = [
            TlsFiles {
                ca: Some(dir.join("missing.pem")),
                ..TlsFiles::default()
            },
            TlsFiles {
                ca: Some(empty.clone()),
                ..TlsFiles::default()
            },
            TlsFiles {
                cert: Some(empty.clone()),
                ..TlsFiles::default()
            },
        ];
        for files in cases {
            let err = client_config(&files, Verify::Full).expect_err("refused");
            assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn host_names_and_addresses_are_server_names() {
        assert!(server_name("localhost").is_ok());
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("[::1]").is_ok());
        assert_eq!(
            server_name("not a host").expect_err("refused").kind(),
            ErrorKind::Config
        );
    }
}
