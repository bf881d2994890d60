-- Revoke one user or token, drop the revocations that ended, and tell every worker.
-- KEYS[1]: the sorted set of active revocations (member: the revocation key, score: its end).
-- ARGV[1]: the revocation key (u:<user> or j:<jti>); ARGV[2]: its end, a Unix time in
-- seconds; ARGV[3]: now, by the same clock; ARGV[4]: the channel; ARGV[5]: the message.
-- Answers PUBLISH's count: the subscribers on this node.
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
-- The set goes with its last revocation. Whole seconds: a Lua number this large would be
-- written in exponent form.
redis.call('EXPIREAT', KEYS[1], math.ceil(tonumber(last[2])) + 1)
return redis.call('PUBLISH', ARGV[4], ARGV[5])
