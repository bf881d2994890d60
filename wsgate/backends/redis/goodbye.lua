-- Forget this worker and its entries at once, at shutdown.
-- KEYS: owners, counts, then one key per connection id in ARGV[2...]. ARGV: owner, ids.
for i = 3, #KEYS do
  redis.call('ZREM', KEYS[i], ARGV[1] .. '/' .. ARGV[i - 1])
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 0
