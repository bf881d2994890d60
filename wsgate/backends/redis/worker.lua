-- Renew this worker's record, say how many connections it holds, and forget the workers
-- whose lease ended. Prelude: now.
-- KEYS: the workers. ARGV: owner, ttl in ms, how many connections it holds.
redis.call('HSET', KEYS[1], ARGV[1], (now + tonumber(ARGV[2])) .. ' ' .. ARGV[3])
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local until_ = tonumber(string.match(fields[i + 1], '^(%d+)'))
  if until_ <= now then
    redis.call('HDEL', KEYS[1], fields[i])
  end
end
return 0
