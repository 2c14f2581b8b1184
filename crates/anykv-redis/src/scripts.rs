//! The Lua scripts that keep revisions, the key index, TTL deadlines,
//! leases and the change stream consistent. Every script starts with the
//! same prelude; `ARGV[1]` is the namespace's key prefix (`{ns}:`) and
//! `ARGV[2]` the change stream's length bound.
//!
//! Scripts never raise an error after their first write: every condition
//! is checked before anything is written, and every revision the counter
//! hands out gets its change record in the same script, so the stream's
//! `{revision}-0` entries are contiguous (a gap means trimmed history).
//! A counter below the stream's top (evicted, or reset by hand) is moved
//! past it by the first `bump` of a script, before its `XADD`.

use std::sync::LazyLock;

use redis::Script;

const PRELUDE: &str = r#"
local P = ARGV[1]
local MAXLEN = ARGV[2]
local REV = P .. 'rev'
local IDX = P .. 'idx'
local LOG = P .. 'log'
local TTL = P .. 'ttl'
local LEASES = P .. 'leases'
local function fmt(n) return string.format('%d', n) end
local T = redis.call('TIME')
local NOW = tonumber(T[1]) * 1000 + math.floor(tonumber(T[2]) / 1000)
local function kk(full) return P .. 'k:' .. full end
local function lk(id) return P .. 'lease:' .. id end
local function bless(a, b)
  local la, lb = #a, #b
  local n = la
  if lb < n then n = lb end
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return la < lb
end
-- The highest revision the change stream holds (0 if empty).
local function top()
  local last = redis.call('XREVRANGE', LOG, '+', '-', 'COUNT', 1)
  if last[1] then
    local ms = string.match(last[1][1], '^(%d+)-')
    if ms then return tonumber(ms) end
  end
  return 0
end
-- Set once the counter is known to be at or past the stream's top.
local CHECKED = false
local function bump(full, kind, value)
  local rev = redis.call('INCR', REV)
  if not CHECKED then
    -- An evicted or reset counter would hand out revisions the stream
    -- already has: continue after the stream's top instead of failing
    -- (XADD refuses smaller IDs) after a write.
    local t = top()
    if rev <= t then
      rev = t + 1
      redis.call('SET', REV, fmt(rev))
    end
    CHECKED = true
  end
  if value then
    redis.call('XADD', LOG, 'MAXLEN', '~', MAXLEN, fmt(rev) .. '-0', 'k', full, 't', kind, 'v', value)
  else
    redis.call('XADD', LOG, 'MAXLEN', '~', MAXLEN, fmt(rev) .. '-0', 'k', full, 't', kind)
  end
  return rev
end
local function expired(e) return e and tonumber(e) <= NOW end
-- Deletes a key with a revision and a change record of its own.
-- Returns -1 if absent, 1 if it was live, 0 if it had expired unswept.
local function del_key(full)
  local k = kk(full)
  local cur = redis.call('HMGET', k, 'r', 'e', 'l')
  if not cur[1] then return -1 end
  local live = 1
  if expired(cur[2]) then live = 0 end
  redis.call('DEL', k)
  redis.call('ZREM', IDX, full)
  if cur[2] then redis.call('ZREM', TTL, full) end
  if cur[3] then redis.call('SREM', lk(cur[3]), full) end
  bump(full, 'd', nil)
  return live
end
local function revoke(id)
  local members = redis.call('SMEMBERS', lk(id))
  table.sort(members, bless)
  local n = 0
  for _, m in ipairs(members) do
    if redis.call('HGET', kk(m), 'l') == id then
      if del_key(m) == 1 then n = n + 1 end
    end
  end
  redis.call('DEL', lk(id))
  redis.call('ZREM', LEASES, id)
  return n
end
"#;

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}\n{body}"))
}

/// `put`/`atomic_put`: ARGV[3] key, [4] value, [5] mode (`put`, `create`,
/// `cas`), [6] expected revision, [7] TTL in ms (`0`: none), [8] lease id
/// (`0`: none). Returns `{code, n}`: 0 ok (n = new revision), 1 exists,
/// 2 modified (n = actual), 3 not found, 4 lease lost.
pub(crate) static PUT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local full, value, mode, expected = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local ttl = tonumber(ARGV[7])
local lease = ARGV[8]
local k = kk(full)
local cur = redis.call('HMGET', k, 'r', 'e', 'l')
if cur[1] and expired(cur[2]) then
  del_key(full)
  cur = {false, false, false}
end
if mode == 'create' and cur[1] then return {1, tonumber(cur[1])} end
if mode == 'cas' then
  if not cur[1] then return {3, 0} end
  if cur[1] ~= expected then return {2, tonumber(cur[1])} end
end
if lease ~= '0' then
  local d = redis.call('ZSCORE', LEASES, lease)
  if (not d) or tonumber(d) <= NOW then return {4, 0} end
end
local rev = bump(full, 'p', value)
redis.call('HSET', k, 'v', value, 'r', fmt(rev))
if ttl > 0 then
  local dl = NOW + ttl
  redis.call('HSET', k, 'e', fmt(dl))
  redis.call('ZADD', TTL, dl, full)
elseif cur[2] then
  redis.call('HDEL', k, 'e')
  redis.call('ZREM', TTL, full)
end
if cur[3] and cur[3] ~= lease then redis.call('SREM', lk(cur[3]), full) end
if lease ~= '0' then
  redis.call('HSET', k, 'l', lease)
  redis.call('SADD', lk(lease), full)
elseif cur[3] then
  redis.call('HDEL', k, 'l')
end
redis.call('ZADD', IDX, 0, full)
return {0, rev}
"#,
    )
});

/// `delete`/`atomic_delete`: ARGV[3] key, [4] mode (`plain`, `cas`), [5]
/// expected revision. Returns `{code, n}`: 0 ok (n = 1 if the key existed),
/// 2 modified (n = actual), 3 not found.
pub(crate) static DELETE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local full = ARGV[3]
local cur = redis.call('HMGET', kk(full), 'r', 'e')
local live = cur[1] and not expired(cur[2])
if ARGV[4] == 'cas' then
  if not live then
    if cur[1] then del_key(full) end
    return {3, 0}
  end
  if cur[1] ~= ARGV[5] then return {2, tonumber(cur[1])} end
end
if not cur[1] then return {0, 0} end
local r = del_key(full)
if r == 1 then return {0, 1} end
return {0, 0}
"#,
    )
});

/// `delete_tree`: ARGV[3] the prefix key (`''`: none), [4] and [5] the
/// lexicographic range of the index. Returns how many live keys it deleted.
pub(crate) static DELETE_TREE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local keys = {}
if ARGV[3] ~= '' and redis.call('EXISTS', kk(ARGV[3])) == 1 then
  table.insert(keys, ARGV[3])
end
for _, m in ipairs(redis.call('ZRANGEBYLEX', IDX, ARGV[4], ARGV[5])) do
  table.insert(keys, m)
end
local n = 0
for _, m in ipairs(keys) do
  if del_key(m) == 1 then n = n + 1 end
end
return n
"#,
    )
});

/// Reads: ARGV[3] a single key (`''`: use the range), [4] and [5] the
/// index range. Returns `{revision, key, value, rev, key, value, rev, ...}`
/// as of one instant, expired keys left out.
pub(crate) static READ: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local out = {redis.call('GET', REV) or '0'}
local keys
if ARGV[3] ~= '' then keys = {ARGV[3]} else keys = redis.call('ZRANGEBYLEX', IDX, ARGV[4], ARGV[5]) end
for _, m in ipairs(keys) do
  local cur = redis.call('HMGET', kk(m), 'v', 'r', 'e')
  if cur[2] and not expired(cur[3]) then
    table.insert(out, m)
    table.insert(out, cur[1])
    table.insert(out, cur[2])
  end
end
return out
"#,
    )
});

/// The expiry sweep: ARGV[3] the batch size. Deletes due TTL keys (each
/// with its own revision, in key order) and the keys of lapsed leases.
/// Returns how many keys it deleted.
pub(crate) static SWEEP: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local limit = tonumber(ARGV[3])
local n = 0
local due = redis.call('ZRANGEBYSCORE', TTL, '-inf', NOW, 'LIMIT', 0, limit)
table.sort(due, bless)
for _, m in ipairs(due) do
  local e = redis.call('HGET', kk(m), 'e')
  if expired(e) then
    del_key(m)
    n = n + 1
  else
    redis.call('ZREM', TTL, m)
  end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', LEASES, '-inf', NOW, 'LIMIT', 0, limit)) do
  n = n + revoke(id)
end
return n
"#,
    )
});

/// Grants a lease: ARGV[3] its TTL in ms. Returns its id.
pub(crate) static GRANT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local id = redis.call('INCR', P .. 'lid')
redis.call('ZADD', LEASES, NOW + tonumber(ARGV[3]), fmt(id))
return id
"#,
    )
});

/// Keeps a lease alive: ARGV[3] id, [4] TTL in ms. Returns 1, or 0 if the
/// lease is gone or lapsed.
pub(crate) static KEEPALIVE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local d = redis.call('ZSCORE', LEASES, ARGV[3])
if (not d) or tonumber(d) <= NOW then return 0 end
redis.call('ZADD', LEASES, NOW + tonumber(ARGV[4]), ARGV[3])
return 1
"#,
    )
});

/// Revokes a lease: ARGV[3] id. Returns how many keys it deleted.
pub(crate) static REVOKE: LazyLock<Script> = LazyLock::new(|| script("return revoke(ARGV[3])"));

/// Takes a lock: ARGV[3] lock key, [4] token, [5] TTL in ms. Returns
/// `{1, fencing token}` or `{0, remaining ms of the holder}`.
pub(crate) static LOCK: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local key = P .. 'lock:' .. ARGV[3]
if redis.call('SET', key, ARGV[4], 'NX', 'PX', ARGV[5]) then
  return {1, redis.call('INCR', P .. 'fence')}
end
return {0, redis.call('PTTL', key)}
"#,
    )
});

/// Extends a lock this token holds: ARGV[3] lock key, [4] token, [5] TTL.
/// Returns 1, or 0 if the token no longer holds it.
pub(crate) static LOCK_REFRESH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local key = P .. 'lock:' .. ARGV[3]
if redis.call('GET', key) == ARGV[4] then
  redis.call('PEXPIRE', key, ARGV[5])
  return 1
end
return 0
"#,
    )
});

/// Releases a lock this token holds (compare-and-delete) and appends an
/// unlock record `{revision}-{n}` (no new revision) that wakes waiters.
/// Returns 1 if released, 0 if the token did not hold it.
pub(crate) static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local key = P .. 'lock:' .. ARGV[3]
if redis.call('GET', key) == ARGV[4] then
  redis.call('DEL', key)
  local rev = tonumber(redis.call('GET', REV) or '0')
  local t = top()
  if rev < t then rev = t end
  redis.call('XADD', LOG, 'MAXLEN', '~', MAXLEN, fmt(rev) .. '-*', 'k', ARGV[3], 't', 'u')
  return 1
end
return 0
"#,
    )
});

/// The namespace's state, for `open` and every reconnect of the watch
/// reader: ARGV[3] a candidate epoch, stored if the namespace has none.
/// Returns `{epoch, revision}`, the revision being the larger of the
/// counter and the stream's top.
pub(crate) static STATE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
redis.call('SET', P .. 'epoch', ARGV[3], 'NX')
local rev = tonumber(redis.call('GET', REV) or '0')
local t = top()
if t > rev then rev = t end
return {redis.call('GET', P .. 'epoch'), fmt(rev)}
"#,
    )
});

/// Catching a watch up: ARGV[3] the first stream ID wanted, [4] a count.
/// Returns `{revision, entries}` as of one instant.
pub(crate) static CATCH_UP: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
return {redis.call('GET', REV) or '0', redis.call('XRANGE', LOG, ARGV[3], '+', 'COUNT', ARGV[4])}
"#,
    )
});
