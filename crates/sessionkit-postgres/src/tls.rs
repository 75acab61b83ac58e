//! TLS from the URL as libpq reads it: `sslmode`, `sslrootcert`, `sslcert`, `sslkey`.

use std::path::PathBuf;

use sessionkit_core::backend::percent_decoded;
use sessionkit_core::backend::tls::{TlsFiles, Verify, client_config};
use sessionkit_core::{Error, Result};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// How the store's connections use TLS.
#[derive(Clone)]
pub(crate) struct PgTls {
    pub(crate) mode: SslMode,
    pub(crate) connector: MakeRustlsConnect,
}

/// The TLS options taken out of `url`'s query string, and the URL without them (for
/// tokio-postgres, which knows only `sslmode=disable|prefer|require`).
///
/// `sslmode`: `disable`; `prefer` (the default, as libpq: TLS if the server offers it,
/// unverified); `require` (TLS or nothing; unverified unless `sslrootcert` names a CA file,
/// then as `verify-ca`); `verify-ca` (the chain, not the host name); `verify-full` (chain and
/// host name). The roots are the `sslrootcert` file, or the system's when it is absent or
/// `system` (which, as in libpq, makes `verify-full` the default mode).
///
/// # Errors
/// `Config` for an unknown or unsupported mode, or unreadable files.
pub(crate) fn take(url: &str) -> Result<(String, PgTls)> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut rest = Vec::new();
    let (mut mode, mut files, mut system_roots) = (None, TlsFiles::default(), false);
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let path = || Some(PathBuf::from(percent_decoded(value)));
        match name {
            "sslmode" => mode = Some(value.to_owned()),
            "sslrootcert" if value == "system" => system_roots = true,
            "sslrootcert" => files.ca = path(),
            "sslcert" => files.cert = path(),
            "sslkey" => files.key = path(),
            _ => rest.push(pair),
        }
    }
    let default = if system_roots {
        "verify-full"
    } else {
        "prefer"
    };
    let (mode, verify) = match mode.as_deref().unwrap_or(default) {
        "disable" => (SslMode::Disable, Verify::Nothing),
        "prefer" => (SslMode::Prefer, Verify::Nothing),
        "require" if files.ca.is_some() => (SslMode::Require, Verify::Chain),
        "require" => (SslMode::Require, Verify::Nothing),
        "verify-ca" => (SslMode::Require, Verify::Chain),
        "verify-full" => (SslMode::Require, Verify::Full),
        other => {
            return Err(Error::config(format!(
                "sslmode={other} is not supported: use disable, prefer, require, verify-ca or verify-full"
            )));
        }
    };
    if mode == SslMode::Disable {
        files = TlsFiles::default(); // nothing to read for a connection that never uses TLS
    }
    let config = client_config(&files, verify)?;
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((
        url,
        PgTls {
            mode,
            connector: MakeRustlsConnect::new(config),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_options_leave_the_driver_url() {
        let (url, tls) =
            take("postgres://u@h/db?sslmode=disable&application_name=a&sslcert=c").expect("parsed");
        assert_eq!(url, "postgres://u@h/db?application_name=a");
        assert_eq!(tls.mode, SslMode::Disable);
        let (url, tls) = take("postgres://u@h/db").expect("parsed");
        assert_eq!(url, "postgres://u@h/db");
        assert_eq!(tls.mode, SslMode::Prefer, "libpq's default");
    }

    #[test]
    fn unknown_modes_and_missing_files_are_config_errors() {
        for url in [
            "postgres://h/db?sslmode=allow",
            "postgres://h/db?sslmode=verify",
            "postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
            "postgres://h/db?sslmode=require&sslcert=/nonexistent/c.pem&sslkey=/nonexistent/k.pem",
        ] {
            let err = take(url).err().expect(url);
            assert_eq!(
                err.kind(),
                sessionkit_core::ErrorKind::Config,
                "{url}: {err}"
            );
        }
    }
}
