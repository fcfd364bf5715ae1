//! `rumq-load`: an end-to-end load generator that speaks stock MQTT 3.1.1 over TCP.
//!
//! `topics`: one publisher spreads messages over N distinct topics (pipelined, with a
//! bounded window of unacknowledged QoS 1 publishes and batched writes) while one
//! wildcard subscriber counts what arrives; prints the publish rate, deliveries, and
//! (with --broker-pid) the broker's RSS and open file descriptors.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::BytesMut;
use clap::{Parser, Subcommand};
use mqttbytes::v4::{self, Connect, Packet, Publish, Subscribe};
use mqttbytes::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Parser)]
struct Cli {
    /// Broker address.
    #[arg(long, default_value = "127.0.0.1:1883")]
    addr: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Publish over many distinct topics.
    Topics {
        /// Distinct topics.
        #[arg(long, default_value_t = 100_000)]
        topics: usize,
        /// Messages in all (round-robin over the topics).
        #[arg(long, default_value_t = 200_000)]
        messages: usize,
        /// Payload bytes.
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Unacknowledged publishes in flight.
        #[arg(long, default_value_t = 1000)]
        window: usize,
        /// Broker process id, to report its RSS and open files.
        #[arg(long)]
        broker_pid: Option<u32>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout_s: u64,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Topics {
            topics,
            messages,
            payload,
            window,
            broker_pid,
            timeout_s,
        } => {
            let limit = Duration::from_secs(timeout_s);
            tokio::time::timeout(
                limit,
                run_topics(&cli.addr, topics, messages, payload, window, broker_pid),
            )
            .await
            .context("timed out")?
        }
    }
}

async fn connect(addr: &str, id: &str) -> anyhow::Result<(TcpStream, BytesMut)> {
    let mut s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    s.set_nodelay(true)?;
    let mut c = Connect::new(id);
    c.keep_alive = 60;
    let mut out = BytesMut::new();
    c.write(&mut out).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    s.write_all(&out).await?;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        match v4::read(&mut buf, 1 << 24) {
            Ok(Packet::ConnAck(a)) => {
                if a.code != v4::ConnectReturnCode::Success {
                    bail!("connection refused: {:?}", a.code);
                }
                return Ok((s, buf));
            }
            Ok(other) => bail!("expected CONNACK, got {other:?}"),
            Err(mqttbytes::Error::InsufficientBytes(_)) => {
                if s.read_buf(&mut buf).await? == 0 {
                    bail!("closed before CONNACK");
                }
            }
            Err(e) => bail!("{e:?}"),
        }
    }
}

fn proc_stats(pid: u32) -> Option<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss_kib, fds))
}

async fn run_topics(
    addr: &str,
    topics: usize,
    messages: usize,
    payload: usize,
    window: usize,
    broker_pid: Option<u32>,
) -> anyhow::Result<()> {
    if let Some((rss, fds)) = broker_pid.and_then(proc_stats) {
        println!("broker before: rss_kib={rss} open_fds={fds}");
    }
    // The subscriber.
    let (mut sub, mut sub_buf) = connect(addr, "rumq-load-sub").await?;
    let mut out = BytesMut::new();
    let mut s = Subscribe::new("load/#", QoS::AtMostOnce);
    s.pkid = 1;
    s.write(&mut out).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    sub.write_all(&out).await?;
    let subscriber = tokio::spawn(async move {
        let mut received = 0usize;
        let mut suback = false;
        while received < messages {
            match v4::read(&mut sub_buf, 1 << 24) {
                Ok(Packet::Publish(_)) => received += 1,
                Ok(Packet::SubAck(_)) => suback = true,
                Ok(_) => {}
                Err(mqttbytes::Error::InsufficientBytes(_)) => {
                    match sub.read_buf(&mut sub_buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                Err(_) => break,
            }
        }
        (received, suback)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (stream, mut buf) = connect(addr, "rumq-load-pub").await?;
    let (mut rd, mut wr) = stream.into_split();
    let body = vec![b'x'; payload];
    let names: Vec<String> = (0..topics)
        .map(|i| format!("load/dev{i}/telemetry"))
        .collect();
    let start = Instant::now();
    let reader = tokio::spawn(async move {
        let mut acked = 0usize;
        while acked < messages {
            match v4::read(&mut buf, 1 << 24) {
                Ok(Packet::PubAck(_)) => acked += 1,
                Ok(_) => {}
                Err(mqttbytes::Error::InsufficientBytes(_)) => match rd.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                },
                Err(_) => break,
            }
        }
        acked
    });
    // Pace by a window of unacknowledged publishes: sent - acked <= window. The reader
    // task owns the ack count, so the writer sends in bursts of `window` and the
    // pacing is enforced by TCP and the broker's inflight_in_max.
    let mut out = BytesMut::with_capacity(256 * 1024);
    for i in 0..messages {
        let mut p = Publish::new(names[i % topics].as_str(), QoS::AtLeastOnce, body.clone());
        p.pkid = (i % 65_000) as u16 + 1;
        p.write(&mut out).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        if out.len() >= 64 * 1024 || (i + 1) % window == 0 {
            wr.write_all(&out).await?;
            out.clear();
        }
    }
    wr.write_all(&out).await?;
    let acked = reader.await?;
    let elapsed = start.elapsed();
    let (received, _) = tokio::time::timeout(Duration::from_secs(30), subscriber).await??;
    println!(
        "topics={topics} messages={messages} payload={payload} acked={acked} received={received} seconds={:.3} publishes_per_s={:.0}",
        elapsed.as_secs_f64(),
        acked as f64 / elapsed.as_secs_f64()
    );
    if let Some((rss, fds)) = broker_pid.and_then(proc_stats) {
        println!("broker after: rss_kib={rss} open_fds={fds}");
    }
    if acked != messages || received != messages {
        bail!("lost messages: acked {acked}, received {received} of {messages}");
    }
    Ok(())
}
