//! A RESP2 reply parser: bytes from the server to [`redis::Value`]s.
//!
//! redis-rs's own parser (built on `combine`) spent ~1,300 instructions per reply value, a
//! third of the client's CPU per request (`docs/BENCHMARKS.md`). Replies here are parsed by
//! hand in one pass over a buffer that holds them whole or in part: a partial reply is left
//! for the next read, a complete one is turned into values without copying anything but the
//! strings themselves. Error replies, which are rare, are handed to redis-rs's parser so they
//! keep its error kinds (`NOSCRIPT`, `MOVED`, …).

use redis::{ErrorKind, RedisError, RedisResult, Value};

/// How deep arrays may nest: Redis replies nest two or three levels; a deeper one is garbage,
/// and parsing it recursively must not exhaust the stack.
const MAX_DEPTH: usize = 32;

/// Parses one reply from the start of `buf`: `Ok(Some((reply, length)))` when `buf` holds it
/// whole, `Ok(None)` when more bytes are needed, `Err` when the bytes are not RESP2. The
/// reply is `Err` if it is, or holds (at any depth), an error reply.
pub(crate) fn parse(buf: &[u8]) -> RedisResult<Option<(RedisResult<Value>, usize)>> {
    let mut cursor = Cursor {
        buf,
        pos: 0,
        errors: false,
    };
    let Some(value) = cursor.value(0)? else {
        return Ok(None);
    };
    // Walking every reply for errors cost more than parsing it; only one with an error is.
    let reply = if cursor.errors {
        value.extract_error()
    } else {
        Ok(value)
    };
    Ok(Some((reply, cursor.pos)))
}

/// The integer `digits` spell in decimal (an optional `-`, then 1 to 19 digits), as Redis
/// writes lengths, integer replies and the numbers a session hash holds; `None` for anything
/// else, or a number out of `i64`'s range.
pub(crate) fn decimal(digits: &[u8]) -> Option<i64> {
    let (negative, digits) = match digits.split_first() {
        Some((b'-', digits)) => (true, digits),
        _ => (false, digits),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut n: i64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(i64::from(digit - b'0'))?;
    }
    Some(if negative { -n } else { n })
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Whether an error reply was parsed.
    errors: bool,
}

fn malformed(what: &'static str) -> RedisError {
    RedisError::from((
        ErrorKind::Parse,
        "malformed reply from Redis",
        what.to_owned(),
    ))
}

impl Cursor<'_> {
    /// The line at the cursor without its CRLF, moving past it; `None` if it is incomplete.
    fn line(&mut self) -> RedisResult<Option<&[u8]>> {
        let rest = &self.buf[self.pos..];
        // RESP2 lines (types, lengths, simple strings, errors) hold no CR but their last.
        let Some(end) = rest.iter().position(|&b| b == b'\r') else {
            return Ok(None);
        };
        match rest.get(end + 1) {
            None => Ok(None),
            Some(b'\n') => {
                self.pos += end + 2;
                Ok(Some(&rest[..end]))
            }
            Some(_) => Err(malformed("a line with a CR inside")),
        }
    }

    fn integer(line: &[u8]) -> RedisResult<i64> {
        decimal(line).ok_or_else(|| malformed("not an integer"))
    }

    fn value(&mut self, depth: usize) -> RedisResult<Option<Value>> {
        let start = self.pos;
        let Some(&kind) = self.buf.get(start) else {
            return Ok(None);
        };
        self.pos += 1;
        let Some(line) = self.line()? else {
            return Ok(None);
        };
        match kind {
            b'+' if line == b"OK" => Ok(Some(Value::Okay)),
            b'+' => Ok(Some(Value::SimpleString(
                String::from_utf8_lossy(line).into_owned(),
            ))),
            b'-' => {
                self.errors = true;
                redis::parse_redis_value(&self.buf[start..self.pos]).map(Some)
            }
            b':' => Ok(Some(Value::Int(Self::integer(line)?))),
            b'$' => {
                let Ok(len) = usize::try_from(Self::integer(line)?) else {
                    return Ok(Some(Value::Nil)); // $-1: a missing value
                };
                let end = self
                    .pos
                    .checked_add(len)
                    .ok_or_else(|| malformed("bulk length"))?;
                let Some(tail) = self.buf.get(end..end + 2) else {
                    return Ok(None);
                };
                if tail != b"\r\n" {
                    return Err(malformed("a bulk string longer than its length"));
                }
                let bytes = self.buf[self.pos..end].to_vec();
                self.pos = end + 2;
                Ok(Some(Value::BulkString(bytes)))
            }
            b'*' => {
                let Ok(len) = usize::try_from(Self::integer(line)?) else {
                    return Ok(Some(Value::Nil)); // *-1: a null array
                };
                if depth >= MAX_DEPTH {
                    return Err(malformed("arrays nested too deep"));
                }
                // Each element takes at least 3 bytes, so the buffer bounds a sane capacity.
                let mut items = Vec::with_capacity(len.min((self.buf.len() - self.pos) / 3));
                for _ in 0..len {
                    match self.value(depth + 1)? {
                        Some(item) => items.push(item),
                        None => return Ok(None),
                    }
                }
                Ok(Some(Value::Array(items)))
            }
            _ => Err(malformed(
                "an unknown reply type (RESP3 is not spoken here)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(bytes: &[u8]) -> RedisResult<Value> {
        let (reply, used) = parse(bytes).expect("valid").expect("complete");
        assert_eq!(used, bytes.len(), "consumed all of {bytes:?}");
        reply
    }

    #[test]
    fn every_reply_kind() {
        let whole = |bytes: &[u8]| whole(bytes).expect("not an error reply");
        assert_eq!(whole(b"+OK\r\n"), Value::Okay);
        assert_eq!(whole(b"+QUEUED\r\n"), Value::SimpleString("QUEUED".into()));
        assert_eq!(whole(b":-42\r\n"), Value::Int(-42));
        assert_eq!(whole(b"$-1\r\n"), Value::Nil);
        assert_eq!(whole(b"*-1\r\n"), Value::Nil);
        assert_eq!(whole(b"$0\r\n\r\n"), Value::BulkString(Vec::new()));
        assert_eq!(
            whole(b"$4\r\na\r\nb\r\n"),
            Value::BulkString(b"a\r\nb".to_vec()),
            "bulk strings are binary-safe"
        );
        assert_eq!(
            whole(b"*3\r\n:1\r\n*1\r\n$1\r\nx\r\n$-1\r\n"),
            Value::Array(vec![
                Value::Int(1),
                Value::Array(vec![Value::BulkString(b"x".to_vec())]),
                Value::Nil
            ])
        );
    }

    #[test]
    fn errors_keep_redis_rs_kinds() {
        let err = whole(b"-NOSCRIPT No matching script.\r\n").expect_err("an error reply");
        assert_eq!(
            err.kind(),
            ErrorKind::Server(redis::ServerErrorKind::NoScript)
        );
        assert!(
            whole(b"*2\r\n:1\r\n-ERR boom\r\n").is_err(),
            "nested errors too"
        );
    }

    #[test]
    fn every_prefix_of_a_reply_is_incomplete() {
        let reply = b"*4\r\n$3\r\n__e\r\n$13\r\n1700000000000\r\n$9\r\nd:counter\r\n:7\r\n";
        for end in 0..reply.len() {
            assert!(
                parse(&reply[..end]).expect("valid so far").is_none(),
                "{end}"
            );
        }
        let mut two = reply.to_vec();
        two.extend_from_slice(b"+OK\r\n");
        let (_, used) = parse(&two).expect("valid").expect("complete");
        assert_eq!(used, reply.len(), "stops at the end of the first reply");
    }

    #[test]
    fn decimals_are_what_redis_writes_and_nothing_else() {
        assert_eq!(decimal(b"0"), Some(0));
        assert_eq!(decimal(b"-42"), Some(-42));
        assert_eq!(decimal(b"1764513000000"), Some(1_764_513_000_000));
        assert_eq!(decimal(b"9223372036854775807"), Some(i64::MAX));
        for bad in [
            &b""[..],
            b"-",
            b"+1",
            b" 1",
            b"1.5",
            b"1e3",
            b"9223372036854775808",
            b"12345678901234567890",
        ] {
            assert_eq!(decimal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn garbage_is_a_parse_error_not_a_panic() {
        for bad in [
            &b"?what\r\n"[..],
            b":12a\r\n",
            b":\r\n",
            b":99999999999999999999\r\n",
            b"$3\r\nabcd\r\n",
            b"*1\r\n!\r\n",
            b"%1\r\n",
            b"+a\rb\r\n",
        ] {
            let err = parse(bad).expect_err("not RESP2");
            assert_eq!(err.kind(), ErrorKind::Parse, "{bad:?}");
        }
        let deep = b"*1\r\n".repeat(MAX_DEPTH + 1);
        assert!(parse(&deep).is_err(), "nesting is bounded");
        // A huge announced length allocates nothing until the bytes are there.
        assert!(parse(b"*9223372036854775807\r\n").expect("valid").is_none());
        assert!(
            parse(b"$9223372036854775807\r\nab")
                .expect("valid")
                .is_none()
        );
    }
}
