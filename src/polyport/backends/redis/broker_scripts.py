"""The Lua scripts of the Redis Streams broker: each change of a queue is one atomic script.

Every script is called with ``KEYS[1]`` the queue's stream, ``{prefix}:queue:{name}``
(``Q`` below; a Redis Cluster routes the call by it), and names the queue's other
keys from it; they share its hash tag, so they are in its slot:

* ``Q`` the stream: the messages ready to be received and those in flight, as
  entries in the format of :mod:`.broker_entries`; its consumer group
  ``polyport`` holds the in-flight ones in its pending entries list (the PEL:
  which node holds each, how many times it was delivered);
* ``Q:leases`` sorted set, entry ID → when its lease ends (ms), for the entries
  in flight: receives take over the ones whose lease ran out;
* ``Q:delayed`` sorted set, ref → when it is due (ms): messages sent with a
  delay, or waiting for their retry; the message itself is the hash ``Q:m:{ref}``
  (its entry's fields);
* ``Q:heads`` hash, ordering key → its head: the key's one message that is in
  the stream or delayed (its entry ID, or its ref when delayed). A key with no
  message left has no head;
* ``Q:k:{key}`` list of the refs (hashes ``Q:m:{ref}``) of the key's messages
  behind its head, in order; a parked one sent with a delay keeps its due time
  in the field ``due``;
* ``Q:ids`` sorted set, message id → until when it is known (ms): ``+inf`` while
  the message is waiting, in flight or dead, the acknowledgement plus the
  queue's dedup window once handled;
* ``Q:dead`` stream of dead letters (the entry's fields, with ``attempts``,
  ``error`` and ``died``) and ``Q:dead-ids`` hash, message id → its dead entry ID;
* ``Q:meta`` hash: ``refs`` (the counter refs are made from) and ``parked``
  (how many messages wait behind their key's head).

Times are Redis's (``TIME``), so every node agrees on leases and delays.
Scripts check before they write: Redis does not roll a script back when a
command in it fails.
"""

from __future__ import annotations

_PRELUDE = """
local Q = KEYS[1]
local GROUP = 'polyport'
local LEASES, DELAYED, HEADS, IDS = Q .. ':leases', Q .. ':delayed', Q .. ':heads', Q .. ':ids'
local DEAD, DEAD_IDS, META = Q .. ':dead', Q .. ':dead-ids', Q .. ':meta'
local T = redis.call('TIME')
local NOW = tonumber(T[1]) * 1000 + math.floor(tonumber(T[2]) / 1000)

local function seconds(ms) return string.format('%.3f', ms / 1000) end

-- A field's value in a flat list of fields (name, value, ...), or nil.
local function get(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end

-- Set a field (nil: remove it).
local function put(fields, name, value)
  for i = 1, #fields, 2 do
    if fields[i] == name then
      if value == nil then
        table.remove(fields, i)
        table.remove(fields, i)
      else
        fields[i + 1] = value
      end
      return
    end
  end
  if value ~= nil then
    fields[#fields + 1] = name
    fields[#fields + 1] = value
  end
end

-- The ordering key; an empty one (a foreign entry's) is none.
local function key_of(fields)
  local key = get(fields, 'key')
  if key == '' then return nil end
  return key
end

-- What an entry another client wrote may lack, before it is added again: its id (the
-- entry ID it came as) and when it was sent (that entry's time).
local function normalize(fields, eid)
  if not get(fields, 'id') then put(fields, 'id', eid) end
  if not get(fields, 'sent') then
    put(fields, 'sent', seconds(tonumber(string.match(eid, '^(%d+)'))))
  end
  put(fields, 'due', nil)
end

-- Keep a message's fields aside (delayed, or behind its key's head); its ref.
local function keep(fields)
  -- zero-padded: delayed messages due at the same millisecond go in the order they came
  local ref = string.format('r%012d', redis.call('HINCRBY', META, 'refs', 1))
  redis.call('HSET', Q .. ':m:' .. ref, unpack(fields))
  return ref
end

-- The fields kept under a ref, taken out.
local function take(ref)
  local m = Q .. ':m:' .. ref
  local fields = redis.call('HGETALL', m)
  redis.call('DEL', m)
  return fields
end

-- A message where it may be received: the stream, or the delayed set until due. Of the
-- key head names, it is the head: the key's marker follows it.
local function dispatch(fields, due, head)
  local marker
  if due and due > NOW then
    marker = keep(fields)
    redis.call('ZADD', DELAYED, due, marker)
  else
    marker = redis.call('XADD', Q, '*', unpack(fields))
  end
  if head then redis.call('HSET', HEADS, head, marker) end
end

-- The head of key (marked marker) left for good (handled, dead): the next message behind
-- it, if any, is the head now.
local function advance(key, marker)
  if redis.call('HGET', HEADS, key) ~= marker then return end
  local ref = redis.call('LPOP', Q .. ':k:' .. key)
  if not ref then
    redis.call('HDEL', HEADS, key)
    return
  end
  redis.call('HINCRBY', META, 'parked', -1)
  local fields = take(ref)
  local due = tonumber(get(fields, 'due'))
  put(fields, 'due', nil)
  dispatch(fields, due, key)
end

-- The key's head, if it has one. A head that is gone — another client deleted its entry
-- from the stream — lets the next one take its place, so the key is not blocked for ever.
local function head_of(key)
  for _ = 1, 100 do
    local head = redis.call('HGET', HEADS, key)
    if not head then return nil end
    local alive
    if string.sub(head, 1, 1) == 'r' then
      alive = redis.call('ZSCORE', DELAYED, head) ~= false
    else
      alive = redis.call('XRANGE', Q, head, head)[1] ~= nil
    end
    if alive then return head end
    advance(key, head)
  end
  return redis.call('HGET', HEADS, key)
end

-- A new message (sent or redriven): its key's head if the key has none, else behind it.
local function enqueue(fields, due)
  local key = key_of(fields)
  if key and head_of(key) then
    if due then put(fields, 'due', string.format('%.0f', due)) end
    redis.call('RPUSH', Q .. ':k:' .. key, keep(fields))
    redis.call('HINCRBY', META, 'parked', 1)
  else
    dispatch(fields, due, key)
  end
end

-- Whether owner holds entry eid under the receipt counted count (its delivery count).
local function holds(eid, owner, count)
  local p = redis.pcall('XPENDING', Q, GROUP, eid, eid, 1)
  if type(p) ~= 'table' or p.err or not p[1] then return false end
  return p[1][2] == owner and p[1][4] == tonumber(count)
end

-- The fields of entry eid if owner holds it under that receipt, else nil.
local function held(eid, owner, count)
  if not holds(eid, owner, count) then return nil end
  local e = redis.call('XRANGE', Q, eid, eid)
  if not e[1] then  -- deleted from the stream by another client: nothing to settle
    redis.call('XACK', Q, GROUP, eid)
    redis.call('ZREM', LEASES, eid)
    return nil
  end
  return e[1][2]
end

-- An entry in flight leaves the stream.
local function settled(eid)
  redis.call('XACK', Q, GROUP, eid)
  redis.call('XDEL', Q, eid)
  redis.call('ZREM', LEASES, eid)
end
"""

#: ARGV: per message, its id, its delay in ms (0: none), its number of fields, and its
#: fields (:func:`~.broker_entries.fields_of`). Answers per message 1, or 0 for an id
#: the queue knows.
SEND = (
    _PRELUDE
    + """
local out = {}
local i = 1
while i <= #ARGV do
  local id, delay, n = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local fields = {}
  for j = 1, n do fields[j] = ARGV[i + 2 + j] end
  i = i + 3 + n
  local known = redis.call('ZSCORE', IDS, id)
  if known and tonumber(known) > NOW then
    out[#out + 1] = 0
  else
    redis.call('ZADD', IDS, '+inf', id)
    put(fields, 'sent', seconds(NOW))
    enqueue(fields, delay > 0 and NOW + delay or nil)
    out[#out + 1] = 1
  end
end
return out
"""
)

#: ARGV[1] the consumer (the node's owner), [2] limit, [3] the lease in ms, [4] how
#: many delayed messages to move at most. Moves the delayed messages that are due into
#: the stream, takes over entries whose lease ran out (``XCLAIM``, which counts the
#: receipt), then reads new entries (``XREADGROUP``): an entry whose key has another
#: head (another client added it) goes behind that key's messages instead. Answers
#: ``{last entry ID, ms until something may be due (-1: nothing known), 1 if it
#: stopped before reading everything, deliveries...}``, each ``{entry ID, delivery
#: count, lease end in ms, fields}``.
RECEIVE = (
    _PRELUDE
    + """
local owner, limit, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
redis.pcall('XGROUP', 'CREATE', Q, GROUP, '0', 'MKSTREAM')  -- after a purge or a lost Redis
for _, ref in ipairs(redis.call('ZRANGE', DELAYED, '-inf', NOW, 'BYSCORE', 'LIMIT', 0,
    tonumber(ARGV[4]))) do
  redis.call('ZREM', DELAYED, ref)
  local fields = take(ref)
  if #fields > 0 then
    local eid = redis.call('XADD', Q, '*', unpack(fields))
    local key = key_of(fields)
    if key and redis.call('HGET', HEADS, key) == ref then redis.call('HSET', HEADS, key, eid) end
  end
end
local out = {}
for _, eid in ipairs(redis.call('ZRANGE', LEASES, '-inf', NOW, 'BYSCORE', 'LIMIT', 0, limit)) do
  -- FORCE: an entry that lost its place in the PEL (its consumer was deleted) is taken too
  local claimed = redis.call('XCLAIM', Q, GROUP, owner, 0, eid, 'FORCE')
  if claimed[1] and claimed[1][2] then
    local p = redis.call('XPENDING', Q, GROUP, eid, eid, 1)
    redis.call('ZADD', LEASES, NOW + lease, eid)
    out[#out + 1] = {eid, p[1][4], NOW + lease, claimed[1][2]}
  else
    redis.call('ZREM', LEASES, eid)  -- deleted from the stream meanwhile
  end
end
local budget = limit + 100  -- entries read at most, parked ones included
local want = limit - #out
while want > 0 and budget > 0 do
  local r = redis.call('XREADGROUP', 'GROUP', GROUP, owner, 'COUNT', math.min(want, budget),
    'STREAMS', Q, '>')
  if not r or not r[1] or #r[1][2] == 0 then break end
  for _, e in ipairs(r[1][2]) do
    budget = budget - 1
    local eid, fields = e[1], e[2]
    local key = key_of(fields)
    local head = key and head_of(key)
    if key and head and head ~= eid then
      redis.call('XACK', Q, GROUP, eid)
      redis.call('XDEL', Q, eid)
      normalize(fields, eid)
      redis.call('RPUSH', Q .. ':k:' .. key, keep(fields))
      redis.call('HINCRBY', META, 'parked', 1)
    else
      if key and not head then redis.call('HSET', HEADS, key, eid) end
      redis.call('ZADD', LEASES, NOW + lease, eid)
      out[#out + 1] = {eid, 1, NOW + lease, fields}
      want = want - 1
    end
  end
end
local wake = -1
for _, set in ipairs({DELAYED, LEASES}) do
  local first = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
  if first[2] then
    local left = math.max(0, tonumber(first[2]) - NOW)
    if wake < 0 or left < wake then wake = left end
  end
end
local last = redis.call('XREVRANGE', Q, '+', '-', 'COUNT', 1)
local reply = {last[1] and last[1][1] or '0-0', wake, (want > 0 and budget <= 0) and 1 or 0}
for _, d in ipairs(out) do reply[#reply + 1] = d end
return reply
"""
)

#: ARGV[1] the consumer, [2] the new lease in ms, then per entry: its ID and delivery
#: count. Renews the leases still held (and resets their idle time in the PEL, ``XCLAIM
#: JUSTID``, which counts nothing); answers how many.
EXTEND = (
    _PRELUDE
    + """
local owner, lease, renewed = ARGV[1], tonumber(ARGV[2]), 0
for i = 3, #ARGV, 2 do
  local eid = ARGV[i]
  if holds(eid, owner, ARGV[i + 1]) then
    redis.call('ZADD', LEASES, NOW + lease, eid)
    redis.call('XCLAIM', Q, GROUP, owner, 0, eid, 'JUSTID')
    renewed = renewed + 1
  end
end
return renewed
"""
)

#: ARGV[1] entry ID, [2] the consumer, [3] the delivery count, [4] outcome, then: for
#: ``ack`` [5] the dedup window in ms; ``retry`` [5] the delay in ms and [6] the error;
#: ``dead`` [5] the error; ``release`` nothing. Answers 1, or 0 if the consumer does not
#: hold the entry under that receipt (its lease ran out and another took it, or it was
#: settled). Every outcome takes the entry out of the stream; retry, release and dead
#: keep the message (added again, delayed, or on the dead stream) with its attempts so
#: far (the receipt counted, but for a release) and its error.
SETTLE = (
    _PRELUDE
    + """
local eid, count, outcome = ARGV[1], tonumber(ARGV[3]), ARGV[4]
local fields = held(eid, ARGV[2], count)
if not fields then return 0 end
settled(eid)
local key = key_of(fields)
local head = nil
if key and redis.call('HGET', HEADS, key) == eid then head = key end
if outcome == 'ack' then
  redis.call('ZADD', IDS, NOW + tonumber(ARGV[5]), get(fields, 'id') or eid)
  if head then advance(head, eid) end
  return 1
end
normalize(fields, eid)
local attempts = (tonumber(get(fields, 'attempts')) or 0) + count
if outcome == 'release' then
  put(fields, 'attempts', tostring(math.max(0, attempts - 1)))
  dispatch(fields, nil, head)
elseif outcome == 'retry' then
  put(fields, 'attempts', tostring(attempts))
  put(fields, 'error', ARGV[6])
  dispatch(fields, NOW + tonumber(ARGV[5]), head)
else
  put(fields, 'attempts', tostring(attempts))
  put(fields, 'error', ARGV[5])
  put(fields, 'died', seconds(NOW))
  local id = get(fields, 'id')
  redis.call('HSET', DEAD_IDS, id, redis.call('XADD', DEAD, '*', unpack(fields)))
  redis.call('ZADD', IDS, '+inf', id)  -- known while it is a dead letter
  if head then advance(head, eid) end
end
return 1
"""
)

#: ARGV[1] ``ids`` then message ids, or ``all`` then a batch size. Makes dead letters
#: new messages again (attempts 0, sent now; of a key, behind the key's messages if
#: it has any); answers how many. ``all`` redrives the oldest ``batch``.
REDRIVE = (
    _PRELUDE
    + """
local function revive(deid)
  local e = redis.call('XRANGE', DEAD, deid, deid)
  if not e[1] then return 0 end
  redis.call('XDEL', DEAD, deid)
  local fields = e[1][2]
  local id = get(fields, 'id')
  if id and redis.call('HGET', DEAD_IDS, id) == deid then redis.call('HDEL', DEAD_IDS, id) end
  put(fields, 'died', nil)
  put(fields, 'attempts', '0')
  put(fields, 'sent', seconds(NOW))
  enqueue(fields, nil)
  return 1
end
local count = 0
if ARGV[1] == 'ids' then
  for i = 2, #ARGV do
    local deid = redis.call('HGET', DEAD_IDS, ARGV[i])
    if deid then count = count + revive(deid) end
  end
else
  for _, e in ipairs(redis.call('XRANGE', DEAD, '-', '+', 'COUNT', tonumber(ARGV[2]))) do
    count = count + revive(e[1])
  end
end
return count
"""
)

#: ARGV[1] limit. Answers up to ``limit`` messages waiting or in flight: the stream's
#: entries in order, then the delayed ones by due time, then those behind their key's
#: head; each ``{state, cursor, delivery count, due or lease end in ms (-1: none), fields}``.
PEEK = (
    _PRELUDE
    + """
local limit = tonumber(ARGV[1])
local out = {}
local entries = redis.call('XRANGE', Q, '-', '+', 'COUNT', limit)
local pending = {}
if entries[1] then
  local p = redis.pcall('XPENDING', Q, GROUP, entries[1][1], entries[#entries][1], limit)
  if type(p) == 'table' and not p.err then
    for _, x in ipairs(p) do pending[x[1]] = x[4] end
  end
end
for _, e in ipairs(entries) do
  local count = pending[e[1]]
  if count then
    out[#out + 1] = {'in_flight', e[1], count, tonumber(redis.call('ZSCORE', LEASES, e[1])) or -1,
      e[2]}
  else
    out[#out + 1] = {'waiting', e[1], 0, tonumber(string.match(e[1], '^(%d+)')), e[2]}
  end
end
if #out < limit then
  local delayed = redis.call('ZRANGE', DELAYED, 0, limit - #out - 1, 'WITHSCORES')
  for j = 1, #delayed, 2 do
    out[#out + 1] = {'waiting', delayed[j], 0, tonumber(delayed[j + 1]),
      redis.call('HGETALL', Q .. ':m:' .. delayed[j])}
  end
end
local cursor, rounds = '0', 0
while #out < limit and rounds < 20 do
  local scan = redis.call('HSCAN', HEADS, cursor, 'COUNT', 100)
  for j = 1, #scan[2], 2 do
    local refs = redis.call('LRANGE', Q .. ':k:' .. scan[2][j], 0, limit - #out - 1)
    for _, ref in ipairs(refs) do
      out[#out + 1] = {'waiting', ref, 0, -1, redis.call('HGETALL', Q .. ':m:' .. ref)}
    end
    if #out >= limit then break end
  end
  cursor, rounds = scan[1], rounds + 1
  if cursor == '0' then break end
end
return out
"""
)

#: No ARGV. Answers ``{waiting, in flight, dead}``: waiting are the stream's entries not
#: in the PEL, the delayed ones and those behind their key's head.
STATS = (
    _PRELUDE
    + """
local p = redis.pcall('XPENDING', Q, GROUP)
local in_flight = 0
if type(p) == 'table' and not p.err then in_flight = p[1] end
local ready = math.max(0, redis.call('XLEN', Q) - in_flight)
local parked = tonumber(redis.call('HGET', META, 'parked')) or 0
return {ready + redis.call('ZCARD', DELAYED) + parked, in_flight, redis.call('XLEN', DEAD)}
"""
)

#: No ARGV. Deletes every message of the queue (the stream's entries, the delayed and
#: parked ones, the dead letters) and every id it knew: every key of the queue, but for
#: a stream other clients' consumer groups read, which stays, emptied, with the group
#: started over. Answers how many messages there were.
PURGE = (
    _PRELUDE
    + """
local count = redis.call('XLEN', Q) + redis.call('ZCARD', DELAYED) + redis.call('XLEN', DEAD)
  + (tonumber(redis.call('HGET', META, 'parked')) or 0)
for _, ref in ipairs(redis.call('ZRANGE', DELAYED, 0, -1)) do
  redis.call('DEL', Q .. ':m:' .. ref)
end
for _, key in ipairs(redis.call('HKEYS', HEADS)) do
  local list = Q .. ':k:' .. key
  for _, ref in ipairs(redis.call('LRANGE', list, 0, -1)) do
    redis.call('DEL', Q .. ':m:' .. ref)
  end
  redis.call('DEL', list)
end
redis.call('DEL', LEASES, DELAYED, HEADS, IDS, DEAD, DEAD_IDS, META)
local others = false
local groups = redis.pcall('XINFO', 'GROUPS', Q)
if type(groups) == 'table' and not groups.err then
  for _, g in ipairs(groups) do
    for j = 1, #g, 2 do
      if g[j] == 'name' and g[j + 1] ~= GROUP then others = true end
    end
  end
end
if others then
  redis.call('XTRIM', Q, 'MAXLEN', 0)
  redis.pcall('XGROUP', 'DESTROY', Q, GROUP)
  redis.call('XGROUP', 'CREATE', Q, GROUP, '0', 'MKSTREAM')
else
  redis.call('DEL', Q)  -- a receive or send makes it again (a node's reply queue: never)
end
return count
"""
)

#: ARGV[1] batch, [2] ms a consumer holding nothing may stay quiet. Forgets up to
#: ``batch`` ids whose window has passed (the lowest scores: the ids of live messages
#: are ``+inf``), and deletes the group's consumers that hold nothing and were quiet
#: that long (nodes gone); answers how many ids.
EXPIRE = (
    _PRELUDE
    + """
local n = math.min(redis.call('ZCOUNT', IDS, '-inf', NOW), tonumber(ARGV[1]))
if n > 0 then redis.call('ZREMRANGEBYRANK', IDS, 0, n - 1) end
local consumers = redis.pcall('XINFO', 'CONSUMERS', Q, GROUP)
if type(consumers) == 'table' and not consumers.err then
  for _, c in ipairs(consumers) do
    local info = {}
    for j = 1, #c, 2 do info[c[j]] = c[j + 1] end
    if info['pending'] == 0 and tonumber(info['idle']) > tonumber(ARGV[2]) then
      redis.call('XGROUP', 'DELCONSUMER', Q, GROUP, info['name'])
    end
  end
end
return n
"""
)
