"""Cross-connection order with stock paho-mqtt clients (rumq-broker/tests/ordering.rs).

Usage: order_trials.py PORT FIRST PAIRS VERSION(4|5)

Connects PAIRS pairs of clients (publisher "<v>a<i>", subscriber "<v>b<i>", for i from
FIRST; paho keeps three descriptors per client, and select() takes none above 1023), prints
"connected", then waits for a line on stdin (the test waits meanwhile for the
connections to park, or not). Then, one pair at a time: the subscriber sends SUBSCRIBE
order/<i> (QoS 2; no local for MQTT 5) and, without waiting for its SUBACK, the
publisher publishes one QoS 1 message to it. Both clients run no network thread, so each
packet is written by the call that makes it, in that order. A trial is a miss if the
subscriber has its SUBACK and the publisher its PUBACK, and the message still has not
arrived 300 ms later. Prints one line: "trials N misses PAIR...".
"""
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

port, first, pairs, version = (int(a) for a in sys.argv[1:5])
proto = mqtt.MQTTv5 if version == 5 else mqtt.MQTTv311


class Peer:
    def __init__(self, client_id):
        self.connected = False
        self.acked = False
        self.messages = []
        kw = {} if version == 5 else {"clean_session": True}
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto, **kw)
        c.on_connect = lambda *a: setattr(self, "connected", True)
        c.on_subscribe = lambda *a: setattr(self, "acked", True)
        c.on_publish = lambda *a: setattr(self, "acked", True)
        c.on_message = lambda _c, _u, m: self.messages.append(m.payload)
        c.connect("127.0.0.1", port, keepalive=600)
        self.client = c


def pump(peers, until, deadline):
    """Run the clients' loops (no threads) until `until()` or the deadline."""
    while not until():
        if time.monotonic() > deadline:
            return False
        for p in peers:
            rc = p.client.loop(timeout=0.001)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                raise SystemExit(f"client {p.client._client_id!r} lost its connection: {rc}")
    return True


peers = [(Peer(f"{version}a{i}"), Peer(f"{version}b{i}")) for i in range(first, first + pairs)]
flat = [p for pair in peers for p in pair]
if not pump(flat, lambda: all(p.connected for p in flat), time.monotonic() + 20):
    raise SystemExit("not every client got its CONNACK within 20 s")
print("connected", flush=True)
sys.stdin.readline()

misses = []
for i, (a, b) in enumerate(peers, start=first):
    topic = f"order/{i}"
    if version == 5:
        b.client.subscribe(topic, options=SubscribeOptions(qos=2, noLocal=True))
    else:
        b.client.subscribe(topic, qos=2)
    a.client.publish(topic, b"m%d" % i, qos=1)
    if not pump((a, b), lambda: a.acked and b.acked, time.monotonic() + 5):
        raise SystemExit(f"pair {i}: no SUBACK or PUBACK within 5 s")
    if not pump((b,), lambda: b.messages, time.monotonic() + 0.3):
        misses.append(i)
    elif b.messages != [b"m%d" % i]:
        raise SystemExit(f"pair {i}: received {b.messages!r}")
print("trials", pairs, "misses", *misses, flush=True)
for p in flat:
    p.client.disconnect()
