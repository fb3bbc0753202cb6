--[[
  Stream trimming and hard limit for the raw stream, atomically (one EVALSHA).

  KEYS[1]  the raw stream          KEYS[2]  the scanner's stats hash
  ARGV[1]  keep: acknowledged entries to keep (CEA_STREAM_TRIM_ACKED)
  ARGV[2]  hard: maximum stream length (CEA_STREAM_HARD_LIMIT)

  boundary = the oldest entry some consumer group has not acknowledged: per
  group the smallest pending id, or (nothing pending) the first entry after the
  group's last-delivered-id; the minimum over all groups. Entries below it are
  acknowledged by every group. With no group at all nothing counts as
  acknowledged (the worker creates its group from id 0 and will read them).

  1. Acknowledged entries below the boundary are trimmed to exactly `keep`
     (XTRIM MINID = the keep-th entry below the boundary). Unacknowledged
     entries are never touched here.
  2. Only when XLEN > hard: the oldest entries are trimmed exactly down to
     `hard`; the number of unacknowledged ones among them is added to
     dropped_hard_limit in KEYS[2] (exact).
  3. backlog = the entries at or after the boundary, i.e. not yet acknowledged
     by some group (all of them without a group, none when every group is
     done), counted exactly after 1 and 2: XLEN minus the acknowledged entries
     left below the boundary. This, not XLEN, is what the scanner warns about:
     XLEN always includes the ~`keep` acknowledged entries kept by design.

  Returns {xlen after, acknowledged entries trimmed, unacknowledged entries dropped, boundary or "", backlog}.
]]
local stream, stats = KEYS[1], KEYS[2]
local keep = tonumber(ARGV[1])
local hard = tonumber(ARGV[2])
if redis.call('EXISTS', stream) == 0 then
  return {0, 0, 0, ''}
end

local function less(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  if am ~= bm then return am < bm end
  return as < bs
end

-- nil = everything acknowledged; '0-0' = nothing acknowledged
local boundary = nil
local groups = redis.call('XINFO', 'GROUPS', stream)
if #groups == 0 then boundary = '0-0' end
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local b = nil
  if tonumber(info['pending']) > 0 then
    b = redis.call('XPENDING', stream, info['name'])[2]
  else
    local nxt = redis.call('XRANGE', stream, '(' .. info['last-delivered-id'], '+', 'COUNT', 1)
    if #nxt > 0 then b = nxt[1][1] end
  end
  if b and (boundary == nil or less(b, boundary)) then boundary = b end
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
  local removedAcked = math.min(excess, acked)
  dropped = excess - removedAcked
  redis.call('XTRIM', stream, 'MAXLEN', hard)
  if dropped > 0 then redis.call('HINCRBY', stats, 'dropped_hard_limit', dropped) end
  acked = acked - removedAcked
  len = hard
end
return {len, trimmed, dropped, boundary or '', len - acked}
