#!/usr/bin/env bash
# Build every fuzz target and run each for a short time from its tracked seeds, so a
# target that fails on a seed, or within seconds, stops the submission (.ci/run calls
# this). Usage: fuzz/smoke.sh [SECONDS_PER_TARGET] [TARGET...]   (default 30, all)
#
# Each run starts from an empty scratch corpus plus fuzz/seeds/<target>/, so CI is the
# same on every machine; a failing input is written to fuzz/artifacts/<target>/ and the
# script exits non-zero after printing libFuzzer's report and the command to replay it.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-30}
shift || true
# cargo-fuzz passes nightly-only flags (sanitizers, -Z options); this lets the stable
# toolchain accept them.
export RUSTC_BOOTSTRAP=1

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz/smoke.sh: cargo-fuzz is missing: cargo install cargo-fuzz --locked --version 0.13.2" >&2
  exit 1
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
if ! cargo fuzz build >"$scratch/build.log" 2>&1; then
  tail -n 60 "$scratch/build.log" >&2
  exit 1
fi
failed=0
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t"
  log="$scratch/$t.log"
  if cargo fuzz run "$t" "$scratch/$t" "fuzz/seeds/$t" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 >"$log" 2>&1; then
    runs=$(grep -o 'Done [0-9]* runs' "$log" | tail -n 1 | awk '{print $2}')
    echo "fuzz $t: clean, ${runs:-?} runs in ${secs} s, corpus $(ls "$scratch/$t" | wc -l) inputs"
  else
    failed=1
    echo "fuzz $t: FAILED; libFuzzer's report:" >&2
    grep -v '^#[0-9]' "$log" | tail -n 60 >&2
    echo "replay: RUSTC_BOOTSTRAP=1 cargo fuzz run $t fuzz/artifacts/$t/<crash-file>" >&2
  fi
done
exit "$failed"
