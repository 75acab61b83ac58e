//! Store URL parsing: the registry's scheme, the shared option and path helpers, the redacted
//! form errors show, the SQL stores' options, the Redis URL (standalone, cluster, Sentinel,
//! Unix socket) and the Memcached URL, up to where a store would read a file or connect.
//! `sessionkit::open` itself runs for the schemes whose opening does neither (memory,
//! Memcached without TLS, unknown schemes).

#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use sessionkit_core::ErrorKind;
use sessionkit_core::backend::sql::SqlOptions;
use sessionkit_core::backend::{
    path_only, percent_decoded, redacted_url, split_options, validate_table_name,
};
use sessionkit_core::registry::scheme_of;

/// Runs a future that must not wait (nothing here does I/O).
fn now<T>(future: impl Future<Output = T>) -> T {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("opening waited: it did I/O"),
    }
}

/// A bad URL is a configuration error, never anything else.
fn config_or_ok<T>(result: sessionkit_core::Result<T>) {
    if let Err(err) = result {
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(url) = std::str::from_utf8(data) else {
        return;
    };
    let scheme = scheme_of(url).map(str::to_ascii_lowercase);

    let (path, options) = split_options(url);
    assert!(url.contains(path));
    for (name, value) in &options {
        assert!(!name.contains('&') && !value.contains('&'));
        let _ = percent_decoded(value);
    }
    let shown = redacted_url(url);
    assert_eq!(
        redacted_url(&shown),
        shown,
        "redacting twice changes the URL"
    );
    let _ = validate_table_name(path);
    config_or_ok(path_only(url, "scheme://path"));

    match SqlOptions::parse(url) {
        Ok(sql) => {
            validate_table_name(&sql.table).expect("a validated table name");
            assert!(sql.max_connections > 0);
        }
        Err(err) => assert_eq!(err.kind(), ErrorKind::Config, "{err}"),
    }
    if let Some((_, query)) = url.split_once('?') {
        config_or_ok(SqlOptions::parse_own(query));
    }
    config_or_ok(sessionkit_redis::fuzzing::parse_url(url));

    // The registry's own opening, where it stays in memory.
    let opens_in_memory = match scheme.as_deref() {
        Some("memory" | "memcached") => true,
        Some(other) => !sessionkit::registry().schemes().any(|known| known == other),
        None => true,
    };
    if opens_in_memory {
        config_or_ok(now(sessionkit::open(url)));
    }
});
