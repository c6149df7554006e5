"""The replay's key layout and the Lua scripts that change it atomically.

Keys of run R (``P = "orrery:R:"``)::

    P config              hash   format; epoch (random, set with the namespace: a sampler that sees it
                                 change knows the data was wiped and reloads); capacity (agent steps);
                                 spec (frame shape, action dtype/shape; set by the first insert, every
                                 later one must match)
    P stats               hash   head, tail (stored sequence numbers), episodes, steps, bytes; counters
                                 inserts, inserted_steps, evictions, evicted_steps, rejected, duplicates,
                                 samples (batches), sampled_steps
    P seen                set    every episode id ever stored (idempotency survives eviction)
    P ids                 hash   episode id -> sequence number, stored episodes only
    P lens                list   T of episodes head .. tail, in order (the samplers' index)
    P e:<seq>:o           string observations o_0 .. o_T, (T+1) frames of H*W*C bytes
    P e:<seq>:a           string actions aligned with frames: zero, a_0 .. a_{T-1}  (T+1 rows)
    P e:<seq>:r           string rewards aligned with frames: 0, r_0 .. r_{T-1}     (T+1 float32)
    P e:<seq>:d           string terminals aligned with frames: 0, d_0 .. d_{T-1}   (T+1 bytes 0/1)
    P e:<seq>:m           hash   id, steps, bytes, header (the episode codec's JSON header)

Arrays are raw little-endian, as in the episode codec. Storing actions, rewards and
terminals shifted by one (row t belongs to frame o_t: the action before it, the reward and
terminal flag of the step into it) makes every chunk, including one at k = 0, the same row
range [k, k+L) of all four strings. Sequence numbers are never reused, so the key of an
episode never names other data: a read finds the episode whole or not at all.
"""

from __future__ import annotations

FORMAT = "orrery.replay/1"

# KEYS: config, stats, seen, ids, lens. ARGV: prefix, id, steps, bytes, spec, header, obs, act, rew, term.
# Returns {1, seq, evicted} stored; {0, 0, 0} duplicate; {-1, 0, reason} rejected; {-2, 0, reason} not set up.
ADD = """
local config, stats, seen, ids, lens = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, id = ARGV[1], ARGV[2]
local steps, nbytes, spec = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
if redis.call('SISMEMBER', seen, id) == 1 then
  redis.call('HINCRBY', stats, 'duplicates', 1)
  return {0, 0, 0}
end
local cfg = redis.call('HMGET', config, 'capacity', 'spec')
local capacity = tonumber(cfg[1])
if not capacity then
  return {-2, 0, 'capacity'}
end
if cfg[2] and cfg[2] ~= spec then
  redis.call('HINCRBY', stats, 'rejected', 1)
  return {-1, 0, 'spec ' .. cfg[2]}
end
if steps > capacity then
  redis.call('HINCRBY', stats, 'rejected', 1)
  return {-1, 0, 'capacity ' .. capacity}
end
local st = redis.call('HMGET', stats, 'head', 'tail', 'steps', 'bytes')
local head, tail = tonumber(st[1]) or 1, tonumber(st[2]) or 0
local stored, size = tonumber(st[3]) or 0, tonumber(st[4]) or 0
local evicted, evicted_steps = 0, 0
while stored + steps > capacity and head <= tail do
  local e = prefix .. 'e:' .. head .. ':'
  local meta = redis.call('HMGET', e .. 'm', 'id', 'steps', 'bytes')
  redis.call('DEL', e .. 'o', e .. 'a', e .. 'r', e .. 'd', e .. 'm')
  redis.call('HDEL', ids, meta[1])
  redis.call('LPOP', lens)
  stored = stored - tonumber(meta[2])
  size = size - tonumber(meta[3])
  evicted_steps = evicted_steps + tonumber(meta[2])
  evicted = evicted + 1
  head = head + 1
end
tail = tail + 1
local e = prefix .. 'e:' .. tail .. ':'
redis.call('SET', e .. 'o', ARGV[7])
redis.call('SET', e .. 'a', ARGV[8])
redis.call('SET', e .. 'r', ARGV[9])
redis.call('SET', e .. 'd', ARGV[10])
redis.call('HSET', e .. 'm', 'id', id, 'steps', steps, 'bytes', nbytes, 'header', ARGV[6])
redis.call('SADD', seen, id)
redis.call('HSET', ids, id, tail)
redis.call('RPUSH', lens, steps)
if not cfg[2] then
  redis.call('HSET', config, 'spec', spec)
end
redis.call('HSET', stats, 'head', head, 'tail', tail, 'episodes', tail - head + 1,
           'steps', stored + steps, 'bytes', size + nbytes)
redis.call('HINCRBY', stats, 'inserts', 1)
redis.call('HINCRBY', stats, 'inserted_steps', steps)
redis.call('HINCRBY', stats, 'evictions', evicted)
redis.call('HINCRBY', stats, 'evicted_steps', evicted_steps)
return {1, tail, evicted}
"""

# KEYS: stats, lens, config. ARGV: the caller's tail.
# Returns {head, tail, first, {T of first .. tail}, epoch}.
INDEX = """
local st = redis.call('HMGET', KEYS[1], 'head', 'tail')
local head, tail = tonumber(st[1]) or 1, tonumber(st[2]) or 0
local first = math.max(tonumber(ARGV[1]) + 1, head)
local steps = {}
if first <= tail then
  steps = redis.call('LRANGE', KEYS[2], first - head, tail - head)
end
return {head, tail, first, steps, redis.call('HGET', KEYS[3], 'epoch')}
"""
