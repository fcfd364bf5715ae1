//! The numbered publisher of the throughput and latency scenarios: a window of
//! unacknowledged QoS 1/2 publishes, optional open-loop pacing, and the QoS 2
//! release handshake, with an ack reader task beside the writer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::BytesMut;
use mqttbytes::v4::{Packet, PubRel, Publish};
use mqttbytes::QoS;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use super::client::{enc, Conn, Reader, WriteSide};
use super::payload;

/// What one publisher sends.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The publisher's number, stamped into every payload.
    pub id: u32,
    /// Topics its messages go to, round-robin.
    pub topics: Arc<Vec<String>>,
    /// QoS of every publish.
    pub qos: QoS,
    /// Messages to send.
    pub count: u64,
    /// Payload bytes (at least the header).
    pub size: usize,
    /// Unacknowledged publishes at most (clamped to 1..=65,000).
    pub window: usize,
    /// Messages per second, open loop; `None`: as fast as the window allows.
    pub rate: Option<f64>,
    /// The run's epoch, for the send time in each payload.
    pub epoch: Instant,
}

/// Publish `plan.count` numbered messages with at most `plan.window` unacknowledged.
/// With `plan.rate` set, messages are scheduled at that rate (open loop: the schedule
/// does not wait for deliveries) and each carries the time it was written. Returns
/// the number acknowledged (all of them at QoS 0).
pub(crate) async fn publisher(c: Conn, plan: Plan) -> anyhow::Result<u64> {
    let Conn { reader, wr } = c;
    let window = plan.window.clamp(1, 65_000);
    let permits = Arc::new(Semaphore::new(window));
    let (rel_tx, rel_rx) = mpsc::channel::<u16>(window);
    let ack_task = spawn_ack_reader(reader, plan.qos, plan.count, permits.clone(), rel_tx);
    let mut w = Writer {
        wr,
        out: BytesMut::with_capacity(256 * 1024),
        rel_rx,
        permits,
        window,
    };
    w.send_all(&plan).await?;
    w.flush().await?;
    if plan.qos == QoS::ExactlyOnce {
        w.release_until_complete(&ack_task).await?;
    }
    let acked = acknowledged(plan.qos, plan.count, ack_task).await?;
    // Keep the connection until the broker has read everything (QoS 0 has no acks).
    let _ = w.wr.shutdown().await;
    Ok(acked)
}

/// Read the broker's answers until `count` publishes are acknowledged (PUBACK, or
/// PUBCOMP at QoS 2), each reopening the window by one; hand each PUBREC's packet
/// id to the writer, which sends the PUBREL. Returns the number acknowledged.
fn spawn_ack_reader(
    mut reader: Reader,
    qos: QoS,
    count: u64,
    acks: Arc<Semaphore>,
    rel_tx: mpsc::Sender<u16>,
) -> JoinHandle<anyhow::Result<u64>> {
    tokio::spawn(async move {
        let mut acked = 0u64;
        while acked < count && qos != QoS::AtMostOnce {
            match reader.next().await? {
                Packet::PubAck(_) | Packet::PubComp(_) => {
                    acked += 1;
                    acks.add_permits(1);
                }
                Packet::PubRec(r) => {
                    // The writer sends the PUBREL; it is gone only when the run ended.
                    let sent = rel_tx.send(r.pkid).await;
                    if sent.is_err() {
                        break;
                    }
                }
                _ => {}
            }
        }
        anyhow::Ok(acked)
    })
}

/// The count of acknowledged publishes once the writer is done: all of them at QoS
/// 0 (nothing to wait for), else what the ack reader counted.
async fn acknowledged(
    qos: QoS,
    count: u64,
    ack_task: JoinHandle<anyhow::Result<u64>>,
) -> anyhow::Result<u64> {
    if qos == QoS::AtMostOnce {
        ack_task.abort();
        return Ok(count);
    }
    tokio::time::timeout(Duration::from_secs(60), ack_task)
        .await
        .context("publisher: acknowledgements never came")??
}

/// The writing side of a publisher: the socket, the batch of packets being built,
/// the window, and the PUBRELs the ack reader asks for.
struct Writer {
    wr: WriteSide,
    out: BytesMut,
    rel_rx: mpsc::Receiver<u16>,
    permits: Arc<Semaphore>,
    window: usize,
}

impl Writer {
    /// Send every message of `plan`, in batches of up to 256 (one at a time when
    /// paced), each batch within the window at QoS 1/2.
    async fn send_all(&mut self, plan: &Plan) -> anyhow::Result<()> {
        let mut body = vec![b'x'; plan.size.max(payload::HEADER)];
        let mut seq = 0u64;
        let start = Instant::now();
        while seq < plan.count {
            // Release QoS 2 publishes the broker has received.
            while let Ok(pkid) = self.rel_rx.try_recv() {
                self.release(pkid)?;
            }
            let mut k = (plan.count - seq).min(256) as usize;
            if let Some(rate) = plan.rate {
                self.pace(start + Duration::from_secs_f64(seq as f64 / rate))
                    .await?;
                k = 1;
            }
            if plan.qos != QoS::AtMostOnce {
                let Some(granted) = self.open_window(k).await? else {
                    continue;
                };
                k = granted;
            }
            encode_publishes(&mut self.out, plan, &mut body, seq, k)?;
            seq += k as u64;
            if self.out.len() >= 64 * 1024 || plan.rate.is_some() || plan.qos != QoS::AtMostOnce {
                self.flush().await?;
            }
        }
        Ok(())
    }

    /// Wait until `due`, having sent what is pending, when it is still ahead.
    async fn pace(&mut self, due: Instant) -> anyhow::Result<()> {
        if due > Instant::now() {
            self.flush().await?;
            pace_until(due).await;
        }
        Ok(())
    }

    /// Take up to `k` places in the window: `Some(places taken)`, or `None` when a
    /// PUBREL to send came first (it is queued in the batch). Sends what is pending
    /// before waiting (PUBRELs above all: the window only reopens when they are
    /// answered).
    async fn open_window(&mut self, k: usize) -> anyhow::Result<Option<usize>> {
        self.flush().await?;
        let want = k
            .min(self.window)
            .min(self.permits.available_permits().max(1));
        let want = u32::try_from(want).unwrap_or(1);
        let pkid = tokio::select! {
            p = self.permits.clone().acquire_many_owned(want) => {
                p.context("window closed")?.forget();
                return Ok(Some(want as usize));
            }
            pkid = self.rel_rx.recv() => pkid,
        };
        if let Some(pkid) = pkid {
            self.release(pkid)?;
        }
        Ok(None)
    }

    /// QoS 2: keep releasing until every PUBCOMP came back.
    async fn release_until_complete(
        &mut self,
        ack_task: &JoinHandle<anyhow::Result<u64>>,
    ) -> anyhow::Result<()> {
        while !ack_task.is_finished() {
            match tokio::time::timeout(Duration::from_millis(50), self.rel_rx.recv()).await {
                Ok(Some(pkid)) => {
                    self.release(pkid)?;
                    self.flush().await?;
                }
                Ok(None) => break,
                Err(_) => {}
            }
        }
        Ok(())
    }

    /// Queue the PUBREL for `pkid`.
    fn release(&mut self, pkid: u16) -> anyhow::Result<()> {
        enc(PubRel::new(pkid).write(&mut self.out))
    }

    /// Write the batch, if any.
    async fn flush(&mut self) -> anyhow::Result<()> {
        if !self.out.is_empty() {
            self.wr.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }
}

/// Append the PUBLISHes of sequences `first..first + k` to `out`.
fn encode_publishes(
    out: &mut BytesMut,
    plan: &Plan,
    body: &mut [u8],
    first: u64,
    k: usize,
) -> anyhow::Result<()> {
    let Plan {
        id,
        ref topics,
        qos,
        epoch,
        ..
    } = *plan;
    for seq in first..first + k as u64 {
        // The time it leaves: tokio's timer wakes with millisecond granularity,
        // so the scheduled time would charge the broker for the load
        // generator's own wake-up lateness. The schedule still paces the sends
        // (open loop), and a write that blocks on the broker delays the stamp
        // of the messages behind it, not their schedule.
        payload::stamp(body, id, seq, payload::since(epoch));
        let topic = &topics[(seq % topics.len() as u64) as usize];
        let mut p = Publish::new(topic.as_str(), qos, body.to_vec());
        p.pkid = (seq % 65_000) as u16 + 1;
        enc(p.write(out))?;
    }
    Ok(())
}

/// Wait until `due`, to within the system's timer slack rather than tokio's
/// millisecond: at 10,000 messages/s a millisecond timer lets them leave in bursts
/// of ten, and the later ones in a burst measure the burst. The last stretch is a
/// blocking sleep, so a paced publisher runs on a thread of its own (`latency`).
async fn pace_until(due: Instant) {
    let coarse = due.checked_sub(Duration::from_millis(2));
    if let Some(coarse) = coarse.filter(|c| *c > Instant::now()) {
        tokio::time::sleep_until(coarse.into()).await;
    }
    let left = due.saturating_duration_since(Instant::now());
    if !left.is_zero() {
        std::thread::sleep(left);
    }
}
