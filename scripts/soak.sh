#!/usr/bin/env bash
# Soak test: random seeds through the deterministic simulator for a while, then every fuzz
# target for a while. Prints the first failing seed (replay it with
# `cargo run -p sim --release -- --seed N --ops M`) or the fuzz artifact of a crash.
#
# usage: scripts/soak.sh [SIM_SECONDS=600] [FUZZ_SECONDS_PER_TARGET=120] [OPS_PER_SEED=20000]
# Fuzzing needs `cargo install cargo-fuzz` and a nightly toolchain; it is skipped otherwise
# (or with FUZZ_SECONDS_PER_TARGET=0).
set -euo pipefail
cd "$(dirname "$0")/.."

sim_seconds=${1:-600}
fuzz_seconds=${2:-120}
ops=${3:-20000}

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
