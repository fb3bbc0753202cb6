-- Publish the outcome of one can:cmd entry and acknowledge the entry, both or
-- neither, and once (a retry after a lost reply changes nothing).
--
-- KEYS[1] command stream (can:cmd), KEYS[2] outcome stream (can:cmd:ack)
-- ARGV: group, maxlen of the outcome stream (MAXLEN ~), the entry id, then the
-- outcome's fields (name, value, ...).
--
-- A MULTI would not do: Redis runs the rest of a transaction when one command
-- fails at EXEC, so an XADD refused (WRONGTYPE, OOM) would still XACK the
-- entry and its outcome would be lost with the next restart. Here the XADD
-- comes first and an error stops the script before the XACK; an entry no
-- longer pending (acknowledged by an earlier call) publishes nothing.
-- Returns 1 when published and acknowledged, 0 when it had been already.

local cmd, ack = KEYS[1], KEYS[2]
local group, maxlen, entry = ARGV[1], ARGV[2], ARGV[3]
if #redis.call('XPENDING', cmd, group, entry, entry, 1) == 0 then
  return 0
end
redis.call('XADD', ack, 'MAXLEN', '~', maxlen, '*', unpack(ARGV, 4))
redis.call('XACK', cmd, group, entry)
return 1
