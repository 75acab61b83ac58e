//! The crate's private parsers, for the fuzz targets in `fuzz/`: compiled with `--cfg fuzzing`
//! only (as `fuzz/run` and `cargo fuzz` build), never part of the crate's API.

use redis::{RedisResult, Value};
use sessionkit_core::{Record, Result};

/// The RESP2 reader: one reply from the start of `buf` (see `resp::parse`).
///
/// # Errors
/// For bytes that are not RESP2.
pub fn parse_reply(buf: &[u8]) -> RedisResult<Option<(RedisResult<Value>, usize)>> {
    crate::resp::parse(buf)
}

/// The record a session hash's `HGETALL` reply holds, as `load` reads it.
///
/// # Errors
/// `Codec` for a reply no store wrote.
pub fn record_from_hgetall(reply: Value) -> Result<Option<Record>> {
    crate::record_from_fields(crate::hash_pairs(reply)?)
}

/// The record a session hash's (name, value) pairs hold, as `cycle` reads its script's reply.
///
/// # Errors
/// `Codec` for fields no store wrote.
pub fn record_from_pairs(pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Option<Record>> {
    crate::record_from_fields(pairs.into_iter().map(Ok))
}

/// Everything `RedisStore::open` does with a URL before it reads a file or connects.
///
/// # Errors
/// `Config` for a bad URL.
pub fn parse_url(url: &str) -> Result<()> {
    crate::options::parse_without_io(url)
}
