#!/usr/bin/env bash
# Make docs/grafana/dashboard.png: the dashboard (rumq-dashboard.json) against a
# loaded broker. Grafana cannot be installed here (it is in neither Debian nor the
# registries this machine reaches), so render.py draws the dashboard's own panels
# and queries from a real Prometheus (Debian's package) that scraped a real broker
# under rumq-load, and Chromium (Debian's) turns that into a PNG.
#
#   cargo build --release -p rumq-broker -p benches
#   apt-get install prometheus chromium     # once
#   docs/grafana/screenshot.sh              # about 5 minutes
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=target/release
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT

cat > "$tmp/rumq.toml" <<TOML
[metrics]
listen = "127.0.0.1:19183"
TOML
"$bin/rumq-broker" --config "$tmp/rumq.toml" --listen 127.0.0.1:11883 --data-dir "$tmp/data" \
  2> "$tmp/broker.log" &
broker=$!
cat > "$tmp/prometheus.yml" <<YML
global: {scrape_interval: 2s}
scrape_configs:
  - job_name: rumq
    static_configs: [{targets: ["127.0.0.1:19183"]}]
YML
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/tsdb" \
  --web.listen-address=127.0.0.1:19090 2> "$tmp/prometheus.log" &
for _ in $(seq 100); do curl -sf 127.0.0.1:19090/-/ready >/dev/null && break; sleep 0.1; done

load() { "$bin/rumq-load" --addr 127.0.0.1:11883 --broker-pid "$broker" "$@" >> "$tmp/load.log"; }
started=$(date +%s)
# One phase after another (rumq-load's clients have fixed ids: two runs at once
# would take each other's sessions over).
load latency --qos 0 --rate 2000 --seconds 50
load latency --qos 1 --rate 4000 --seconds 50
load throughput --qos 1 --pubs 4 --subs 2 --messages 150000
load latency --qos 2 --rate 2000 --seconds 50
load connections --count 2000 --hold-s 20
load throughput --qos 0 --pubs 2 --subs 4 --messages 300000
load latency --qos 1 --rate 8000 --seconds 50
sleep 10
minutes=$(( ($(date +%s) - started) / 60 + 1 ))
python3 docs/grafana/render.py docs/grafana/rumq-dashboard.json http://127.0.0.1:19090 \
  "$minutes" "$tmp/dashboard.svg"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$tmp/chromium" --hide-scrollbars --window-size=1536,1520 \
  --screenshot=docs/grafana/dashboard.png "$tmp/dashboard.svg" 2> "$tmp/chromium.log"
echo "docs/grafana/dashboard.png: $(cat "$tmp/load.log" | wc -l) load runs over $minutes min"
