//! The connection's writing half: replies from the router encoded for the client's
//! protocol version, what a reply settles on the way (the inbound acknowledgement
//! count, MQTT 5's receive-maximum quota, a close), the delivery credit handed back,
//! and the writes themselves (vectored writes for bytes, `sendfile` for ranges of
//! the log), bounded by `limits.write_timeout_ms`.

use std::time::Duration;

use bytes::Bytes;
use commitlog::FileRange;
use router::{CloseReason, Delivery, Event, IdSet, Message, QoS, Reply};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::stream::Stream;
use super::{now_ms, Connection, End, LOG_TARGET};
use crate::protocol::{Chunk, Version};
use crate::replies::ReplyReceiver;

impl Connection {
    /// Encode and write a batch of replies; after a delivery, hand the delivery
    /// credit back before writing it. Not `credited`: the batch with the CONNACK,
    /// whose delivery (a resumed session's unacknowledged messages) the router sends
    /// without a credit; the credit starts with the `Pull` that follows it.
    pub(super) async fn write_replies(
        &mut self,
        replies: Vec<Reply>,
        rx: &ReplyReceiver,
        credited: bool,
    ) -> Option<End> {
        let mut delivered = false;
        let mut close = None;
        let mut unreadable = Vec::new();
        self.encoder.set_now(now_ms());
        for r in &replies {
            match r {
                Reply::Deliver(ds) if self.state.acl.is_some() => {
                    delivered = true;
                    self.deliver_readable(ds, &mut unreadable);
                    continue;
                }
                Reply::PubAck(id, reason) | Reply::PubRec(id, reason) => {
                    self.inflight_in = self.inflight_in.saturating_sub(1);
                    let done = matches!(r, Reply::PubAck(..)) || !reason.is_success();
                    if let (true, Some(state)) = (done, &mut self.state.v5) {
                        state.quota.remove(&id.0);
                    }
                    if !reason.is_success() && self.state.version != Some(Version::V5) {
                        // 3.1.1 cannot refuse a publish: closing tells the client
                        // it was not stored.
                        close = close.or(Some(CloseReason::StorageFailure));
                    }
                }
                Reply::PubComp { pkid, .. } => {
                    if let Some(state) = &mut self.state.v5 {
                        state.quota.remove(&pkid.0);
                    }
                }
                Reply::Deliver(_) => delivered = true,
                Reply::Close(reason) => close = Some(*reason),
                _ => {}
            }
            self.encoder.reply(r);
        }
        for event in unreadable {
            if let Err(end) = self.send(event).await {
                return Some(end);
            }
        }
        if let Some(state) = &mut self.state.v5 {
            if state.quota.is_empty() && state.quota.capacity() > 0 {
                // An idle connection keeps no table.
                state.quota = IdSet::default();
            }
        }
        // Hand the delivery credit back before writing this batch: the router
        // prepares the next one while this write is under way, and a message
        // published meanwhile is queued for us at once instead of waiting for the
        // write and a round trip through the router. At most one batch waits in the
        // queue behind the one being written: the router delivers once per credit.
        // Only when messages wait does the credit need an event to wake the router.
        if credited && delivered && close.is_none() && rx.give_back_credit() {
            if let Err(end) = self
                .send(Event::Pull {
                    conn: self.state.id,
                })
                .await
            {
                return Some(end);
            }
        }
        if let Some(end) = self.write_out().await {
            return Some(end);
        }
        close.map(End::Closed)
    }

    /// Encode the deliveries the ACL lets the client read; for each other one, the
    /// event that ends its exchange with the router as if the client had taken it
    /// (QoS 1: PUBACK; QoS 2: a refused PUBREC), into `unreadable`.
    fn deliver_readable(&mut self, ds: &[Delivery], unreadable: &mut Vec<Event>) {
        let conn = self.state.id;
        for d in ds {
            let readable = match (Message::decode(d.record.head()), self.state.acl.as_mut()) {
                (Ok(m), Some(acl)) => acl.granted().may_read(m.topic_str()),
                (_, None) => true,
                (Err(_), Some(_)) => false,
            };
            if readable {
                self.encoder.publish(d);
                continue;
            }
            tracing::debug!(target: LOG_TARGET, "delivery not authorized for reading; dropped");
            match (d.qos, d.pkid) {
                (QoS::AtLeastOnce, Some(pkid)) => unreadable.push(Event::PubAck { conn, pkid }),
                (QoS::ExactlyOnce, Some(pkid)) => {
                    unreadable.push(Event::PubRecRefused { conn, pkid })
                }
                _ => {}
            }
        }
    }

    /// Write everything encoded, with vectored writes.
    pub(super) async fn write_out(&mut self) -> Option<End> {
        let mut chunks = Vec::new();
        self.encoder.take(&mut chunks);
        let limit = Duration::from_millis(self.state.shared.config.limits.write_timeout_ms);
        let result = timeout(limit, write_all_chunks(&mut self.stream, &chunks)).await;
        self.encoder.shrink();
        match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(End::Io(e)),
            Err(_) => Some(End::WriteTimeout),
        }
    }
}
/// Write `chunks` in order: runs of bytes with vectored writes, file ranges with
/// `sendfile`.
async fn write_all_chunks(stream: &mut Stream, chunks: &[Chunk]) -> std::io::Result<()> {
    let mut i = 0;
    while i < chunks.len() {
        let end = chunks[i..]
            .iter()
            .position(|c| matches!(c, Chunk::File(_)))
            .map_or(chunks.len(), |p| i + p);
        write_all_bytes(stream, &chunks[i..end]).await?;
        if let Some(Chunk::File(range)) = chunks.get(end) {
            match stream {
                Stream::Tcp(tcp) => send_file(tcp, range).await?,
                // Through rustls: the bytes are read and encrypted here.
                _ => write_all_bytes(stream, &[Chunk::Bytes(range.read()?)]).await?,
            }
        }
        i = end + 1;
    }
    stream.flush().await
}

/// Write runs of in-memory chunks (`Chunk::File`s are not expected here) with
/// vectored writes.
async fn write_all_bytes(stream: &mut Stream, chunks: &[Chunk]) -> std::io::Result<()> {
    // At most this many buffers per writev (IOV_MAX is 1024 on Linux).
    const IOV_MAX: usize = 1024;
    let mut first = 0;
    let mut skip = 0usize; // bytes of chunks[first] already written
    while first < chunks.len() {
        let end = (first + IOV_MAX).min(chunks.len());
        let mut slices: Vec<std::io::IoSlice<'_>> = Vec::with_capacity(end - first);
        for (k, c) in chunks[first..end]
            .iter()
            .filter_map(Chunk::in_memory)
            .enumerate()
        {
            slices.push(std::io::IoSlice::new(if k == 0 { &c[skip..] } else { c }));
        }
        let mut n = stream.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while first < chunks.len() {
            let left = chunks[first].in_memory().map_or(0, Bytes::len) - skip;
            if n < left {
                skip += n;
                break;
            }
            n -= left;
            first += 1;
            skip = 0;
        }
    }
    Ok(())
}

/// Send a range of a log segment's file with `sendfile(2)`: the kernel copies from
/// the page cache to the socket, and the bytes never enter our memory.
#[cfg(target_os = "linux")]
async fn send_file(stream: &TcpStream, range: &FileRange) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let end = range.pos() + range.len() as u64;
    let mut pos = range.pos();
    while pos < end {
        stream.writable().await?;
        let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
            let mut offset = libc::off_t::try_from(pos)
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
            let count = usize::try_from(end - pos).unwrap_or(usize::MAX);
            // SAFETY: both descriptors are open for the call (the stream and the
            // range, which holds its file, are borrowed), and `offset` is a local the
            // kernel may write.
            let n = unsafe {
                libc::sendfile(
                    stream.as_raw_fd(),
                    range.file().as_raw_fd(),
                    &raw mut offset,
                    count,
                )
            };
            usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
        });
        match sent {
            // The file ends before the range does: it was cut (never by the log
            // while a range is out); the packet cannot be completed.
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => pos += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Elsewhere: read the range and write it.
#[cfg(not(target_os = "linux"))]
async fn send_file(stream: &mut TcpStream, range: &FileRange) -> std::io::Result<()> {
    stream.write_all(&range.read()?).await
}
