//! `rumq-load`: end-to-end load against any MQTT 3.1.1 broker (stock wire protocol,
//! batched writes). Each subcommand prints one `key=value` line, bounded in count and
//! time. See `benches/compare.sh` for the side-by-side run against Mosquitto.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use benches::load::{proc_cpu_seconds, proc_stats, scenario};
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
struct Cli {
    /// Broker address.
    #[arg(long, default_value = "127.0.0.1:1883")]
    addr: String,
    /// Where the subscribers connect, when not to `--addr`: one address or
    /// several, comma-separated, taken in turn (the nodes of a cluster); the
    /// latency scenario's one subscriber takes the first.
    #[arg(long)]
    sub_addr: Option<String>,
    /// Broker process id, to report its RSS and open files.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// More broker processes (the other nodes of a cluster), comma-separated: the
    /// CPU per delivery reported is then that of all of them together.
    #[arg(long, value_delimiter = ',')]
    also_pids: Vec<u32>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
    /// Connect over TLS, trusting the CA certificates in this PEM file.
    #[arg(long)]
    tls_ca: Option<std::path::PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Publishers → subscribers as fast as the broker goes; exact loss/dup/order counts.
    Throughput(ThroughputArgs),
    /// One publisher at a fixed rate, one subscriber: latency percentiles.
    Latency(LatencyArgs),
    /// One QoS 1 message in flight at a time, one every `period_us`: closed-loop
    /// latency percentiles from one thread with blocking sockets.
    Probe(ProbeArgs),
    /// N idle connections: connect time and broker RSS per connection.
    Connections(ConnectionsArgs),
}

// The subcommands' flags. (No doc comments on these structs: clap would take them
// for the subcommands' help in place of the variants' above.)

#[derive(Debug, Args)]
struct ThroughputArgs {
    #[arg(long, default_value_t = 1)]
    pubs: usize,
    #[arg(long, default_value_t = 1)]
    subs: usize,
    #[arg(long, default_value_t = 1)]
    qos: u8,
    /// Payload bytes (at least 20).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Messages per publisher.
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Each publisher on its own topic, subscribers on `bench/+`.
    #[arg(long)]
    distinct_topics: bool,
    /// Subscribers on `bench/+` even for one topic.
    #[arg(long)]
    wildcard: bool,
    /// Each publisher spreads its messages over this many topics of its own.
    #[arg(long, default_value_t = 1)]
    topics: usize,
    /// Unacknowledged QoS 1/2 publishes per publisher.
    #[arg(long, default_value_t = 1000)]
    window: usize,
}

#[derive(Debug, Args)]
struct LatencyArgs {
    #[arg(long, default_value_t = 10_000.0)]
    rate: f64,
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    #[arg(long, default_value_t = 1)]
    qos: u8,
    #[arg(long, default_value_t = 64)]
    payload: usize,
}

#[derive(Debug, Args)]
struct ProbeArgs {
    #[arg(long, default_value_t = 10_000)]
    messages: u64,
    #[arg(long, default_value_t = 100)]
    period_us: u64,
    #[arg(long, default_value_t = 16)]
    payload: usize,
}

#[derive(Debug, Args)]
struct ConnectionsArgs {
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// Seconds to hold them before measuring.
    #[arg(long, default_value_t = 2)]
    hold_s: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(ca) = &cli.tls_ca {
        // Every connection over TLS (the probe scenario's blocking client stays plain).
        benches::load::client::use_tls(ca)?;
    }
    let limit = Duration::from_secs(cli.timeout_s);
    tokio::time::timeout(limit, run(&cli))
        .await
        .context("timed out")?
}

async fn run(cli: &Cli) -> anyhow::Result<()> {
    match &cli.cmd {
        Cmd::Throughput(a) => throughput(cli, a).await,
        Cmd::Latency(a) => latency(cli, a).await,
        Cmd::Probe(a) => probe(cli, a).await,
        Cmd::Connections(a) => connections(cli, a).await,
    }
}

async fn throughput(cli: &Cli, a: &ThroughputArgs) -> anyhow::Result<()> {
    let ThroughputArgs {
        pubs,
        subs,
        qos,
        payload,
        messages,
        distinct_topics,
        wildcard,
        topics,
        window,
    } = a;
    let before = cli.broker_pid.and_then(proc_stats);
    let cpu_before = brokers_cpu_seconds(cli);
    let t = scenario::Throughput {
        pubs: *pubs,
        subs: *subs,
        qos: *qos,
        payload: (*payload).max(benches::load::payload::HEADER),
        messages: *messages,
        distinct_topics: *distinct_topics,
        wildcard: *wildcard,
        topics: *topics,
        window: *window,
        idle_timeout: Duration::from_secs(10),
        sub_addr: cli.sub_addr.clone(),
    };
    let r = scenario::throughput(&cli.addr, &t).await?;
    let cpu_us = cpu_us_per_delivery(cli, cpu_before, r.received);
    println!(
        "scenario=throughput pubs={pubs} subs={subs} qos={qos} payload={payload} messages={messages} topics={topics} \
         deliveries_per_s={:.0} mb_per_s={:.1} broker_cpu_us_per_delivery={cpu_us} expected={} received={} missing={} duplicates={} reordered={} acked={} seconds={:.3}",
        r.deliveries_per_s,
        r.mb_per_s,
        r.expected,
        r.received,
        r.expected.saturating_sub(r.received),
        r.duplicates,
        r.reordered,
        r.acked,
        r.seconds
    );
    if let (Some((rss0, fds0)), Some((rss1, fds1))) = (before, cli.broker_pid.and_then(proc_stats))
    {
        println!("broker rss_kib_before={rss0} rss_kib_after={rss1} open_fds_before={fds0} open_fds_after={fds1}");
    }
    if r.received != r.expected {
        bail!(
            "{} of {} messages missing",
            r.expected - r.received,
            r.expected
        );
    }
    Ok(())
}

/// CPU seconds of the broker and `--also-pids` together (`None` if one is unknown).
fn brokers_cpu_seconds(cli: &Cli) -> Option<f64> {
    let mut total = proc_cpu_seconds(cli.broker_pid?)?;
    for pid in &cli.also_pids {
        total += proc_cpu_seconds(*pid)?;
    }
    Some(total)
}

/// Broker CPU per delivery since `cpu_before`, µs: steadier than a rate on a shared
/// machine, where the broker may simply not be scheduled. "unknown" without a pid
/// (or deliveries).
fn cpu_us_per_delivery(cli: &Cli, cpu_before: Option<f64>, received: u64) -> String {
    match (cpu_before, brokers_cpu_seconds(cli)) {
        (Some(a), Some(b)) if received > 0 => format!("{:.2}", (b - a) * 1e6 / received as f64),
        _ => "unknown".into(),
    }
}

async fn latency(cli: &Cli, a: &LatencyArgs) -> anyhow::Result<()> {
    let sub = cli.sub_addr.as_deref().and_then(|s| s.split(',').next());
    let addrs = (cli.addr.as_str(), sub);
    let r = scenario::latency(addrs, a.rate, a.seconds, a.qos, a.payload.max(20)).await?;
    println!(
        "scenario=latency rate={} qos={} p50_us={} p99_us={} p999_us={} max_us={} sent={} received={}",
        a.rate, a.qos, r.p50_us, r.p99_us, r.p999_us, r.max_us, r.sent, r.received
    );
    Ok(())
}

async fn probe(cli: &Cli, a: &ProbeArgs) -> anyhow::Result<()> {
    let ProbeArgs {
        messages,
        period_us,
        payload,
    } = a;
    let (addr, count, size) = (cli.addr.clone(), *messages, *payload);
    let period = Duration::from_micros(*period_us);
    // Blocking sockets: off the runtime.
    let r = tokio::task::spawn_blocking(move || {
        benches::load::probe::probe(&addr, count, period, size)
    })
    .await??;
    println!(
        "scenario=probe messages={} period_us={period_us} payload={payload} p50_us={} p90_us={} p99_us={} p999_us={} max_us={}",
        r.count, r.p50_us, r.p90_us, r.p99_us, r.p999_us, r.max_us
    );
    Ok(())
}

async fn connections(cli: &Cli, a: &ConnectionsArgs) -> anyhow::Result<()> {
    let ConnectionsArgs { count, hold_s } = a;
    let before = cli.broker_pid.and_then(proc_stats);
    let start = Instant::now();
    let (p50, p99, conns) = scenario::idle_connections(&cli.addr, *count).await?;
    let took = start.elapsed();
    tokio::time::sleep(Duration::from_secs(*hold_s)).await;
    let after = cli.broker_pid.and_then(proc_stats);
    let per_conn = match (before, after) {
        (Some((b, _)), Some((a, _))) => {
            format!("{:.2}", (a.saturating_sub(b)) as f64 / *count as f64)
        }
        _ => "unknown".into(),
    };
    println!(
        "scenario=connections count={} connect_p50_us={p50} connect_p99_us={p99} seconds={:.2} connects_per_s={:.0} rss_kib_before={} rss_kib_after={} rss_kib_per_conn={per_conn}",
        conns.len(),
        took.as_secs_f64(),
        conns.len() as f64 / took.as_secs_f64().max(1e-9),
        before.map_or(0, |b| b.0),
        after.map_or(0, |a| a.0),
    );
    drop(conns);
    Ok(())
}
