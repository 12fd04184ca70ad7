#!/usr/bin/env bash
# Soak test: random seeds through the deterministic simulator for a while; then, for a while
# each, the concurrency parts: linearizability (in memory, on PostgreSQL with threads, and
# with group commit), real faults (pg_terminate_backend of the test's own backends under
# load; restarts of a private PostgreSQL cluster under load, fast and immediate; kill -9
# of the service's audit leader replica mid-burst, then its restart) and the conformance
# suite's concurrency checks (memory and PostgreSQL); then every fuzz target for a while.
# Prints one summary line per part, or the first failure (a seed to replay, or the fuzz
# artifact of a crash) and exits 1.
#
# usage: scripts/soak.sh [SIM_SECONDS=600] [FUZZ_SECONDS_PER_TARGET=120] [OPS_PER_SEED=20000]
#                        [CONCURRENCY_SECONDS_PER_PART=120]
# The PostgreSQL parts need DATABASE_URL (they are skipped without it); they never restart
# the server at DATABASE_URL and terminate only their own backends. The restart part
# creates, restarts and drops its own cluster (credits-postgres/tests/pg_restart.rs: it
# needs Debian's postgresql-common tools, a PostgreSQL server and root). Fuzzing needs
# `cargo install cargo-fuzz` and a nightly toolchain; it is skipped otherwise (or with
# FUZZ_SECONDS_PER_TARGET=0). A part given 0 seconds is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

sim_seconds=${1:-600}
fuzz_seconds=${2:-120}
ops=${3:-20000}
part_seconds=${4:-120}

cargo build --release --locked -p sim
runs=0
end=$((SECONDS + sim_seconds))
while ((SECONDS < end)); do
  seed=$(od -An -N6 -tu8 /dev/urandom | tr -d ' ')
  if ! out=$(target/release/sim --seed "$seed" --ops "$ops"); then
    echo "$out"
    echo "FIRST FAILING SEED: $seed (ops $ops)"
    exit 1
  fi
  runs=$((runs + 1))
done
echo "simulator: $runs seeds x $ops ops clean ($((runs * ops)) ops)"

# One field of a "key=value" summary line.
field() { sed -n "s/.*[ ]$1=\([0-9]*\).*/\1/p" <<<"$2"; }

# Linearizability: 10 recorded histories per run, each checked; the faults are the
# retried injected failures (before and after the write, under the same key).
linearizability() { # label, sim flags...
  local label=$1
  shift
  local n=0 histories=0 operations=0 retries=0 out seed
  local end=$((SECONDS + part_seconds))
  while ((SECONDS < end)); do
    seed=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
    if ! out=$(target/release/sim --linearizability "$@" --seed "$seed" --rounds 10); then
      echo "$out"
      echo "LINEARIZABILITY VIOLATION ($label): replay with target/release/sim --linearizability $* --seed $seed --rounds 10"
      exit 1
    fi
    n=$((n + 1))
    histories=$((histories + $(field histories "$out")))
    operations=$((operations + $(field operations "$out")))
    retries=$((retries + $(field retries "$out")))
  done
  echo "linearizability ($label): $n runs, $histories histories, $operations operations, $retries faults retried, violations 0"
}

# Runs a test binary's tests for the part's time budget, printing its output on failure.
repeat_test() { # label, env assignment or "", cargo test args...
  local label=$1 env=$2
  shift 2
  local end=$((SECONDS + part_seconds)) out
  part_runs=0
  part_output=""
  while ((SECONDS < end)); do
    local seed
    seed=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
    if ! out=$(env ${env:+$env=$seed} cargo test --release --locked -q "$@" -- --nocapture 2>&1); then
      echo "$out"
      echo "FAILURE ($label)${env:+: replay with $env=$seed cargo test --release $*}"
      exit 1
    fi
    part_runs=$((part_runs + 1))
    part_output+=$'\n'"$out"
  done
}

if ((part_seconds > 0)); then
  linearizability memory
  if [[ -n "${DATABASE_URL:-}" ]]; then
    export REQUIRE_DATABASE=1
    linearizability "postgres, threads" --postgres
    linearizability "postgres, group commit" --postgres --group-commit

    cargo test --release --locked -q -p credits-postgres --test real_faults --test conformance_concurrent --no-run
    repeat_test "real faults" REAL_FAULTS_SEED -p credits-postgres --test real_faults
    requests=0 terminated=0 retries=0
    while read -r r t x; do
      requests=$((requests + r)) terminated=$((terminated + t)) retries=$((retries + x))
    done < <(sed -n 's/^real faults seed [0-9]*: \([0-9]*\) requests, \([0-9]*\) backends terminated, \([0-9]*\) retries$/\1 \2 \3/p' <<<"$part_output")
    echo "real faults (postgres): $part_runs runs, $requests requests, $terminated backends terminated, $retries retries, violations 0"

    cargo test --release --locked -q -p credits-postgres --test pg_restart --no-run
    repeat_test "postgres restart" PG_RESTART_SEED -p credits-postgres --test pg_restart
    requests=0 restarts=0 retries=0 in_doubt=0
    while read -r r t x d; do
      requests=$((requests + r)) restarts=$((restarts + t)) retries=$((retries + x)) in_doubt=$((in_doubt + d))
    done < <(sed -n 's/^.*pg restart seed [0-9]*: \([0-9]*\) requests, \([0-9]*\) restarts, \([0-9]*\) retries, \([0-9]*\) answered from an earlier attempt.s commit, .*$/\1 \2 \3 \4/p' <<<"$part_output")
    echo "postgres restart (private cluster, fast and immediate): $part_runs runs, $requests requests, $restarts restarts, $retries retries ($in_doubt answered from an earlier attempt's commit), violations 0"

    cargo test --release --locked -q -p credits-service --test replicas --no-run
    repeat_test "service kill -9" "" -p credits-service --test replicas
    requests=0 retried=0 replayed=0
    while read -r r t x; do
      requests=$((requests + r)) retried=$((retried + t)) replayed=$((replayed + x))
    done < <(sed -n 's/^.*kill -9 mid-burst: \([0-9]*\) requests acknowledged, \([0-9]*\) of the burst retried on the other replica, at least \([0-9]*\) of them .*$/\1 \2 \3/p' <<<"$part_output")
    # Each run: the audit leader replica killed mid-burst and restarted, and a killed
    # in-memory service restarted on its file audit log.
    echo "service kill -9 (replicas on postgres, file audit log): $part_runs runs, $requests requests, $((part_runs * 2)) kills, $retried requests retried on the survivor (at least $replayed answered from a commit of the killed replica), violations 0"

    repeat_test "conformance concurrency, postgres" "" -p credits-postgres --test conformance_concurrent
    # Each suite: 64 + 16 + 16 + 16 requests released together (CONCURRENT_CHECKS).
    echo "conformance concurrency (postgres: read committed, serializable, group commit): $part_runs runs, $((part_runs * 3)) suites, $((part_runs * 3 * 112)) concurrent requests, faults none (concurrency only), violations 0"
  else
    echo "DATABASE_URL not set: the PostgreSQL parts are skipped"
  fi
  cargo test --release --locked -q -p credits-core --test conformance --no-run
  repeat_test "conformance concurrency, memory" "" -p credits-core --test conformance
  echo "conformance concurrency (memory: 3 stores on a multi-threaded runtime, 1 inline): $part_runs runs, $((part_runs * 4)) suites, $((part_runs * 4 * 112)) concurrent requests, faults none (concurrency only), violations 0"
fi

if ((fuzz_seconds > 0)); then
  if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz or nightly missing: fuzzing skipped"
    exit 0
  fi
  cd fuzz
  for target in $(cargo +nightly fuzz list); do
    echo "fuzzing $target for ${fuzz_seconds}s"
    if ! cargo +nightly fuzz run -O "$target" -- -max_total_time="$fuzz_seconds" -rss_limit_mb=2048; then
      echo "FUZZ FAILURE in $target: the input is in fuzz/artifacts/$target/;"
      echo "copy it to fuzz/regressions/$target/ so that cargo test replays it"
      exit 1
    fi
  done
  echo "fuzzing: every target ran ${fuzz_seconds}s clean"
fi
