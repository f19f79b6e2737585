package bridge

import "github.com/redis/go-redis/v9"

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
// Key layout (prefix "ferry"; see REDIS_NOTES.md):
//
//	ferry:ch:<channel>   hash   epoch, top (latest offset)
//	ferry:log:<channel>  stream entries "<offset>-0" with fields t (ms), d (JSON) or b (bytes)
//	ferry:msg:<channel>  pub/sub "<epoch>:<offset>:<ms>:<d|b>:<payload>"

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

-- publish appends a message to the channel of meta and log and fans it out on pubchan.
local function publish(meta, log, candidate, kind, payload, size, ttl, idle, pubchan, now)
  local ep = state(meta, log, candidate)
  local top = redis.call('HINCRBY', meta, 'top', 1)
  redis.call('XADD', log, 'MAXLEN', size, int(top) .. '-0', 't', int(now), kind, payload)
  trim(log, now - ttl)
  redis.call('PEXPIRE', log, ttl)
  redis.call('PEXPIRE', meta, idle)
  redis.call('PUBLISH', pubchan, ep .. ':' .. int(top) .. ':' .. int(now) .. ':' .. kind .. ':' .. payload)
  return ep, top
end
`

// luaPublish: KEYS meta, log; ARGV candidate, kind, payload, size, ttl ms, idle ms,
// pubsub channel. Returns {epoch, offset, time ms}.
var luaPublish = redis.NewScript(luaLib + `
local now = now_ms()
local ep, top = publish(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6], ARGV[7], now)
return {ep, top, now}
`)

// luaSince: KEYS meta, log; ARGV candidate, ttl ms, idle ms, position epoch (empty for none),
// position offset, limit, idle ms of a channel never published. Returns {epoch, top, ok (0
// or 1), entries (when there are any)}. Reading a channel creates its position, so that
// clients can subscribe before the first message; a channel nobody ever publishes to
// goes sooner than one with history, so that subscriptions to arbitrary names don't
// fill Redis.
var luaSince = redis.NewScript(luaLib + `
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

// luaAckPublish publishes one entry of the backend publish stream and acknowledges it in
// the same step, so that an entry is published exactly once however many nodes read it:
// whoever acknowledges it first publishes it. KEYS meta, log, publish stream; ARGV group,
// entry id, then the arguments of luaPublish. Returns 0 when the entry was already
// acknowledged, else {epoch, offset, time ms}.
var luaAckPublish = redis.NewScript(luaLib + `
if redis.call('XACK', KEYS[3], ARGV[1], ARGV[2]) == 0 then
  return 0
end
redis.call('XDEL', KEYS[3], ARGV[2])
local now = now_ms()
local ep, top = publish(KEYS[1], KEYS[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8], ARGV[9], now)
return {ep, top, now}
`)

// luaTouch: KEYS session, seen; ARGV ttl ms. Returns 1 if the session is alive.
var luaTouch = redis.NewScript(`
if redis.call('PEXPIRE', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
`)

// luaMarkSeq is session.Window in Redis: the session hash holds the highest sequence
// number seen (split in two 32-bit halves, because Lua numbers are doubles) and the seen
// key a bitmap of the window, indexed by seq mod n. KEYS session, seen; ARGV seq high
// half, seq low half, seq mod n, n. Returns 1 (first time), 0 (duplicate or older than the
// window) or -1 (no such session).
var luaMarkSeq = redis.NewScript(`
local st = redis.call('HMGET', KEYS[1], 'hi', 'lo')
if not st[1] then
  return -1
end
local mhi, mlo = tonumber(st[1]), tonumber(st[2]) or 0
local hi, lo, idx, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local function mark()
  redis.call('SETBIT', KEYS[2], idx, 1)
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[2], ttl)
  end
end
local dh = hi - mhi
if dh > 0 or (dh == 0 and lo > mlo) then
  -- exact whenever it is below n; far ahead it only has to be large
  local d = dh * 4294967296 + (lo - mlo)
  if d >= n then
    redis.call('DEL', KEYS[2])
  else
    for k = 1, d - 1 do
      redis.call('SETBIT', KEYS[2], (idx - k) % n, 0)
    end
  end
  redis.call('HSET', KEYS[1], 'hi', ARGV[1], 'lo', ARGV[2])
  mark()
  return 1
end
local d = -dh * 4294967296 + (mlo - lo)
if d >= n then
  return 0
end
if redis.call('GETBIT', KEYS[2], idx) == 1 then
  return 0
end
mark()
return 1
`)

// luaCatchUp reads the position and the latest entry of channels, atomically per channel
// (an epoch must not be paired with another epoch's entry). KEYS pairs of meta, log.
// Returns per channel {epoch or false, top, entry or false}.
var luaCatchUp = redis.NewScript(`
local out = {}
for i = 1, #KEYS, 2 do
  local st = redis.call('HMGET', KEYS[i], 'epoch', 'top')
  local last = redis.call('XREVRANGE', KEYS[i + 1], '+', '-', 'COUNT', 1)
  out[#out + 1] = {st[1], tonumber(st[2]) or 0, last[1] or false}
end
return out
`)
