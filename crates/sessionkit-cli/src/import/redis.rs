//! tower-sessions-redis-store and actix-session's `RedisSessionStore`, read with `SCAN`.
//!
//! Both keep one string key per session: tower-sessions the id itself (a MessagePack record,
//! expiring at the record's deadline), actix-session its `cache_keygen` of the session key
//! (by default the key itself; a JSON object of JSON strings, with a time to live). Each page
//! of `SCAN` is read in one round trip by a script that returns every key's type, value and
//! time to live together.

use redis::Value;
use redis::aio::MultiplexedConnection;

use super::{Entry, PAGE, Skip};
use crate::CliError;

/// Per key: `{type}` or, for a string, `{type, value, pttl}`.
const READ_PAGE: &str = r"
local out = {}
for i, key in ipairs(KEYS) do
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'string' then
    out[i] = {kind, redis.call('GET', key), redis.call('PTTL', key)}
  else
    out[i] = {kind}
  end
end
return out
";

/// The length of actix-session's generated session keys (ASCII letters and digits).
const ACTIX_KEY_LEN: usize = 64;

/// Which store's keys are read, and how a key names its session.
enum Layout {
    /// tower-sessions-redis-store: keys are 22-character ids.
    Tower,
    /// actix-session: keys are the prefix and a generated session key.
    Actix { prefix: String },
}

pub(super) struct RedisReader {
    connection: MultiplexedConnection,
    layout: Layout,
    script: redis::Script,
    pattern: String,
    cursor: u64,
    done: bool,
}

impl RedisReader {
    pub(super) async fn tower(url: &str) -> Result<Self, CliError> {
        // tower-sessions ids are 22 base64url characters.
        Self::open(url, Layout::Tower, "?".repeat(22)).await
    }

    pub(super) async fn actix(url: &str, prefix: &str) -> Result<Self, CliError> {
        let pattern = format!("{}{}", glob_escape(prefix), "?".repeat(ACTIX_KEY_LEN));
        let layout = Layout::Actix {
            prefix: prefix.to_owned(),
        };
        Self::open(url, layout, pattern).await
    }

    async fn open(url: &str, layout: Layout, pattern: String) -> Result<Self, CliError> {
        let client = redis::Client::open(url).map_err(source_error)?;
        let connection = client
            .get_multiplexed_async_connection()
            .await
            .map_err(source_error)?;
        Ok(Self {
            connection,
            layout,
            script: redis::Script::new(READ_PAGE),
            pattern,
            cursor: 0,
            done: false,
        })
    }

    pub(super) async fn next(&mut self) -> Result<Option<Vec<Entry>>, CliError> {
        if self.done {
            return Ok(None);
        }
        let (cursor, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(self.cursor)
            .arg("MATCH")
            .arg(&self.pattern)
            .arg("COUNT")
            .arg(PAGE)
            .query_async(&mut self.connection)
            .await
            .map_err(source_error)?;
        self.cursor = cursor;
        self.done = cursor == 0;
        // Keys that are no session of this store are not read.
        let (mut entries, mut sessions) = (Vec::new(), Vec::new());
        for key in keys {
            match self.session_of(&key) {
                Some(session) => sessions.push((key, session)),
                None => entries.push(Entry::Ignored),
            }
        }
        if sessions.is_empty() {
            return Ok(Some(entries));
        }
        let mut invocation = self.script.prepare_invoke();
        for (key, _) in &sessions {
            invocation.key(key.as_slice());
        }
        let reply: Value = invocation
            .invoke_async(&mut self.connection)
            .await
            .map_err(source_error)?;
        let Value::Array(replies) = reply else {
            return Err(CliError(
                "reading Redis: the page script returned no array".into(),
            ));
        };
        if replies.len() != sessions.len() {
            return Err(CliError(
                "reading Redis: the page script returned another number of keys than it was given"
                    .into(),
            ));
        }
        for ((_, session), reply) in sessions.into_iter().zip(replies) {
            entries.push(self.entry(session, reply));
        }
        Ok(Some(entries))
    }

    /// The session a key names (its id or session key), or `None` if it is no session key of
    /// this store.
    fn session_of(&self, key: &[u8]) -> Option<String> {
        let key = std::str::from_utf8(key).ok()?;
        match &self.layout {
            Layout::Tower => {
                sessionkit_tower_sessions::session_key_for_cookie(key).map(|_| key.to_owned())
            }
            Layout::Actix { prefix } => {
                let session_key = key.strip_prefix(prefix.as_str())?;
                (session_key.len() == ACTIX_KEY_LEN
                    && session_key.bytes().all(|b| b.is_ascii_alphanumeric()))
                .then(|| session_key.to_owned())
            }
        }
    }

    fn entry(&self, session: String, reply: Value) -> Entry {
        let Value::Array(parts) = reply else {
            return Entry::Skipped(Skip::NotAString);
        };
        let mut parts = parts.into_iter();
        let kind = match parts.next() {
            Some(Value::BulkString(kind)) => kind,
            Some(Value::SimpleString(kind)) => kind.into_bytes(),
            _ => return Entry::Skipped(Skip::NotAString),
        };
        match kind.as_slice() {
            b"none" => return Entry::Gone,
            b"string" => {}
            _ => return Entry::Skipped(Skip::NotAString),
        }
        let (Some(Value::BulkString(value)), Some(Value::Int(ttl_ms))) =
            (parts.next(), parts.next())
        else {
            // The script answers a string key with its value and time to live; anything else
            // means the key was gone by the time it was read.
            return Entry::Gone;
        };
        match self.layout {
            Layout::Tower => Entry::Tower {
                id: session,
                value,
                checked_id: false,
            },
            Layout::Actix { .. } => Entry::Actix {
                session_key: session,
                value,
                ttl_ms,
            },
        }
    }
}

/// `prefix` as a literal in a `SCAN MATCH` pattern.
fn glob_escape(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern
}

fn source_error(err: redis::RedisError) -> CliError {
    let CliError(cause) = CliError::from(err);
    CliError(format!("reading the source Redis: {cause}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_literally() {
        assert_eq!(glob_escape("session:"), "session:");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
