-- Count the entries of live workers under one registry key. Preludes: now, owner_of.
-- KEYS: its entries and its leases.
local count, alive = 0, {}
for _, entry in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local holder = owner_of(entry)
  if alive[holder] == nil then
    local until_ = redis.call('HGET', KEYS[2], holder)
    alive[holder] = until_ ~= false and tonumber(until_) > now
  end
  if alive[holder] then
    count = count + 1
  end
end
return count
