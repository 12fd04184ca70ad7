-- wrk script: GET /v1/tenants/<tenant>/balance over WRK_TENANTS tenants (t0..) with the
-- admin token; prints the same summary line as consume.lua. Used by scripts/wrk.sh with
-- WRK_SCRIPT=balance.
local counter = 0
function init(args)
  token = os.getenv("WRK_TOKEN") or "admin-token-0123456789"
  tenants = tonumber(os.getenv("WRK_TENANTS") or "16")
end
function request()
  counter = counter + 1
  return wrk.format("GET", "/v1/tenants/t" .. (counter % tenants) .. "/balance",
    { ["Authorization"] = "Bearer " .. token })
end
function done(summary, latency, requests)
  io.write(string.format(
    "wrk: %d requests in %.1f s = %.0f req/s; p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, p99.9 %.2f ms; socket errors %d, non-2xx %d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
