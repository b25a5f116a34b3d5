//! The Lua scripts every shared step runs as, each one atomic on the Redis server. Times come from Redis's
//! own clock (`TIME`, in microseconds), so the replicas' clocks never enter a refill or a cooldown.
//! Numbers that may have fractions are stored and returned as strings: Lua numbers become integers
//! (truncated) in a Redis reply.

use redis::Script;

/// One rate budget's shared bucket, a hash: `r` and `t` (requests and tokens left, may be negative),
/// `at` (last refill, µs), `rpm` and `tpm` (the limits it was made with: other limits start it afresh),
/// `cd` (the cooldown's end, µs).
///
/// KEYS[1] the hash. ARGV: 1 rpm, 2 tpm (-1: unlimited), 3 requests and 4 tokens given back (negative:
/// owed), 5 requests and 6 tokens wanted, 7 requests and 8 tokens needed now (0 and 0: no request),
/// 9 requests and 10 tokens the vendor says are left (-1: nothing learnt), 11 a cooldown to start, in ms
/// (0: none), 12 the hash's lifetime in ms, 13 the channel and 14 the message announcing the cooldown,
/// 15 the replica's id, 16 how long what a replica holds counts after it said so, in ms, 17 requests and
/// 18 tokens the replica holds outside the bucket after this call's give-back, before its grant: its
/// lease's balance, if it keeps it, and its reservations the vendor has not answered yet.
///
/// Held outside the bucket: `o:{replica}` (`requests tokens until_µs`) is what each replica last said
/// it holds, with this call's grant. A vendor counts a request when it arrives, and stands full while
/// nothing has arrived; room taken out of the bucket, in a lease or on its way, has not arrived. So the
/// bucket never refills past the limit minus what is held: every grant counts until the requests it
/// paid for were answered (or it went back), not only until the replica's next lease. Held counts are
/// refreshed by each replica at least every half lease while it holds anything, and stop counting
/// after ARGV[16] (a replica gone). The refill since the last call is capped by what was held then,
/// each holding until its own end, before this call's news replaces the replica's part.
///
/// Returns: requests granted, tokens granted, the wait in ms before the need fits (0 when granted), the
/// cooldown left in ms, then the requests and tokens left (strings).
pub(crate) const RATE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local s = redis.call('HMGET', KEYS[1], 'r', 't', 'at', 'rpm', 'tpm', 'cd')
local r, k, at = tonumber(s[1]), tonumber(s[2]), tonumber(s[3])
if r == nil or k == nil or at == nil or tonumber(s[4]) ~= rpm or tonumber(s[5]) ~= tpm then
  r, k, at = math.max(rpm, 0), math.max(tpm, 0), now
end
local cd = tonumber(s[6]) or 0
local me = 'o:' .. ARGV[15]
local held, out_r, out_k = {}, 0, 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local f = fields[i]
  if string.sub(f, 1, 2) == 'o:' then
    local lr, lk, till = string.match(fields[i + 1], '^(%S+) (%S+) (%S+)$')
    lr, lk, till = tonumber(lr), tonumber(lk), tonumber(till)
    if lr == nil or lk == nil or till == nil then
      redis.call('HDEL', KEYS[1], f)
    else
      held[#held + 1] = {f, lr, lk, till}
      out_r, out_k = out_r + lr, out_k + lk
    end
  end
end
table.sort(held, function(a, b) return a[4] < b[4] end)
local function refill(level, cap, out, from, to)
  if cap < 0 or to <= from then return level end
  local bound = cap - out
  local next = level + (to - from) / 60000000 * cap
  if next > bound then return math.max(level, bound) end
  return next
end
local from = at
local mine_r, mine_k = 0, 0
for _, h in ipairs(held) do
  if h[4] <= now then
    r, k = refill(r, rpm, out_r, from, h[4]), refill(k, tpm, out_k, from, h[4])
    from = math.max(from, h[4])
    out_r, out_k = out_r - h[2], out_k - h[3]
    redis.call('HDEL', KEYS[1], h[1])
  elseif h[1] == me then
    mine_r, mine_k = h[2], h[3]
  end
end
r, k = refill(r, rpm, out_r, from, now), refill(k, tpm, out_k, from, now)
local held_r, held_k = math.max(tonumber(ARGV[17]), 0), math.max(tonumber(ARGV[18]), 0)
out_r, out_k = out_r - mine_r + held_r, out_k - mine_k + held_k
local function give(level, cap, out, back, learnt)
  if cap < 0 then return 0 end
  local next = level + back
  if next > cap - out then next = math.max(level, cap - out) end
  if learnt >= 0 then next = math.min(next, learnt) end
  return next
end
r = give(r, rpm, out_r, tonumber(ARGV[3]), tonumber(ARGV[9]))
k = give(k, tpm, out_k, tonumber(ARGV[4]), tonumber(ARGV[10]))
local cool = tonumber(ARGV[11])
if cool > 0 then
  cd = math.max(cd, now + cool * 1000)
  redis.call('PUBLISH', ARGV[13], ARGV[14])
end
local cool_left = math.max(0, cd - now)
local need_r, need_k = tonumber(ARGV[7]), tonumber(ARGV[8])
local got_r, got_k, wait = 0, 0, 0
if need_r > 0 or need_k > 0 then
  if cool_left > 0 then
    wait = cool_left
  else
    if rpm >= 0 and r < need_r then
      if rpm == 0 then wait = 3600000000 else wait = math.max(wait, (need_r - r) * 60000000 / rpm) end
    end
    if tpm >= 0 and k < need_k then
      if tpm == 0 then wait = 3600000000 else wait = math.max(wait, (need_k - k) * 60000000 / tpm) end
    end
    if wait == 0 then
      if rpm >= 0 then
        got_r = math.max(need_r, math.min(tonumber(ARGV[5]), math.floor(r)))
        r = r - got_r
      end
      if tpm >= 0 then
        got_k = math.max(need_k, math.min(tonumber(ARGV[6]), math.floor(k)))
        k = k - got_k
      end
    end
  end
end
held_r, held_k = held_r + got_r, held_k + got_k
if held_r > 0 or held_k > 0 then
  redis.call('HSET', KEYS[1], me,
    string.format('%.4f %.4f %.0f', held_r, held_k, now + tonumber(ARGV[16]) * 1000))
else
  redis.call('HDEL', KEYS[1], me)
end
redis.call('HSET', KEYS[1], 'r', string.format('%.4f', r), 't', string.format('%.4f', k),
  'at', string.format('%.0f', now), 'rpm', ARGV[1], 'tpm', ARGV[2], 'cd', string.format('%.0f', cd))
redis.call('PEXPIRE', KEYS[1], ARGV[12])
return {got_r, got_k, math.ceil(wait / 1000), math.ceil(cool_left / 1000),
  string.format('%.4f', r), string.format('%.4f', k)}
";

/// Holds an *allowance* of a tenant's period for one replica: micro-dollars its requests' worst cases
/// are then held against locally, without a round trip. The hash: `spent` (settled micro-dollars) and
/// `h:{replica}` (what each replica holds: its allowance, requests in flight included). Holds of a replica
/// whose heartbeat stopped are dropped: its requests died with it.
///
/// KEYS[1] the period's hash, KEYS[2] the replicas' heartbeats (a sorted set scored by µs). ARGV: 1 the
/// cap, 2 the micro-dollars needed now (the request's worst case), 3 this replica's id, 4 the spend to
/// start from if the hash is gone (Redis lost it), 5 the hash's lifetime in s, 6 how old a heartbeat may
/// be, in µs, 7 the micro-dollars wanted (at least the need).
///
/// Returns: what was granted (0 if the need does not fit under the cap; else between the need and the
/// want), what is committed (spent and held, with the grant), what is spent.
pub(crate) const SPEND_RESERVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'spent', ARGV[4])
end
local fields = redis.call('HGETALL', KEYS[1])
local spent, held = 0, 0
for i = 1, #fields, 2 do
  local name, value = fields[i], tonumber(fields[i + 1]) or 0
  if name == 'spent' then
    spent = value
  elseif string.sub(name, 1, 2) == 'h:' then
    local replica = string.sub(name, 3)
    local beat = redis.call('ZSCORE', KEYS[2], replica)
    if replica ~= ARGV[3] and (not beat or now - tonumber(beat) > tonumber(ARGV[6])) then
      redis.call('HDEL', KEYS[1], name)
    else
      held = held + math.max(value, 0)
    end
  end
end
local cap, need, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[7])
local committed = spent + held
redis.call('EXPIRE', KEYS[1], ARGV[5])
local room = cap - committed
if need > room then
  return {0, committed, spent}
end
local grant = math.max(need, math.min(want, room))
redis.call('HINCRBY', KEYS[1], 'h:' .. ARGV[3], grant)
return {grant, committed + grant, spent}
";

/// Settles requests of one replica in one period: holds released (costs moved from held to spent, and
/// allowances given back), costs added.
///
/// KEYS[1] the period's hash. ARGV: 1 the holds to release, 2 the cost to add, 3 this replica's id, 4 the
/// spend to start from if the hash is gone, 5 the hash's lifetime in s.
///
/// Returns what is spent.
pub(crate) const SPEND_SETTLE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'spent', ARGV[4])
end
local field = 'h:' .. ARGV[3]
local held = redis.call('HINCRBY', KEYS[1], field, -tonumber(ARGV[1]))
if held <= 0 then
  redis.call('HDEL', KEYS[1], field)
end
local spent = redis.call('HINCRBY', KEYS[1], 'spent', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return spent
";

/// Starts a period's spend from the ledger unless it already started: once for every replica.
///
/// KEYS[1] the period's hash. ARGV: 1 the micro-dollars, 2 the hash's lifetime in s.
///
/// Returns: 1 if this call started it, and what is spent.
pub(crate) const SPEND_SEED: &str = r"
local seeded = redis.call('HSETNX', KEYS[1], 'spent', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {seeded, tonumber(redis.call('HGET', KEYS[1], 'spent'))}
";

/// A replica's heartbeat: its id scored with Redis's time in a sorted set, heartbeats older than the
/// limit removed, and the replicas left counted.
///
/// KEYS[1] the sorted set. ARGV: 1 this replica's id, 2 how old a heartbeat may be, in µs.
pub(crate) const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZADD', KEYS[1], string.format('%.0f', now), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - tonumber(ARGV[2])))
return redis.call('ZCARD', KEYS[1])
";

/// The scripts, hashed once.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) rate: Script,
    pub(crate) spend_reserve: Script,
    pub(crate) spend_settle: Script,
    pub(crate) spend_seed: Script,
    pub(crate) heartbeat: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            rate: Script::new(RATE),
            spend_reserve: Script::new(SPEND_RESERVE),
            spend_settle: Script::new(SPEND_SETTLE),
            spend_seed: Script::new(SPEND_SEED),
            heartbeat: Script::new(HEARTBEAT),
        }
    }

    pub(crate) fn all(&self) -> [&Script; 5] {
        [
            &self.rate,
            &self.spend_reserve,
            &self.spend_settle,
            &self.spend_seed,
            &self.heartbeat,
        ]
    }
}
