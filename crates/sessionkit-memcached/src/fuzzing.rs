//! The crate's private parsers, for the fuzz targets in `fuzz/`: compiled with `--cfg fuzzing`
//! only (as `fuzz/run` and `cargo fuzz` build), never part of the crate's API.

use std::pin::pin;
use std::task::{Context, Poll, Waker};

use sessionkit_core::Result;

/// Runs a reply reader on `reply` held in memory, which never makes it wait.
fn read_all<T>(reply: &[u8], read: impl AsyncFnOnce(&mut &[u8]) -> Result<T>) -> Result<T> {
    let mut reply = reply;
    let mut reading = pin!(read(&mut reply));
    match reading
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(result) => result,
        Poll::Pending => panic!("a reply reader waited on bytes held in memory"),
    }
}

/// The reply to `gets`, read from `reply`: the value and its cas token, or `None`.
///
/// # Errors
/// As the store's `gets`.
pub fn gets_reply(reply: &[u8]) -> Result<Option<(Vec<u8>, u64)>> {
    read_all(reply, async |conn| {
        crate::protocol::read_value(conn, "fuzz").await
    })
}

/// The reply to `add`, `set` or `cas`, read from `reply`, as `Debug` text.
///
/// # Errors
/// As the store's storage commands.
pub fn store_reply(reply: &[u8]) -> Result<String> {
    read_all(reply, async |conn| {
        crate::protocol::read_store_reply(conn, "fuzz").await
    })
    .map(|outcome| format!("{outcome:?}"))
}

/// The reply to `delete`, read from `reply`: whether the key was there.
///
/// # Errors
/// As the store's `delete`.
pub fn delete_reply(reply: &[u8]) -> Result<bool> {
    read_all(reply, async |conn| {
        crate::protocol::read_delete_reply(conn, "fuzz").await
    })
}
