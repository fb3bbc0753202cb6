-- Acknowledge one batch of a consumer group, with its dead letters, atomically
-- and idempotently (a retry after a lost reply changes nothing).
--
-- KEYS[1] raw stream, KEYS[2] dead-letter stream, KEYS[3] stats hash,
-- KEYS[4] hash of dead-letter counts per cause
-- ARGV: group, minid of the dead stream ("" = no age limit), maxlen of the dead
-- stream, rows written, number of dead letters D, then D records
--   id, reason, deliveries, cause ("" = none), number of fields F, F fields
-- then the ids of every other entry of the batch.
--
-- A dead letter is written only when this call's XACK acknowledged its entry,
-- so a retried call never writes it twice. A dead letter with a cause (an
-- unknown id, a message no sensor maps) is counted in KEYS[4] under its cause;
-- only the first of each cause is stored in full. The dead stream is trimmed
-- to maxlen and minid on every call; what was trimmed is counted in stats
-- field dead_trimmed. Returns {acknowledged, dead letters stored, dead letters
-- counted by cause, trimmed}.

local raw, dead, stats, causes = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, minid, maxlen, rows = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local ndead = tonumber(ARGV[5])
local i = 6
local acked, stored, counted = 0, 0, 0
for _ = 1, ndead do
  local id, reason, deliveries, cause, nf = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4])
  local first = i + 5
  i = first + nf
  if redis.call('XACK', raw, group, id) == 1 then
    acked = acked + 1
    local full = true
    if cause ~= '' then
      counted = counted + 1
      full = redis.call('HINCRBY', causes, cause, 1) == 1
    end
    if full then
      local args = { dead, '*', 'orig_id', id, 'reason', reason, 'deliveries', deliveries }
      if cause ~= '' then
        args[#args + 1] = 'cause'
        args[#args + 1] = cause
      end
      for k = first, first + nf - 1 do
        args[#args + 1] = ARGV[k]
      end
      redis.call('XADD', unpack(args))
      stored = stored + 1
    end
  end
end
local dead_acked = acked
local chunk = {}
for k = i, #ARGV do
  chunk[#chunk + 1] = ARGV[k]
  if #chunk == 1000 or k == #ARGV then
    acked = acked + redis.call('XACK', raw, group, unpack(chunk))
    chunk = {}
  end
end
local trimmed = redis.call('XTRIM', dead, 'MAXLEN', maxlen)
if minid ~= '' then
  trimmed = trimmed + redis.call('XTRIM', dead, 'MINID', minid)
end
if trimmed > 0 then
  redis.call('HINCRBY', stats, 'dead_trimmed', trimmed)
end
-- counters only when this call acknowledged something: a retry does not count the batch twice
if acked > 0 then
  redis.call('HINCRBY', stats, 'batches', 1)
  redis.call('HINCRBY', stats, 'entries', acked)
  redis.call('HINCRBY', stats, 'rows_written', rows)
  if dead_acked > 0 then
    redis.call('HINCRBY', stats, 'dead_lettered', dead_acked)
  end
end
return { acked, stored, counted, trimmed }
