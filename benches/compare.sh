#!/usr/bin/env bash
# Side-by-side end-to-end benchmark: rumq and Mosquitto (and rumqttd, when it is
# installed) on free loopback ports, the same rumq-load scenarios against each, in
# one run; prints a table with the ratio rumq/Mosquitto (and rumq/rumqttd) for every
# figure (higher is better for rates, lower for latency and memory). Medians of RUNS
# runs (default 3), the brokers taking turns run by run.
#
#   benches/compare.sh                 # full run (a few minutes)
#   QUICK=1 RUNS=1 benches/compare.sh  # small counts, to check that it works
#   CLUSTER=0 benches/compare.sh       # without the three-node cluster rows
#   TLS=0 benches/compare.sh           # without the TLS rows (they need openssl)
#
# Before/after figures for a change: BASE names an older rumq-broker binary, which
# then runs as a fourth broker, rumq-base, in the same rotation (right after rumq),
# with rumq's config and a data dir and port of its own; both tables gain its column
# and a rumq/base ratio. Without BASE the output is as before. A baseline from an
# older commit:
#
#   git worktree add /tmp/base <commit> && (cd /tmp/base && cargo build --release -p rumq-broker)
#   BASE=/tmp/base/target/release/rumq-broker benches/compare.sh
#
# Mosquitto is installed from Debian if missing. Its settings follow the issue:
# set_tcp_nodelay true, max_inflight_messages 100, max_queued_messages 1000000,
# persistence false. rumq runs its default config (fsync = "interval").
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then M=20000; BIG=200; IDLE=500; LAT_S=1; PROBE=2000; TLSN=200; else M=1000000; BIG=20000; IDLE=10000; LAT_S=5; PROBE=10000; TLSN=2000; fi

source benches/lib.sh

rows=()
cpu_rows=()
row() { # LABEL METRIC ARGS...
  local label=$1 metric=$2; shift 2
  echo "== $label" >&2
  local brokers=(rumq) r m d=n/a b=n/a rc mc dc=n/a bc=n/a
  if [ -n "$BASE" ]; then brokers+=(rumq-base); fi
  brokers+=(mosquitto)
  if [ -n "$RUMQTTD" ]; then brokers+=(rumqttd); fi
  interleaved "$metric" "${brokers[@]}" -- "$@"
  r=$(cat "$tmp/val-rumq"); rc=$(cat "$tmp/cpu-rumq")
  m=$(cat "$tmp/val-mosquitto"); mc=$(cat "$tmp/cpu-mosquitto")
  if [ -n "$RUMQTTD" ]; then d=$(cat "$tmp/val-rumqttd"); dc=$(cat "$tmp/cpu-rumqttd"); fi
  if [ -n "$BASE" ]; then b=$(cat "$tmp/val-rumq-base"); bc=$(cat "$tmp/cpu-rumq-base"); fi
  rows+=("$label|$metric|$r|$m|$d|$b")
  if [ "$1" = throughput ]; then cpu_rows+=("${label%, *}|cpu|$rc|$mc|$dc|$bc"); fi
}

row "1 pub -> 1 sub, QoS 0, deliveries/s"          deliveries_per_s throughput --qos 0 --messages $M
row "1 pub -> 1 sub, QoS 1, deliveries/s"          deliveries_per_s throughput --qos 1 --messages $M
row "4 pubs -> 1 wildcard sub, QoS 1, deliveries/s" deliveries_per_s throughput --qos 1 --pubs 4 --distinct-topics --messages $((M / 4))
row "1 pub -> 8 subs, QoS 0, deliveries/s"         deliveries_per_s throughput --qos 0 --subs 8 --messages $((M / 4))
row "1 pub -> 1 sub, 64 KiB, QoS 1, MB/s"          mb_per_s         throughput --qos 1 --payload 65536 --messages $BIG
row "latency at 10k msg/s QoS 1, p50 us"           p50_us           latency --rate 10000 --seconds $LAT_S --qos 1
row "latency at 10k msg/s QoS 1, p99 us"           p99_us           latency --rate 10000 --seconds $LAT_S --qos 1
row "closed loop, 1 in flight, QoS 1, p50 us"      p50_us           probe --messages $PROBE --period-us 100 --payload 64
row "closed loop, 1 in flight, QoS 1, p99 us"      p99_us           probe --messages $PROBE --period-us 100 --payload 64
row "RSS per idle connection ($IDLE idle), KiB"    rss_kib_per_conn connections --count $IDLE --hold-s 2

# Cluster rows: three rumq nodes (ack_copies = 2: every QoS 1 ack and delivery waits
# for a second node's copy) against one rumq node, in the same rotation. CLUSTER=0
# leaves them out.
crows=()
crow() { # LABEL METRIC SUB_NODES ARGS...
  local label=$1 metric=$2
  CLUSTER_SUBS=$3; shift 3
  echo "== $label" >&2
  interleaved "$metric" rumq rumq-cluster -- "$@"
  crows+=("$label|$(cat "$tmp/val-rumq")|$(cat "$tmp/val-rumq-cluster")|$(cat "$tmp/cpu-rumq")|$(cat "$tmp/cpu-rumq-cluster")")
}
if [ "${CLUSTER:-1}" = 1 ]; then
  crow "1 pub (node 1) -> 1 sub (node 2), QoS 1, deliveries/s"   deliveries_per_s 2     throughput --qos 1 --messages $M
  crow "1 pub (node 1) -> 8 subs on 3 nodes, QoS 1, deliveries/s" deliveries_per_s 1,2,3 throughput --qos 1 --subs 8 --messages $((M / 4))
  crow "latency at 10k msg/s QoS 1, node 1 -> node 2, p50 us"     p50_us           2     latency --rate 10000 --seconds $LAT_S --qos 1
  crow "latency at 10k msg/s QoS 1, node 1 -> node 2, p99 us"     p99_us           2     latency --rate 10000 --seconds $LAT_S --qos 1
fi

# TLS rows: rumq's TLS listener against Mosquitto's, the same certificate (ECDSA
# P-256, made by openssl). TLS=0 leaves them out.
trows=()
trow() { # LABEL METRIC ARGS...
  local label=$1 metric=$2; shift 2
  echo "== $label" >&2
  interleaved "$metric" rumq-tls mosquitto-tls -- "$@"
  trows+=("$label|$(cat "$tmp/val-rumq-tls")|$(cat "$tmp/val-mosquitto-tls")|$(cat "$tmp/cpu-rumq-tls")|$(cat "$tmp/cpu-mosquitto-tls")")
}
if [ "${TLS:-1}" = 1 ] && make_certs; then
  trow "TLS: 1 pub -> 1 sub, QoS 1, deliveries/s"           deliveries_per_s throughput --qos 1 --messages $M
  trow "TLS: connections set up per second ($TLSN)"        connects_per_s   connections --count $TLSN --hold-s 0
  trow "TLS: RSS per idle connection ($IDLE idle), KiB"    rss_kib_per_conn connections --count $IDLE --hold-s 2
fi

echo
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b+0 == 0 || a == "nan" || b == "nan" || b == "n/a") print "n/a"; else printf "%.2f", a / b }'; }
# table HEADING ROW... : a markdown table of LABEL|METRIC|rumq|Mosquitto|rumqttd|base
# rows; the baseline's columns (its value, rumq/base) only with BASE.
table() {
  local heading=$1; shift
  printf '| %-48s | %12s | %12s | %12s | %10s | %10s |' "$heading" "rumq" "Mosquitto" "rumqttd" "rumq/Mosq" "rumq/rumqttd"
  if [ -n "$BASE" ]; then printf ' %12s | %10s |' "rumq-base" "rumq/base"; fi
  echo
  printf '|%s|%s|%s|%s|%s|%s|' "$(printf -- '-%.0s' {1..50})" "$(printf -- '-%.0s' {1..14})" "$(printf -- '-%.0s' {1..14})" "$(printf -- '-%.0s' {1..14})" "$(printf -- '-%.0s' {1..12})" "$(printf -- '-%.0s' {1..12})"
  if [ -n "$BASE" ]; then printf '%s|%s|' "$(printf -- '-%.0s' {1..14})" "$(printf -- '-%.0s' {1..12})"; fi
  echo
  local r label metric a b d base
  for r in "$@"; do
    IFS='|' read -r label metric a b d base <<<"$r"
    printf '| %-48s | %12s | %12s | %12s | %10s | %10s |' "$label" "$a" "$b" "$d" "$(ratio "$a" "$b")" "$(ratio "$a" "$d")"
    if [ -n "$BASE" ]; then printf ' %12s | %10s |' "$base" "$(ratio "$a" "$base")"; fi
    echo
  done
}
table "scenario (64 B payloads unless said)" "${rows[@]}"
echo
echo "Broker CPU per delivered message, µs (user + system time of all its threads, from"
echo "/proc; lower is better; steadier than the rates above when the machine is shared):"
echo
table "scenario" "${cpu_rows[@]}"
# six_columns COL2..COL6: the header and rule of a two-broker table (scenario first).
six_columns() {
  printf '| %-48s | %12s | %12s | %10s | %12s | %14s |\n' "scenario" "$@"
  printf '|%s|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..50})" "$(printf -- '-%.0s' {1..14})" "$(printf -- '-%.0s' {1..14})" "$(printf -- '-%.0s' {1..12})" "$(printf -- '-%.0s' {1..14})" "$(printf -- '-%.0s' {1..16})"
}
if [ ${#crows[@]} -gt 0 ]; then
  echo
  echo "Three rumq nodes (ack_copies = 2; publisher on node 1) against one rumq node, 64 B"
  echo "(for one node, \"node 2\" is the same node); CPU per delivered message in µs, for the"
  echo "cluster per node (all three nodes' CPU / 3):"
  echo
  six_columns "rumq 1 node" "rumq 3 nodes" "3/1" "CPU, 1 node" "CPU, per node"
  for r in "${crows[@]}"; do
    IFS='|' read -r label one three c1 c3 <<<"$r"
    per=$(awk -v c="$c3" 'BEGIN { if (c == "nan" || c == "") print "n/a"; else printf "%.2f", c / 3 }')
    printf '| %-48s | %12s | %12s | %10s | %12s | %14s |\n' "$label" "$one" "$three" "$(ratio "$three" "$one")" "$c1" "$per"
  done
fi
if [ ${#trows[@]} -gt 0 ]; then
  echo
  echo "TLS listeners, rumq and Mosquitto with the same certificate; CPU per delivered"
  echo "message in µs (throughput rows):"
  echo
  six_columns "rumq" "Mosquitto" "rumq/Mosq" "CPU, rumq" "CPU, Mosquitto"
  for r in "${trows[@]}"; do
    IFS='|' read -r label a b ca cb <<<"$r"
    printf '| %-48s | %12s | %12s | %10s | %12s | %14s |\n' "$label" "$a" "$b" "$(ratio "$a" "$b")" "$ca" "$cb"
  done
fi
echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); mosquitto $("$MOSQUITTO" -h 2>&1 | head -1 | awk '{print $3}'); rumqttd ${RUMQTTD:+$("$RUMQTTD" -V 2>&1 | awk '{print $2}')}; runs per figure: $RUNS (median)${BASE:+; rumq-base: $BASE}"
