-- Check every limit of one key and, only if all pass, record the admission (accounts/limits.py).
-- KEYS: cc, rpm, tpm, day, total, tokens, spend.  ARGV: request_id, lease ms, then the limits
-- concurrency, rpm, tpm, daily, total, tokens, spend (micro-USD).  Returns {status, the limit
-- that failed or the bits of the counters to seed, retry_after, current value}. The counters'
-- TTLs are set when they are seeded; INCR keeps them.
local rid, lease = ARGV[1], tonumber(ARGV[2])
local cc, rpm, tpm = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local quota = {tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])}
-- Quota counters first: a missing one is seeded by the caller from the database, then we run again.
local counts = redis.call('MGET', KEYS[4], KEYS[5], KEYS[6], KEYS[7])
local bits, missing = {1, 2, 4, 8}, 0
for i = 1, 4 do
  if quota[i] > 0 and not counts[i] then missing = missing + bits[i] end
end
if missing > 0 then return {2, missing, 0, 0} end

-- The server's clock, so that every gateway host shares one window.
local t = redis.call('TIME')
local now_s = tonumber(t[1])
local now = now_s * 1000 + math.floor(tonumber(t[2]) / 1000)

-- Checks, in the documented order; nothing is written unless all pass (rejections consume nothing).
if cc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  local n = redis.call('ZCARD', KEYS[1])
  if n >= cc then return {1, 1, 1, n} end
end
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 60000)
  local n = redis.call('ZCARD', KEYS[2])
  if n >= rpm then
    -- Retry when enough of the oldest admissions have left the window to free one slot.
    local leaving = redis.call('ZRANGE', KEYS[2], n - rpm, n - rpm, 'WITHSCORES')
    return {1, 2, math.ceil((tonumber(leaving[2]) + 60000 - now) / 1000), n}
  end
end
if tpm > 0 then
  local fields, sum, gone = redis.call('HGETALL', KEYS[3]), 0, now_s - 60
  for i = 1, #fields, 2 do
    if tonumber(fields[i]) <= gone then
      redis.call('HDEL', KEYS[3], fields[i])
    else
      sum = sum + tonumber(fields[i + 1])
    end
  end
  if sum >= tpm then
    -- Only when rejecting: seconds until dropping the oldest buckets brings the sum below the limit.
    local buckets = {}
    for i = 1, #fields, 2 do
      local second = tonumber(fields[i])
      if second > gone then buckets[#buckets + 1] = {second, tonumber(fields[i + 1])} end
    end
    table.sort(buckets, function(a, b) return a[1] < b[1] end)
    local left, wait = sum, 60
    for _, bucket in ipairs(buckets) do
      left = left - bucket[2]
      if left < tpm then wait = bucket[1] + 60 - now_s; break end
    end
    return {1, 3, wait, sum}
  end
end
for i = 1, 4 do
  if quota[i] > 0 and tonumber(counts[i]) >= quota[i] then return {1, 3 + i, 0, tonumber(counts[i])} end
end

-- Admitted: take the lease, the RPM slot and the request counters.
if cc > 0 then
  redis.call('ZADD', KEYS[1], string.format('%d', now + lease), rid)
  redis.call('PEXPIRE', KEYS[1], lease + 60000)
end
if rpm > 0 then
  redis.call('ZADD', KEYS[2], string.format('%d', now), rid)
  redis.call('PEXPIRE', KEYS[2], 61000)
end
if quota[1] > 0 then redis.call('INCR', KEYS[4]) end
if quota[2] > 0 then redis.call('INCR', KEYS[5]) end
return {0, 0, 0, 0}
