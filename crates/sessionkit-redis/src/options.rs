//! The store URL: `redis://`, `rediss://` (TLS), `redis+unix://` / `unix://` (a Unix socket),
//! `redis+cluster://` / `rediss+cluster://`, `redis+sentinel://` / `rediss+sentinel://`; the
//! options sessionkit reads (`namespace`, `timeout_ms`, `tls_ca`, `tls_cert`, `tls_key`, and
//! for Sentinel `sentinel_user`, `sentinel_password`) and, for Unix sockets, redis-rs's own
//! (`db`, `user`, `pass`).

use std::path::PathBuf;
use std::time::Duration;

use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, RedisConnectionInfo, TlsCertificates, TlsMode};
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
    /// How to log in to the Sentinels themselves (`sentinel_user`, `sentinel_password`).
    sentinel_user: Option<String>,
    sentinel_password: Option<String>,
    /// The whole URL with its password hidden, for error messages.
    shown: String,
}

/// Whether `namespace` can prefix the store's keys: printable ASCII without the braces of a
/// cluster hash tag.
pub(crate) fn valid_namespace(namespace: &str) -> bool {
    !namespace.is_empty()
        && namespace
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}')
}

/// The Sentinel port when an address names none.
const SENTINEL_PORT: u16 = 26379;

/// What a `redis+sentinel://[user:password@]h1:p1,h2:p2/master[/db]` URL names (after its
/// scheme, without options).
struct SentinelUrl {
    sentinels: Vec<(String, u16)>,
    master: String,
    /// The master's login and database.
    settings: RedisConnectionInfo,
}

impl SentinelUrl {
    fn parse(rest: &str) -> Option<Self> {
        let (authority, path) = rest.split_once('/')?;
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        let sentinels = hosts
            .split(',')
            .map(|host| match host.rsplit_once(':') {
                Some((name, port)) => Some((name.to_owned(), port.parse().ok()?)),
                None => Some((host.to_owned(), SENTINEL_PORT)),
            })
            .collect::<Option<Vec<_>>>()?;
        if sentinels.iter().any(|(host, _)| host.is_empty()) {
            return None;
        }
        let (master, db) = match path.split_once('/') {
            Some((master, db)) => (master, db.parse().ok()?),
            None => (path, 0),
        };
        if master.is_empty() {
            return None;
        }
        let mut settings = RedisConnectionInfo::default().set_db(db);
        if let Some(userinfo) = userinfo {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            if !user.is_empty() {
                settings = settings.set_username(percent_decoded(user));
            }
            if !password.is_empty() {
                settings = settings.set_password(percent_decoded(password));
            }
        }
        Some(Self {
            sentinels,
            master: percent_decoded(master),
            settings,
        })
    }
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
            sentinel_user: None,
            sentinel_password: None,
            shown: redacted_url(url),
        };
        let unix = parsed.base.starts_with("redis+unix:") || parsed.base.starts_with("unix:");
        let sentinel = parsed.base.contains("+sentinel:");
        let mut passthrough = Vec::new();
        for (name, value) in options {
            let path = || Some(PathBuf::from(percent_decoded(&value)));
            match (name.as_str(), value.parse::<u64>()) {
                ("timeout_ms", Ok(ms)) if (1..=MAX_TIMEOUT_MS).contains(&ms) => {
                    parsed.timeout = Duration::from_millis(ms);
                }
                ("namespace", _) if valid_namespace(&value) => parsed.namespace = value,
                ("tls_ca", _) => parsed.tls.ca = path(),
                ("tls_cert", _) => parsed.tls.cert = path(),
                ("tls_key", _) => parsed.tls.key = path(),
                ("db" | "user" | "pass", _) if unix => passthrough.push(format!("{name}={value}")),
                ("sentinel_user", _) if sentinel => {
                    parsed.sentinel_user = Some(percent_decoded(&value));
                }
                ("sentinel_password", _) if sentinel => {
                    parsed.sentinel_password = Some(percent_decoded(&value));
                }
                _ => {
                    return Err(Error::config(format!(
                        "unknown or invalid redis option {name} (namespace, timeout_ms, tls_ca, tls_cert, tls_key; sentinel_user, sentinel_password for Sentinel)"
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
            _ => {
                self.no_tls_files("rediss://")?;
                Multiplexed::new(info, self.timeout)
            }
        };
        conn.map_err(|e| self.invalid(e))
    }

    /// The connection to the master behind the Sentinels `rest` names (the URL after
    /// `redis+sentinel://` or, with `tls`, `rediss+sentinel://`). Over TLS, the Sentinels and
    /// the master are verified with the same CA and sent the same client certificate.
    ///
    /// # Errors
    /// `Config` for a malformed URL or TLS files that cannot be read.
    pub(crate) fn sentinel(&self, tls: bool, rest: &str) -> Result<Multiplexed> {
        let url = SentinelUrl::parse(rest).ok_or_else(|| {
            Error::config(format!(
                "invalid Redis Sentinel URL {} (redis+sentinel://[user:password@]host:port,host:port/master[/db])",
                self.shown
            ))
        })?;
        let addresses = url.sentinels.into_iter().map(|(host, port)| {
            if tls {
                ConnectionAddr::TcpTls {
                    host,
                    port,
                    insecure: false,
                    tls_params: None,
                }
            } else {
                ConnectionAddr::Tcp(host, port)
            }
        });
        let invalid = |e| self.invalid(e);
        let mut builder =
            SentinelClientBuilder::new(addresses, &url.master, SentinelServerType::Master)
                .map_err(invalid)?
                .set_client_to_redis_db(url.settings.db());
        if let Some(user) = url.settings.username() {
            builder = builder.set_client_to_redis_username(user);
        }
        if let Some(password) = url.settings.password() {
            builder = builder.set_client_to_redis_password(password);
        }
        if let Some(user) = &self.sentinel_user {
            builder = builder.set_client_to_sentinel_username(user);
        }
        if let Some(password) = &self.sentinel_password {
            builder = builder.set_client_to_sentinel_password(password);
        }
        let config = if tls {
            let certificates = self.redis_rs_certificates()?;
            builder = builder
                .set_client_to_redis_tls_mode(TlsMode::Secure)
                .set_client_to_redis_certificates(certificates.clone())
                .set_client_to_sentinel_tls_mode(TlsMode::Secure)
                .set_client_to_sentinel_certificates(certificates);
            Some(tls::client_config(&self.tls, Verify::Full)?)
        } else {
            self.no_tls_files("rediss+sentinel://")?;
            None
        };
        let sentinels = builder.build().map_err(invalid)?;
        Ok(Multiplexed::with_sentinel(
            sentinels,
            &url.settings,
            self.timeout,
            config,
        ))
    }

    /// `Config` if TLS files were given to a URL without TLS (`with_tls` names the scheme
    /// they belong to).
    fn no_tls_files(&self, with_tls: &str) -> Result<()> {
        if self.tls == TlsFiles::default() {
            Ok(())
        } else {
            Err(Error::config(format!(
                "{}: tls_ca, tls_cert and tls_key are for {with_tls} URLs",
                self.shown
            )))
        }
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
            builder = builder.certs(self.redis_rs_certificates()?);
        } else {
            self.no_tls_files("rediss+cluster://")?;
        }
        builder.build().map_err(|e| self.invalid(e))
    }

    /// The TLS files as redis-rs's cluster and Sentinel clients take them (PEM bytes).
    fn redis_rs_certificates(&self) -> Result<TlsCertificates> {
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

/// What `RedisStore::open` does with `url` before it reads a file (TLS files, the system's
/// roots) or connects: for the fuzz targets (`fuzz/`), built with `--cfg fuzzing` only.
///
/// # Errors
/// As `RedisStore::open` for a bad URL.
#[cfg(fuzzing)]
pub(crate) fn parse_without_io(url: &str) -> Result<()> {
    let options = StoreOptions::parse(url)?;
    if let Some((_, rest)) = options.base.split_once("+sentinel://") {
        SentinelUrl::parse(rest)
            .map(drop)
            .ok_or_else(|| Error::config("invalid Redis Sentinel URL"))
    } else if let Some((scheme, hosts)) = options.base.split_once("+cluster://") {
        if options.tls != TlsFiles::default() {
            return Ok(()); // the rest reads those files
        }
        options.cluster_client(scheme, hosts).map(drop)
    } else {
        let client = redis::Client::open(options.base.as_str()).map_err(|e| options.invalid(e))?;
        let info = client.get_connection_info();
        match info.addr() {
            ConnectionAddr::TcpTls { host, .. } => tls::server_name(host).map(drop),
            _ => {
                options.no_tls_files("rediss://")?;
                Multiplexed::new(info, options.timeout)
                    .map(drop)
                    .map_err(|e| options.invalid(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_name_the_sentinels_the_master_and_its_login() {
        let url = SentinelUrl::parse("u:p%40ss@s1:26380,s2/mymaster/3").expect("parsed");
        assert_eq!(
            url.sentinels,
            [("s1".to_owned(), 26380), ("s2".to_owned(), SENTINEL_PORT)]
        );
        assert_eq!(url.master, "mymaster");
        assert_eq!(url.settings.db(), 3);
        assert_eq!(url.settings.username(), Some("u"));
        assert_eq!(url.settings.password(), Some("p@ss"));
        let bare = SentinelUrl::parse("s1/m").expect("parsed");
        assert_eq!((bare.settings.db(), bare.settings.password()), (0, None));
        for bad in ["s1", "s1/", "s1:x/m", ",s2/m", "s1/m/x", ":pw@/m"] {
            assert!(SentinelUrl::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn sentinel_options_belong_to_sentinel_urls() {
        let options =
            StoreOptions::parse("redis+sentinel://s1/m?sentinel_password=pw").expect("parsed");
        assert_eq!(options.sentinel_password.as_deref(), Some("pw"));
        assert!(!options.shown.contains("pw"), "{}", options.shown);
        let elsewhere = StoreOptions::parse("redis://h?sentinel_password=pw");
        assert_eq!(
            elsewhere.err().map(|e| e.kind()),
            Some(sessionkit_core::ErrorKind::Config)
        );
        let malformed = StoreOptions::parse("redis+sentinel://s1?namespace=n")
            .expect("options")
            .sentinel(false, "s1");
        assert_eq!(
            malformed.err().map(|e| e.kind()),
            Some(sessionkit_core::ErrorKind::Config)
        );
    }
}
