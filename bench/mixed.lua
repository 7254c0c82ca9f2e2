-- wrk script: alternates GET /status/<id> (the id is the script's argument) and POST /ingest
-- of 5 ids, on every connection, as a busy mix of clients would.
local status_path
local n = 0

function init(args)
  status_path = "/status/" .. args[1]
end

function request()
  n = n + 1
  if n % 2 == 0 then
    return wrk.format("GET", status_path)
  end
  return wrk.format("POST", "/ingest", {["Content-Type"] = "application/json"},
    '{"ids": [1, 2, 3, 4, 5], "priority": "MEDIUM"}')
end
