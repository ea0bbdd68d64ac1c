-- wrk script: cycle through a list of requests read from a file.
--
--   wrk -s bench/wrk/requests.lua http://127.0.0.1:PORT -- requests.tsv
--
-- Each line of the file is one request: METHOD <tab> PATH <tab> X-API-Key
-- <tab> BODY (the key and the body may be empty; a non-empty one is sent as JSON). Every
-- request is formatted once, in init(); each thread starts at a different
-- line and then takes them in turn, so a list of drones (each with its own
-- device key) spreads the load over all of them at the cost of one table
-- lookup per request.

local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

local requests = {}
local n = 0
local i = 0

function init(args)
  local file = assert(io.open(args[1], "r"))
  for line in file:lines() do
    local method, path, key, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t?(.*)$")
    if method and method ~= "" then
      local headers = {}
      if key ~= "" then headers["X-API-Key"] = key end
      if body == "" then
        body = nil
      else
        headers["Content-Type"] = "application/json"
      end
      n = n + 1
      requests[n] = wrk.format(method, path, headers, body)
    end
  end
  file:close()
  assert(n > 0, "no requests in " .. args[1])
  i = (id or 0) % n
end

function request()
  i = i % n + 1
  return requests[i]
end
