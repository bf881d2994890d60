-- Renew this worker's leases under some registry keys of one slot, push what Redis has not
-- seen, and find lost evictions. Preludes: now, owner_of.
-- KEYS: the entries and the leases of each registry key, in pairs.
-- ARGV: owner, ttl in ms, then for each key: how many removals, how many confirmed entries,
-- how many entries Redis has not seen yet, then the connection ids in that order.
-- A key where this worker's lease is gone (Redis restarted, or the worker missed its
-- refreshes) has its confirmed entries registered again; elsewhere a confirmed entry that
-- Redis no longer has was evicted by another worker, and the message did not arrive.
-- Answers {entries registered again, key number, id, key number, id...}: the pairs are the
-- lost evictions, by the key's place (1, 2...) in KEYS' pairs.
local owner, ttl = ARGV[1], tonumber(ARGV[2])
local answer = {0}
local at = 3
for pair = 1, #KEYS / 2 do
  local entries, leases = KEYS[2 * pair - 1], KEYS[2 * pair]
  local removals, confirmed, pending = tonumber(ARGV[at]), tonumber(ARGV[at + 1]),
    tonumber(ARGV[at + 2])
  at = at + 3
  local lease = redis.call('HGET', leases, owner)
  local lost = not lease or tonumber(lease) <= now
  for i = at, at + removals - 1 do
    redis.call('ZREM', entries, owner .. '/' .. ARGV[i])
  end
  at = at + removals
  for i = at, at + confirmed + pending - 1 do
    local member = owner .. '/' .. ARGV[i]
    if i >= at + confirmed or lost then
      if redis.call('ZADD', entries, 'NX', next_score(entries), member) == 1 and lost then
        answer[1] = answer[1] + (i < at + confirmed and 1 or 0)
      end
    elseif not redis.call('ZSCORE', entries, member) then
      answer[#answer + 1] = pair
      answer[#answer + 1] = ARGV[i]
    end
  end
  at = at + confirmed + pending
  if confirmed + pending > 0 then
    redis.call('HSET', leases, owner, now + ttl)
    redis.call('PEXPIRE', entries, ttl)
    redis.call('PEXPIRE', leases, ttl)
  else
    redis.call('HDEL', leases, owner)
  end
end
return answer
