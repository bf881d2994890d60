-- Count the connections of every live worker but this one. Prelude: now.
-- KEYS: the workers. ARGV: owner.
local total = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local until_, count = string.match(fields[i + 1], '^(%d+) (%d+)$')
  if fields[i] ~= ARGV[1] and tonumber(until_) > now then
    total = total + tonumber(count)
  end
end
return total
