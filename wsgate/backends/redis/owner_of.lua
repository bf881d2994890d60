-- A prelude: owner_of('<owner>/<connection id>') is '<owner>'.
local function owner_of(entry)
  return string.sub(entry, 1, string.find(entry, '/', 1, true) - 1)
end
