-- Add one key's reported usage to its TPM window and lifetime counters (accounts/limits.py).
-- KEYS: tpm, tokens, spend.  ARGV: tokens, spend (micro-USD).  Lifetime counters only grow when
-- they exist: a missing one is seeded from the database, which already holds this usage.
local tokens, spend = tonumber(ARGV[1]), tonumber(ARGV[2])
if tokens > 0 then
  local now_s = tonumber(redis.call('TIME')[1])
  redis.call('HINCRBY', KEYS[1], now_s, tokens)
  redis.call('EXPIRE', KEYS[1], 120)
  if redis.call('HLEN', KEYS[1]) > 120 then
    for _, second in ipairs(redis.call('HKEYS', KEYS[1])) do
      if tonumber(second) <= now_s - 60 then redis.call('HDEL', KEYS[1], second) end
    end
  end
  if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('INCRBY', KEYS[2], tokens) end
end
if spend > 0 and redis.call('EXISTS', KEYS[3]) == 1 then redis.call('INCRBY', KEYS[3], spend) end
return 1
