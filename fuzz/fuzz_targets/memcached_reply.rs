//! The Memcached store's reply parser (the replies to `gets`, `add`/`set`/`cas` and
//! `delete`, as the server sends them) and the item a `gets` returns (`Record::from_blob`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use sessionkit_core::{ErrorKind, Record};
use sessionkit_memcached::fuzzing::{delete_reply, gets_reply, store_reply};

fuzz_target!(|data: &[u8]| {
    match gets_reply(data) {
        Ok(Some((item, _cas))) => {
            assert!(item.len() <= data.len(), "more bytes than were sent");
            if let Err(err) = Record::from_blob(&item) {
                assert_eq!(err.kind(), ErrorKind::Codec, "{err}");
            }
        }
        Ok(None) => {}
        Err(err) => reply_error(&err),
    }
    if let Err(err) = store_reply(data) {
        reply_error(&err);
    }
    if let Err(err) = delete_reply(data) {
        reply_error(&err);
    }
});

/// A bad reply is the server's fault (`Backend`, or `TooLarge` for its "too large"), or a
/// broken connection (`Unavailable`): never anything else.
fn reply_error(err: &sessionkit_core::Error) {
    assert!(
        matches!(
            err.kind(),
            ErrorKind::Backend | ErrorKind::Unavailable | ErrorKind::TooLarge
        ),
        "{err}"
    );
}
