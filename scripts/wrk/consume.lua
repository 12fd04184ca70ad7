-- wrk script: POST /v1/tenants/<tenant>/consume of 1 unit with a new Idempotency-Key per
-- request, spread over TENANTS tenants (t0..t15) with the admin token. Used by
-- scripts/wrk.sh; prints p50/p90/p99/p99.9 and the non-2xx count at the end.
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("id", thread_id)
  thread_id = thread_id + 1
  table.insert(threads, thread)
end

function init(args)
  token = os.getenv("WRK_TOKEN") or "admin-token-0123456789"
  tenants = tonumber(os.getenv("WRK_TENANTS") or "16")
  run = os.getenv("WRK_RUN") or "r"
  non2xx = 0
end

function request()
  counter = counter + 1
  local tenant = "t" .. (counter % tenants)
  local headers = {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = run .. "-" .. id .. "-" .. counter,
  }
  return wrk.format("POST", "/v1/tenants/" .. tenant .. "/consume", headers, '{"amount":1}')
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do
    bad = bad + (t:get("non2xx") or 0)
  end
  io.write(string.format(
    "wrk: %d requests in %.1f s = %.0f req/s; p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, p99.9 %.2f ms; non-2xx %d, socket errors %d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency:percentile(99.9) / 1000, bad,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
