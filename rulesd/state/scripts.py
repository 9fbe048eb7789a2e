"""The server-side scripts (Lua, run atomically by Redis) of the Redis state backend.

Each batch's effects are one `COMMIT` call: either all of them are written or none, as in
the SQLite transaction. Stream ids are compared as (milliseconds, sequence) pairs.
"""

from __future__ import annotations

# The instance's last commit, if it is the one named `token`: {its note, the outbox entries it
# queued that are still queued} (so that a commit whose answer was lost is counted as made, and
# its alerts are remembered until delivered), 'fenced' if `RESOLVE` found it not made, else nil.
# The record (KEYS[12] of COMMIT) is "token first-id last-id note", or "token " once fenced.
LAST_COMMIT = """
local function last_commit(records, instance, token, outbox)
  local record, n = redis.call('HGET', records, instance) or '', #token
  if string.sub(record, 1, n + 1) ~= token .. ' ' then return nil end
  local first, last, note = string.match(string.sub(record, n + 2), '^(%d+) (%d+) (.*)$')
  if not first then return 'fenced' end
  return {note, redis.call('XRANGE', outbox, first .. '-0', last .. '-0')}
end
"""

# The instance's name held by this process: KEYS[n] (the name's key) holds `value` (the holder,
# as JSON), renewed for `lease` ms; held by another process, an error `NAMETAKEN holder`; held by
# none (the lease ran out, Redis lost its data), an error `NAMELOST`, for the process to claim it
# again through CLAIM, which says so, and run the script again (nothing else is written either
# way). '' checks nothing.
HOLD_NAME = """
local function hold_name(key, value, lease)
  if value == '' then return true end
  local holder = redis.call('GET', key)
  if not holder then return redis.error_reply('NAMELOST') end
  if holder ~= value then return redis.error_reply('NAMETAKEN ' .. holder) end
  redis.call('SET', key, value, 'PX', lease)
  return true
end
"""

# Claim (ARGV[3] '': unless another process holds it; else also over that holder's value, found
# gone) or renew the instance's name KEYS[1] for this process (ARGV[1]) for ARGV[2] ms: 1 renewed,
# 0 claimed (it was free: the lease ran out, or Redis lost its data), or {holder, its ms left}.
CLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] and holder ~= ARGV[3] then return {holder, redis.call('PTTL', KEYS[1])} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if holder == ARGV[1] then return 1 end
return 0
"""

# Give the instance's name (or the sender's lease) KEYS[1] up if this process (ARGV[1]) holds it.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Record that the sender is paused (KEYS[1], ARGV[1] why) and give its lease (KEYS[2]) up if this
# process (ARGV[2]) holds it, in one step: Redis gone between two commands left the pause recorded
# with the lease held. SET first: refused at maxmemory, it leaves nothing written.
PAUSE = """
redis.call('SET', KEYS[1], ARGV[1])
if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
return 1
"""

# Whether the commit named ARGV[2] (the instance ARGV[1]'s last, its answer lost) was made:
# LAST_COMMIT's answer, or false; then it is fenced, so that the script, if Redis has not run it
# yet (still in its input, the connection given up), is refused when it runs: it is never made
# unknown to the instance. KEYS: 1 the last commit of each instance, 2 outbox, 3 the instance's
# name (HOLD_NAME: ARGV 3 and 4): another process's record is never fenced.
RESOLVE = (
    LAST_COMMIT
    + HOLD_NAME
    + """
local held = hold_name(KEYS[3], ARGV[3], ARGV[4])
if held ~= true then return held end
local made = last_commit(KEYS[1], ARGV[1], ARGV[2], KEYS[2])
if made and made ~= 'fenced' then return made end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ')
return false
"""
)

# KEYS: 1 version, 2 rules, 3 clock, 4 fingerprints, 5 groups, 6 changes, 7 positions, 8 outbox,
#       9 outbox sequence, 10 event stream, 11 stream cursor, 12 the last commit of each instance,
#       13 the instance's name (HOLD_NAME)
# ARGV: 1 expected version, 2 rule set hash, 3 now, 4 clock ('' = unchanged), 5 full ('1'),
#       6 fingerprints, 7 upserts, 8 deletes, 9 positions, 10 outbox entries, 11 consumer group
#       ('' = no stream), 12 first id, 13 last id, 14 ids to acknowledge, 15 entries the batch
#       must span (0: no check), 16 change records kept, 17 the batch's token ('' = none: a
#       batch committed already, whose answer was lost, is refused as taken), 18 the instance,
#       19 the batch's note (kept with its token and the outbox ids it gave, the instance's
#       last: see LAST_COMMIT), 20 this process as the name's holder, 21 the name's lease (ms)
#       (HOLD_NAME: a process whose name another took commits nothing), then the lists in that
#       order: upserts (field, value), deletes (field), positions (field, value; '' deletes the
#       field), outbox (payload, action, target), ids.
# Returns {'ok', version, the last outbox id given ('0': none)} or {why, detail} with why: rules
# (published hash), version (current), taken (the batch was committed by another instance; by
# this one if detail is '': then with the note it was committed with and the outbox entries it
# queued that are still queued), turn (an earlier entry is uncommitted), gap (another's entry
# is between the batch's: a claimed batch is committed one entry at a time), fenced (`RESOLVE`
# found the commit not made: it came too late).
COMMIT = (
    LAST_COMMIT
    + HOLD_NAME
    + """
local function id_less_or_equal(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  if am ~= bm then return am < bm end
  return as <= bs
end
-- Whether an entry between a claimed batch's first and last (ARGV[12], ARGV[13]) is not one of
-- its `span` ids (from ARGV[at]): another instance's, pending. Its own that the stream no longer
-- holds (Redis lost it, or someone deleted them) are no gap: the batch has their events.
local function gap(stream, at, span)
  local mine = {}
  for j = at, at + span - 1 do mine[ARGV[j]] = true end
  for _, entry in ipairs(redis.call('XRANGE', stream, ARGV[12], ARGV[13], 'COUNT', span + 1)) do
    if not mine[entry[1]] then return true end
  end
  return false
end
local held = hold_name(KEYS[13], ARGV[20], ARGV[21])
if held ~= true then return held end
local published = redis.call('GET', KEYS[2])
if published ~= ARGV[2] then return {'rules', published or ''} end
if ARGV[17] ~= '' then
  local made = last_commit(KEYS[12], ARGV[18], ARGV[17], KEYS[8])
  if made == 'fenced' then return {'fenced', ''} end
  if made then return {'taken', '', made[1], made[2]} end
end
local version = tonumber(redis.call('GET', KEYS[1]) or '0')
if version ~= tonumber(ARGV[1]) then return {'version', tostring(version)} end
local n_up, n_del, n_pos, n_out, n_ack = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]),
  tonumber(ARGV[10]), tonumber(ARGV[14])
local group = ARGV[11]
local cursor
if group ~= '' then
  cursor = redis.call('GET', KEYS[11]) or '0-0'
  if id_less_or_equal(ARGV[12], cursor) then return {'taken', cursor} end
  if #redis.call('XRANGE', KEYS[10], '(' .. cursor, '(' .. ARGV[12], 'COUNT', 1) > 0 then
    return {'turn', cursor}
  end
  local span = tonumber(ARGV[15])
  if span > 0 and gap(KEYS[10], 22 + 2 * n_up + n_del + 2 * n_pos + 3 * n_out, span) then
    return {'gap', cursor}
  end
end
local i = 22
local touched = {}
if ARGV[5] == '1' then
  redis.call('DEL', KEYS[5])
  redis.call('SET', KEYS[4], ARGV[6])
end
for _ = 1, n_up do
  redis.call('HSET', KEYS[5], ARGV[i], ARGV[i + 1])
  touched[#touched + 1] = ARGV[i]
  i = i + 2
end
for _ = 1, n_del do
  redis.call('HDEL', KEYS[5], ARGV[i])
  touched[#touched + 1] = ARGV[i]
  i = i + 1
end
for _ = 1, n_pos do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[7], ARGV[i])
  else
    redis.call('HSET', KEYS[7], ARGV[i], ARGV[i + 1])
  end
  i = i + 2
end
local seq = 0
local first = tonumber(redis.call('GET', KEYS[9]) or '0') + 1
for _ = 1, n_out do
  seq = redis.call('INCR', KEYS[9])
  redis.call('XADD', KEYS[8], seq .. '-0', 'created', ARGV[3], 'payload', ARGV[i], 'action', ARGV[i + 1],
    'target', ARGV[i + 2])
  i = i + 3
end
if ARGV[17] ~= '' then
  redis.call('HSET', KEYS[12], ARGV[18], ARGV[17] .. ' ' .. first .. ' ' .. (first + n_out - 1) .. ' ' .. ARGV[19])
end
if ARGV[4] ~= '' then redis.call('SET', KEYS[3], ARGV[4]) end
version = redis.call('INCR', KEYS[1])
local record
if ARGV[5] == '1' then record = {'full', '1'} else record = {'keys', table.concat(touched, '\\n')} end
redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[16], version .. '-0', unpack(record))
if group ~= '' then
  local ids = {}
  for _ = 1, n_ack do
    ids[#ids + 1] = ARGV[i]
    i = i + 1
    if #ids == 1000 then redis.call('XACK', KEYS[10], group, unpack(ids)); ids = {} end
  end
  if #ids > 0 then redis.call('XACK', KEYS[10], group, unpack(ids)) end
  redis.call('SET', KEYS[11], ARGV[13])
  -- Trimmed only below what every consumer group of the stream is done with: another one (a
  -- second fleet, a user's own consumer) may not have read or acknowledged what this one committed.
  -- No stream (Redis lost it with the batch read before): nothing to trim, and XINFO would fail.
  if redis.call('EXISTS', KEYS[10]) == 1 then
    local floor = ARGV[13]
    for _, info in ipairs(redis.call('XINFO', 'GROUPS', KEYS[10])) do
      local g = {}
      for j = 1, #info, 2 do g[info[j]] = info[j + 1] end
      local held = g['last-delivered-id']
      if tonumber(g['pending']) > 0 then held = redis.call('XPENDING', KEYS[10], g['name'])[2] end
      if not id_less_or_equal(floor, held) then floor = held end
    end
    redis.call('XTRIM', KEYS[10], 'MINID', '~', floor)
  end
end
return {'ok', tostring(version), tostring(seq)}
"""
)

# What changed since version ARGV[1]: {version, clock, rules, epoch, done, how, field, value,
# ...} where how is '' (nothing changed), 'full' (the change records are gone, or one rewrote
# everything: load it all) or 'keys' (then the changed groups' fields and current values, false
# for none). The epoch names the state (see `RedisState.snapshot`): another, or none, means
# Redis lost it. Every alert of the outbox below id `done` was delivered or dead-lettered.
# KEYS: 1 version, 2 clock, 3 changes, 4 groups, 5 rules, 6 epoch, 7 outbox, 8 outbox sequence
CATCH_UP = """
local version = tonumber(redis.call('GET', KEYS[1]) or '0')
local since = tonumber(ARGV[1])
local clock = redis.call('GET', KEYS[2]) or ''
local rules = redis.call('GET', KEYS[5]) or ''
local epoch = redis.call('GET', KEYS[6]) or ''
local first = redis.call('XRANGE', KEYS[7], '-', '+', 'COUNT', 1)
local done
if #first > 0 then
  done = string.match(first[1][1], '^(%d+)-')
else
  done = tostring(tonumber(redis.call('GET', KEYS[8]) or '0') + 1)
end
local head = {tostring(version), clock, rules, epoch, done}
if version == since then head[6] = ''; return head end
local entries = redis.call('XRANGE', KEYS[3], (since + 1) .. '-0', '+')
if version < since or #entries ~= version - since or entries[1][1] ~= (since + 1) .. '-0' then
  head[6] = 'full'
  return head
end
local seen, fields = {}, {}
for _, entry in ipairs(entries) do
  local kv = entry[2]
  if kv[1] == 'full' then head[6] = 'full'; return head end
  for field in string.gmatch(kv[2], '[^\\n]+') do
    if not seen[field] then
      seen[field] = true
      fields[#fields + 1] = field
    end
  end
end
local out = head
out[6] = 'keys'
for first = 1, #fields, 1000 do
  local chunk = {}
  for j = first, math.min(first + 999, #fields) do chunk[#chunk + 1] = fields[j] end
  local values = redis.call('HMGET', KEYS[4], unpack(chunk))
  for j = 1, #chunk do
    out[#out + 1] = chunk[j]
    out[#out + 1] = values[j]
  end
end
return out
"""

# The sender's lease: held by one instance at a time, for ARGV[2] ms from the last renewal.
# KEYS: 1 lease; ARGV: 1 token, 2 milliseconds. Returns 1 if the caller holds it now.
LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# The oldest queued alert, for the lease holder only. KEYS: 1 lease, 2 outbox, 3 per-alert
# state; ARGV: 1 token, 2 lease milliseconds, 3 '1' to take or renew the lease, '0' to look
# only (a paused sender: its lease lapses, for another instance to deliver). Returns false, or
# {id, fields, state}. The holder renews with PEXPIRE, which Redis allows at its maxmemory (SET
# it refuses): queued alerts still go then, and their removal frees memory.
HEAD = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return false end
if ARGV[3] ~= '1' then
  if not holder then return false end
elseif holder then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
local entries = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #entries == 0 then return false end
local id = string.match(entries[1][1], '^(%d+)-')
return {id, entries[1][2], redis.call('HGET', KEYS[3], id) or ''}
"""

# Re-checked right before a send: the caller still holds the lease and the alert is queued.
# KEYS: 1 lease, 2 outbox; ARGV: 1 token, 2 lease milliseconds, 3 alert id.
OWNS = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if #redis.call('XRANGE', KEYS[2], ARGV[3] .. '-0', ARGV[3] .. '-0') == 0 then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# Whether the queued alert ARGV[1] (KEYS[1] the outbox) is the one read with `created` ARGV[2]
# ('' = not checked): after Redis lost the outbox its ids start again, and an alert in flight
# then must not remove, reschedule or dead-letter another that got its id.
THE_ALERT = """
local function the_alert(outbox, id, created)
  local entries = redis.call('XRANGE', outbox, id .. '-0', id .. '-0')
  if #entries == 0 or (created ~= '' and entries[1][2][2] ~= created) then return nil end
  return entries[1]
end
"""

# A failed attempt of a queued alert. KEYS: 1 outbox, 2 state, 3 its attempts; ARGV: 1 id,
# 2 counted (1/0), 3 next attempt, 4 error, 5 attempt record ('' = none), 6 records kept, 7 created.
RESCHEDULE = (
    THE_ALERT
    + """
if not the_alert(KEYS[1], ARGV[1], ARGV[7]) then return 0 end
local raw = redis.call('HGET', KEYS[2], ARGV[1])
local st = raw and cjson.decode(raw) or {attempts = 0}
st.attempts = st.attempts + tonumber(ARGV[2])
st.next_attempt = tonumber(ARGV[3])
st.last_error = ARGV[4]
redis.call('HSET', KEYS[2], ARGV[1], cjson.encode(st))
if ARGV[5] ~= '' then
  redis.call('RPUSH', KEYS[3], ARGV[5])
  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[6]), -1)
end
return 1
"""
)

# Give up on a queued alert: it moves to the dead letters. KEYS: 1 outbox, 2 state, 3 dead,
# 4 its attempts; ARGV: 1 id, 2 error, 3 response, 4 attempt record ('' = none), 5 kept, 6 created.
DEAD_LETTER = (
    THE_ALERT
    + """
local entry = the_alert(KEYS[1], ARGV[1], ARGV[6])
if not entry then return 0 end
local fields = entry[2]
local alert = {}
for j = 1, #fields, 2 do alert[fields[j]] = fields[j + 1] end
local raw = redis.call('HGET', KEYS[2], ARGV[1])
local st = raw and cjson.decode(raw) or {attempts = 0}
alert.attempts = st.attempts + 1
alert.last_error = ARGV[2]
alert.response = ARGV[3]
redis.call('HSET', KEYS[3], ARGV[1], cjson.encode(alert))
redis.call('XDEL', KEYS[1], ARGV[1] .. '-0')
redis.call('HDEL', KEYS[2], ARGV[1])
if ARGV[4] ~= '' then
  redis.call('RPUSH', KEYS[4], ARGV[4])
  redis.call('LTRIM', KEYS[4], -tonumber(ARGV[5]), -1)
end
return 1
"""
)

# Delivered: the alert leaves the queue; but a close whose alias has a create queued before it
# among the dead letters becomes one itself (see `base.KEPT_CLOSE`). KEYS: 1 outbox, 2 state,
# 3 dead, 4 its attempts, 5 the record of a pause (a delivery ends it, whichever instance paused:
# one whose key works may have taken the outbox over from one whose key is refused); ARGV: 1 id,
# 2 the kept close's error, 3 created (see `the_alert`). Deletions only but for a kept close, so
# Redis runs it at its maxmemory (a MULTI it refuses then).
MARK_SENT = (
    THE_ALERT
    + """
local entry = the_alert(KEYS[1], ARGV[1], ARGV[3])
if not entry then return 0 end
local alert = {}
local fields = entry[2]
for j = 1, #fields, 2 do alert[fields[j]] = fields[j + 1] end
local kept = false
if alert.action == 'close' then
  local dead = redis.call('HGETALL', KEYS[3])
  for j = 1, #dead, 2 do
    local other = cjson.decode(dead[j + 1])
    if tonumber(dead[j]) < tonumber(ARGV[1]) and other.action == 'create'
        and cjson.decode(other.payload).alias == alert.target then
      local raw = redis.call('HGET', KEYS[2], ARGV[1])
      alert.attempts = raw and cjson.decode(raw).attempts or 0
      alert.last_error = ARGV[2]
      alert.response = ''
      redis.call('HSET', KEYS[3], ARGV[1], cjson.encode(alert))
      kept = true
      break
    end
  end
end
redis.call('XDEL', KEYS[1], ARGV[1] .. '-0')
redis.call('HDEL', KEYS[2], ARGV[1])
if not kept then redis.call('DEL', KEYS[4]) end  -- a dead letter keeps its attempts, as in SQLite
redis.call('DEL', KEYS[5])
return 1
"""
)

# Requeue every dead letter as new, at the end of the queue. KEYS: 1 dead, 2 outbox, 3 sequence;
# ARGV: 1 now, 2 the prefix of attempts keys. Returns how many.
RETRY_DEAD = """
local dead = redis.call('HGETALL', KEYS[1])
local ids = {}
for j = 1, #dead, 2 do ids[#ids + 1] = tonumber(dead[j]) end
table.sort(ids)
local by_id = {}
for j = 1, #dead, 2 do by_id[tonumber(dead[j])] = cjson.decode(dead[j + 1]) end
for _, old in ipairs(ids) do
  local alert = by_id[old]
  local seq = redis.call('INCR', KEYS[3])
  redis.call('XADD', KEYS[2], seq .. '-0', 'created', ARGV[1], 'payload', alert.payload, 'action', alert.action,
    'target', alert.target)
  redis.call('DEL', ARGV[2] .. old)
end
redis.call('DEL', KEYS[1])
return #ids
"""

# The forwarder's append: its entries and its positions, one atomic step. KEYS: 1 stream,
# 2 positions; ARGV: 1 how many positions, then (field, value) pairs (a value '' deletes the
# field: a file the forwarder will not read again), then how many entries,
# then the entries (each one or more newline-separated events). Positions only move on, so a
# batch whose every position is stored already was appended: it is the forwarder trying again
# after the answer was lost (a timeout, a connection reset), and is not appended twice.
# KEYS[3], if given: the forwarder's name (HOLD_NAME, with this process and the lease as the
# last two ARGV): a forwarder whose name another took appends nothing.
FORWARD = (
    HOLD_NAME
    + """
if KEYS[3] then
  local held = hold_name(KEYS[3], ARGV[#ARGV - 1], ARGV[#ARGV])
  if held ~= true then return held end
end
local n_pos = tonumber(ARGV[1])
local stored = n_pos > 0
for k = 0, n_pos - 1 do
  if (redis.call('HGET', KEYS[2], ARGV[2 + 2 * k]) or '') ~= ARGV[3 + 2 * k] then
    stored = false
    break
  end
end
if stored then
  return 0
end
local i = 2
for _ = 1, n_pos do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[2], ARGV[i])
  else
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  end
  i = i + 2
end
local n = tonumber(ARGV[i])
for j = 1, n do
  redis.call('XADD', KEYS[1], '*', 'events', ARGV[i + j])
end
return n
"""
)
