-- greyspf: one greylist decision, atomic in Redis. It applies the rules of
-- src/greylist/decide.rs (decide_request) to the entries stored in Redis; the test
-- "script_matches_decide_request" runs one table of cases through both.
--
-- KEYS[1] triplet hash (f = first seen, l = last seen, p = passed 0/1)
-- KEYS[2] auto-whitelist hash of the client address (c = count, lc = last counted,
--         ls = last seen)
-- KEYS[3] counters hash
-- KEYS[4] store whitelist version
-- ARGV[1] now in ms since the epoch, or empty for the Redis server's clock (one clock for
--         every host)
-- ARGV[2..6] delay, retry window, max age, auto-whitelist passes (0: off), auto-whitelist
--         interval, all in ms but the passes
-- ARGV[7] the whitelist version the caller's copy of the store whitelist has
-- ARGV[8] 1 when that copy lists the client address
-- ARGV[9..] counter name, increment, ... the caller counted meanwhile
--
-- Returns {reason, ms} as the keeper does, or {"reload", version} when the caller's
-- whitelist is stale (nothing else is done then: the caller reloads and asks again).

if redis.replicate_commands then
  redis.replicate_commands()
end

local version = redis.call('GET', KEYS[4]) or '0'
if version ~= ARGV[7] then
  return {'reload', version}
end

local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local delay = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local max_age = tonumber(ARGV[4])
local awl_clients = tonumber(ARGV[5])
local awl_interval = tonumber(ARGV[6])

-- Integers as decimal text: tostring would switch to exponent notation past 14 digits.
local function fmt(n)
  return string.format('%.0f', n)
end

-- u64::saturating_sub
local function sub(a, b)
  if a > b then
    return a - b
  end
  return 0
end

local function count(name, n)
  redis.call('HINCRBY', KEYS[3], name, n or 1)
end

for i = 9, #ARGV, 2 do
  count(ARGV[i], tonumber(ARGV[i + 1]))
end
count('requests')
if ARGV[8] == '1' then
  count('store_whitelist_hits')
  return {'store-whitelist', '0'}
end

-- last_seen_slack: `last` may lag this much behind, saving a write per sighting.
local slack = math.max(math.floor(max_age / 1024), 1)

local awl = nil
if awl_clients > 0 then
  local a = redis.call('HMGET', KEYS[2], 'c', 'lc', 'ls')
  if a[1] and a[2] and a[3] then
    awl = {c = tonumber(a[1]), lc = tonumber(a[2]), ls = tonumber(a[3])}
  end
end

local function awl_needs_write(old, new)
  if old and old.c == new.c and old.lc == new.lc then
    return sub(new.ls, old.ls) >= slack
  end
  return true
end

-- Each entry lives max age after the sighting it records.
local function awl_write(old, new)
  if awl_needs_write(old, new) then
    redis.call('HSET', KEYS[2], 'c', fmt(new.c), 'lc', fmt(new.lc), 'ls', fmt(new.ls))
    redis.call('PEXPIREAT', KEYS[2], fmt(new.ls + max_age))
  end
end

if awl and awl.c >= awl_clients and sub(now, awl.ls) <= max_age then
  awl_write(awl, {c = awl.c, lc = awl.lc, ls = now})
  count('awl_hits')
  return {'client-awl', '0'}
end

local stored = nil
local t = redis.call('HMGET', KEYS[1], 'f', 'l', 'p')
if t[1] and t[2] and t[3] then
  stored = {f = tonumber(t[1]), l = tonumber(t[2]), p = t[3] == '1'}
end

-- decide_triplet
local entry, reason, value
local function fresh()
  if delay == 0 then
    return {f = now, l = now, p = true}, 'triplet-known', 0
  end
  return {f = now, l = now, p = false}, 'new', delay
end
if not stored or sub(now, stored.l) > max_age then
  entry, reason, value = fresh()
elseif stored.p then
  entry, reason, value = {f = stored.f, l = now, p = true}, 'triplet-known', 0
else
  local waited = sub(now, stored.f)
  if waited > window then
    entry, reason, value = fresh()
  elseif waited >= delay then
    entry, reason, value = {f = stored.f, l = now, p = true}, 'delayed', waited
  else
    entry, reason, value = {f = stored.f, l = now, p = false}, 'early-retry', delay - waited
  end
end

-- entry_needs_write
local write = true
if stored and stored.f == entry.f and stored.p == entry.p then
  write = sub(entry.l, stored.l) >= slack
end
if write then
  local passed = '0'
  if entry.p then
    passed = '1'
  end
  redis.call('HSET', KEYS[1], 'f', fmt(entry.f), 'l', fmt(entry.l), 'p', passed)
  redis.call('PEXPIREAT', KEYS[1], fmt(entry.l + max_age))
end

local passes = reason ~= 'new' and reason ~= 'early-retry'
if passes and awl_clients > 0 then
  -- awl_count
  local counted
  if awl and sub(now, awl.ls) <= max_age then
    if sub(now, awl.lc) >= awl_interval then
      counted = {c = math.min(awl.c + 1, 4294967295), lc = now, ls = now}
    else
      counted = {c = awl.c, lc = awl.lc, ls = now}
    end
  else
    counted = {c = 1, lc = now, ls = now}
  end
  awl_write(awl, counted)
  if counted.c == awl_clients and (not awl or awl.c < awl_clients) then
    count('awl_added')
  end
end

if reason == 'new' then
  count('new')
elseif reason == 'early-retry' then
  count('early_retry')
elseif reason == 'delayed' then
  count('passed_after_delay')
  -- delay_bucket
  local s = math.floor(value / 1000)
  local bucket = 'delay_gt_1d'
  if s <= 300 then
    bucket = 'delay_le_5m'
  elseif s <= 600 then
    bucket = 'delay_le_10m'
  elseif s <= 1800 then
    bucket = 'delay_le_30m'
  elseif s <= 3600 then
    bucket = 'delay_le_1h'
  elseif s <= 14400 then
    bucket = 'delay_le_4h'
  elseif s <= 86400 then
    bucket = 'delay_le_1d'
  end
  count(bucket)
else
  count('passed_known')
end
return {reason, fmt(value)}
