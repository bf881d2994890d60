-- A prelude: owner_of('<owner>/<connection id>') is '<owner>', and next_score(entries) the
-- score that puts a new entry after every other one under a key.
local function owner_of(entry)
  return string.sub(entry, 1, string.find(entry, '/', 1, true) - 1)
end
local function next_score(entries)
  local last = redis.call('ZRANGE', entries, -1, -1, 'WITHSCORES')
  return (tonumber(last[2]) or 0) + 1
end
