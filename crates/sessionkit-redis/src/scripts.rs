//! The Lua scripts that make each operation atomic on one hash (one slot in a cluster).
//!
//! Hash fields: `__c` created, `__e` expires (ms), `__v` version, `__o` owner, `__p` pointer
//! target (grace period after a cycle), `__m`/`__mu` a cycle in progress and its deadline, and
//! `d:<name>` for each data key (the prefix keeps data keys from colliding with metadata).

use std::sync::LazyLock;

use redis::Script;

/// What a data key's hash field starts with: `d:<name>`.
pub(crate) const DATA_PREFIX: &[u8] = b"d:";

/// Insert only: a live session or pointer under the key wins (returns 0).
/// `KEYS[1]` session; ARGV now, created, expires, version, owner ('' none), then field/value pairs.
pub(crate) static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local e = redis.call('HGET', KEYS[1], '__e')
if e and tonumber(e) > tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '__c', ARGV[2], '__e', ARGV[3], '__v', ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], '__o', ARGV[5]) end
for i = 6, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return 1
",
    )
});

/// Update only. Returns {0, 0, ''} gone, {2, 0, ''} a cycle is moving the session (retry),
/// {3, 0, owner} a condition failed (nothing written), or {1, version, previous owner}.
/// `KEYS[1]` session; ARGV:
/// - now;
/// - k, the count of control arguments (a decimal), for a change without conditions; for a
///   conditional change, the condition marks instead, one byte per condition in the order of
///   its fields below (`=` the field must hold the value given, `!` it must be absent; never a
///   digit, so the marks never parse as a number), then k;
/// - for a conditional change only: its c condition fields (c = the marks' length), then one
///   expected value for each `=` mark, in the same order (an `!` mark has no value, so an
///   absent field and an empty value are told apart);
/// - the k control arguments (none for a change that only sets keys, the common save): expires
///   ('' keep), owner mode ('' keep, '+' set, '-' remove), owner, cleared ('1'/'0'), removed
///   fields…;
/// - field/value pairs to set.
///
/// Written for the Redis server's CPU, which every save pays: each `redis.call` costs 5,000 to
/// 12,000 instructions and each argument ~500 (callgrind on redis-server 7.0), so a plain save is two
/// calls (`HMGET`, one `HSET` that carries the new version with the data) and four arguments.
/// A conditional save is the same two calls: the condition fields ride on the `HMGET` that
/// reads the metadata (up to 1,000 of them; one more `HMGET` per further 1,000), and they are
/// checked after liveness (`Gone` wins) and after the move check (a retry re-checks them), in
/// the run that writes. Fields go 1,000 at a time through `unpack`, which Lua limits to ~8,000
/// values.
pub(crate) static APPLY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now = tonumber(ARGV[1])
local k, c, b = tonumber(ARGV[2]), 0, 2
if not k then c, k, b = #ARGV[2], tonumber(ARGV[3]), 3 end
local m
if c == 0 then m = redis.call('HMGET', KEYS[1], '__e', '__p', '__mu', '__o', '__v')
else
  m = redis.call('HMGET', KEYS[1], '__e', '__p', '__mu', '__o', '__v',
    unpack(ARGV, b + 1, b + math.min(c, 1000)))
end
if not m[1] or tonumber(m[1]) <= now or m[2] then return {0, 0, ''} end
if m[3] and tonumber(m[3]) > now then return {2, 0, ''} end
if c > 0 then
  for i = b + 1001, b + c, 1000 do
    local more = redis.call('HMGET', KEYS[1], unpack(ARGV, i, math.min(i + 999, b + c)))
    for j = 1, #more do m[i - b + 4 + j] = more[j] end
  end
  local marks, j = ARGV[2], b + c
  for i = 1, c do
    if string.byte(marks, i) == 33 then
      if m[5 + i] then return {3, 0, m[4] or ''} end
    else
      j = j + 1
      if m[5 + i] ~= ARGV[j] then return {3, 0, m[4] or ''} end
    end
  end
  b = j
end
local v = tonumber(m[5]) + 1
if k > 0 then
  if ARGV[b + 4] == '1' then
    for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
      if string.sub(f, 1, 2) == 'd:' then redis.call('HDEL', KEYS[1], f) end
    end
  end
  for i = b + 5, b + k, 1000 do
    redis.call('HDEL', KEYS[1], unpack(ARGV, i, math.min(i + 999, b + k)))
  end
  if ARGV[b + 1] ~= '' then
    redis.call('HSET', KEYS[1], '__e', ARGV[b + 1])
    redis.call('PEXPIREAT', KEYS[1], ARGV[b + 1])
  end
  if ARGV[b + 2] == '+' then redis.call('HSET', KEYS[1], '__o', ARGV[b + 3])
  elseif ARGV[b + 2] == '-' then redis.call('HDEL', KEYS[1], '__o') end
end
local first, n = b + k + 1, #ARGV
redis.call('HSET', KEYS[1], '__v', v, unpack(ARGV, first, math.min(first + 999, n)))
for i = first + 1000, n, 1000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 999, n)))
end
return {1, v, m[4] or ''}
",
    )
});

/// Step 1 of a cycle: marks a live session as moving (applies wait) and returns its fields;
/// `false` if gone; {'__busy'} if another cycle is moving it.
/// `KEYS[1]` old session; ARGV now, new key (hex), move deadline.
pub(crate) static BEGIN_MOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now = tonumber(ARGV[1])
local e = redis.call('HGET', KEYS[1], '__e')
if not e or tonumber(e) <= now or redis.call('HEXISTS', KEYS[1], '__p') == 1 then return false end
local mu = redis.call('HGET', KEYS[1], '__mu')
if mu and tonumber(mu) > now then return {'__busy'} end
redis.call('HSET', KEYS[1], '__m', ARGV[2], '__mu', ARGV[3])
return redis.call('HGETALL', KEYS[1])
",
    )
});

/// Step 3 of a cycle: the old key becomes a pointer (or goes), if this move still owns it.
/// `KEYS[1]` old session; ARGV new key (hex), now, grace deadline ('' for none).
pub(crate) static FINISH_MOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], '__m') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], '__c', ARGV[2], '__e', ARGV[3], '__v', 1, '__p', ARGV[1])
  redis.call('PEXPIREAT', KEYS[1], ARGV[3])
end
return 1
",
    )
});

/// Undoes step 1 when the copy could not be made. `KEYS[1]` old session; ARGV new key (hex).
pub(crate) static ABORT_MOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], '__m') == ARGV[1] then redis.call('HDEL', KEYS[1], '__m', '__mu') end
return 1
",
    )
});

/// Deletes a session; returns {deleted (0/1), owner ('' none)}. `KEYS[1]` session.
pub(crate) static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local o = redis.call('HGET', KEYS[1], '__o') or ''
return {redis.call('DEL', KEYS[1]), o}
",
    )
});

/// Deletes a session if it belongs to the owner: 1 deleted live, 0 deleted expired (or gone),
/// -1 other owner. `KEYS[1]` session; ARGV owner, now.
pub(crate) static DELETE_IF_OWNER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], '__o') ~= ARGV[1] then return -1 end
local e = tonumber(redis.call('HGET', KEYS[1], '__e') or '0')
redis.call('DEL', KEYS[1])
if e > tonumber(ARGV[2]) then return 1 else return 0 end
",
    )
});
