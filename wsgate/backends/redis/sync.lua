-- Renew this worker's lease, push what Redis has not seen, and find lost evictions.
-- Prelude: now.
-- KEYS: owners, counts, seq, then one key per connection id in ARGV[5...].
-- ARGV: owner, ttl in ms, how many removals, how many confirmed entries, then the connection
-- ids: first the removals, then the entries Redis confirmed, then those it has not seen yet.
-- Answers {lost, key, id, key, id...}: lost is 1 when Redis had forgotten this worker (every
-- entry is then registered again), and the pairs are confirmed entries Redis no longer has:
-- another worker evicted them and the message did not arrive.
local owners, counts, seq = KEYS[1], KEYS[2], KEYS[3]
local owner, ttl = ARGV[1], tonumber(ARGV[2])
local removals, confirmed = tonumber(ARGV[3]), tonumber(ARGV[4])
local lease = redis.call('ZSCORE', owners, owner)
local lost = not lease or tonumber(lease) <= now
redis.call('ZADD', owners, now + ttl, owner)
local answer = {lost and 1 or 0}
for i = 4, #KEYS do
  local n, key, id = i - 3, KEYS[i], ARGV[i + 1]
  local member = owner .. '/' .. id
  if n <= removals then
    if redis.call('ZREM', key, member) == 1 and not lost then
      redis.call('HINCRBY', counts, owner, -1)
    end
  elseif n <= removals + confirmed and not lost then
    if redis.call('ZSCORE', key, member) then
      redis.call('PEXPIRE', key, ttl)
    else
      answer[#answer + 1] = key
      answer[#answer + 1] = id
    end
  else
    if redis.call('ZADD', key, 'NX', redis.call('INCR', seq), member) == 1 and not lost then
      redis.call('HINCRBY', counts, owner, 1)
    end
    redis.call('PEXPIRE', key, ttl)
  end
end
if lost then
  redis.call('HSET', counts, owner, #KEYS - 3 - removals)
end
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', owners, '-inf', now - ttl)) do
  redis.call('ZREM', owners, dead)
  redis.call('HDEL', counts, dead)
end
return answer
