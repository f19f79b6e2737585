package redis

import goredis "github.com/redis/go-redis/v9"

// The Lua scripts of the Redis broker. Each one runs atomically in Redis, which is what
// makes a channel's epoch, offsets, history and fan-out agree: Publish assigns the offset,
// appends to the log and PUBLISHes in one step, so every node receives a channel's
// messages in offset order, and a position read from history always names the message
// that was published at it.
//
// Time comes from Redis (TIME), not from the nodes, so that the age bound of history does
// not depend on the nodes' clocks agreeing. Epoch candidates come from the node (crypto
// randomness): older Redis versions seed Lua's math.random identically for every call.
//
// Key layout (prefix "ferry"; see docs/OPERATIONS.md). Every key a script names shares
// one hash slot, the channel's (keyspace):
//
//	ferry:ch:{<channel>}        hash   epoch, top (latest offset)
//	ferry:log:{<channel>}       stream entries "<offset>-0" with fields t (ms), d (JSON) or b (bytes)
//	ferry:pid:{<channel>}:<id>  string "<epoch>:<offset>:<ms>:<digest>" of the publish with id
//	ferry:msg:{<channel>}       pub/sub "<epoch>:<offset>:<ms>:<d|b>:<payload>" (a shard channel on a cluster)

// luaLib is prepended to every script that needs it.
const luaLib = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function int(n)
  return string.format('%d', n)
end

-- state returns the channel's epoch and latest offset. A channel without state (never
-- used, idle past its TTL, or lost with Redis's data) starts a new epoch, and any log left
-- over from an earlier one goes: its offsets would otherwise be mistaken for the new
-- epoch's.
local function state(meta, log, candidate)
  local st = redis.call('HMGET', meta, 'epoch', 'top')
  if st[1] then
    return st[1], tonumber(st[2]) or 0
  end
  redis.call('DEL', log)
  redis.call('HSET', meta, 'epoch', candidate, 'top', 0)
  return candidate, 0
end

local function entry_time(fields)
  for j = 1, #fields - 1, 2 do
    if fields[j] == 't' then
      return tonumber(fields[j + 1]) or -1
    end
  end
  return -1
end

-- trim drops the entries older than cutoff (ms) from the front of log. Entries are in
-- offset order and, Redis's clock permitting, in time order: trimming stops at the first
-- entry young enough.
local function trim(log, cutoff)
  while true do
    local es = redis.call('XRANGE', log, '-', '+', 'COUNT', 64)
    local old = {}
    for i, e in ipairs(es) do
      if entry_time(e[2]) >= cutoff then
        if i > 1 then
          redis.call('XTRIM', log, 'MINID', e[1])
        end
        return
      end
      old[i] = e[1]
    end
    if #old > 0 then
      redis.call('XDEL', log, unpack(old))
    end
    if #es < 64 then
      return
    end
  end
end

-- publish appends a message to the channel of meta and log and fans it out on pubchan
-- with pubcmd: PUBLISH, or SPUBLISH on a cluster (pubchan is in the slot of meta).
local function publish(meta, log, candidate, kind, payload, size, ttl, idle, pubchan, now, pubcmd)
  local ep = state(meta, log, candidate)
  local top = redis.call('HINCRBY', meta, 'top', 1)
  redis.call('XADD', log, 'MAXLEN', size, int(top) .. '-0', 't', int(now), kind, payload)
  trim(log, now - ttl)
  redis.call('PEXPIRE', log, ttl)
  redis.call('PEXPIRE', meta, idle)
  if pubcmd ~= 'SPUBLISH' then
    pubcmd = 'PUBLISH'
  end
  redis.call(pubcmd, pubchan, ep .. ':' .. int(top) .. ':' .. int(now) .. ':' .. kind .. ':' .. payload)
  return ep, top
end
`

// luaPublish: KEYS meta, log, id; ARGV candidate, kind, payload, size, ttl ms, idle ms,
// pubsub channel, id ttl ms, payload digest, fan-out command (Broker.pubCmd). Returns {epoch, offset, time ms}, or
// {"<epoch>:<offset>:<time ms>:<digest>"} when the id was already used: a publish sent
// again (a retry by go-redis, by a node or by a backend) answers the first one's
// position and publishes nothing.
var luaPublish = goredis.NewScript(luaLib + `
local seen = redis.call('GET', KEYS[3])
if seen then
  return {seen}
end
local now = now_ms()
local ep, top = publish(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6], ARGV[7], now, ARGV[10])
redis.call('SET', KEYS[3], ep .. ':' .. int(top) .. ':' .. int(now) .. ':' .. ARGV[9], 'PX', ARGV[8])
return {ep, top, now}
`)

// luaSince: KEYS meta, log; ARGV candidate, ttl ms, idle ms, position epoch (empty for none),
// position offset, limit, idle ms of a channel never published. Returns {epoch, top, ok (0
// or 1), entries (when there are any)}. Reading a channel creates its position, so that
// clients can subscribe before the first message; a channel nobody ever publishes to
// goes sooner than one with history, so that subscriptions to arbitrary names don't
// fill Redis.
var luaSince = goredis.NewScript(luaLib + `
local ep, top = state(KEYS[1], KEYS[2], ARGV[1])
if top == 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[7])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
if ARGV[4] == '' then
  return {ep, top, 1}
end
local off = tonumber(ARGV[5]) or math.huge
if ARGV[4] ~= ep or off > top then
  return {ep, top, 0}
end
if off == top then
  return {ep, top, 1}
end
trim(KEYS[2], now_ms() - tonumber(ARGV[2]))
local first = int(off + 1) .. '-0'
local es = redis.call('XRANGE', KEYS[2], first, '+', 'COUNT', ARGV[6])
if #es == 0 or es[1][1] ~= first then
  return {ep, top, 0}
end
return {ep, top, 1, es}
`)

// luaTouch: KEYS session; ARGV ttl ms. Returns 1 if the session is alive.
var luaTouch = goredis.NewScript(`
return redis.call('PEXPIRE', KEYS[1], ARGV[1])
`)

// luaDedupe is session.Ledger in Redis, in one hash per dedupe key (session.DedupeKey),
// so that a script names one key only. Fields: hi and lo, the highest sequence number
// marked (in two 32-bit halves, because Lua numbers are doubles); w, the window's bitmap
// of n/8 bytes, bit (seq mod n) of byte 1 + floor(.../8), from the low bit up; r<i>, the
// result of the sequence number at index i of the window as "<seq>|<result>", only for
// non-empty results. The hash expires ttl after its latest mark.
//
// Lua 5.1 has no bitwise operators: bytes are read into a table and bits tested and set
// arithmetically. string.byte and string.char take at most 4096 values at a time here,
// well under the Lua stack's limit.
const luaDedupeLib = `
local K = KEYS[1]
local hi, lo, idx, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local seq, res, ttl = ARGV[5], ARGV[6], ARGV[7]
local nbytes = n / 8

local function tobytes(s)
  local t = {}
  for i = 1, #s, 4096 do
    local part = {string.byte(s, i, math.min(i + 4095, #s))}
    for j = 1, #part do
      t[#t + 1] = part[j]
    end
  end
  return t
end

local function tostr(t)
  local parts = {}
  for i = 1, #t, 4096 do
    parts[#parts + 1] = string.char(unpack(t, i, math.min(i + 4095, #t)))
  end
  return table.concat(parts)
end

local function filled(v)
  local t = {}
  for i = 1, nbytes do
    t[i] = v
  end
  return t
end

local function getbit(t, i)
  return math.floor(t[math.floor(i / 8) + 1] / 2 ^ (i % 8)) % 2
end

local function setbit(t, i, v)
  local j, p = math.floor(i / 8) + 1, 2 ^ (i % 8)
  t[j] = t[j] + (v - math.floor(t[j] / p) % 2) * p
end

-- load returns the window's highest seq and bits; a window of another size (DedupeWindow
-- changed) keeps its highest seq with every bit set: older seqs count as seen.
local function load()
  local st = redis.call('HMGET', K, 'hi', 'lo', 'w')
  local mhi, mlo = tonumber(st[1]), tonumber(st[2])
  if not mhi or not mlo then
    return nil
  end
  if not st[3] or #st[3] ~= nbytes then
    return mhi, mlo, filled(255)
  end
  return mhi, mlo, tobytes(st[3])
end

-- behind returns how far seq is behind the highest seq (negative: ahead); exact within
-- the window, only large enough beyond it.
local function behind(mhi, mlo)
  return (mhi - hi) * 4294967296 + (mlo - lo)
end

local function setresult(i, r)
  if r == '' then
    redis.call('HDEL', K, 'r' .. i)
  else
    redis.call('HSET', K, 'r' .. i, seq .. '|' .. r)
  end
end
`

// luaMarkUpstream: KEYS window; ARGV seq high half, seq low half, seq mod n, n (a multiple
// of 64), seq (decimal), result, ttl ms. Returns {1} for a new seq, {0, result} for a
// duplicate (result empty when none is recorded or seq is older than the window).
var luaMarkUpstream = goredis.NewScript(luaDedupeLib + `
local mhi, mlo, bits = load()
local d
if not mhi then
  bits = filled(0)
  d = -1
else
  d = behind(mhi, mlo)
end
if d >= n then
  return {0, ''}
end
if d >= 0 and getbit(bits, idx) == 1 then
  redis.call('PEXPIRE', K, ttl)
  local r = redis.call('HGET', K, 'r' .. idx)
  if r and string.sub(r, 1, #seq + 1) == seq .. '|' then
    return {0, string.sub(r, #seq + 2)}
  end
  return {0, ''}
end
if d < 0 and mhi then
  -- The window slides past -d slots: they are free for newer seqs.
  if -d >= n then
    redis.call('DEL', K)
    bits = filled(0)
  else
    for k = 1, -d - 1 do
      local i = (idx - k) % n
      setbit(bits, i, 0)
      redis.call('HDEL', K, 'r' .. i)
    end
  end
end
setbit(bits, idx, 1)
if d < 0 then
  redis.call('HSET', K, 'hi', ARGV[1], 'lo', ARGV[2], 'w', tostr(bits))
else
  redis.call('HSET', K, 'w', tostr(bits))
end
setresult(idx, res)
redis.call('PEXPIRE', K, ttl)
return {1}
`)

// luaRecordUpstream: KEYS and ARGV as luaMarkUpstream. Replaces the result of seq if seq
// is marked and still in the window; returns 1 if it did.
var luaRecordUpstream = goredis.NewScript(luaDedupeLib + `
local mhi, mlo, bits = load()
if not mhi then
  return 0
end
local d = behind(mhi, mlo)
if d < 0 or d >= n or getbit(bits, idx) == 0 then
  return 0
end
setresult(idx, res)
return 1
`)

// luaCatchUp reads the position and the latest entry of one channel, atomically (an epoch
// must not be paired with another epoch's entry), and the entry at the offset the node
// delivered last, so that the node can tell whether it is still the message it
// delivered (Broker.verify). KEYS meta, log; ARGV the epoch and offset the node delivered
// last (empty: none). Returns {epoch or false, top, latest entry or false, entry at the
// offset or false (also when the epoch is another or the offset above the top)}.
var luaCatchUp = goredis.NewScript(`
local st = redis.call('HMGET', KEYS[1], 'epoch', 'top')
local top = tonumber(st[2]) or 0
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local at = false
local off = tonumber(ARGV[2])
if st[1] and ARGV[1] == st[1] and off and off >= 1 and off <= top then
  local id = string.format('%d', off) .. '-0'
  local es = redis.call('XRANGE', KEYS[2], id, id)
  at = es[1] or false
end
return {st[1], top, last[1] or false, at}
`)

// luaRebase starts a new epoch for a channel whose history was lost (a failover to a
// replica that had not received the newest messages, whose offsets the new master then
// assigns again), if the channel is still in the epoch found broken: two nodes that find
// it at once make one new epoch. The offsets and the log stay, as the new epoch's: every
// position of the broken epoch then gets a reset, and the log's messages, all of them
// published on the surviving master, remain history. KEYS meta, log; ARGV broken epoch,
// candidate. Returns {epoch or false (no state: the next publish or read starts an
// epoch), top, latest entry or false}.
var luaRebase = goredis.NewScript(`
local st = redis.call('HMGET', KEYS[1], 'epoch', 'top')
local ep = st[1]
if ep and ep == ARGV[1] then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[2])
  ep = ARGV[2]
end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
return {ep or false, tonumber(st[2]) or 0, last[1] or false}
`)
