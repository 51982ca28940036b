"""The Lua scripts of the Redis event log: each operation is one atomic script.

Every script is called with ``KEYS[1]`` the log's meta hash (so a Redis
Cluster routes it to the slot every key of the log shares) and these first
arguments:

* ``ARGV[1]`` the log epoch the caller knows (``""`` before it knows one);
* ``ARGV[2]`` a random salt, from which a new log or a new channel draws its epoch;
* ``ARGV[3]`` the key base ``{prefix}`` the other keys are named from.

A script first makes sure the log exists (a Redis that lost its data holds no
meta hash: the first script to notice starts a new log with a new epoch) and
answers ``{"epoch", epoch}`` without doing anything if the caller's epoch is not
the log's, so no node acts on a log it does not know. Scripts check before
they write: Redis does not roll a script back when a command in it fails.

Keys under ``{prefix}``:

* ``:meta`` hash ``epoch``, ``seq`` (the last seq assigned);
* ``:log`` stream, one entry per held event, ID ``{seq}-0``, fields ``channel``, ``time``;
* ``:events:{channel}`` stream, ID ``{seq}-{offset}``, fields ``type``, ``time``, ``data``;
* ``:channel:{channel}`` hash ``epoch``, ``last`` (offset), ``toff``, ``tseq`` (trimmed);
* ``:epochs`` hash channel epoch → channel name;
* ``:trimmed`` sorted set of channels that lost events, scored by ``tseq``.
"""

from __future__ import annotations

_PRELUDE = """
local base = ARGV[3]
local function fmt(n) return string.format('%d', n) end
local function parse_id(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local function draw(seed) return string.sub(redis.sha1hex(ARGV[2] .. '/' .. seed), 1, 13) end
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
local epoch, head = meta[1], tonumber(meta[2])
if not epoch then
  epoch, head = draw(''), 0  -- no channel is named '': a seed of its own
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
end
if epoch ~= ARGV[1] then return {'epoch', epoch} end
"""

#: Append events in order. ARGV[4] max_events, [5] slack, [6] n channels, then
#: n channel names, then per event: channel index, type, time, data.
#: Answers one string: the first seq, each channel's epoch and each event's
#: offset, separated by spaces (one reply to parse, not one per value).
APPEND = (
    _PRELUDE
    + """
local max, slack, n = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local reply = {fmt(head + 1)}
local names, infos, streams, lasts, trimmed = {}, {}, {}, {}, {}
for i = 1, n do
  local name = ARGV[6 + i]
  local info = base .. ':channel:' .. name
  local found = redis.call('HMGET', info, 'epoch', 'last', 'toff')
  if found[1] then
    reply[1 + i], lasts[i], trimmed[i] = found[1], tonumber(found[2]), tonumber(found[3])
  else
    -- A channel's history begins: draw an epoch no other channel of this log has.
    local e = draw(name)
    while redis.call('HSETNX', base .. ':epochs', e, name) == 0 do e = draw(e) end
    redis.call('HSET', info, 'epoch', e, 'last', 0, 'toff', 0, 'tseq', 0)
    reply[1 + i], lasts[i], trimmed[i] = e, 0, 0
  end
  names[i], infos[i], streams[i] = name, info, base .. ':events:' .. name
end
local log = base .. ':log'
local seq = head
for j = 7 + n, #ARGV, 4 do
  local i = tonumber(ARGV[j])
  seq = seq + 1
  lasts[i] = lasts[i] + 1
  local time = ARGV[j + 2]
  redis.call('XADD', streams[i], fmt(seq) .. '-' .. fmt(lasts[i]),
    'type', ARGV[j + 1], 'time', time, 'data', ARGV[j + 3])
  redis.call('XADD', log, fmt(seq) .. '-0', 'channel', names[i], 'time', time)
  reply[#reply + 1] = fmt(lasts[i])
end
redis.call('HSET', KEYS[1], 'seq', fmt(seq))
for i = 1, n do
  redis.call('HSET', infos[i], 'last', fmt(lasts[i]))
  -- Past the bound by more than the slack, the oldest go (in batches: one trim
  -- per slack appends) and the channel remembers the last one it lost. It holds
  -- the offsets after the trimmed one, without a gap.
  local held = lasts[i] - trimmed[i]
  if held > max + slack then
    local gone = redis.call('XRANGE', streams[i], '-', '+', 'COUNT', held - max)
    local ids = {}
    for k, entry in ipairs(gone) do
      local s = parse_id(entry[1])
      ids[#ids + 1] = fmt(s) .. '-0'
      if #ids == 500 or k == #gone then
        redis.call('XDEL', log, unpack(ids))
        ids = {}
      end
    end
    local s, o = parse_id(gone[#gone][1])
    redis.call('XTRIM', streams[i], 'MINID', fmt(s + 1))
    redis.call('HSET', infos[i], 'toff', fmt(o), 'tseq', fmt(s))
    redis.call('ZADD', base .. ':trimmed', fmt(s), names[i])
  end
end
return table.concat(reply, ' ')
"""
)

# Reads answer {"ok", head, reached, page, {channel, epoch, ...}}: the page is one
# string, per event a line "{seq}-{offset} {channel number} {type length} {data
# length} {time}" and then its type and data (one reply string per page, not five
# per event: parsing them is most of a reader's time), or {"gap", head, channel,
# toff, tseq} when a matching channel lost events after the position, or
# {"ahead", head}.

_PATTERNS = """
local exact, wild, memo = {}, {}, {}
local function split(text)
  local parts = {}
  for part in string.gmatch(text, '[^/]+') do parts[#parts + 1] = part end
  return parts
end
for i = 8, #ARGV do
  if string.find(ARGV[i], '[+#]') then
    wild[#wild + 1] = split(ARGV[i])
  else
    exact[ARGV[i]] = true
  end
end
-- MQTT matching as Pattern.matches: '+' one segment, '#' the rest and the parent.
local function matches(pattern, parts)
  for i, segment in ipairs(pattern) do
    if segment == '#' then return true end
    if i > #parts or (segment ~= '+' and segment ~= parts[i]) then return false end
  end
  return #parts == #pattern
end
local function wanted(name)
  local hit = memo[name]
  if hit == nil then
    hit = exact[name] == true
    if not hit and #wild > 0 then
      local parts = split(name)
      for _, pattern in ipairs(wild) do
        if matches(pattern, parts) then hit = true break end
      end
    end
    memo[name] = hit
  end
  return hit
end
"""

_READ_HEAD = """
local after, limit, check = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6] == '1'
if after > head then return {'ahead', head} end
local out, numbers, channels = {}, {}, {}
local function emit(entry, name, epoch)
  local number = numbers[name]
  if not number then
    channels[#channels + 1] = name
    channels[#channels + 1] = epoch or redis.call('HGET', base .. ':channel:' .. name, 'epoch')
    number = #channels / 2
    numbers[name] = number
  end
  local fields = entry[2]
  local type, data = fields[2], fields[6]
  out[#out + 1] = entry[1] .. ' ' .. number .. ' ' .. #type .. ' ' .. #data .. ' ' .. fields[4]
    .. '\\n' .. type .. data
end
"""

#: Read exact channels: ARGV[4] after, [5] limit, [6] check, [7] unused, then the
#: channel names. Each channel gives up to ``limit`` events; the caller merges.
READ_CHANNELS = (
    _PRELUDE
    + _READ_HEAD
    + """
for i = 8, #ARGV do
  local name = ARGV[i]
  local info = redis.call('HMGET', base .. ':channel:' .. name, 'epoch', 'toff', 'tseq')
  if info[1] then
    if check and tonumber(info[3]) > after then
      return {'gap', head, name, info[2], info[3]}
    end
    local entries = redis.call('XRANGE', base .. ':events:' .. name, fmt(after + 1), '+',
      'COUNT', limit)
    for _, entry in ipairs(entries) do emit(entry, name, info[1]) end
  end
end
return {'ok', head, head, table.concat(out), channels}
"""
)

#: Read by scanning the log in seq order: ARGV[4] after, [5] limit, [6] check,
#: [7] how many log entries to look at, then the patterns. ``reached`` is the
#: last seq looked at (the head once the log is scanned to its end).
READ_PATTERNS = (
    _PRELUDE
    + _READ_HEAD
    + _PATTERNS
    + """
if check then
  -- Only channels that lost events after the position can fail it.
  for _, name in ipairs(redis.call('ZRANGE', base .. ':trimmed', '(' .. fmt(after), '+inf',
      'BYSCORE')) do
    if wanted(name) then
      local info = redis.call('HMGET', base .. ':channel:' .. name, 'toff', 'tseq')
      return {'gap', head, name, info[1], info[2]}
    end
  end
end
-- Look at up to ARGV[7] log entries, a few at a time: as many as the page still
-- needs (twice over), so a page found early converts no more entries than that.
local budget = tonumber(ARGV[7])
local reached, count, hit, order = after, 0, {}, {}
while count < limit and budget > 0 do
  local step = math.min(budget, math.max(2 * (limit - count), 64))
  local entries = redis.call('XRANGE', base .. ':log', fmt(reached + 1), '+', 'COUNT', step)
  budget = budget - step
  for _, entry in ipairs(entries) do
    reached = parse_id(entry[1])
    local name = entry[2][2]
    if wanted(name) then
      if not hit[name] then
        hit[name] = true
        order[#order + 1] = name
      end
      count = count + 1
      if count == limit then break end
    end
  end
  if #entries < step then
    if count < limit then reached = head end  -- the log is scanned to its end
    break
  end
end
-- Every event of a matching channel in (after, reached] is wanted: one range per
-- channel, not one lookup per event (the caller orders them by seq).
for _, name in ipairs(order) do
  local range = redis.call('XRANGE', base .. ':events:' .. name, fmt(after + 1), fmt(reached))
  for _, entry in ipairs(range) do emit(entry, name) end
end
return {'ok', head, reached, table.concat(out), channels}
"""
)

#: Where a cursor resumes: ARGV[4] a channel epoch ("" for none: just the
#: head), [5] an offset. Answers ``{"ok", head}`` or ``{"ok", head, channel,
#: epoch, last, toff, tseq, first held seq, seq of the offset}`` (false: none).
RESOLVE = (
    _PRELUDE
    + """
if ARGV[4] == '' then return {'ok', head} end
local name = redis.call('HGET', base .. ':epochs', ARGV[4])
if not name then return {'ok', head} end
local info = redis.call('HMGET', base .. ':channel:' .. name, 'epoch', 'last', 'toff', 'tseq')
local stream = base .. ':events:' .. name
local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
local want, found = tonumber(ARGV[5]), false
if first then
  local fs, fo = parse_id(first[1])
  local ls, lo = parse_id(last[1])
  if want == fo then found = fs elseif want == lo then found = ls
  elseif want > fo and want < lo then
    -- Offsets and seqs grow together in a channel: bisect on seq, keeping the
    -- wanted event's seq strictly between lo and hi.
    local low, high = fs, ls
    while high - low > 1 do
      local mid = low + math.floor((high - low) / 2)
      local s, o = parse_id(redis.call('XRANGE', stream, fmt(mid), '+', 'COUNT', 1)[1][1])
      if o == want then found = s break end
      if o < want then low = s else high = mid end
    end
  end
  first = fs
end
return {'ok', head, name, info[1], info[2], info[3], info[4], first or false, found}
"""
)

#: Drop events older than ARGV[4] (a time), looking at up to ARGV[5] log entries
#: from the oldest and stopping at the first that is not older. Answers
#: ``{"ok", dropped, 1 if there may be more}``.
TRIM_OLDER = (
    _PRELUDE
    + """
local cut, batch = tonumber(ARGV[4]), tonumber(ARGV[5])
local log = base .. ':log'
local entries = redis.call('XRANGE', log, '-', '+', 'COUNT', batch)
local through, names, more = nil, {}, #entries == batch
for _, entry in ipairs(entries) do
  if tonumber(entry[2][4]) >= cut then
    more = false
    break
  end
  through = parse_id(entry[1])
  names[entry[2][2]] = true
end
if not through then return {'ok', 0, 0} end
-- Every held event up to `through` is older than the cut: drop them all.
local dropped = 0
for name in pairs(names) do
  local stream = base .. ':events:' .. name
  local last = redis.call('XREVRANGE', stream, fmt(through), '-', 'COUNT', 1)[1]
  if last then
    local s, o = parse_id(last[1])
    dropped = dropped + redis.call('XTRIM', stream, 'MINID', fmt(through + 1))
    redis.call('HSET', base .. ':channel:' .. name, 'toff', fmt(o), 'tseq', fmt(s))
    redis.call('ZADD', base .. ':trimmed', fmt(s), name)
  end
end
redis.call('XTRIM', log, 'MINID', fmt(through + 1))
return {'ok', dropped, more and 1 or 0}
"""
)

#: Every channel: ``{"ok", {name, epoch, last, toff, tseq, ...}}``.
CHANNELS = (
    _PRELUDE
    + """
local out = {}
local all = redis.call('HGETALL', base .. ':epochs')
for i = 2, #all, 2 do
  local info = redis.call('HMGET', base .. ':channel:' .. all[i], 'epoch', 'last', 'toff', 'tseq')
  out[#out + 1] = all[i]
  for k = 1, 4 do out[#out + 1] = info[k] end
end
return {'ok', out}
"""
)
