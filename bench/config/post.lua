-- A POST of the body in $BENCH_BODY with $BENCH_AUTH and the "Name: value|Name: value" of
-- $BENCH_HEADERS; with $BENCH_DELAY_MS > 0 each connection pauses that long after every answer.
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
if pause > 0 then
    function delay() return pause end
end
function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("BENCH requests=%d duration_us=%d errors=%d p50=%d p90=%d p99=%d non2xx=%d\n",
        summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
        latency:percentile(50), latency:percentile(90), latency:percentile(99), e.status))
end
