//! The Lua scripts that keep revisions, the key index, TTL deadlines,
//! leases and the change stream consistent. `ARGV[1]` is the namespace's
//! key prefix (`{ns}:`) and `ARGV[2]` the change stream's length bound.
//! `KEYS[1]` is `{ns}:rev`: every key a script touches carries the `{ns}`
//! hash tag, so they all live in that key's slot, and a Cluster routes the
//! script there. `KEYS[2]`, when given, is `{ns}:replid` and turns the
//! failover check on (see `fence`).
//! Each script is built from only the pieces of the prelude it uses
//! (names, the clock, revisions, deletes, revokes): a script pays on every
//! run for each piece it includes, so the hot ones (`PUT`, `READ`) carry
//! as little as they can, and the server's clock (`TIME`) is read only by
//! a script that meets a deadline or a lease.
//!
//! Scripts never raise an error after their first write: every condition
//! is checked before anything is written, and every revision the counter
//! hands out gets its change record in the same script, so the stream's
//! `{revision}-0` entries are contiguous (a gap means trimmed history),
//! except across a fence record, which the failover check writes where
//! the counter jumped (see `fence`).
//! A counter at or below the stream's top (evicted, or reset by hand) is
//! moved past it by `bump`, before its change record is written: the
//! stream refuses the record's ID, and `bump` then continues after the
//! stream's top.

use std::sync::LazyLock;

/// A script: its code (to load it on a server that lacks it, such as a
/// replica a failover just promoted) and its SHA-1 (to run it).
pub(crate) struct Lua {
    code: String,
    hash: String,
}

impl Lua {
    fn new(code: String) -> Self {
        let hash = redis::Script::new(&code).get_hash().to_owned();
        Lua { code, hash }
    }

    /// The script's SHA-1, for `EVALSHA`.
    pub(crate) fn hash(&self) -> &str {
        &self.hash
    }

    /// The script's code, for `SCRIPT LOAD`.
    pub(crate) fn code(&self) -> &str {
        &self.code
    }
}

/// How far the failover check moves the revision counter, the fencing
/// token counter and the lease id counter: 2^32. Revisions stay exact
/// while below 2^53 (Lua's numbers are doubles), so a namespace can go
/// through about two million failovers (fewer by its writes) before that
/// bound; a lost history longer than 2^32 revisions would not be passed.
pub const FAILOVER_GAP: u64 = 1 << 32;

/// The layout of the namespace's records that these scripts read and
/// write, kept in `{ns}:layout`: 1 was a hash per key (`v`, `r`, `e`,
/// `l`), 2 one string per key, a header then the value.
pub(crate) const LAYOUT: &str = "2";

/// The namespace's key names and the helpers that need no server call.
const NAMES: &str = r#"
local P = ARGV[1]
local MAXLEN = ARGV[2]
local REV = P .. 'rev'
local IDX = P .. 'idx'
local LOG = P .. 'log'
local TTL = P .. 'ttl'
local LEASES = P .. 'leases'
local GAP = 4294967296
local LAYOUT = '2'
local function fmt(n) return string.format('%d', n) end
local function kk(full) return P .. 'k:' .. full end
local function lk(id) return P .. 'lease:' .. id end
-- A key's record is one string: a header `<rev> <deadline> <lease>\n`
-- (deadline and lease empty when none), then the value.
local function parse(full, s)
  local nl = string.find(s, '\n', 1, true)
  local r, e, l
  if nl then r, e, l = string.match(string.sub(s, 1, nl - 1), '^(%d+) (%d*) (%d*)$') end
  if not r then error('anykv: the record of ' .. full .. ' is not in this layout') end
  if e == '' then e = false end
  if l == '' then l = false end
  return r, e, l, nl
end
-- A key's revision, deadline and lease (`false` each when absent),
-- reading only the header.
local function head(full)
  local s = redis.call('GETRANGE', kk(full), 0, 63)
  if s == '' then return false, false, false end
  local r, e, l = parse(full, s)
  return r, e, l
end
-- As `head`, plus the value.
local function whole(full)
  local s = redis.call('GET', kk(full))
  if not s then return false, false, false, false end
  local r, e, l, nl = parse(full, s)
  return r, e, l, string.sub(s, nl + 1)
end
local function store(full, r, e, l, value)
  redis.call('SET', kk(full), r .. ' ' .. (e or '') .. ' ' .. (l or '') .. '\n' .. value)
end
"#;

/// The server's clock in ms, read (`TIME`) on first use only.
const CLOCK: &str = r#"
local NOW = nil
local function now()
  if not NOW then
    local T = redis.call('TIME')
    NOW = tonumber(T[1]) * 1000 + math.floor(tonumber(T[2]) / 1000)
  end
  return NOW
end
local function expired(e) return e and tonumber(e) <= now() end
"#;

/// `top` (the stream's highest revision) and `record` (a change record).
const TOP: &str = r#"
-- The highest revision the change stream holds (0 if empty).
local function top()
  local last = redis.call('XREVRANGE', LOG, '+', '-', 'COUNT', 1)
  if last[1] then
    local ms = string.match(last[1][1], '^(%d+)-')
    if ms then return tonumber(ms) end
  end
  return 0
end
local function record(call, rev, full, kind, value)
  if value then
    return call('XADD', LOG, 'MAXLEN', '~', MAXLEN, fmt(rev) .. '-0', 'k', full, 't', kind, 'v', value)
  end
  return call('XADD', LOG, 'MAXLEN', '~', MAXLEN, fmt(rev) .. '-0', 'k', full, 't', kind)
end
"#;

/// `bump`: a new revision with its change record, after the failover
/// check (`fence`).
const BUMP: &str = r#"
local function bump(full, kind, value)
  fence()
  local rev = redis.call('INCR', REV)
  local r = record(redis.pcall, rev, full, kind, value)
  if type(r) == 'table' and r.err then
    -- An evicted or reset counter handed out a revision the stream
    -- already has (XADD refuses IDs at or below its top, and a refused
    -- XADD writes nothing): continue after the stream's top instead.
    local t = top()
    if rev <= t then
      rev = t + 1
      redis.call('SET', REV, fmt(rev))
    end
    record(redis.call, rev, full, kind, value)
  end
  return rev
end
"#;

/// `fence`: the failover check, run once per script before it hands out a
/// revision (`bump` calls it), a fencing token or a lease id.
///
/// A server whose replication id (`master_replid` of `INFO replication`)
/// is not the one the namespace's counters were last checked under
/// (`{ns}:replid`, `KEYS[2]`) may lack writes that were acknowledged: a
/// replica promoted while it lagged, a server restarted without the last
/// second of its append-only file. Its counters are then moved past
/// anything that lost history can have handed out: the revision counter,
/// `{ns}:fence` and `{ns}:lid` jump by [`FAILOVER_GAP`], and a fence record
/// `{to}-0` (`t` `f`, `v` the revision it jumped from) tells watches that
/// the revisions in between do not exist and that anything they saw after
/// `from` was lost. `{ns}:fenced` keeps `from:to` of the last jump. A
/// namespace with no id stored yet just stores it.
const FENCE: &str = r#"
local FENCED = false
local function fence()
  if FENCED or not KEYS[2] then return end
  FENCED = true
  local info = redis.call('INFO', 'replication')
  local stored = redis.call('GET', KEYS[2])
  -- The common case, with a plain search: the same id.
  if stored and string.find(info, 'master_replid:' .. stored .. '\r', 1, true) then return end
  local id = string.match(info, 'master_replid:(%x+)')
  if not id then return end
  if stored then
    local from = tonumber(redis.call('GET', REV) or '0')
    local t = top()
    if t > from then from = t end
    local to = from + GAP
    record(redis.call, to, '', 'f', fmt(from))
    redis.call('SET', REV, fmt(to))
    redis.call('SET', P .. 'fence', fmt(tonumber(redis.call('GET', P .. 'fence') or '0') + GAP))
    redis.call('SET', P .. 'lid', fmt(tonumber(redis.call('GET', P .. 'lid') or '0') + GAP))
    redis.call('SET', P .. 'fenced', fmt(from) .. ':' .. fmt(to))
  end
  redis.call('SET', KEYS[2], id)
end
"#;

/// `del_key`: deletes a key with a revision and a change record of its own.
const DELETES: &str = r#"
-- Returns -1 if absent, 1 if it was live, 0 if it had expired unswept.
local function del_key(full)
  local r, e, l = head(full)
  if not r then return -1 end
  local live = 1
  if expired(e) then live = 0 end
  redis.call('DEL', kk(full))
  redis.call('ZREM', IDX, full)
  if e then redis.call('ZREM', TTL, full) end
  if l then redis.call('SREM', lk(l), full) end
  bump(full, 'd', nil)
  return live
end
"#;

/// `revoke`: deletes a lease and its keys, in key order.
const REVOKES: &str = r#"
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
local function revoke(id)
  local members = redis.call('SMEMBERS', lk(id))
  table.sort(members, bless)
  local n = 0
  for _, m in ipairs(members) do
    local _, _, l = head(m)
    if l == id then
      if del_key(m) == 1 then n = n + 1 end
    end
  end
  redis.call('DEL', lk(id))
  redis.call('ZREM', LEASES, id)
  return n
end
"#;

/// A script of the given prelude pieces (in order) and a body.
fn script(pieces: &[&str], body: &str) -> Lua {
    let mut code = pieces.concat();
    code.push('\n');
    code.push_str(body);
    Lua::new(code)
}

/// Every piece, for the scripts that are not on the hot path.
const ALL: &[&str] = &[NAMES, CLOCK, TOP, FENCE, BUMP, DELETES, REVOKES];

/// `put`/`atomic_put`, one write or several sent together: ARGV[3] how
/// many, then for each its key, value, mode (`put`, `create`, `cas`),
/// expected revision, TTL in ms (`0`: none) and lease id (`0`: none).
/// Returns one `{code, n}` per write, in order: 0 ok (n = new revision), 1
/// exists, 2 modified (n = actual), 3 not found, 4 lease lost. Each write
/// has a revision and a change record of its own, as if sent alone; the
/// failover check and the script's own cost are paid once.
///
/// Overwriting a key without a TTL or a lease is `GETRANGE` (the old
/// record's header), `INCR`, `XADD`, `SET`: the clock is read only for a
/// deadline or a lease, and the index only written for a new key.
pub(crate) static PUT: LazyLock<Lua> = LazyLock::new(|| {
    let mut code = String::from(PUT_HOT_NAMES);
    code.push_str("local H = nil\n");
    code.push_str("-- Everything else, built on first use only: the closures of the\n");
    code.push_str("-- whole prelude cost a run about a microsecond.\n");
    code.push_str("local function helpers()\n  if H then return H end\n");
    for piece in [NAMES, CLOCK, TOP, FENCE, BUMP, DELETES] {
        code.push_str(piece);
    }
    code.push_str(PUT_SLOW);
    code.push_str("  H = {fence = fence, put_slow = put_slow, rebump = rebump}\n  return H\nend\n");
    code.push_str(PUT_HOT);
    Lua::new(code)
});

/// The names the hot path of [`PUT`] needs.
const PUT_HOT_NAMES: &str = r#"
local P = ARGV[1]
local MAXLEN = ARGV[2]
local REV = P .. 'rev'
local LOG = P .. 'log'
"#;

/// [`PUT`]'s general case (inside `helpers`): any mode, TTL, lease, a new
/// key, a key with a deadline or a lease; and `rebump`, the revision
/// counter's repair after the hot path's record was refused.
const PUT_SLOW: &str = r#"
  local function put_slow(full, value, mode, expected, ttl, lease)
    local r, e, l = head(full)
    if r and expired(e) then
      del_key(full)
      r, e, l = false, false, false
    end
    if mode == 'create' and r then return {1, tonumber(r)} end
    if mode == 'cas' then
      if not r then return {3, 0} end
      if r ~= expected then return {2, tonumber(r)} end
    end
    if lease ~= '0' then
      local d = redis.call('ZSCORE', LEASES, lease)
      if (not d) or tonumber(d) <= now() then return {4, 0} end
    end
    -- The clock is read before the first write.
    if ttl > 0 then now() end
    local rev = bump(full, 'p', value)
    local dl = false
    if ttl > 0 then
      dl = fmt(NOW + ttl)
      redis.call('ZADD', TTL, dl, full)
    elseif e then
      redis.call('ZREM', TTL, full)
    end
    if l and l ~= lease then redis.call('SREM', lk(l), full) end
    local nl = false
    if lease ~= '0' then
      nl = lease
      if l ~= lease then redis.call('SADD', lk(lease), full) end
    end
    store(full, fmt(rev), dl, nl, value)
    -- A key that existed (and had not expired) is in the index already.
    if not r then redis.call('ZADD', IDX, 0, full) end
    return {0, rev}
  end
  local function rebump(rev, full, value)
    local t = top()
    if rev <= t then
      rev = t + 1
      redis.call('SET', REV, fmt(rev))
    end
    record(redis.call, rev, full, 'p', value)
    return rev
  end
"#;

/// [`PUT`]'s hot path: overwriting a key that has neither a deadline nor
/// a lease with a plain value (`put`, or `cas` at the right revision) is
/// `GETRANGE`, the failover check once per run, `INCR`, `XADD`, `SET`,
/// with none of the prelude built. Anything else goes to `put_slow`.
const PUT_HOT: &str = r#"
local FENCED = not KEYS[2]
-- The failover check's common case (the stored replication id is the
-- server's); anything else runs the whole check (`fence`).
local function fast_fence()
  if FENCED then return end
  FENCED = true
  local info = redis.call('INFO', 'replication')
  local stored = redis.call('GET', KEYS[2])
  if stored and string.find(info, 'master_replid:' .. stored .. '\r', 1, true) then return end
  helpers().fence()
end
local function put1(full, value, mode, expected, ttl, lease)
  if ttl > 0 or lease ~= '0' or mode == 'create' then
    return helpers().put_slow(full, value, mode, expected, ttl, lease)
  end
  local k = P .. 'k:' .. full
  local s = redis.call('GETRANGE', k, 0, 63)
  -- Only `<rev>  ` (no deadline, no lease) stays on the hot path.
  local r = string.match(s, '^(%d+)  \n')
  if not r then
    return helpers().put_slow(full, value, mode, expected, ttl, lease)
  end
  if mode == 'cas' and r ~= expected then return {2, tonumber(r)} end
  fast_fence()
  local rev = redis.call('INCR', REV)
  local id = string.format('%d', rev)
  local x = redis.pcall('XADD', LOG, 'MAXLEN', '~', MAXLEN, id .. '-0', 'k', full, 't', 'p', 'v', value)
  if type(x) == 'table' and x.err then
    rev = helpers().rebump(rev, full, value)
    id = string.format('%d', rev)
  end
  redis.call('SET', k, id .. '  \n' .. value)
  return {0, rev}
end
local out = {}
for i = 0, tonumber(ARGV[3]) - 1 do
  local b = 4 + 6 * i
  out[i + 1] = put1(ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], tonumber(ARGV[b + 4]), ARGV[b + 5])
end
return out
"#;

/// `delete`/`atomic_delete`: ARGV[3] key, [4] mode (`plain`, `cas`), [5]
/// expected revision. Returns `{code, n}`: 0 ok (n = 1 if the key existed),
/// 2 modified (n = actual), 3 not found.
pub(crate) static DELETE: LazyLock<Lua> = LazyLock::new(|| {
    script(
        &[NAMES, CLOCK, TOP, FENCE, BUMP, DELETES],
        r#"
local full = ARGV[3]
local r, e = head(full)
local live = r and not expired(e)
if ARGV[4] == 'cas' then
  if not live then
    if r then del_key(full) end
    return {3, 0}
  end
  if r ~= ARGV[5] then return {2, tonumber(r)} end
end
if not r then return {0, 0} end
local r = del_key(full)
if r == 1 then return {0, 1} end
return {0, 0}
"#,
    )
});

/// `delete_tree`: ARGV[3] the prefix key (`''`: none), [4] and [5] the
/// lexicographic range of the index. Returns how many live keys it deleted.
pub(crate) static DELETE_TREE: LazyLock<Lua> = LazyLock::new(|| {
    script(
        &[NAMES, CLOCK, TOP, FENCE, BUMP, DELETES],
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
/// index range, [6] `1` to return the store's revision (else `0`), [7] a
/// page's size (`0`: all), [8] `1` for keys only. Returns `{revision, key,
/// record, key, record, ...}` as of one instant, expired keys left out;
/// each record as stored (header and value; with keys only, the header
/// alone), for the caller to read. Needs none of the prelude: it reads the
/// clock only when a key has a deadline.
pub(crate) static READ: LazyLock<Lua> = LazyLock::new(|| {
    script(
        &[],
        r#"
local P = ARGV[1]
local out = {'0'}
if ARGV[6] == '1' then out[1] = redis.call('GET', P .. 'rev') or '0' end
local limit = tonumber(ARGV[7] or '0')
local keys_only = ARGV[8] == '1'
local now = nil
local n = 1
local found = 0
-- Takes key `m`'s record `s` (see the prelude; false when absent),
-- returned as it is for the caller to read: only the header for keys only.
local function take(m, s)
  if not s or s == '' then return end
  -- `<rev>  ` starts a record without a deadline.
  if not string.find(s, '^%d+  ') then
    local e = string.match(s, '^%d+ (%d+) %d*\n')
    if not e then error('anykv: the record of ' .. m .. ' is not in this layout') end
    if not now then
      local T = redis.call('TIME')
      now = tonumber(T[1]) * 1000 + math.floor(tonumber(T[2]) / 1000)
    end
    if tonumber(e) <= now then return end
  end
  if keys_only then
    local nl = string.find(s, '\n', 1, true)
    if not nl then error('anykv: the record of ' .. m .. ' is not in this layout') end
    s = string.sub(s, 1, nl)
  end
  out[n + 1] = m
  out[n + 2] = s
  n = n + 2
  found = found + 1
end
-- Takes the keys `ms`, their records read with one MGET per 256 keys
-- (keys only: the header of each, GETRANGE).
local function take_all(ms)
  if keys_only then
    for _, m in ipairs(ms) do take(m, redis.call('GETRANGE', P .. 'k:' .. m, 0, 63)) end
    return
  end
  local i = 1
  while i <= #ms do
    local j = math.min(i + 255, #ms)
    local names = {}
    for x = i, j do names[x - i + 1] = P .. 'k:' .. ms[x] end
    local records = redis.call('MGET', unpack(names))
    for x = i, j do take(ms[x], records[x - i + 1]) end
    i = j + 1
  end
end
if ARGV[3] ~= '' then
  take_all({ARGV[3]})
elseif limit > 0 then
  -- A page: read the index in batches of what is still wanted (keys
  -- past their deadline are skipped), until the page is full or the
  -- range ends.
  local min = ARGV[4]
  while found < limit do
    local want = limit - found
    local batch = redis.call('ZRANGEBYLEX', P .. 'idx', min, ARGV[5], 'LIMIT', 0, want)
    take_all(batch)
    if #batch < want then break end
    min = '(' .. batch[#batch]
  end
else
  take_all(redis.call('ZRANGEBYLEX', P .. 'idx', ARGV[4], ARGV[5]))
end
return out
"#,
    )
});

/// The expiry sweep: ARGV[3] the batch size. Deletes due TTL keys (each
/// with its own revision, in key order) and the keys of lapsed leases.
/// Returns how many keys it deleted.
pub(crate) static SWEEP: LazyLock<Lua> = LazyLock::new(|| {
    script(
        ALL,
        r#"
local limit = tonumber(ARGV[3])
local n = 0
local due = redis.call('ZRANGEBYSCORE', TTL, '-inf', now(), 'LIMIT', 0, limit)
table.sort(due, bless)
for _, m in ipairs(due) do
  local _, e = head(m)
  if expired(e) then
    del_key(m)
    n = n + 1
  else
    redis.call('ZREM', TTL, m)
  end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', LEASES, '-inf', now(), 'LIMIT', 0, limit)) do
  n = n + revoke(id)
end
return n
"#,
    )
});

/// Grants a lease: ARGV[3] its TTL in ms. Returns its id.
pub(crate) static GRANT: LazyLock<Lua> = LazyLock::new(|| {
    script(
        &[NAMES, CLOCK, TOP, FENCE],
        r#"
fence()
local id = redis.call('INCR', P .. 'lid')
redis.call('ZADD', LEASES, now() + tonumber(ARGV[3]), fmt(id))
return id
"#,
    )
});

/// Keeps a lease alive: ARGV[3] id, [4] TTL in ms. Returns 1, or 0 if the
/// lease is gone or lapsed.
pub(crate) static KEEPALIVE: LazyLock<Lua> = LazyLock::new(|| {
    script(
        &[NAMES, CLOCK],
        r#"
local d = redis.call('ZSCORE', LEASES, ARGV[3])
if (not d) or tonumber(d) <= now() then return 0 end
redis.call('ZADD', LEASES, now() + tonumber(ARGV[4]), ARGV[3])
return 1
"#,
    )
});

/// Revokes a lease: ARGV[3] id. Returns how many keys it deleted.
pub(crate) static REVOKE: LazyLock<Lua> = LazyLock::new(|| script(ALL, "return revoke(ARGV[3])"));

/// Takes a lock: ARGV[3] lock key, [4] token, [5] TTL in ms. Returns
/// `{1, fencing token}` or `{0, remaining ms of the holder, revision}`:
/// a release after this attempt has an unlock record after `{revision}-0`.
pub(crate) static LOCK: LazyLock<Lua> = LazyLock::new(|| {
    script(
        &[NAMES, TOP, FENCE],
        r#"
fence()
local key = P .. 'lock:' .. ARGV[3]
if redis.call('SET', key, ARGV[4], 'NX', 'PX', ARGV[5]) then
  return {1, redis.call('INCR', P .. 'fence')}
end
return {0, redis.call('PTTL', key), redis.call('GET', REV) or '0'}
"#,
    )
});

/// Extends a lock this token holds: ARGV[3] lock key, [4] token, [5] TTL.
/// Returns 1, or 0 if the token no longer holds it.
pub(crate) static LOCK_REFRESH: LazyLock<Lua> = LazyLock::new(|| {
    script(
        &[NAMES],
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
pub(crate) static UNLOCK: LazyLock<Lua> = LazyLock::new(|| {
    script(
        &[NAMES, TOP],
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
/// Returns `{epoch, revision, layout}`, the revision being the larger of
/// the counter and the stream's top, the layout that of the namespace's
/// records ([`LAYOUT`]; a new namespace is marked with it). It runs the
/// failover check first, so a
/// store or reader that has just found a new primary moves the counters
/// on before it reads or waits for anything.
pub(crate) static STATE: LazyLock<Lua> = LazyLock::new(|| {
    script(
        &[NAMES, TOP, FENCE],
        r#"
fence()
redis.call('SET', P .. 'epoch', ARGV[3], 'NX')
local rev = tonumber(redis.call('GET', REV) or '0')
local t = top()
if t > rev then rev = t end
-- The records' layout: a namespace without a mark is new (it takes this
-- layout) unless it already has keys, which an earlier version wrote.
local layout = redis.call('GET', P .. 'layout')
if not layout then
  if redis.call('EXISTS', IDX) == 1 then
    layout = '1'
  else
    layout = LAYOUT
    redis.call('SET', P .. 'layout', layout)
  end
end
return {redis.call('GET', P .. 'epoch'), fmt(rev), layout}
"#,
    )
});

/// Catching a watch up: ARGV[3] the first stream ID wanted, [4] a count.
/// Returns `{revision, entries}` as of one instant.
pub(crate) static CATCH_UP: LazyLock<Lua> = LazyLock::new(|| {
    script(
        &[NAMES],
        r#"
return {redis.call('GET', REV) or '0', redis.call('XRANGE', LOG, ARGV[3], '+', 'COUNT', ARGV[4])}
"#,
    )
});

/// `txn`: a transaction, both branches sent, the branch picked on the
/// server. ARGV[3] the number of compares, then per compare its kind
/// (`r` revision, `a` absent, `p` present, `v` value), full key and
/// argument (the revision, the value, or `''`); then the number of
/// success operations, then per operation its kind (`p` put, `d` delete,
/// `g` get), full key, value (`''`), TTL in ms (`0`: none) and lease id
/// (`0`: none); then the failure operations the same way.
///
/// Returns `{0, succeeded, failed compare (-1: none), revision (0: none),
/// results}`, one result per operation of the branch that ran (a put 1, a
/// delete 1 if the key was live else 0, a get `{value, revision}` or nil),
/// or `{4, lease id}` when a leased put's lease is gone (nothing written).
///
/// Every check (compares, leases) comes before the first write. A key past
/// its deadline is absent to compares and gets; one that the branch puts
/// or deletes is deleted first with a revision of its own, as `put` and
/// `delete` do. Then the counter is bumped once and every write applied at
/// that revision, with one change record per written key, `{rev}-0`,
/// `{rev}-1`, ... in the branch's order: contiguous in the stream, and
/// before any unlock record of that revision (`{rev}-*` comes after them).
pub(crate) static TXN: LazyLock<Lua> = LazyLock::new(|| {
    script(
        &[NAMES, CLOCK, TOP, FENCE, BUMP, DELETES],
        r#"
local i = 4
local failed = -1
for c = 0, tonumber(ARGV[3]) - 1 do
  local kind, full, arg = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  i = i + 3
  if failed < 0 then
    local r, e, v
    if kind == 'v' then
      local _
      r, e, _, v = whole(full)
    else
      r, e = head(full)
    end
    local live = r and not expired(e)
    local ok
    if kind == 'a' then ok = not live
    elseif not live then ok = false
    elseif kind == 'r' then ok = r == arg
    elseif kind == 'v' then ok = v == arg
    else ok = true end
    if not ok then failed = c end
  end
end
local first = i + 1
local count = tonumber(ARGV[i])
if failed >= 0 then
  local j = i + 1 + 5 * count
  first = j + 1
  count = tonumber(ARGV[j])
end
local ops = {}
for o = 1, count do
  local b = first + (o - 1) * 5
  local op = {kind = ARGV[b], full = ARGV[b + 1], value = ARGV[b + 2],
    ttl = tonumber(ARGV[b + 3]), lease = ARGV[b + 4]}
  -- op.cur: revision, deadline, lease, value (a get's only).
  local r, e, l, v
  if op.kind == 'g' then r, e, l, v = whole(op.full) else r, e, l = head(op.full) end
  op.cur = {r, e, l, v}
  op.live = (r and not expired(e)) and true or false
  ops[o] = op
end
for _, op in ipairs(ops) do
  if op.kind == 'p' and op.lease ~= '0' then
    local d = redis.call('ZSCORE', LEASES, op.lease)
    if (not d) or tonumber(d) <= now() then return {4, op.lease} end
  end
end
-- The results, from the state before any write.
local results = {}
local writes = false
for o, op in ipairs(ops) do
  if op.kind == 'g' then
    if op.live then results[o] = {op.cur[4], op.cur[1]} else results[o] = false end
  elseif op.kind == 'd' then
    if op.live then
      results[o] = 1
      writes = true
    else
      results[o] = 0
    end
  else
    results[o] = 1
    writes = true
    -- The clock is read before the first write.
    if op.ttl > 0 then now() end
  end
end
-- Keys past their deadline that the branch writes: deleted first, each
-- with a revision of its own (as the sweep would).
for _, op in ipairs(ops) do
  if op.kind ~= 'g' and op.cur[1] and not op.live then
    del_key(op.full)
    op.cur = {false, false, false, false}
  end
end
if not writes then
  return {0, failed < 0 and 1 or 0, failed, 0, results}
end
fence()
local rev = redis.call('INCR', REV)
local function xadd(call, seq, op)
  local id = fmt(rev) .. '-' .. fmt(seq)
  if op.kind == 'p' then
    return call('XADD', LOG, 'MAXLEN', '~', MAXLEN, id, 'k', op.full, 't', 'p', 'v', op.value)
  end
  return call('XADD', LOG, 'MAXLEN', '~', MAXLEN, id, 'k', op.full, 't', 'd')
end
local seq = 0
for _, op in ipairs(ops) do
  if op.kind == 'p' or (op.kind == 'd' and op.live) then
    if seq == 0 then
      local r = xadd(redis.pcall, 0, op)
      if type(r) == 'table' and r.err then
        -- As `bump`: a counter at or below the stream's top continues
        -- after it.
        local t = top()
        if rev <= t then
          rev = t + 1
          redis.call('SET', REV, fmt(rev))
        end
        xadd(redis.call, 0, op)
      end
    else
      xadd(redis.call, seq, op)
    end
    seq = seq + 1
  end
end
local r = fmt(rev)
for _, op in ipairs(ops) do
  local cur = op.cur
  if op.kind == 'p' then
    local dl = false
    if op.ttl > 0 then
      dl = fmt(NOW + op.ttl)
      redis.call('ZADD', TTL, dl, op.full)
    elseif cur[2] then
      redis.call('ZREM', TTL, op.full)
    end
    if cur[3] and cur[3] ~= op.lease then redis.call('SREM', lk(cur[3]), op.full) end
    local l = false
    if op.lease ~= '0' then
      l = op.lease
      if cur[3] ~= op.lease then redis.call('SADD', lk(op.lease), op.full) end
    end
    store(op.full, r, dl, l, op.value)
    if not cur[1] then redis.call('ZADD', IDX, 0, op.full) end
  elseif op.kind == 'd' and op.live then
    redis.call('DEL', kk(op.full))
    redis.call('ZREM', IDX, op.full)
    if cur[2] then redis.call('ZREM', TTL, op.full) end
    if cur[3] then redis.call('SREM', lk(cur[3]), op.full) end
  end
end
return {0, failed < 0 and 1 or 0, failed, rev, results}
"#,
    )
});
