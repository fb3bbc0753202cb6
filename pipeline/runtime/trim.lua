--[[
  Stream trimming and hard limit for the raw stream, atomically (one EVALSHA).

  KEYS[1]  the raw stream          KEYS[2]  the scanner's stats hash
  ARGV[1]  keep: acknowledged entries to keep (CEA_STREAM_TRIM_ACKED)
  ARGV[2]  hard: maximum stream length (CEA_STREAM_HARD_LIMIT)
  ARGV[3]  the workers' consumer group (CEA_GROUP)

  The stream is kept for that one group. An entry is
    acknowledged  when the group has delivered it and it is no longer pending;
    held          when it is pending (a worker has it in hand);
    unread        when the group has not delivered it yet (after its
                  last-delivered-id), or every entry when the group does not
                  exist yet (the worker creates it from id 0 and reads them all).
  boundary = the group's oldest pending entry, or with nothing pending the
  first entry after its last-delivered-id: every entry below it is acknowledged.

  1. Acknowledged entries below the boundary are trimmed to exactly `keep`
     (XTRIM MINID = the keep-th entry below the boundary). Nothing else is
     touched here.
  2. Only when XLEN > hard, the excess is removed in this order:
     a. acknowledged entries below the boundary, oldest first (they are
        stored: not a loss, not counted);
     b. unread entries, oldest first: no worker will ever see them, so each is
        a lost frame and is added to dropped_hard_limit in KEYS[2]; this count
        is exact.
     Held entries are never removed: their worker stores them (or another one
     claims them), and removing them would make it unknowable whether they
     were lost. Acknowledged entries between held ones wait until the
     boundary passes them. XLEN can therefore stay above `hard` by at most the
     entries in the workers' hands.
  3. backlog = the entries at or after the boundary (held, unread, and
     acknowledged ones between held ones), counted exactly after 1 and 2:
     XLEN minus the acknowledged entries left below the boundary. This, not
     XLEN, is what the scanner warns about: XLEN always includes the ~`keep`
     acknowledged entries kept by design.

  Returns, on every path: {xlen after, acknowledged entries trimmed,
  unread entries dropped, boundary or "", backlog}.
]]
local stream, stats = KEYS[1], KEYS[2]
local keep = tonumber(ARGV[1])
local hard = tonumber(ARGV[2])
local group = ARGV[3]
if redis.call('EXISTS', stream) == 0 then
  return {0, 0, 0, '', 0}
end

-- the group's state: nil when it does not exist
local last, pending = nil, 0
for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  if info['name'] == group then
    last = info['last-delivered-id']
    pending = tonumber(info['pending'])
  end
end

-- nil = everything acknowledged; '0-0' = nothing acknowledged
local boundary = '0-0'
if last then
  boundary = nil
  if pending > 0 then
    boundary = redis.call('XPENDING', stream, group)[2]
  else
    local nxt = redis.call('XRANGE', stream, '(' .. last, '+', 'COUNT', 1)
    if #nxt > 0 then boundary = nxt[1][1] end
  end
end

local len = redis.call('XLEN', stream)
local trimmed = 0
local acked = 0 -- acknowledged entries left below the boundary (exact)
if boundary ~= '0-0' then
  -- at most keep + 1 entries are read: the cost is bounded by `keep`, not by the backlog
  local upper = boundary and ('(' .. boundary) or '+'
  local below = redis.call('XREVRANGE', stream, upper, '-', 'COUNT', keep + 1)
  acked = #below
  if #below > keep then
    trimmed = redis.call('XTRIM', stream, 'MINID', below[keep][1])
    len = len - trimmed
    acked = keep
  end
end

local dropped = 0
if len > hard then
  local excess = len - hard
  -- a. acknowledged entries: they are the oldest ones
  local a = math.min(excess, acked)
  if a > 0 then
    redis.call('XTRIM', stream, 'MAXLEN', len - a)
    acked = acked - a
    len = len - a
    excess = excess - a
  end
  -- b. unread entries, oldest first
  if excess > 0 and not last then
    dropped = redis.call('XTRIM', stream, 'MAXLEN', hard)
    len = len - dropped
  elseif excess > 0 then
    local from = '(' .. last
    while dropped < excess do
      local batch = redis.call('XRANGE', stream, from, '+', 'COUNT', math.min(excess - dropped, 1000))
      if #batch == 0 then break end
      local ids = {}
      for i, e in ipairs(batch) do ids[i] = e[1] end
      dropped = dropped + redis.call('XDEL', stream, unpack(ids))
      from = '(' .. ids[#ids]
    end
    len = len - dropped
  end
  if dropped > 0 then redis.call('HINCRBY', stats, 'dropped_hard_limit', dropped) end
end
return {len, trimmed, dropped, boundary or '', len - acked}
