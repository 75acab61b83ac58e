//! The store's commands, written once for both connection kinds: encoded as RESP straight into
//! the standalone connection's output buffer, or turned into a redis-rs [`Cmd`] for the
//! cluster client.
//!
//! Building a `Cmd` (and, for a script, a `ScriptInvocation` and then a second `Cmd`) cost
//! about twenty allocations and their copies for a load and a save together, on every request
//! (`docs/BENCHMARKS.md`, sixth round); arguments here borrow what the store already holds,
//! and numbers and data field names are written in place.

use redis::{Cmd, Script};

use crate::scripts::DATA_PREFIX;

/// One argument of a command.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Arg<'a> {
    /// Sent as it is.
    Bytes(&'a [u8]),
    /// Sent in decimal.
    Int(i64),
    /// Sent in decimal.
    Unsigned(u64),
    /// A data key's hash field, `d:<name>` (see [`crate::scripts`]).
    DataField(&'a str),
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(text: &'a str) -> Self {
        Self::Bytes(text.as_bytes())
    }
}

impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Self::Bytes(bytes)
    }
}

impl From<i64> for Arg<'_> {
    fn from(n: i64) -> Self {
        Self::Int(n)
    }
}

impl Arg<'_> {
    /// Appends the argument as a RESP bulk string.
    fn write(self, out: &mut Vec<u8>) {
        let mut digits = itoa::Buffer::new();
        let (prefix, rest): (&[u8], &[u8]) = match self {
            Self::Bytes(bytes) => (b"", bytes),
            Self::Int(n) => (b"", digits.format(n).as_bytes()),
            Self::Unsigned(n) => (b"", digits.format(n).as_bytes()),
            Self::DataField(name) => (DATA_PREFIX, name.as_bytes()),
        };
        let mut length = itoa::Buffer::new();
        out.push(b'$');
        out.extend_from_slice(length.format(prefix.len() + rest.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(prefix);
        out.extend_from_slice(rest);
        out.extend_from_slice(b"\r\n");
    }

    /// The argument's bytes, owned (for a redis-rs `Cmd`).
    fn to_bytes(self) -> Vec<u8> {
        match self {
            Self::Bytes(bytes) => bytes.to_vec(),
            Self::Int(n) => itoa::Buffer::new().format(n).as_bytes().to_vec(),
            Self::Unsigned(n) => itoa::Buffer::new().format(n).as_bytes().to_vec(),
            Self::DataField(name) => crate::data_field(name),
        }
    }
}

/// Appends the command `args` (its name first) as a RESP array of bulk strings.
pub(crate) fn write(out: &mut Vec<u8>, args: &[Arg<'_>]) {
    out.push(b'*');
    out.extend_from_slice(itoa::Buffer::new().format(args.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        arg.write(out);
    }
}

/// The same command as a redis-rs `Cmd`.
pub(crate) fn to_cmd(args: &[Arg<'_>]) -> Cmd {
    let mut cmd = Cmd::new();
    for arg in args {
        cmd.arg(arg.to_bytes());
    }
    cmd
}

/// `EVALSHA <sha1> 1 <key>`: the start of a call of `script` on one key, with room for
/// `more` arguments after it.
pub(crate) fn script_call<'a>(script: &'a Script, key: &'a str, more: usize) -> Vec<Arg<'a>> {
    let mut args = Vec::with_capacity(4 + more);
    args.extend([
        Arg::from("EVALSHA"),
        Arg::from(script.get_hash()),
        Arg::Int(1),
        Arg::from(key),
    ]);
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both encodings carry the same bytes: what `write` sends is what redis-rs would send for
    /// the `Cmd`.
    #[test]
    fn the_resp_encoding_matches_redis_rs() {
        let args = [
            Arg::from("HSET"),
            Arg::from("k"),
            Arg::DataField("counter"),
            Arg::Int(-42),
            Arg::Unsigned(u64::MAX),
            Arg::Bytes(b"a\r\nb\0"),
            Arg::Bytes(b""),
            Arg::DataField(""),
        ];
        let mut out = Vec::new();
        write(&mut out, &args);
        assert_eq!(out, to_cmd(&args).get_packed_command());
        assert!(
            out.starts_with(b"*8\r\n$4\r\nHSET\r\n$1\r\nk\r\n$9\r\nd:counter\r\n$3\r\n-42\r\n")
        );
    }
}
