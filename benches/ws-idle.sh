#!/usr/bin/env bash
# Memory of idle MQTT-over-WebSocket connections: a rumq broker (target/release)
# with a ws listener, N idle MQTT.js clients (the copy scripts/test installs in
# rumq-broker/tests/js), and the broker's RSS before and after.
#
#   benches/ws-idle.sh [N]        # default 2000
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ws=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf '[[listeners]]\naddr = "127.0.0.1:%s"\ntransport = "ws"\n[limits]\nmax_connections = 100000\nconnections_per_sec_max = 0\n' "$ws" >"$tmp/rumq.toml"
target/release/rumq-broker --config "$tmp/rumq.toml" --listen "127.0.0.1:$port" --data-dir "$tmp/data" --log-level warn 2>"$tmp/log" &
pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$ws") 2>/dev/null && break; sleep 0.05; done
before=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
NODE_PATH=rumq-broker/tests/js/node_modules node benches/ws_idle.js "$ws" "$N" >"$tmp/clients" 2>&1 &
for _ in $(seq 120); do grep -q ready "$tmp/clients" && break; sleep 1; done
grep -q ready "$tmp/clients" || { cat "$tmp/clients" >&2; exit 1; }
sleep 2
after=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
awk -v b="$before" -v a="$after" -v n="$N" 'BEGIN { printf "ws idle connections=%d rss_kib_before=%d rss_kib_after=%d rss_kib_per_conn=%.2f\n", n, b, a, (a - b) / n }'
