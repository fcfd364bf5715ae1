# Shared by compare.sh and fanout.sh: build, install Mosquitto if missing, start
# a broker (rumq, an older rumq from BASE, Mosquitto, rumqttd) on a free loopback
# port, run one rumq-load scenario against it.
# Sourced, not run; expects to be in the repository root with RUNS set.

if ! command -v mosquitto >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends mosquitto >/dev/null
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
# rumqttd is measured too when it is installed (`cargo install rumqttd --version
# 0.20.0`, without --locked) or RUMQTTD names its binary; it is not installed here
# because building it takes minutes.
RUMQTTD=${RUMQTTD:-$(command -v rumqttd || { [ -x "$HOME/.cargo/bin/rumqttd" ] && echo "$HOME/.cargo/bin/rumqttd"; } || true)}
# BASE names an older rumq-broker binary, measured as the broker `rumq-base` (same
# config as rumq) where a script asks for it (compare.sh does).
BASE=${BASE:-}
if [ -n "$BASE" ] && [ ! -x "$BASE" ]; then
  echo "BASE=$BASE is not an executable rumq-broker" >&2
  exit 1
fi

cargo build --release -q -p rumq-broker -p benches
LOAD=target/release/rumq-load
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }

# start_rumq [BINARY NAME]: the rumq just built, or BINARY, with the data dir and
# log of NAME (rumq by default).
start_rumq() {
  local bin=${1:-target/release/rumq-broker} name=${2:-rumq}
  RPORT=$(free_port)
  rm -rf "$tmp/$name-data"
  # Limits raised so they do not cap the test (as for Mosquitto below).
  cat >"$tmp/rumq.toml" <<CONF
[limits]
max_connections = 100000
connections_per_sec_max = 0
CONF
  if [ -n "${WITH_TLS:-}" ]; then
    TPORT=$(free_port)
    printf '[[listeners]]\naddr = "127.0.0.1:%s"\ntransport = "tls"\ncert = "%s"\nkey = "%s"\n' \
      "$TPORT" "$tmp/tls/server.pem" "$tmp/tls/server.key" >>"$tmp/rumq.toml"
  fi
  "$bin" --config "$tmp/rumq.toml" --listen "127.0.0.1:$RPORT" --data-dir "$tmp/$name-data" --log-level warn 2>"$tmp/$name.log" &
  RPID=$!; pids+=("$RPID"); wait_port "$RPORT" || { cat "$tmp/$name.log" >&2; return 1; }
  if [ -n "${WITH_TLS:-}" ]; then wait_port "$TPORT"; fi
}
# make_certs: a CA and a server certificate for 127.0.0.1 in $tmp/tls (openssl),
# for the TLS rows; the same files serve rumq and Mosquitto.
make_certs() {
  mkdir -p "$tmp/tls"
  ( cd "$tmp/tls" &&
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
      -subj "/CN=bench CA" -keyout ca.key -out ca.pem &&
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
      -keyout server.key -out server.csr &&
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
      -extfile <(printf "subjectAltName=IP:127.0.0.1") -out server.pem ) >/dev/null 2>&1 &&
  # Mosquitto started as root reads them as the user mosquitto.
  chmod 755 "$tmp" "$tmp/tls" && chmod 644 "$tmp/tls/"*
}
start_mosquitto() {
  MPORT=$(free_port)
  cat >"$tmp/mosquitto.conf" <<CONF
listener $MPORT 127.0.0.1
${WITH_TLS:+cafile $tmp/tls/ca.pem
certfile $tmp/tls/server.pem
keyfile $tmp/tls/server.key}
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
start_rumqttd() {
  DPORT=$(free_port)
  # Its shipped defaults with the limits raised so they do not cap the test; only
  # the MQTT 3.1.1 listener (the one rumq-load speaks).
  cat >"$tmp/rumqttd.toml" <<CONF
id = 0
[router]
id = 0
max_connections = 100010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10
[v4.1]
name = "v4-1"
listen = "127.0.0.1:$DPORT"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 1048576
    max_inflight_count = 100
    dynamic_filters = true
CONF
  "$RUMQTTD" -q -c "$tmp/rumqttd.toml" 2>"$tmp/rumqttd.log" >/dev/null &
  DPID=$!; pids+=("$DPID"); wait_port "$DPORT"
}
# start_cluster: three rumq nodes (ack_copies = 2) with rumq's config; MQTT ports in
# CPORT[1..3], pids in CPIDS; returns once each replicates the other two logs.
start_cluster() {
  local i j peers
  declare -gA CPORT PPORT
  for i in 1 2 3; do PPORT[$i]=$(free_port); CPORT[$i]=$(free_port); done
  CPIDS=()
  cat >"$tmp/cluster.toml" <<CONF
[limits]
max_connections = 100000
connections_per_sec_max = 0
[cluster]
secret = "benches-cluster-secret-0123456789"
ack_copies = 2
CONF
  for i in 1 2 3; do
    rm -rf "$tmp/node-$i"
    peers=()
    for j in 1 2 3; do [ "$j" = "$i" ] || peers+=(--peer "$j=127.0.0.1:${PPORT[$j]}"); done
    target/release/rumq-broker --config "$tmp/cluster.toml" --listen "127.0.0.1:${CPORT[$i]}" \
      --data-dir "$tmp/node-$i" --log-level info --node-id "$i" \
      --cluster-listen "127.0.0.1:${PPORT[$i]}" "${peers[@]}" 2>"$tmp/node-$i.log" &
    CPIDS+=($!); pids+=($!)
  done
  for i in 1 2 3; do
    wait_port "${CPORT[$i]}" || { cat "$tmp/node-$i.log" >&2; return 1; }
    for _ in $(seq 200); do
      [ "$(grep -c 'replicating' "$tmp/node-$i.log" || true)" -ge 2 ] && break
      sleep 0.05
    done
    [ "$(grep -c 'replicating' "$tmp/node-$i.log" || true)" -ge 2 ] \
      || { echo "node $i never linked to both others:" >&2; cat "$tmp/node-$i.log" >&2; return 1; }
  done
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# field KEY LINE -> value
field() { tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p" | head -1; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else print a[int((NR+1)/2)]}'; }

# once BROKER METRIC ARGS... : one run against a fresh broker; appends the METRIC
# value (nan on failure) to $tmp/vals-BROKER and the broker CPU per delivery
# (throughput scenarios) to $tmp/cpus-BROKER.
once() {
  local broker=$1 metric=$2; shift 2
  local extra=()
  case "$broker" in
    rumq) start_rumq; port=$RPORT; pid=$RPID ;;
    rumq-cluster)
      # Publishers on node 1; subscribers on the nodes CLUSTER_SUBS lists, in turn.
      start_cluster; port=${CPORT[1]}; pid=${CPIDS[0]}
      local n subs=()
      for n in ${CLUSTER_SUBS//,/ }; do subs+=("127.0.0.1:${CPORT[$n]}"); done
      extra=(--sub-addr "$(IFS=,; echo "${subs[*]}")" --also-pids "${CPIDS[1]},${CPIDS[2]}") ;;
    rumq-base) start_rumq "$BASE" rumq-base; port=$RPORT; pid=$RPID ;;
    rumq-tls) WITH_TLS=1 start_rumq; port=$TPORT; pid=$RPID; extra=(--tls-ca "$tmp/tls/ca.pem") ;;
    mosquitto-tls) WITH_TLS=1 start_mosquitto; port=$MPORT; pid=$MPID; extra=(--tls-ca "$tmp/tls/ca.pem") ;;
    rumqttd) start_rumqttd; port=$DPORT; pid=$DPID ;;
    *) start_mosquitto; port=$MPORT; pid=$MPID ;;
  esac
  line=$("$LOAD" --addr "127.0.0.1:$port" --broker-pid "$pid" "${extra[@]}" --timeout-s 600 "$@" 2>"$tmp/load.err" | grep '^scenario=' || true)
  stop "$pid"
  if [ "$broker" = rumq-cluster ]; then for p in "${CPIDS[@]}"; do stop "$p"; done; fi
  if [ -z "$line" ]; then
    echo "  [$broker] failed: $(tail -1 "$tmp/load.err")" >&2
    echo nan >>"$tmp/vals-$broker"
    return
  fi
  echo "  [$broker] $line" >&2
  field "$metric" "$line" >>"$tmp/vals-$broker"
  field broker_cpu_us_per_delivery "$line" >>"$tmp/cpus-$broker"
}

# interleaved METRIC BROKER... -- ARGS... : RUNS rounds of one run per broker, in
# turn, so that a slow spell of the shared machine (they last minutes) falls on every
# broker alike rather than on whichever ran its runs then. Leaves the median METRIC
# in $tmp/val-BROKER and the median CPU per delivery in $tmp/cpu-BROKER.
interleaved() {
  local metric=$1; shift
  local brokers=() b
  while [ "$1" != -- ]; do brokers+=("$1"); shift; done
  shift
  for b in "${brokers[@]}"; do rm -f "$tmp/vals-$b" "$tmp/cpus-$b"; touch "$tmp/vals-$b" "$tmp/cpus-$b"; done
  for _ in $(seq "$RUNS"); do
    for b in "${brokers[@]}"; do once "$b" "$metric" "$@"; done
  done
  for b in "${brokers[@]}"; do
    median <"$tmp/vals-$b" >"$tmp/val-$b"
    { grep -E '^[0-9.]+$' "$tmp/cpus-$b" || true; } | median >"$tmp/cpu-$b"
  done
}
