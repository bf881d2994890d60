-- Count the entries of every live worker. Prelude: now.
-- KEYS: owners, counts.
local total = 0
for _, owner in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')) do
  total = total + tonumber(redis.call('HGET', KEYS[2], owner) or 0)
end
return total
