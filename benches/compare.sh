#!/usr/bin/env bash
# Side-by-side end-to-end benchmark: rumq and Mosquitto on free loopback ports, the
# same rumq-load scenarios against each, in one run; prints a table with the ratio
# rumq/Mosquitto for every figure (higher is better for rates, lower for latency and
# memory). Medians of RUNS runs (default 3).
#
#   benches/compare.sh                 # full run (a few minutes)
#   QUICK=1 RUNS=1 benches/compare.sh  # small counts, to check that it works
#
# Mosquitto is installed from Debian if missing. Its settings follow the issue:
# set_tcp_nodelay true, max_inflight_messages 100, max_queued_messages 1000000,
# persistence false. rumq runs its default config (fsync = "interval").
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then M=20000; BIG=200; IDLE=500; LAT_S=1; else M=1000000; BIG=20000; IDLE=10000; LAT_S=5; fi

if ! command -v mosquitto >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends mosquitto >/dev/null
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)

cargo build --release -q -p rumq-broker -p benches
LOAD=target/release/rumq-load
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }

start_rumq() {
  RPORT=$(free_port)
  rm -rf "$tmp/rumq-data"
  target/release/rumq-broker --listen "127.0.0.1:$RPORT" --data-dir "$tmp/rumq-data" --log-level warn 2>"$tmp/rumq.log" &
  RPID=$!; pids+=("$RPID"); wait_port "$RPORT"
}
start_mosquitto() {
  MPORT=$(free_port)
  cat >"$tmp/mosquitto.conf" <<CONF
listener $MPORT 127.0.0.1
allow_anonymous true
set_tcp_nodelay true
max_inflight_messages 100
max_queued_messages 1000000
persistence false
log_dest stderr
log_type error
CONF
  "$MOSQUITTO" -c "$tmp/mosquitto.conf" 2>"$tmp/mosquitto.log" &
  MPID=$!; pids+=("$MPID"); wait_port "$MPORT"
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# field KEY LINE -> value
field() { tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p" | head -1; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else print a[int((NR+1)/2)]}'; }

# run BROKER METRIC ARGS... -> median of RUNS runs (fresh broker each run)
run() {
  local broker=$1 metric=$2; shift 2
  local vals=()
  for _ in $(seq "$RUNS"); do
    if [ "$broker" = rumq ]; then start_rumq; port=$RPORT; pid=$RPID; else start_mosquitto; port=$MPORT; pid=$MPID; fi
    line=$("$LOAD" --addr "127.0.0.1:$port" --broker-pid "$pid" --timeout-s 600 "$@" 2>"$tmp/load.err" | grep '^scenario=' || true)
    stop "$pid"
    if [ -z "$line" ]; then echo "  [$broker] failed: $(tail -1 "$tmp/load.err")" >&2; vals+=(nan); continue; fi
    echo "  [$broker] $line" >&2
    vals+=("$(field "$metric" "$line")")
  done
  printf '%s\n' "${vals[@]}" | median
}

rows=()
row() { # LABEL METRIC ARGS...
  local label=$1 metric=$2; shift 2
  echo "== $label" >&2
  local r m
  r=$(run rumq "$metric" "$@")
  m=$(run mosquitto "$metric" "$@")
  rows+=("$label|$metric|$r|$m")
}

row "1 pub -> 1 sub, QoS 0, deliveries/s"          deliveries_per_s throughput --qos 0 --messages $M
row "1 pub -> 1 sub, QoS 1, deliveries/s"          deliveries_per_s throughput --qos 1 --messages $M
row "4 pubs -> 1 wildcard sub, QoS 1, deliveries/s" deliveries_per_s throughput --qos 1 --pubs 4 --distinct-topics --messages $((M / 4))
row "1 pub -> 8 subs, QoS 0, deliveries/s"         deliveries_per_s throughput --qos 0 --subs 8 --messages $((M / 4))
row "1 pub -> 1 sub, 64 KiB, QoS 1, MB/s"          mb_per_s         throughput --qos 1 --payload 65536 --messages $BIG
row "latency at 10k msg/s QoS 1, p50 us"           p50_us           latency --rate 10000 --seconds $LAT_S --qos 1
row "latency at 10k msg/s QoS 1, p99 us"           p99_us           latency --rate 10000 --seconds $LAT_S --qos 1
row "RSS per idle connection ($IDLE idle), KiB"    rss_kib_per_conn connections --count $IDLE --hold-s 2

echo
printf '| %-48s | %12s | %12s | %10s |\n' "scenario (64 B payloads unless said)" "rumq" "Mosquitto" "rumq/Mosq"
printf '|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..50})" "$(printf -- '-%.0s' {1..14})" "$(printf -- '-%.0s' {1..14})" "$(printf -- '-%.0s' {1..12})"
for r in "${rows[@]}"; do
  IFS='|' read -r label metric a b <<<"$r"
  ratio=$(awk -v a="$a" -v b="$b" 'BEGIN { if (b+0 == 0 || a == "nan" || b == "nan") print "n/a"; else printf "%.2f", a / b }')
  printf '| %-48s | %12s | %12s | %10s |\n' "$label" "$a" "$b" "$ratio"
done
echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); mosquitto $("$MOSQUITTO" -h 2>&1 | head -1 | awk '{print $3}'); runs per figure: $RUNS (median)"
