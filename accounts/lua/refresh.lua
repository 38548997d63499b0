-- Extend a concurrency lease (accounts/limits.py).
-- KEYS: cc.  ARGV: request_id, lease ms.  Extends a lease still held; 1 if it was.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false then return 0 end
redis.call('ZADD', KEYS[1], 'XX', string.format('%d', now + lease), ARGV[1])
redis.call('PEXPIRE', KEYS[1], lease + 60000)
return 1
