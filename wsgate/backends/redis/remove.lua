-- Forget one of this worker's connections.
-- KEYS: the key, counts. ARGV: owner, connection id.
if redis.call('ZREM', KEYS[1], ARGV[1] .. '/' .. ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[2], ARGV[1], -1)
end
return 0
