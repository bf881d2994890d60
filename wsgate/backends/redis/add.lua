-- Register a connection, evicting the oldest ones beyond the limit. Preludes: now, owner_of.
-- KEYS: the key, owners, counts, seq. ARGV: owner, connection id, limit, reject (0 or 1),
-- ttl in ms, the eviction channel prefix.
-- Answers {1, evicted entries...} when added, {0} when refused, {-1} when this worker's lease
-- is gone (Redis restarted, or the worker missed its refreshes): sync, then add again.
local key, owners, counts, seq = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local owner, limit, ttl = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[5])
local lease = redis.call('ZSCORE', owners, owner)
if not lease or tonumber(lease) <= now then
  return {-1}
end
local member = owner .. '/' .. ARGV[2]
if redis.call('ZSCORE', key, member) then
  return {1}
end
local live, alive = {}, {}
for _, entry in ipairs(redis.call('ZRANGE', key, 0, -1)) do
  local holder = owner_of(entry)
  if alive[holder] == nil then
    local until_ = redis.call('ZSCORE', owners, holder)
    alive[holder] = until_ ~= false and tonumber(until_) > now
  end
  if alive[holder] then
    live[#live + 1] = entry
  else
    redis.call('ZREM', key, entry)
  end
end
if ARGV[4] == '1' and #live >= limit then
  return {0}
end
redis.call('ZADD', key, redis.call('INCR', seq), member)
redis.call('HINCRBY', counts, owner, 1)
redis.call('PEXPIRE', key, ttl)
local answer = {1}
for i = 1, #live + 1 - limit do
  local entry = live[i]
  local holder = owner_of(entry)
  redis.call('ZREM', key, entry)
  redis.call('HINCRBY', counts, holder, -1)
  if holder ~= owner then
    local id = string.sub(entry, #holder + 2)
    redis.call('PUBLISH', ARGV[6] .. holder, cjson.encode({key, id}))
  end
  answer[#answer + 1] = entry
end
return answer
