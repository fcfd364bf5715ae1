//! A closed-loop latency probe: one publisher and one subscriber socket on one
//! thread, blocking reads, one QoS 1 message in flight at a time, paced. Each
//! message is written to the publisher's socket, timed until it arrives on the
//! subscriber's, acknowledged there, and its PUBACK awaited before the next.
//!
//! It complements `latency` (open loop, a thread and a runtime per client, as two
//! client processes would be): with nothing queued behind a slow message and no
//! runtime of its own in the way, it measures the broker's path for one message.
//! On a shared VM it is the steadier instrument (docs/performance.md, "Latency").

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use mqttbytes::v4::{Packet, PubAck, Publish};
use mqttbytes::QoS;

use super::client::{decode, enc, encode_connect, encode_subscribe, expect_connack, expect_suback};
use super::scenario::micros_histogram;

const TOPIC: &str = "bench/probe";

/// Percentiles of the time from a publish leaving to its delivery, µs.
#[derive(Debug)]
pub struct ProbeResult {
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub count: u64,
}

/// A blocking MQTT 3.1.1 connection.
struct Blocking {
    socket: TcpStream,
    buf: BytesMut,
    out: BytesMut,
}

impl Blocking {
    fn connect(addr: &str, id: &str) -> anyhow::Result<Self> {
        let socket = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
        socket.set_nodelay(true)?;
        let mut c = Blocking {
            socket,
            buf: BytesMut::with_capacity(4096),
            out: BytesMut::with_capacity(256),
        };
        encode_connect(id, true, &mut c.out)?;
        c.flush()?;
        expect_connack(c.next()?)?;
        Ok(c)
    }

    /// Write what was encoded into `out`.
    fn flush(&mut self) -> anyhow::Result<()> {
        self.socket.write_all(&self.out)?;
        self.out.clear();
        Ok(())
    }

    /// The next packet, blocking until it is whole.
    fn next(&mut self) -> anyhow::Result<Packet> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(p) = decode(&mut self.buf)? {
                return Ok(p);
            }
            let n = self.socket.read(&mut chunk)?;
            if n == 0 {
                bail!("connection closed by the broker");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Send `count` QoS 1 messages of `payload` bytes, one every `period` (or as soon as
/// the previous one is acknowledged, if later), one in flight.
pub fn probe(
    addr: &str,
    count: u64,
    period: Duration,
    payload: usize,
) -> anyhow::Result<ProbeResult> {
    let mut sub = Blocking::connect(addr, "bench-probe-sub")?;
    encode_subscribe(TOPIC, QoS::AtLeastOnce, &mut sub.out)?;
    sub.flush()?;
    expect_suback(sub.next()?)?;
    let mut publisher = Blocking::connect(addr, "bench-probe-pub")?;
    let body = Bytes::from(vec![b'x'; payload]);
    let mut h = micros_histogram()?;
    let start = Instant::now();
    for i in 0..count {
        let due = start + period.saturating_mul(u32::try_from(i).unwrap_or(u32::MAX));
        let wait = due.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        // Packet ids 1..=65535, in turn.
        let pkid = u16::try_from(i % 65_535 + 1).unwrap_or(1);
        let mut p = Publish::from_bytes(TOPIC, QoS::AtLeastOnce, body.clone());
        p.pkid = pkid;
        enc(p.write(&mut publisher.out))?;
        let sent = Instant::now();
        publisher.flush()?;
        let delivered = match sub.next()? {
            Packet::Publish(d) => d,
            other => bail!("expected the PUBLISH, got {other:?}"),
        };
        h.saturating_record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
        enc(PubAck::new(delivered.pkid).write(&mut sub.out))?;
        sub.flush()?;
        match publisher.next()? {
            Packet::PubAck(a) if a.pkid == pkid => {}
            other => bail!("expected the PUBACK of {pkid}, got {other:?}"),
        }
    }
    Ok(ProbeResult {
        p50_us: h.value_at_quantile(0.5),
        p90_us: h.value_at_quantile(0.9),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
        count,
    })
}
