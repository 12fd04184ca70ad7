#!/usr/bin/env bash
# Drives the running credits-service with wrk (Debian's `wrk`): creates TENANTS tenants
# funded with plenty of credits, then POSTs consumes with a new Idempotency-Key each for
# DURATION seconds over CONNECTIONS connections. Loopback only.
#
#   scripts/wrk.sh [ADDR] [CONNECTIONS] [DURATION] [THREADS]
#   e.g. scripts/wrk.sh 127.0.0.1:8080 16 20 2
#   WRK_SCRIPT=balance scripts/wrk.sh ...   # GET balance instead of POST consume
#
# The service must run with CREDITS_ADMIN_TOKEN=$WRK_TOKEN (default admin-token-0123456789)
# and a rate limit above the offered load (CREDITS_RATE_LIMIT_PER_SECOND).
set -euo pipefail
addr=${1:-127.0.0.1:8080}
connections=${2:-16}
duration=${3:-20}
threads=${4:-2}
token=${WRK_TOKEN:-admin-token-0123456789}
tenants=${WRK_TENANTS:-16}
run=${WRK_RUN:-run$$}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install -y wrk)" >&2; exit 2; }
for i in $(seq 0 $((tenants - 1))); do
  curl -sf -o /dev/null -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    "http://$addr/v1/tenants" -d "{\"tenant\":\"t$i\"}" || true
  curl -sf -o /dev/null -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -H "Idempotency-Key: $run-fund-$i" "http://$addr/v1/tenants/t$i/grants" \
    -d '{"amount":1000000000000}'
done
WRK_TOKEN=$token WRK_TENANTS=$tenants WRK_RUN=$run \
  wrk -t "$threads" -c "$connections" -d "${duration}s" --latency \
  -s "$(dirname "$0")/wrk/${WRK_SCRIPT:-consume}.lua" "http://$addr" | tail -n 1
