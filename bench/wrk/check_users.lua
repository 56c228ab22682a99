-- wrk script: GET /v1/check?domain=DOMAIN&KEY=<random user in [1, USERS]>, counting statuses.
-- env: USERS (100000), DOMAIN (bench), KEY (user), MAX_REQ (per-thread bound, 5000000).
local users = tonumber(os.getenv("USERS") or "100000")
local domain = os.getenv("DOMAIN") or "bench"
local key = os.getenv("KEY") or "user"
local max_req = tonumber(os.getenv("MAX_REQ") or "5000000")
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  math.randomseed(os.time() + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0) % 100000)
  statuses = {}
  seen = 0
end
function request()
  return wrk.format(nil, "/v1/check?domain=" .. domain .. "&" .. key .. "=" .. math.random(1, users))
end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  seen = seen + 1
  if seen >= max_req then wrk.thread:stop() end
end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for s, n in pairs(t:get("statuses")) do total[s] = (total[s] or 0) + n end
  end
  local line = "STATUS"
  for s, n in pairs(total) do line = line .. " " .. s .. "=" .. n end
  print(line)
end
