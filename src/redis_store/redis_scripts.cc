#include "src/redis_store/redis_scripts.h"

#include <openssl/sha.h>

#include <string>
#include <string_view>

#include "absl/strings/escaping.h"

// The transaction script. It reproduces src/core/algorithms.cc (Decide, Release) and
// src/core/leases.h (LeaseBook) in Lua, on integers carried in doubles, so its invariants block
// is that file's, plus:
//
//  R1. Exact integers. Every value formed is an integer below 2^53 (the unit choice of
//      script_args.h bounds them), so + - * are exact; a division goes through divfloor, which
//      corrects the double quotient by one where it rounded across an integer. A bucket whose TAT
//      is so far ahead (another node's clock, a larger limit before) that ahead * rate would pass
//      2^52 refuses every hit, and its figures need no product (ahead - floor(X / rate)).
//  R2. One transaction = one call of run(), all or nothing as the memory store: ops are evaluated
//      in order against each key's tentative state; only when no non-shadow check is refused are
//      the final states written (each key once); otherwise nothing is written, and the ops that
//      would have passed report a read of the stored state, allowed. Refused hits never count.
//      Evaluation only reads, so a transaction that fails (a malformed value) writes nothing and
//      becomes an error reply of its own; the others of the batch are unaffected.
//  R3. Expiry. A state is written with SET .. PX of its own expiry minus now (rounded up to a
//      millisecond): the key lives exactly as long as its state is not fresh, relative to the
//      Redis server's clock, so node and Redis clocks need not agree. A state that became fresh
//      is deleted; reads never write.
//  R4. States are 24 bytes: struct '<ddd' (expiry, a, b): fixed window (end, count, 0); sliding
//      window and concurrency (expiry, prev, cur); buckets (ceil(TAT), data, 0). Lease books are
//      hashes token -> '<dd' (slots, expiry), pruned of dead leases when they outgrow 2 * limit
//      + 8 entries (so amortised O(1), and never more than that many entries), expiring with
//      their last lease. Envoy-layout counters are plain integers (INCRBY; EXPIRE of the
//      window's length when created, as envoyproxy/ratelimit).

namespace floodgate::redis_store {
namespace {

constexpr std::string_view kScript =
    R"lua(-- Floodgate's transactions, decided in Redis (src/redis_store/redis_scripts.cc has the contract).
local BIG = 4503599627370496 -- 2^52: products at or past it take the exact-without-product path

-- floor(a / b) for 0 <= a < 2^53, b > 0 integers: the quotient of doubles, corrected by one when
-- the division rounded across an integer.
local function divfloor(a, b)
  local q = math.floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

local function divceil(a, b)
  local q = divfloor(a, b)
  if q * b < a then
    q = q + 1
  end
  return q
end

-- Every decision: allowed (0/1), remaining, retry_after (-1: never), reset_after, delay.
local function fixed(st, o, now, hits)
  local lim = o.lim
  local count, wend = 0, o.fend
  if st[1] > now then
    count = st[2]
    wend = st[1]
  end
  local until_end = wend - now
  local probe = hits == 0 and 1 or hits
  local fits = count <= lim and probe <= lim - count
  local nx = st
  if fits and hits ~= 0 then
    count = count + hits
    nx = {wend, count, 0}
  end
  local retry = 0
  if not fits then
    retry = probe <= lim and until_end or -1
  end
  return fits, (count < lim and lim - count or 0), retry, (count == 0 and 0 or until_end), 0, nx
end

local function sliding(st, o, now, hits)
  local lim, p = o.lim, o.p
  local prev, cur, wend, elapsed = 0, 0, o.fend, 0
  if st[1] > now then
    prev, cur = st[2], st[3]
    local stored_end = st[1] - p
    if now >= stored_end then
      prev, cur = cur, 0
      wend = st[1]
      elapsed = now - stored_end
    else
      wend = stored_end
      local ahead = stored_end - now
      elapsed = ahead < p and p - ahead or 0
    end
  else
    elapsed = p - (wend - now)
  end
  local weight = prev - divfloor(prev * elapsed, p)
  local until_end = wend - now
  local probe = hits == 0 and 1 or hits
  local fits = probe <= lim and weight + cur + probe <= lim
  local nx = st
  if fits and hits ~= 0 then
    cur = cur + hits
    nx = {wend + p, prev, cur}
  end
  local reset = 0
  if cur ~= 0 then
    reset = until_end + p
  elseif prev ~= 0 then
    reset = until_end
  end
  local retry = 0
  if not fits then
    if probe > lim then
      retry = -1
    else
      retry = nil
      if cur + probe <= lim and prev ~= 0 then
        local q = divfloor((lim - cur - probe) * p, prev)
        if q > 0 then
          retry = until_end - q
        end
      end
      if retry == nil then
        local e = 0
        if cur ~= 0 then
          local q = divfloor((lim - probe) * p, cur)
          e = q < p and p - q or 0
        end
        retry = until_end + e
      end
    end
  end
  return fits, (weight + cur < lim and lim - weight - cur or 0), retry, reset, 0, nx
end

-- GCRA in scaled time (1 / rate of a unit): see src/core/algorithms.cc.
local function bucket(st, o, now, hits, leaky)
  local rate, cap, p = o.lim, o.cap, o.p
  if rate == 0 then
    return false, 0, -1, 0, 0, st
  end
  local probe = hits == 0 and 1 or hits
  local ttl = 0
  if st[1] > now then
    local ahead = st[1] - now
    if ahead * rate >= BIG then
      -- A TAT far past anything this limit writes (another node's clock ahead, or a larger
      -- limit before): every hit is refused; the exact figures need no product.
      if probe > cap then
        return false, 0, -1, ahead, 0, st
      end
      return false, 0, ahead - divfloor(st[2] + p * (cap - probe), rate), ahead, 0, st
    end
    ttl = ahead * rate - st[2]
    if ttl < 0 then
      ttl = 0
    end
  end
  local dvt = p * cap
  local nx = st
  local allowed, retry, delay = false, 0, 0
  local committed, until_tat = false, 0
  if probe > cap then
    retry = -1
  else
    local new_ttl = ttl + p * probe
    if new_ttl > dvt then
      retry = divceil(new_ttl - dvt, rate)
    else
      allowed = true
      if leaky then
        delay = divceil(ttl, rate)
      end
      if hits ~= 0 then
        committed = true
        ttl = new_ttl
        until_tat = divceil(new_ttl, rate)
        nx = {now + until_tat, until_tat * rate - new_ttl, 0}
      end
    end
  end
  local remaining = 0
  if ttl < dvt then
    remaining = cap - divceil(ttl, p)
  end
  local reset = committed and until_tat or divceil(ttl, rate)
  return allowed, remaining, retry, reset, delay, nx
end

-- Concurrency: two lease epochs (prev, cur) ending at `e` (see src/core/algorithms.cc).
local function read_slots(st, o, now)
  if st[1] <= now then
    return 0, 0, o.fend
  end
  local stored_end = st[1] - o.p
  if now >= stored_end then
    return st[3], 0, st[1]
  end
  return st[2], st[3], stored_end
end

local function write_slots(o, prev, cur, e)
  if cur ~= 0 then
    return {e + o.p, prev, cur}
  end
  if prev ~= 0 then
    return {e, 0, prev}
  end
  return {0, 0, 0}
end

local function concurrency(st, o, now, hits)
  local lim, p = o.lim, o.p
  local prev, cur, e = read_slots(st, o, now)
  local in_flight = prev + cur
  local probe = hits == 0 and 1 or hits
  local fits = in_flight <= lim and probe <= lim - in_flight
  local nx = st
  if fits and hits ~= 0 then
    cur = cur + hits
    nx = write_slots(o, prev, cur, e)
  end
  local held = in_flight + ((fits and hits) or 0)
  local until_end = e - now
  local reset = 0
  if cur ~= 0 then
    reset = until_end + p
  elseif prev ~= 0 then
    reset = until_end
  end
  local retry = 0
  if not fits then
    if probe > lim then
      retry = -1
    elseif cur <= lim - probe then
      retry = until_end
    else
      retry = until_end + p
    end
  end
  return fits, (held < lim and lim - held or 0), retry, reset, 0, nx
end

local function release(st, o, now, lease)
  if lease == nil then
    return st
  end
  local prev, cur, e = read_slots(st, o, now)
  local acquired = lease[2] - o.p - 1 -- the last instant of the lease's epoch
  local cur_start = e - o.p
  if acquired >= cur_start then
    cur = cur - math.min(cur, lease[1])
  elseif acquired >= cur_start - o.p then
    prev = prev - math.min(prev, lease[1])
  else
    return st
  end
  return write_slots(o, prev, cur, e)
end

local DECIDE = {[0] = fixed, [1] = sliding, [4] = concurrency, [6] = fixed}

local function decide(st, o, now, hits)
  local f = DECIDE[o.algo]
  if f then
    return f(st, o, now, hits)
  end
  if o.algo == 2 or o.algo == 3 then
    return bucket(st, o, now, hits, o.algo == 3)
  end
  if o.algo == 5 then
    return concurrency(st, o, now, hits)
  end
  return false, 0, -1, 0, 0, st -- 7: refused under any state
end

local function load(key, now, envoy, fend)
  local v = redis.call('GET', key)
  if envoy then
    if not v then
      return {0, 0, 0}, false
    end
    local n = tonumber(v)
    if n == nil or n < 0 or n ~= math.floor(n) then
      error('not a counter: ' .. key)
    end
    if n == 0 then
      return {0, 0, 0}, true
    end
    return {fend, n, 0}, true
  end
  if not v then
    return {0, 0, 0}, false
  end
  local e, a, b = struct.unpack('<ddd', v)
  if e <= now then
    return {0, 0, 0}, true
  end
  return {e, a, b}, true
end

local function ttl_ms(x, unit)
  if unit == 1 then
    return divceil(x, 1000)
  elseif unit == 2 then
    return x
  end
  return x * 1000
end

-- One transaction: ARGV from `a` on, KEYS from `k` on. Returns its reply and the next positions.
local function transaction(a, k)
  local n = tonumber(ARGV[a])
  local nows = {tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])}
  a = a + 4
  local ops = {}
  for i = 1, n do
    local code = tonumber(ARGV[a])
    local o = {shadow = code % 2 == 1, hits = tonumber(ARGV[a + 1]), p = tonumber(ARGV[a + 2]),
               lim = tonumber(ARGV[a + 3]), cap = tonumber(ARGV[a + 4]),
               fend = tonumber(ARGV[a + 5]), unit = tonumber(ARGV[a + 6]), token = ARGV[a + 7]}
    o.algo = (code - code % 2) / 2
    o.now = nows[o.unit]
    if o.algo ~= 7 then
      o.key = KEYS[k]
      k = k + 1
      if o.algo == 4 or o.algo == 5 then
        o.lkey = KEYS[k]
        k = k + 1
      end
    end
    ops[i] = o
    a = a + 8
  end
  return ops, a, k
end

local function run(ops)
  local base, tent, existed = {}, {}, {}
  local leases, taken = {}, {}
  local out = {}
  local commit = true
  local results = {}
  for i, o in ipairs(ops) do
    local st = {0, 0, 0}
    if o.key then
      st = tent[o.key]
      if st == nil then
        st, existed[o.key] = load(o.key, o.now, o.algo == 6, o.fend)
        base[o.key] = st
      end
    end
    local allowed, rem, retry, reset, delay, nx
    if o.algo == 5 then
      local lease = nil
      local lid = o.lkey .. '\0' .. o.token
      if not taken[lid] then
        local v = redis.call('HGET', o.lkey, o.token)
        if v then
          local count, exp = struct.unpack('<dd', v)
          if exp > o.now then
            lease = {count, exp}
            taken[lid] = true
          end
        end
      end
      nx = release(st, o, o.now, lease)
      allowed, rem, retry, reset, delay = decide(nx, o, o.now, 0)
      allowed = lease ~= nil
      retry = 0
    else
      allowed, rem, retry, reset, delay, nx = decide(st, o, o.now, o.hits)
      if o.hits == 0 then
        nx = st
      end
      if not allowed and not o.shadow then
        commit = false
      end
    end
    if o.key then
      tent[o.key] = nx
    end
    results[i] = {allowed, rem, retry, reset, delay, nx}
  end
  out[1] = commit and 1 or 0
  for i, o in ipairs(ops) do
    local r = results[i]
    if not commit and r[1] then
      local _
      r[1], r[2], _, r[4], r[5] = decide(base[o.key] or {0, 0, 0}, o, o.now, 0)
      r[1], r[3] = true, 0
    end
    local j = 5 * i - 3
    out[j], out[j + 1], out[j + 2], out[j + 3], out[j + 4] = r[1] and 1 or 0, r[2], r[3], r[4], r[5]
  end
  if not commit then
    return out
  end
  -- Commit: each key's final state once (in the order first touched), then the lease books.
  local written = {}
  for i, o in ipairs(ops) do
    local key = o.key
    if key and not written[key] then
      written[key] = true
      local st, b = tent[key], base[key]
      if st[1] ~= b[1] or st[2] ~= b[2] or st[3] ~= b[3] then
        if o.algo == 6 then
          if st[2] > b[2] then
            redis.call('INCRBY', key, st[2] - b[2])
            if not existed[key] then
              redis.call('EXPIRE', key, o.p / ({1e6, 1e3, 1})[o.unit])
            end
          end
        elseif st[1] > o.now then
          redis.call('SET', key, struct.pack('<ddd', st[1], st[2], st[3]), 'PX',
                     ttl_ms(st[1] - o.now, o.unit))
        elseif existed[key] then
          redis.call('DEL', key)
        end
      end
    end
  end
  for i, o in ipairs(ops) do
    local r = results[i]
    if o.algo == 5 and r[1] then
      redis.call('HDEL', o.lkey, o.token)
    elseif o.algo == 4 and o.token ~= '0' and o.hits > 0 and r[1] then
      local exp = r[6][1]
      local count = o.hits
      local v = redis.call('HGET', o.lkey, o.token)
      if v then
        local c, e = struct.unpack('<dd', v)
        if e > o.now then
          count = count + c
          exp = math.max(exp, e)
        end
      end
      redis.call('HSET', o.lkey, o.token, struct.pack('<dd', count, exp))
      local ttl = ttl_ms(exp - o.now, o.unit)
      if redis.call('PTTL', o.lkey) < ttl then
        redis.call('PEXPIRE', o.lkey, ttl)
      end
      if redis.call('HLEN', o.lkey) > 2 * o.lim + 8 then
        local all = redis.call('HGETALL', o.lkey)
        for f = 1, #all, 2 do
          local _, e = struct.unpack('<dd', all[f + 1])
          if e <= o.now then
            redis.call('HDEL', o.lkey, all[f])
          end
        end
      end
    end
  end
  return out
end

-- ARGV[1]: transactions; each: op count, now in µs, ms and s, then 8 fields per op.
local replies = {}
local a, k = 2, 1
for t = 1, tonumber(ARGV[1]) do
  local ops
  ops, a, k = transaction(a, k)
  local ok, res = pcall(run, ops)
  if ok then
    replies[t] = res
  else
    replies[t] = {err = 'floodgate: ' .. tostring(res)}
  end
end
return replies
)lua";

std::string Sha1Hex(std::string_view text) {
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), sizeof(digest)));
}

}  // namespace

std::string_view TransactionScript() { return kScript; }

std::string_view TransactionScriptSha() {
  static const std::string* const sha = new std::string(Sha1Hex(kScript));
  return *sha;
}

}  // namespace floodgate::redis_store
