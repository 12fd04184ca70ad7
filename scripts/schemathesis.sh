#!/usr/bin/env bash
# Checks credits-service against its own OpenAPI document with schemathesis: builds the
# service, starts it on a free loopback port (in memory, admin and tenant tokens below),
# runs `schemathesis run` on /openapi.json with a bounded number of examples per operation,
# and stops the service. Fails on any 5xx (not_a_server_error), any status the document
# does not list (status_code_conformance), and any body or content type that does not match
# it (response_schema_conformance, content_type_conformance). Installs the pinned
# schemathesis (scripts/schemathesis-requirements.txt) into a virtual environment under
# target/ on first use.
#
#   bash scripts/schemathesis.sh                    # the CI run
#   EXAMPLES=200 SEED=7 bash scripts/schemathesis.sh
#   CHECKS=all bash scripts/schemathesis.sh        # every check schemathesis has
#   SCHEMATHESIS_SERVICE_BIN=target/debug/credits-service bash scripts/schemathesis.sh  # no build
set -euo pipefail
cd "$(dirname "$0")/.."

REQUIREMENTS="scripts/schemathesis-requirements.txt"
VERSION="$(sed -n 's/^schemathesis==//p' "$REQUIREMENTS")"
VENV="target/schemathesis-${VERSION}"
EXAMPLES="${EXAMPLES:-15}"
SEED="${SEED:-1}"
CHECKS="${CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance}"
ADMIN_TOKEN="admin-token-0123456789"

if [ ! -x "$VENV/bin/schemathesis" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
fi

# CI passes the binary its test step has just built (a separate `cargo build -p` would
# resolve other features and rebuild much of the workspace).
if [ -n "${SCHEMATHESIS_SERVICE_BIN:-}" ]; then
  BIN="$SCHEMATHESIS_SERVICE_BIN"
else
  cargo build --locked -q -p credits-service --bin credits-service
  BIN="target/debug/credits-service"
fi
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
LOG="target/schemathesis-service.log"

# In memory whatever the caller's environment says (CI exports DATABASE_URL); limits high
# enough that the run itself is never throttled (429 is documented, but proves nothing).
env -u DATABASE_URL \
  CREDITS_LISTEN_ADDR="127.0.0.1:${PORT}" \
  CREDITS_ADMIN_TOKEN="$ADMIN_TOKEN" \
  CREDITS_TENANT_TOKENS="acme=acme-token-0123456789" \
  CREDITS_RATE_LIMIT_PER_SECOND=100000 \
  CREDITS_AUTH_FAILURES_MAX=1000000 \
  CREDITS_LOG_FORMAT=text \
  RUST_LOG=warn \
  "$BIN" >"$LOG" 2>&1 &
SERVICE_PID=$!
stop() { kill "$SERVICE_PID" 2>/dev/null || true; wait "$SERVICE_PID" 2>/dev/null || true; }
trap stop EXIT

for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:${PORT}/health" >/dev/null 2>&1 && break
  kill -0 "$SERVICE_PID" 2>/dev/null || { cat "$LOG"; echo "credits-service did not start" >&2; exit 1; }
  sleep 0.1
done

# What the document's path examples name (tenant acme, hold 1, experiment e1, rollout r1,
# audit entry 0), so that the generated requests reach past 404.
post() {
  curl -fsS -o /dev/null -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \
    -H "Idempotency-Key: setup-$1" "http://127.0.0.1:${PORT}$2" -d "$3"
}
post tenant /v1/tenants '{"tenant":"acme"}'
post grant /v1/tenants/acme/grants '{"amount":1000000}'
post hold /v1/tenants/acme/holds '{"amount":10,"ttl_ms":3600000}'
post experiment /v1/tenants/acme/experiments '{"id":"e1"}'
post rollout /v1/rollouts '{"id":"r1"}'

# From target/: schemathesis keeps its cache (.schemathesis/, earlier failures replayed
# first) in the working directory.
cd target
# filter_too_much is a health check of the generator, not of the service: with the
# document's name patterns some operations (GET .../evaluation) get most of their generated
# path values filtered out, and Hypothesis then stops that operation; it found nothing.
"../$VENV/bin/schemathesis" run "http://127.0.0.1:${PORT}/openapi.json" \
  --header "Authorization: Bearer ${ADMIN_TOKEN}" \
  --checks "$CHECKS" \
  --suppress-health-check filter_too_much \
  --phases examples,coverage,fuzzing \
  --max-examples "$EXAMPLES" \
  --seed "$SEED" \
  --workers 2 \
  --request-timeout 10 \
  --no-color \
  --report junit --report-dir schemathesis-report
