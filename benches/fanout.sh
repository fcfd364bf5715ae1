#!/usr/bin/env bash
# Deliveries/s against the number of subscribers, rumq and Mosquitto in one run
# (1 publisher, QoS 0, 64 B, same topic), written to docs/fanout.csv and drawn into
# docs/fanout.svg by benches/plot.py.
#
#   benches/fanout.sh                  # full (a few minutes)
#   QUICK=1 RUNS=1 benches/fanout.sh   # small counts
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then TOTAL=200000; else TOTAL=2000000; fi
source benches/lib.sh

out=docs/fanout.csv
echo "subscribers,rumq,mosquitto" >"$out"
for subs in 1 2 4 8 16 32; do
  # The same number of deliveries at every point.
  m=$((TOTAL / subs))
  echo "== $subs subscribers" >&2
  interleaved deliveries_per_s rumq mosquitto -- throughput --qos 0 --subs "$subs" --messages "$m"
  r=$(cat "$tmp/val-rumq")
  q=$(cat "$tmp/val-mosquitto")
  echo "$subs,$r,$q" >>"$out"
done
python3 benches/plot.py "$out" docs/fanout.svg
cat "$out"
