//! The store URL: `redis://`, `rediss://` (TLS), `redis+unix://` / `unix://` (a Unix socket),
//! `redis+cluster://` / `rediss+cluster://`; the options sessionkit reads (`namespace`,
//! `timeout_ms`, `tls_ca`, `tls_cert`, `tls_key`) and, for Unix sockets, redis-rs's own
//! (`db`, `user`, `pass`).

use std::path::PathBuf;
use std::time::Duration;

use redis::{ConnectionAddr, TlsCertificates};
use sessionkit_core::backend::tls::{self, TlsFiles, Verify};
use sessionkit_core::backend::{percent_decoded, redacted_url, split_options};
use sessionkit_core::{Error, Result};

use crate::Multiplexed;

/// How long connecting may take, and waiting requests may go without a reply, unless the URL
/// says (`timeout_ms`).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest `timeout_ms` accepted (a day): longer is surely a typo.
const MAX_TIMEOUT_MS: u64 = 86_400_000;

/// A parsed store URL.
pub(crate) struct StoreOptions {
    /// The URL for redis-rs: without sessionkit's options (with the fragment, `#insecure`).
    pub(crate) base: String,
    pub(crate) namespace: String,
    pub(crate) timeout: Duration,
    tls: TlsFiles,
    /// The whole URL with its password hidden, for error messages.
    shown: String,
}

impl StoreOptions {
    /// Parses `url`.
    ///
    /// # Errors
    /// `Config` for an unknown or invalid option.
    pub(crate) fn parse(url: &str) -> Result<Self> {
        let (url_only, fragment) = url.split_once('#').map_or((url, ""), |(u, f)| (u, f));
        let (_, options) = split_options(url_only);
        let mut parsed = Self {
            base: url_only
                .split_once('?')
                .map_or(url_only, |(base, _)| base)
                .to_owned(),
            namespace: "sessionkit".to_owned(),
            timeout: DEFAULT_TIMEOUT,
            tls: TlsFiles::default(),
            shown: redacted_url(url),
        };
        let unix = parsed.base.starts_with("redis+unix:") || parsed.base.starts_with("unix:");
        let mut passthrough = Vec::new();
        for (name, value) in options {
            let path = || Some(PathBuf::from(percent_decoded(&value)));
            match (name.as_str(), value.parse::<u64>()) {
                ("timeout_ms", Ok(ms)) if (1..=MAX_TIMEOUT_MS).contains(&ms) => {
                    parsed.timeout = Duration::from_millis(ms);
                }
                ("namespace", _)
                    if !value.is_empty()
                        && value
                            .bytes()
                            .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}') =>
                {
                    parsed.namespace = value;
                }
                ("tls_ca", _) => parsed.tls.ca = path(),
                ("tls_cert", _) => parsed.tls.cert = path(),
                ("tls_key", _) => parsed.tls.key = path(),
                ("db" | "user" | "pass", _) if unix => passthrough.push(format!("{name}={value}")),
                _ => {
                    return Err(Error::config(format!(
                        "unknown or invalid redis option {name} (namespace, timeout_ms, tls_ca, tls_cert, tls_key)"
                    )));
                }
            }
        }
        if !passthrough.is_empty() {
            parsed.base = format!("{}?{}", parsed.base, passthrough.join("&"));
        }
        if !fragment.is_empty() {
            parsed.base = format!("{}#{fragment}", parsed.base);
        }
        Ok(parsed)
    }

    fn invalid(&self, err: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::config_with(format!("invalid Redis URL {}", self.shown), err)
    }

    /// The connection to a standalone server (not opened yet).
    ///
    /// # Errors
    /// `Config` for a URL redis-rs does not take or TLS files that cannot be read.
    pub(crate) fn standalone(&self) -> Result<Multiplexed> {
        let client = redis::Client::open(self.base.as_str()).map_err(|e| self.invalid(e))?;
        let info = client.get_connection_info();
        let conn = match info.addr() {
            ConnectionAddr::TcpTls { insecure, .. } => {
                let verify = if *insecure {
                    Verify::Nothing
                } else {
                    Verify::Full
                };
                let config = tls::client_config(&self.tls, verify)?;
                Multiplexed::with_tls(info, self.timeout, config)
            }
            _ if self.tls != TlsFiles::default() => {
                return Err(Error::config(format!(
                    "{}: tls_ca, tls_cert and tls_key are for rediss:// URLs",
                    self.shown
                )));
            }
            _ => Multiplexed::new(info, self.timeout),
        };
        conn.map_err(|e| self.invalid(e))
    }

    /// The cluster client for `hosts` (`h1:p1,h2:p2`, credentials on the first) of `scheme`
    /// (`redis` or `rediss`).
    ///
    /// # Errors
    /// `Config` for a URL redis-rs does not take or TLS files that cannot be read.
    pub(crate) fn cluster_client(
        &self,
        scheme: &str,
        hosts: &str,
    ) -> Result<redis::cluster::ClusterClient> {
        let nodes: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| format!("{scheme}://{h}"))
            .collect();
        let mut builder = redis::cluster::ClusterClient::builder(nodes)
            .connection_timeout(self.timeout)
            .response_timeout(self.timeout);
        if scheme == "rediss" {
            builder = builder.certs(self.cluster_certificates()?);
        } else if self.tls != TlsFiles::default() {
            return Err(Error::config(format!(
                "{}: tls_ca, tls_cert and tls_key are for rediss+cluster:// URLs",
                self.shown
            )));
        }
        builder.build().map_err(|e| self.invalid(e))
    }

    /// The TLS files as redis-rs's cluster client takes them (PEM bytes).
    fn cluster_certificates(&self) -> Result<TlsCertificates> {
        let read = |what: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| {
                Error::config_with(format!("cannot read the {what} {}", path.display()), e)
            })
        };
        let client_tls = match (&self.tls.cert, &self.tls.key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: read("client certificate", cert)?,
                client_key: read("client key", key)?,
            }),
            _ => {
                return Err(Error::config(
                    "a client certificate needs both tls_cert and tls_key",
                ));
            }
        };
        let root_cert = self
            .tls
            .ca
            .as_ref()
            .map(|ca| read("CA file", ca))
            .transpose()?;
        Ok(TlsCertificates {
            client_tls,
            root_cert,
        })
    }
}
