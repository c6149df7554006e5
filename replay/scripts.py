"""The replay's key layout and the Lua scripts that change it atomically.

Keys of run R (``P = "orrery:R:"``)::

    P config              hash   format; epoch (random, set with the namespace: a sampler that sees it
                                 change knows the data was wiped and reloads); capacity (agent steps) and
                                 spec (ReplaySpec JSON: task, frame, action dtype and shape), both set once
                                 by the process that creates the run's replay (the run driver)
    P stats               hash   head, tail (stored sequence numbers), episodes, steps, bytes; counters
                                 inserts, inserted_steps, evictions, evicted_steps, rejected, duplicates,
                                 corrupt_episodes, samples (batches), sampled_steps
    P seen                set    every episode id ever stored (idempotency survives eviction)
    P ids                 hash   episode id -> sequence number, episodes in service only
    P lens                list   T of episodes head .. tail, in order (the samplers' index);
                                 -1 for a quarantined episode (no chunk starts)
    P quarantine          hash   sequence number -> JSON {id, seq, reason, time} of each corrupt episode
    P e:<seq>:o           string observations o_0 .. o_T, (T+1) frames of H*W*C bytes
    P e:<seq>:a           string actions aligned with frames: zero, a_0 .. a_{T-1}  (T+1 rows)
    P e:<seq>:r           string rewards aligned with frames: 0, r_0 .. r_{T-1}     (T+1 float32)
    P e:<seq>:d           string terminals aligned with frames: 0, d_0 .. d_{T-1}   (T+1 bytes 0/1)
    P e:<seq>:c           string row checksums c_0 .. c_T (T+1 little-endian uint64, replay/checksum.py)
    P e:<seq>:m           hash   id, steps, bytes (of o, a, r, d), header (the episode codec's JSON header)

Arrays are raw little-endian, as in the episode codec. Storing actions, rewards and
terminals shifted by one (row t belongs to frame o_t: the action before it, the reward and
terminal flag of the step into it) makes every chunk, including one at k = 0, the same row
range [k, k+L) of all five strings. Sequence numbers are never reused, so the key of an
episode never names other data: a read finds the episode whole or not at all.

Every script reads and checks all the state it depends on before its first write, because
Redis does not roll back the writes of a script that fails half-way. State it cannot use is
answered with the status -3, the key and a short problem (never a stored value), and nothing
is written. The index (``lens``, ``stats`` head/tail) is the source of truth for an episode's
length; its byte size follows from the run's spec: (T+1) x row bytes.
"""

from __future__ import annotations

FORMAT = "orrery.replay/2"

# Helpers shared by the scripts (prepended to each).
_PRELUDE = """
local function int(value)  -- a stored integer: nil when absent, false when it is not one
  if not value then return nil end
  if type(value) ~= 'string' or #value > 15 or not string.find(value, '^%-?%d+$') then return false end
  return tonumber(value)
end
local function check_types(wanted)  -- {{key, type}, ...}: each absent or of that type
  for _, pair in ipairs(wanted) do
    local found = redis.call('TYPE', pair[1])['ok']
    if found ~= 'none' and found ~= pair[2] then return {-3, pair[1], 'is a ' .. found .. ', not a ' .. pair[2]} end
  end
end
local COUNTERS = {'head', 'tail', 'episodes', 'steps', 'bytes', 'inserts', 'inserted_steps', 'evictions',
                  'evicted_steps', 'rejected', 'duplicates', 'corrupt_episodes', 'samples', 'sampled_steps'}
local function read_stats(stats)
  local raw = redis.call('HMGET', stats, unpack(COUNTERS))
  local st = {}
  for i, name in ipairs(COUNTERS) do
    local value = int(raw[i])
    if value == false or (value and value < 0) then
      return nil, {-3, stats, 'field ' .. name .. ' is not a non-negative integer'}
    end
    st[name] = value or 0
  end
  if not raw[1] then st.head = 1 end
  if st.head < 1 or st.tail < st.head - 1 then
    return nil, {-3, stats, 'fields head and tail do not describe a range of sequence numbers'}
  end
  return st
end
local function check_lens(lens, st)
  local count = redis.call('LLEN', lens)
  if count ~= st.tail - st.head + 1 then
    return {-3, lens, 'holds ' .. count .. ' lengths for the ' .. (st.tail - st.head + 1) .. ' episodes head..tail'}
  end
end
local function length_at(lens, st, seq)  -- T of episode seq from the index (-1: quarantined)
  local steps = int(redis.call('LINDEX', lens, seq - st.head))
  if not steps or (steps < 1 and steps ~= -1) then
    return nil, {-3, lens, 'entry ' .. (seq - st.head) .. ' is not an episode length'}
  end
  return steps
end
local function positive_ints(list)
  if type(list) ~= 'table' then return nil end
  local product = 1
  for _, n in ipairs(list) do
    if type(n) ~= 'number' or n < 1 or n % 1 ~= 0 then return nil end
    product = product * n
  end
  return product
end
local function read_spec(config, raw)  -- nil when absent; nil, error when not a spec
  if not raw then return nil end
  local bad = {-3, config, 'field spec is not a replay spec (JSON: task, frame, action_dtype, action_shape)'}
  local ok, spec = pcall(cjson.decode, raw)
  if not ok or type(spec) ~= 'table' or type(spec.task) ~= 'string' or type(spec.frame) ~= 'table'
      or #spec.frame ~= 3 then
    return nil, bad
  end
  local itemsize = ({['<f4'] = 4, ['<i8'] = 8})[spec.action_dtype]
  local frame, action = positive_ints(spec.frame), positive_ints(spec.action_shape)
  if not itemsize or not frame or not action then return nil, bad end
  spec.row_bytes = frame + itemsize * action + 5
  return spec
end
local function same_list(x, y)
  if #x ~= #y then return false end
  for i = 1, #x do
    if x[i] ~= y[i] then return false end
  end
  return true
end
local function id_of(ids, seq, candidate)  -- the id that maps to seq (candidate first, else a scan), or false
  local wanted = tostring(seq)
  if candidate and redis.call('HGET', ids, candidate) == wanted then return candidate end
  local all = redis.call('HGETALL', ids)
  for i = 1, #all, 2 do
    if all[i + 1] == wanted then return all[i] end
  end
  return false
end
local function meta_id(key)  -- the id field of metadata hash key, or false
  if redis.call('TYPE', key)['ok'] ~= 'hash' then return false end
  return redis.call('HGET', key, 'id')
end
"""

# KEYS: config, stats, seen, ids, lens, quarantine.
# ARGV: prefix, id, steps, bytes, spec (the episode's, canonical JSON), header, o, a, r, d, c, time.
# Returns {1, seq, evicted, corrupt} stored (corrupt: evicted episodes whose metadata was bad);
# {0, 0, 0, 0} duplicate; {-1, reason, detail} rejected (reason task/frame/action with the stored spec,
# or capacity with its value); {-2, what} capacity or spec not set; {-3, key, problem} unusable state.
ADD = _PRELUDE + """
local config, stats, seen, ids, lens, quarantine = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local prefix, id = ARGV[1], ARGV[2]
local steps, nbytes = tonumber(ARGV[3]), tonumber(ARGV[4])
local bad = check_types({{config, 'hash'}, {stats, 'hash'}, {seen, 'set'}, {ids, 'hash'}, {lens, 'list'},
                         {quarantine, 'hash'}})
if bad then return bad end
local st, err = read_stats(stats)
if not st then return err end
local cfg = redis.call('HMGET', config, 'capacity', 'spec')
local capacity = int(cfg[1])
if capacity == false or (capacity and capacity < 1) then
  return {-3, config, 'field capacity is not a positive integer'}
end
local spec
spec, err = read_spec(config, cfg[2])
if err then return err end
bad = check_lens(lens, st)
if bad then return bad end

if redis.call('SISMEMBER', seen, id) == 1 then
  redis.call('HSET', stats, 'duplicates', st.duplicates + 1)
  return {0, 0, 0, 0}
end
if not capacity then return {-2, 'capacity'} end
if not spec then return {-2, 'spec'} end
local mine = cjson.decode(ARGV[5])
local differs = nil
if mine.task ~= spec.task then
  differs = 'task'
elseif not same_list(mine.frame, spec.frame) then
  differs = 'frame'
elseif mine.action_dtype ~= spec.action_dtype or not same_list(mine.action_shape, spec.action_shape) then
  differs = 'action'
end
if differs or steps > capacity then
  redis.call('HSET', stats, 'rejected', st.rejected + 1)
  if differs then return {-1, differs, cfg[2]} end
  return {-1, 'capacity', capacity}
end

-- Plan the evictions (reads only): oldest first until the new episode fits.
local head, tail, stored, size = st.head, st.tail, st.steps, st.bytes
local plan, evicted, evicted_steps, corrupt = {}, 0, 0, 0
while stored + steps > capacity and head <= tail do
  local length
  length, err = length_at(lens, st, head)
  if err then return err end
  local entry = {seq = head, steps = length}
  if length ~= -1 then  -- (a quarantined episode was taken out of service already)
    local e = prefix .. 'e:' .. head .. ':'
    local candidate = meta_id(e .. 'm')
    local meta = candidate and redis.call('HMGET', e .. 'm', 'steps', 'bytes') or {}
    entry.corrupt = not (candidate and int(meta[1]) == length and int(meta[2]) == (length + 1) * spec.row_bytes
                         and redis.call('HGET', ids, candidate) == tostring(head))
    entry.id = candidate
    if entry.corrupt then entry.id = id_of(ids, head, candidate) end  -- (never trust a bad hash's id)
    stored = stored - length
    size = size - (length + 1) * spec.row_bytes
    evicted, evicted_steps = evicted + 1, evicted_steps + length
    if entry.corrupt then corrupt = corrupt + 1 end
  end
  plan[#plan + 1] = entry
  head = head + 1
end
if head > tail or stored < 0 or size < 0 then stored, size = 0, 0 end

-- Everything is known to be usable: write.
for _, entry in ipairs(plan) do
  if entry.steps ~= -1 then
    local e = prefix .. 'e:' .. entry.seq .. ':'
    redis.call('DEL', e .. 'o', e .. 'a', e .. 'r', e .. 'd', e .. 'c', e .. 'm')
    if entry.id then redis.call('HDEL', ids, entry.id) end
    if entry.corrupt then
      redis.call('HSET', quarantine, entry.seq, cjson.encode({id = entry.id or '', seq = entry.seq,
                 reason = 'bad metadata found at eviction', time = ARGV[12]}))
    end
  end
end
if #plan > 0 then redis.call('LTRIM', lens, #plan, -1) end
tail = tail + 1
local e = prefix .. 'e:' .. tail .. ':'
redis.call('SET', e .. 'o', ARGV[7])
redis.call('SET', e .. 'a', ARGV[8])
redis.call('SET', e .. 'r', ARGV[9])
redis.call('SET', e .. 'd', ARGV[10])
redis.call('SET', e .. 'c', ARGV[11])
redis.call('HSET', e .. 'm', 'id', id, 'steps', steps, 'bytes', nbytes, 'header', ARGV[6])
redis.call('SADD', seen, id)
redis.call('HSET', ids, id, tail)
redis.call('RPUSH', lens, steps)
redis.call('HSET', stats, 'head', head, 'tail', tail, 'episodes', redis.call('HLEN', ids),
           'steps', stored + steps, 'bytes', size + nbytes, 'inserts', st.inserts + 1,
           'inserted_steps', st.inserted_steps + steps, 'evictions', st.evictions + evicted,
           'evicted_steps', st.evicted_steps + evicted_steps, 'corrupt_episodes', st.corrupt_episodes + corrupt)
return {1, tail, evicted, corrupt}
"""

# KEYS: stats, lens, config. ARGV: the caller's tail.
# Returns {1, head, tail, first, {T of first .. tail}, epoch, corrupt_episodes} or {-3, key, problem}.
INDEX = _PRELUDE + """
local bad = check_types({{KEYS[1], 'hash'}, {KEYS[2], 'list'}, {KEYS[3], 'hash'}})
if bad then return bad end
local st, err = read_stats(KEYS[1])
if not st then return err end
bad = check_lens(KEYS[2], st)
if bad then return bad end
local first = math.max(tonumber(ARGV[1]) + 1, st.head)
local steps = {}
if first <= st.tail then
  steps = redis.call('LRANGE', KEYS[2], first - st.head, st.tail - st.head)
end
return {1, st.head, st.tail, first, steps, redis.call('HGET', KEYS[3], 'epoch'), st.corrupt_episodes}
"""

# KEYS: config, stats, ids, lens, quarantine. ARGV: prefix, seq, epoch, reason, time.
# Takes a corrupt episode out of service: deletes its keys, sets its length in lens to -1, subtracts
# its steps and bytes, removes its id from ids, records it in quarantine and counts it. Idempotent.
# Returns {1, id} quarantined; {0, why} nothing to do (epoch: the namespace changed, evicted,
# quarantined: done before); {-3, key, problem} unusable state.
QUARANTINE = _PRELUDE + """
local config, stats, ids, lens, quarantine = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, seq = ARGV[1], tonumber(ARGV[2])
local bad = check_types({{config, 'hash'}, {stats, 'hash'}, {ids, 'hash'}, {lens, 'list'}, {quarantine, 'hash'}})
if bad then return bad end
if redis.call('HGET', config, 'epoch') ~= ARGV[3] then return {0, 'epoch'} end
local st, err = read_stats(stats)
if not st then return err end
local spec
spec, err = read_spec(config, redis.call('HGET', config, 'spec'))
if err then return err end
if not spec then return {-3, config, 'has no field spec'} end
bad = check_lens(lens, st)
if bad then return bad end
if seq < st.head or seq > st.tail then return {0, 'evicted'} end
local steps
steps, err = length_at(lens, st, seq)
if err then return err end
if steps == -1 then return {0, 'quarantined'} end
local e = prefix .. 'e:' .. seq .. ':'
local id = id_of(ids, seq, meta_id(e .. 'm'))

redis.call('DEL', e .. 'o', e .. 'a', e .. 'r', e .. 'd', e .. 'c', e .. 'm')
redis.call('LSET', lens, seq - st.head, -1)
if id then redis.call('HDEL', ids, id) end
redis.call('HSET', stats, 'steps', math.max(0, st.steps - steps),
           'bytes', math.max(0, st.bytes - (steps + 1) * spec.row_bytes),
           'episodes', redis.call('HLEN', ids), 'corrupt_episodes', st.corrupt_episodes + 1)
redis.call('HSET', quarantine, seq, cjson.encode({id = id or '', seq = seq, reason = ARGV[4], time = ARGV[5]}))
return {1, id or ''}
"""

# KEYS: stats, ids, lens, config. ARGV: prefix, id. Reads one whole episode consistently with the index.
# Returns {1, seq, T, o, a, r, d, c, {id, steps, header}, epoch} (a missing or mistyped piece is nil);
# {0} when the id is not in service; {-3, key, problem} unusable state.
EPISODE = _PRELUDE + """
local stats, ids, lens = KEYS[1], KEYS[2], KEYS[3]
local bad = check_types({{stats, 'hash'}, {ids, 'hash'}, {lens, 'list'}, {KEYS[4], 'hash'}})
if bad then return bad end
local seq = int(redis.call('HGET', ids, ARGV[2]))
if seq == nil then return {0} end
local st, err = read_stats(stats)
if not st then return err end
if seq == false or seq < st.head or seq > st.tail then
  return {-3, ids, 'maps the episode to no sequence number of the index'}
end
local steps
steps, err = length_at(lens, st, seq)
if err then return err end
local e = ARGV[1] .. 'e:' .. seq .. ':'
local function get(key)
  if redis.call('TYPE', key)['ok'] ~= 'string' then return false end
  return redis.call('GET', key)
end
local meta = {false, false, false}
if redis.call('TYPE', e .. 'm')['ok'] == 'hash' then meta = redis.call('HMGET', e .. 'm', 'id', 'steps', 'header') end
return {1, seq, steps, get(e .. 'o'), get(e .. 'a'), get(e .. 'r'), get(e .. 'd'), get(e .. 'c'), meta,
        redis.call('HGET', KEYS[4], 'epoch')}
"""
