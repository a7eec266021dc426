//! The scheduler's Lua scripts: every change to the schedule that touches more than one key
//! runs as one script, so Redis applies it atomically and no crash between two commands can
//! lose or duplicate a job.
//!
//! Times are Redis's own clock (`TIME`), in milliseconds, so that schedulers and clients on
//! hosts with skewed clocks agree on what is due and when a lease runs out. Clients pass the
//! due time they want; only "now" comes from Redis. No I/O here: the strings only.
//!
//! Keys (see [`super::Keys`]): `scheduled` (sorted set, id by due time), `leased` (sorted
//! set, id by lease expiry), `jobs` (hash, id to stored job), `dead` (hash, id to dead entry),
//! the li3_gearman set (sorted set of JSON members by due time in seconds).

/// Redis's clock in milliseconds, as a local `now`.
const NOW: &str =
    "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n";

/// Acknowledges the jobs of the previous batch (as [`ACK`]), then takes up to `batch` jobs:
/// first those whose lease ran out (their scheduler died), then due ones, then (when enabled)
/// due li3_gearman members, which are stored under their `id` (or `php-<sha1>` without one).
/// Each goes under a lease until `now + lease_ms`. Bulk commands, in slices that keep Lua's
/// stack small: a batch costs a few dozen commands, not several per job.
///
/// KEYS: scheduled, leased, jobs, compat set. ARGV: lease_ms, batch, compat ("1"/"0"), then
/// the ids to acknowledge. Returns `{now, next, id1, job1, id2, job2, ...}`: `next` is the
/// earliest due time or lease expiry in ms (-1 when nothing waits), a job is `false` (nil)
/// when it was not found.
pub fn take() -> String {
    format!(
        "{NOW}{SLICES}{ACK_BODY}{}",
        r#"
ack(KEYS[2], KEYS[3], KEYS[1], ARGV, 4)
local lease = now + tonumber(ARGV[1])
local batch = tonumber(ARGV[2])
local out = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, batch)
if #out < batch then
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, batch - #out)
  if #due > 0 then
    -- ZRANGEBYSCORE from -inf returns the first members by rank: remove exactly those.
    redis.call('ZREMRANGEBYRANK', KEYS[1], 0, #due - 1)
    for _, id in ipairs(due) do out[#out + 1] = id end
  end
end
if ARGV[3] == '1' and #out < batch then
  local members = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', string.format('%.3f', now / 1000), 'LIMIT', 0, batch - #out)
  for _, m in ipairs(members) do
    local ok, d = pcall(cjson.decode, m)
    local id
    if ok and type(d) == 'table' and type(d.id) == 'string' and d.id ~= '' then id = d.id else id = 'php-' .. redis.sha1hex(m) end
    redis.call('HSET', KEYS[3], id, m)
    redis.call('ZREM', KEYS[4], m)
    out[#out + 1] = id
  end
end
local result = {}
if #out == 0 then
  local next = -1
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if first[2] then next = tonumber(first[2]) end
  first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if first[2] and (next < 0 or tonumber(first[2]) < next) then next = tonumber(first[2]) end
  if ARGV[3] == '1' then
    first = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
    if first[2] then
      local at = math.floor(tonumber(first[2]) * 1000)
      if next < 0 or at < next then next = at end
    end
  end
  return {tostring(now), tostring(next)}
end
result[1] = tostring(now)
result[2] = '-1'
slices(out, 1, function(ids)
  local args = {}
  for _, id in ipairs(ids) do
    args[#args + 1] = lease
    args[#args + 1] = id
  end
  redis.call('ZADD', KEYS[2], unpack(args))
  local jobs = redis.call('HMGET', KEYS[3], unpack(ids))
  for i, id in ipairs(ids) do
    result[#result + 1] = id
    result[#result + 1] = jobs[i]
  end
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

/// `ack(leased, jobs, scheduled, ids, from)`: the ids still leased leave the lease set, and
/// their stored jobs are deleted unless scheduled again meanwhile (a retry keeps the id).
/// Needs Redis 6.2 (`ZMSCORE`).
const ACK_BODY: &str = r#"
local function ack(leased, jobs, scheduled, ids, from)
  local n = 0
  slices(ids, from, function(slice)
    local held = redis.call('ZMSCORE', leased, unpack(slice))
    local mine, drop = {}, {}
    for i, id in ipairs(slice) do
      if held[i] then mine[#mine + 1] = id end
    end
    if #mine == 0 then return end
    n = n + redis.call('ZREM', leased, unpack(mine))
    local again = redis.call('ZMSCORE', scheduled, unpack(mine))
    for i, id in ipairs(mine) do
      if not again[i] then drop[#drop + 1] = id end
    end
    if #drop > 0 then redis.call('HDEL', jobs, unpack(drop)) end
  end)
  return n
end
"#;

/// Acknowledges jobs a job server has accepted: each leaves the lease set, and its stored job
/// is deleted unless it was scheduled again meanwhile (a retry keeps the id).
///
/// KEYS: leased, jobs, scheduled. ARGV: ids. Returns how many were still leased.
pub fn ack() -> String {
    format!("{SLICES}{ACK_BODY}\nreturn ack(KEYS[1], KEYS[2], KEYS[3], ARGV, 1)\n")
}

/// Schedules one job: stores it, adds it to the schedule, marks its status pending (when a
/// status key is given) and, when it is now the earliest job, wakes the schedulers.
///
/// KEYS: scheduled, jobs, status key (may be any key when ARGV[5] is "0").
/// ARGV: id, due_ms, job, wake channel, status ttl in seconds ("0": no status).
pub const SCHEDULE: &str = r#"
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
if ARGV[5] ~= '0' then redis.call('SET', KEYS[3], 'pending', 'EX', ARGV[5]) end
local first = redis.call('ZRANGE', KEYS[1], 0, 0)
if first[1] == ARGV[1] then redis.call('PUBLISH', ARGV[4], ARGV[2]) end
return 1
"#;

/// Cancels a pending job: li3g's by id, or a li3_gearman member whose `id` matches.
///
/// KEYS: scheduled, jobs, compat set. ARGV: id. Returns 1 when a job was removed.
pub const CANCEL: &str = r#"
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
for _, m in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  local ok, d = pcall(cjson.decode, m)
  if ok and type(d) == 'table' and d.id == ARGV[1] then
    redis.call('ZREM', KEYS[3], m)
    return 1
  end
end
return 0
"#;

/// Moves a job to the dead set with why: out of the lease set, and its stored job deleted
/// unless it was scheduled again.
///
/// KEYS: dead, leased, jobs, scheduled. ARGV: id, dead entry (JSON).
pub const BURY: &str = r#"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
if not redis.call('ZSCORE', KEYS[4], ARGV[1]) then redis.call('HDEL', KEYS[3], ARGV[1]) end
return 1
"#;

/// Brings a dead job back: scheduled now, out of the dead set, schedulers woken.
///
/// KEYS: dead, jobs, scheduled. ARGV: id, wake channel. Returns 1 when the id was dead.
pub fn requeue() -> String {
    format!(
        "{NOW}{}",
        r#"
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if not entry then return 0 end
local d = cjson.decode(entry)
redis.call('HSET', KEYS[2], ARGV[1], d.job)
redis.call('ZADD', KEYS[3], now, ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], now)
return 1
"#
    )
}
