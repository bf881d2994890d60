-- Register a connection, evicting the oldest ones beyond the limit. Preludes: now, owner_of.
-- KEYS: the entries and the leases of one registry key (one slot). ARGV: owner, connection
-- id, limit, reject (0 or 1), ttl in ms, whether this worker holds entries here already
-- (0 or 1).
-- Answers {1, evicted entries...} when added, {0} when refused, {-1} when this worker holds
-- entries here but its lease here is gone (Redis restarted, or the worker missed its
-- refreshes): sync, then add again.
local entries, leases = KEYS[1], KEYS[2]
local owner, limit, ttl = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[5])
if ARGV[6] == '1' then
  local lease = redis.call('HGET', leases, owner)
  if not lease or tonumber(lease) <= now then
    return {-1}
  end
end
local member = owner .. '/' .. ARGV[2]
if redis.call('ZSCORE', entries, member) then
  return {1}
end
local live, alive = {}, {}
for _, entry in ipairs(redis.call('ZRANGE', entries, 0, -1)) do
  local holder = owner_of(entry)
  if alive[holder] == nil then
    local until_ = redis.call('HGET', leases, holder)
    alive[holder] = until_ ~= false and tonumber(until_) > now
    if not alive[holder] then
      redis.call('HDEL', leases, holder)
    end
  end
  if alive[holder] then
    live[#live + 1] = entry
  else
    redis.call('ZREM', entries, entry)
  end
end
if ARGV[4] == '1' and #live >= limit then
  return {0}
end
redis.call('ZADD', entries, next_score(entries), member)
redis.call('HSET', leases, owner, now + ttl)
redis.call('PEXPIRE', entries, ttl)
redis.call('PEXPIRE', leases, ttl)
local answer = {1}
for i = 1, #live + 1 - limit do
  redis.call('ZREM', entries, live[i])
  answer[#answer + 1] = live[i]
end
return answer
