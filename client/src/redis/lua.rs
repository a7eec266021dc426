//! The scheduler's Lua scripts: every change to the schedule that touches more than one key
//! runs as one script, so Redis applies it atomically and no crash between two commands can
//! lose or duplicate a job.
//!
//! Redis does not roll back a script's earlier writes when a later command fails, so every
//! script first checks the type of each key it touches ([`CHECK`]: a wrong type is an error
//! naming the key) and reads what it needs, and only then writes. A script that fails has
//! written nothing. (Out of memory is no exception: Redis refuses a script's first write when
//! over `maxmemory`, and lets the writes after it through.)
//!
//! Leases have owners: a scheduler takes jobs under its token (the `owners` hash, id to
//! token), and only the owner renews, acknowledges, defers or buries a leased job. A scheduler
//! whose lease ran out and was taken by another sees that and drops the job (fencing).
//!
//! Times are Redis's own clock (`TIME`), in milliseconds, so that schedulers and clients on
//! hosts with skewed clocks agree on what is due and when a lease runs out. Clients pass the
//! due time they want; only "now" comes from Redis. No I/O here: the strings only.
//!
//! Keys (see [`super::schedule::Keys`]; all li3g keys share its prefix, so one hash tag in the
//! prefix puts them in one Redis Cluster slot): `scheduled` (sorted set, id by due time),
//! `leased` (sorted set, id by lease expiry), `owners` (hash, leased id to its scheduler's
//! token), `jobs` (hash, id to stored job), `dead` (hash, id to dead entry), status keys, and
//! the li3_gearman set (sorted set of JSON members by due time in seconds). With `compat` off
//! the li3_gearman set is never named: the scripts get the `scheduled` key in its place.

/// Redis's clock in milliseconds, as a local `now`.
const NOW: &str =
    "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n";

/// `check(key, type, ...)`: the first key that exists with another type, as an error message
/// naming it; `nil` when every key is absent or of its type. Call as
/// `local bad = check(...) if bad then return redis.error_reply(bad) end` before any write.
pub const CHECK: &str = r#"
local function check(...)
  local args = {...}
  for i = 1, #args, 2 do
    local found = redis.call('TYPE', args[i])['ok']
    if found ~= 'none' and found ~= args[i + 1] then
      return 'WRONGTYPE li3g: key ' .. args[i] .. ' holds a ' .. found .. ', not a ' .. args[i + 1] .. '; nothing was changed'
    end
  end
  return nil
end
"#;

/// Acknowledges the jobs of the previous batch (as [`ack`]), then takes up to `batch` jobs
/// under this scheduler's token: first (with `reclaim`) those leased to this token that it
/// no longer holds (a take whose reply was lost), then those whose lease ran out (their
/// scheduler died or stalled; one scheduled again meanwhile, a retry, only loses its lease
/// and waits for its due time), then due ones, then (when enabled) due li3_gearman members,
/// which are stored under their `id` (or `php-<sha1>` without one). Each goes under a lease
/// until `now + lease_ms`. Bulk commands, in slices that keep Lua's stack small.
///
/// KEYS: scheduled, leased, jobs, compat set (or scheduled), owners. ARGV: lease_ms, batch,
/// compat ("1"/"0"), token, reclaim ("1"/"0"), then the ids to acknowledge. Returns `{now,
/// next, id1, job1, id2, job2, ...}`: `next` is the earliest due time or lease expiry in ms
/// (-1 when nothing waits), a job is `false` (nil) when it was not found.
pub fn take() -> String {
    format!(
        "{NOW}{CHECK}{SLICES}{ACK_BODY}{}",
        r#"
local compat = ARGV[3] == '1'
local bad = check(KEYS[1], 'zset', KEYS[2], 'zset', KEYS[3], 'hash', KEYS[5], 'hash')
if not bad and compat then bad = check(KEYS[4], 'zset') end
if bad then return redis.error_reply(bad) end
local token = ARGV[4]
ack(KEYS[2], KEYS[3], KEYS[1], KEYS[5], token, ARGV, 6)
local lease = now + tonumber(ARGV[1])
local batch = tonumber(ARGV[2])
-- Reads first.
-- A leased job that is scheduled again meanwhile (a worker recorded its retry before the
-- lease was acknowledged) is not taken through its lease: that would submit the retry before
-- its time, and again when it is due. Its lease is released; the schedule has it.
local out, seen, release = {}, {}, {}
local function leased(id)
  if seen[id] then return end
  seen[id] = true
  if redis.call('ZSCORE', KEYS[1], id) then release[#release + 1] = id else out[#out + 1] = id end
end
if ARGV[5] == '1' then
  local owners = redis.call('HGETALL', KEYS[5])
  for i = 1, #owners, 2 do
    if #out < batch and owners[i + 1] == token then leased(owners[i]) end
  end
end
if #out < batch then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, batch - #out)) do leased(id) end
end
local due = {}
if #out < batch then
  due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, batch - #out)
  for _, id in ipairs(due) do out[#out + 1] = id end
end
local members, member_ids = {}, {}
if compat and #out < batch then
  members = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', string.format('%.3f', now / 1000), 'LIMIT', 0, batch - #out)
  for _, m in ipairs(members) do
    local ok, d = pcall(cjson.decode, m)
    local id
    if ok and type(d) == 'table' and type(d.id) == 'string' and d.id ~= '' then id = d.id else id = 'php-' .. redis.sha1hex(m) end
    member_ids[#member_ids + 1] = id
  end
end
-- Writes from here on, which cannot fail: every key was checked above.
slices(release, 1, function(ids)
  redis.call('ZREM', KEYS[2], unpack(ids))
  redis.call('HDEL', KEYS[5], unpack(ids))
end)
if #out == 0 and #members == 0 then
  local next = -1
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if first[2] then next = tonumber(first[2]) end
  first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if first[2] and (next < 0 or tonumber(first[2]) < next) then next = tonumber(first[2]) end
  if compat then
    first = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
    if first[2] then
      local at = math.floor(tonumber(first[2]) * 1000)
      if next < 0 or at < next then next = at end
    end
  end
  return {tostring(now), tostring(next)}
end
local result = {tostring(now), '-1'}
slices(out, 1, function(ids)
  local jobs = redis.call('HMGET', KEYS[3], unpack(ids))
  for i, id in ipairs(ids) do
    result[#result + 1] = id
    result[#result + 1] = jobs[i]
  end
end)
for i, m in ipairs(members) do
  result[#result + 1] = member_ids[i]
  result[#result + 1] = m
  out[#out + 1] = member_ids[i]
end
slices(due, 1, function(ids) redis.call('ZREM', KEYS[1], unpack(ids)) end)
for i, m in ipairs(members) do
  redis.call('HSET', KEYS[3], member_ids[i], m)
  redis.call('ZREM', KEYS[4], m)
end
slices(out, 1, function(ids)
  local scored, owned = {}, {}
  for _, id in ipairs(ids) do
    scored[#scored + 1] = lease
    scored[#scored + 1] = id
    owned[#owned + 1] = id
    owned[#owned + 1] = token
  end
  redis.call('ZADD', KEYS[2], unpack(scored))
  redis.call('HSET', KEYS[5], unpack(owned))
end)
return result
"#
    )
}

/// `slices(list, from, f)`: calls `f` with `list[from..]` in slices of at most 500, so that
/// `unpack` never overflows Lua's stack.
const SLICES: &str = r#"
local function slices(list, from, f)
  local i = from
  while i <= #list do
    local slice = {}
    for j = i, math.min(i + 499, #list) do slice[#slice + 1] = list[j] end
    f(slice)
    i = i + 500
  end
end
"#;

/// `ack(leased, jobs, scheduled, owners, token, ids, from)`: the ids still leased to `token`
/// leave the lease set, and their stored jobs are deleted unless scheduled again meanwhile (a
/// retry keeps the id). Ids leased to another scheduler are left to it.
const ACK_BODY: &str = r#"
local function ack(leased, jobs, scheduled, owners, token, ids, from)
  local n = 0
  slices(ids, from, function(slice)
    local held = redis.call('HMGET', owners, unpack(slice))
    local mine, drop = {}, {}
    for i, id in ipairs(slice) do
      if held[i] == token then mine[#mine + 1] = id end
    end
    if #mine == 0 then return end
    n = n + redis.call('ZREM', leased, unpack(mine))
    redis.call('HDEL', owners, unpack(mine))
    for _, id in ipairs(mine) do
      if not redis.call('ZSCORE', scheduled, id) then drop[#drop + 1] = id end
    end
    if #drop > 0 then redis.call('HDEL', jobs, unpack(drop)) end
  end)
  return n
end
"#;

/// Acknowledges jobs a job server has accepted, as `ack` in [`take`] does it: only those still leased to the token.
///
/// KEYS: leased, jobs, scheduled, owners. ARGV: token, then ids. Returns how many were still
/// leased to `token`.
pub fn ack() -> String {
    format!(
        "{CHECK}{SLICES}{ACK_BODY}{}",
        r#"
local bad = check(KEYS[1], 'zset', KEYS[2], 'hash', KEYS[3], 'zset', KEYS[4], 'hash')
if bad then return redis.error_reply(bad) end
return ack(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV, 2)
"#
    )
}

/// Renews the leases of jobs a scheduler still holds, until `now + lease_ms`, and says which
/// it lost (another scheduler took them after the lease ran out).
///
/// KEYS: leased, owners. ARGV: token, lease_ms, then ids. Returns, per id, 1 when still held
/// (and renewed), 0 when lost.
pub fn renew() -> String {
    format!(
        "{NOW}{CHECK}{}",
        r#"
local bad = check(KEYS[1], 'zset', KEYS[2], 'hash')
if bad then return redis.error_reply(bad) end
local until_ms = now + tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[1] then
    redis.call('ZADD', KEYS[1], until_ms, ARGV[i])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"#
    )
}

/// Gives back jobs a job server refused for now (its queue is full): each still leased to
/// `token` leaves the lease and is scheduled again `delay_ms` from now (unless it is already
/// scheduled, as a retry is).
///
/// KEYS: leased, owners, scheduled. ARGV: token, delay_ms, then ids. Returns how many.
pub fn defer() -> String {
    format!(
        "{NOW}{CHECK}{}",
        r#"
local bad = check(KEYS[1], 'zset', KEYS[2], 'hash', KEYS[3], 'zset')
if bad then return redis.error_reply(bad) end
local at = now + tonumber(ARGV[2])
local n = 0
for i = 3, #ARGV do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[1] then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[2], ARGV[i])
    redis.call('ZADD', KEYS[3], 'NX', at, ARGV[i])
    n = n + 1
  end
end
return n
"#
    )
}

/// Schedules one job: stores it, adds it to the schedule, marks its status pending (when a
/// status key is given) and, when it is now the earliest job, wakes the schedulers. The
/// wake-up is a hint: a failed `PUBLISH` (an ACL without the channel) does not fail the
/// script, the schedulers see the job at their next look.
///
/// KEYS: scheduled, jobs, status key (may be any key when `ARGV[5]` is "0").
/// ARGV: id, due_ms, job, wake channel, status ttl in seconds ("0": no status).
/// Returns 1, or 2 when the wake-up could not be published.
pub fn schedule() -> String {
    format!(
        "{CHECK}{}",
        r#"
local bad = check(KEYS[1], 'zset', KEYS[2], 'hash')
if not bad and ARGV[5] ~= '0' then bad = check(KEYS[3], 'string') end
if bad then return redis.error_reply(bad) end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
if ARGV[5] ~= '0' then redis.call('SET', KEYS[3], 'pending', 'EX', ARGV[5]) end
local first = redis.call('ZRANGE', KEYS[1], 0, 0)
if first[1] == ARGV[1] then
  local ok = redis.pcall('PUBLISH', ARGV[4], ARGV[2])
  if type(ok) == 'table' and ok.err then return 2 end
end
return 1
"#
    )
}

/// Cancels a pending job: li3g's by id, or (given `member`) that li3_gearman member, which
/// the caller found with `ZSCAN` page by page (so no script blocks Redis for a scan of the
/// whole set). Its status becomes `cancelled`.
///
/// KEYS: scheduled, jobs, compat set (or scheduled), status key. ARGV: id, member ("": li3g's
/// job by id), status ttl ("0": no status). Returns 1 when a job was removed.
pub fn cancel() -> String {
    format!(
        "{CHECK}{}",
        r#"
local bad = check(KEYS[1], 'zset', KEYS[2], 'hash')
if not bad and ARGV[2] ~= '' then bad = check(KEYS[3], 'zset') end
if not bad and ARGV[3] ~= '0' then bad = check(KEYS[4], 'string') end
if bad then return redis.error_reply(bad) end
local removed
if ARGV[2] == '' then
  removed = redis.call('ZREM', KEYS[1], ARGV[1]) == 1
  if removed then redis.call('HDEL', KEYS[2], ARGV[1]) end
else
  removed = redis.call('ZREM', KEYS[3], ARGV[2]) == 1
end
if not removed then return 0 end
if ARGV[3] ~= '0' then redis.call('SET', KEYS[4], 'cancelled', 'EX', ARGV[3]) end
return 1
"#
    )
}

/// Moves a job to the dead set with why: out of the lease set, its stored job deleted unless
/// it was scheduled again, its status `dead`. With a token (a scheduler burying what it
/// took), only while the lease is still that token's.
///
/// KEYS: dead, leased, jobs, scheduled, owners, status key. ARGV: id, dead entry (JSON),
/// token ("": not leased, the worker's), status ttl ("0": no status). Returns 1 when buried.
pub fn bury() -> String {
    format!(
        "{CHECK}{}",
        r#"
local bad = check(KEYS[1], 'hash', KEYS[2], 'zset', KEYS[3], 'hash', KEYS[4], 'zset', KEYS[5], 'hash')
if not bad and ARGV[4] ~= '0' then bad = check(KEYS[6], 'string') end
if bad then return redis.error_reply(bad) end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[5], ARGV[1]) ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] ~= '' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[5], ARGV[1])
end
if not redis.call('ZSCORE', KEYS[4], ARGV[1]) then redis.call('HDEL', KEYS[3], ARGV[1]) end
if ARGV[4] ~= '0' then redis.call('SET', KEYS[6], 'dead', 'EX', ARGV[4]) end
return 1
"#
    )
}

/// Brings a dead job back: scheduled now, out of the dead set, its status pending, schedulers
/// woken (a hint, as in [`schedule`]).
///
/// KEYS: dead, jobs, scheduled, status key. ARGV: id, wake channel, status ttl ("0": none).
/// Returns 1 when the id was dead.
pub fn requeue() -> String {
    format!(
        "{NOW}{CHECK}{}",
        r#"
local bad = check(KEYS[1], 'hash', KEYS[2], 'hash', KEYS[3], 'zset')
if not bad and ARGV[3] ~= '0' then bad = check(KEYS[4], 'string') end
if bad then return redis.error_reply(bad) end
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if not entry then return 0 end
local ok, d = pcall(cjson.decode, entry)
if not ok or type(d) ~= 'table' or type(d.job) ~= 'string' then
  return redis.error_reply('li3g: the dead entry of ' .. ARGV[1] .. ' cannot be read; nothing was changed')
end
redis.call('HSET', KEYS[2], ARGV[1], d.job)
redis.call('ZADD', KEYS[3], now, ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
if ARGV[3] ~= '0' then redis.call('SET', KEYS[4], 'pending', 'EX', ARGV[3]) end
redis.pcall('PUBLISH', ARGV[2], now)
return 1
"#
    )
}

/// Moves a schedule's keys from an old prefix to a new one (the upgrade from `li3g:` to
/// `{li3g}:`), in one script: each old key is renamed when the new one does not exist yet
/// (O(1)), else merged into it (the new key's entries win) and deleted. Jobs, leases, owners
/// and dead entries move, and so do the status and error keys of the jobs moved (renamed, their
/// expiry kept; not named in KEYS, which is fine off a Cluster, the only place this runs).
///
/// KEYS: old scheduled, leased, owners, jobs, dead, then the new ones in the same order.
/// ARGV: the old prefix, the new prefix.
/// Returns the number of jobs moved (entries of the old `jobs` hash).
pub fn migrate() -> String {
    format!(
        "{CHECK}{}",
        r#"
local kinds = {'zset', 'zset', 'hash', 'hash', 'hash'}
for i = 1, 5 do
  local bad = check(KEYS[i], kinds[i], KEYS[i + 5], kinds[i])
  if bad then return redis.error_reply(bad) end
end
local moved = redis.call('HLEN', KEYS[4])
for _, id in ipairs(redis.call('HKEYS', KEYS[4])) do
  for _, suffix in ipairs({'.status', '.error'}) do
    local old, new = ARGV[1] .. id .. suffix, ARGV[2] .. id .. suffix
    if redis.call('EXISTS', old) == 1 and redis.call('EXISTS', new) == 0 then redis.call('RENAME', old, new) end
  end
end
for i = 1, 5 do
  local old, new = KEYS[i], KEYS[i + 5]
  if redis.call('EXISTS', old) == 1 then
    if redis.call('EXISTS', new) == 0 then
      redis.call('RENAME', old, new)
    elseif kinds[i] == 'zset' then
      local items = redis.call('ZRANGE', old, 0, -1, 'WITHSCORES')
      for j = 1, #items, 2 do redis.call('ZADD', new, 'NX', items[j + 1], items[j]) end
      redis.call('DEL', old)
    else
      local items = redis.call('HGETALL', old)
      for j = 1, #items, 2 do redis.call('HSETNX', new, items[j], items[j + 1]) end
      redis.call('DEL', old)
    end
  end
end
return moved
"#
    )
}
