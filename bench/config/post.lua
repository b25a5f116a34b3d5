-- A POST of the body in $BENCH_BODY with $BENCH_AUTH and the "Name: value|Name: value" of
-- $BENCH_HEADERS; with $BENCH_DELAY_MS > 0 each connection pauses that long after every answer (with
-- $BENCH_JITTER=1, that long on average).
local file = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.body = file:read("*a")
file:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_AUTH")
for header in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^|]+") do
    local name, value = string.match(header, "^%s*([^:]+):%s*(.-)%s*$")
    if name then wrk.headers[name] = value end
end
local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
if pause > 0 and os.getenv("BENCH_JITTER") == "1" then
    -- Each pause drawn from half to one and a half times $BENCH_DELAY_MS: connections that all pause the
    -- same time stay in step from their first request on and arrive together, a burst per pause.
    math.randomseed(os.time())
    local low, high = math.floor(pause / 2), math.floor(pause * 3 / 2)
    function delay() return math.random(low, high) end
elseif pause > 0 then
    function delay() return pause end
end
function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("BENCH requests=%d duration_us=%d errors=%d p50=%d p90=%d p99=%d non2xx=%d\n",
        summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
        latency:percentile(50), latency:percentile(90), latency:percentile(99), e.status))
end
