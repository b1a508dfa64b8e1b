-- GCRA (generic cell rate algorithm) decision for one request, atomic in
-- Redis. Time comes from the Redis server, so replicas with skewed clocks
-- agree.
--
-- KEYS[1]  the key's theoretical arrival time (TAT), integer microseconds
--          since the Unix epoch (server clock)
-- ARGV[1]  emission interval: microseconds per request (may be fractional)
-- ARGV[2]  burst: requests allowed at once
--
-- Returns {allowed (0 or 1), remaining, retry_after_us, reset_after_us}.
-- The key expires when the bucket would be full again (reset_after).
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
if not interval or interval <= 0 or not burst or burst < 1 then
  return redis.error_reply('gcra: bad arguments')
end
if redis.replicate_commands then
  redis.replicate_commands()
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then
  tat = now
end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
local diff = now - allow_at
if diff < 0 then
  return {0, 0, math.ceil(-diff), math.ceil(tat - now)}
end
local reset_after = new_tat - now
redis.call('SET', KEYS[1], string.format('%.0f', math.ceil(new_tat)), 'PX', math.max(1, math.ceil(reset_after / 1000)))
return {1, math.floor(diff / interval + 1e-9), 0, math.ceil(reset_after)}
