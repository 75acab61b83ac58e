//! `Cookie` header parsing (`CookieConfig::find`) and the session id and key parsers it feeds:
//! the input is one or more `Cookie` header values, one per line.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sessionkit_core::web::CookieConfig;
use sessionkit_core::{ID_LEN, SessionId, SessionKey};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let headers: Vec<&str> = text.split('\n').collect();
    let configs = [
        CookieConfig::default(),
        CookieConfig::host_prefixed(),
        CookieConfig::default().with_name("id"),
    ];
    for config in &configs {
        if let Some(value) = config.find(headers.iter().copied()) {
            // The value is a part of one header, never more than it.
            assert!(headers.iter().any(|h| within(h, value)), "{value:?}");
            id(value);
        }
    }
    for header in &headers {
        id(header);
        key(header);
    }
});

/// Whether `part` is a subslice of `whole`.
fn within(whole: &str, part: &str) -> bool {
    let (start, end) = (
        whole.as_ptr() as usize,
        whole.as_ptr() as usize + whole.len(),
    );
    let at = part.as_ptr() as usize;
    start <= at && at + part.len() <= end
}

/// An accepted id has exactly one spelling: its cookie value is the text it was parsed from.
fn id(value: &str) {
    if let Ok(id) = SessionId::parse(value) {
        assert_eq!(value.len(), ID_LEN);
        assert_eq!(id.expose(), value, "a second spelling of an id");
        assert_eq!(
            SessionId::parse(&id.expose()).map(|i| i.key()),
            Ok(id.key())
        );
    }
}

/// An accepted key is its hex form, in either case.
fn key(hex: &str) {
    if let Ok(key) = SessionKey::from_hex(hex) {
        assert_eq!(key.to_hex(), hex.to_ascii_lowercase());
    }
}
