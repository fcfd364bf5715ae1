//! The router thread's replies to one connection: a queue the router thread appends
//! to and the connection task empties whole.
//!
//! Not a tokio channel: a bounded `mpsc` channel allocates its first block of slots
//! (about 1 KiB) when it is created, and every connection has one for as long as it
//! lives, mostly idle. This queue costs a lock, a `Notify` and an empty `Vec` until
//! replies arrive, and hands them over in one swap. It is bounded all the same: a
//! connection that stops taking replies is closed rather than buffered for.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use router::Reply;
use tokio::sync::Notify;

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    notify: Notify,
}

#[derive(Debug)]
struct State {
    queue: Vec<Reply>,
    max: usize,
    /// The router side is gone: no more replies will come.
    sender_gone: bool,
    /// The connection is gone: replies are dropped.
    receiver_gone: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the queue half-written (every
        // critical section is a push or a swap), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why replies could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// More than the bound are waiting: the connection is not taking them.
    Full,
    /// The connection is gone.
    Closed,
}

/// The router thread's end.
#[derive(Debug)]
pub struct ReplySender(Arc<Shared>);

/// The connection's end.
#[derive(Debug)]
pub struct ReplyReceiver(Arc<Shared>);

/// A queue holding at most `max` replies not yet taken.
pub fn reply_queue(max: usize) -> (ReplySender, ReplyReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: Vec::new(),
            max,
            sender_gone: false,
            receiver_gone: false,
        }),
        notify: Notify::new(),
    });
    (ReplySender(shared.clone()), ReplyReceiver(shared))
}

impl ReplySender {
    /// Queue `replies` (all or none) and wake the connection.
    pub fn push(&self, replies: &mut Vec<Reply>) -> Result<(), PushError> {
        {
            let mut state = self.0.lock();
            if state.receiver_gone {
                return Err(PushError::Closed);
            }
            if state.queue.len() + replies.len() > state.max {
                return Err(PushError::Full);
            }
            if state.queue.is_empty() {
                // Hand the batch over as it is: no copy, no allocation.
                std::mem::swap(&mut state.queue, replies);
            } else {
                state.queue.append(replies);
            }
        }
        self.0.notify.notify_one();
        Ok(())
    }
}

impl Drop for ReplySender {
    fn drop(&mut self) {
        self.0.lock().sender_gone = true;
        self.0.notify.notify_one();
    }
}

impl ReplyReceiver {
    /// Wait for replies and take all that are queued; `None` once the router side is
    /// gone and nothing is left.
    pub async fn recv(&mut self) -> Option<Vec<Reply>> {
        loop {
            {
                let mut state = self.0.lock();
                if !state.queue.is_empty() {
                    return Some(std::mem::take(&mut state.queue));
                }
                if state.sender_gone {
                    return None;
                }
            }
            // A push between the check and here leaves a permit: no lost wake-up.
            self.0.notify.notified().await;
        }
    }
}

impl Drop for ReplyReceiver {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.receiver_gone = true;
        state.queue = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use router::PacketId;

    #[tokio::test]
    async fn replies_arrive_in_order_and_whole() {
        let (tx, mut rx) = reply_queue(10);
        tx.push(&mut vec![Reply::PubRel(PacketId(1))]).unwrap();
        tx.push(&mut vec![
            Reply::PubRel(PacketId(2)),
            Reply::PubRel(PacketId(3)),
        ])
        .unwrap();
        assert_eq!(
            rx.recv().await.unwrap(),
            vec![
                Reply::PubRel(PacketId(1)),
                Reply::PubRel(PacketId(2)),
                Reply::PubRel(PacketId(3))
            ]
        );
        // A waiting receiver is woken by a later push.
        let waiter = tokio::spawn(async move { (rx.recv().await, rx) });
        tokio::task::yield_now().await;
        tx.push(&mut vec![Reply::PubRel(PacketId(4))]).unwrap();
        let (got, mut rx) = waiter.await.unwrap();
        assert_eq!(got.unwrap(), vec![Reply::PubRel(PacketId(4))]);
        drop(tx);
        assert_eq!(rx.recv().await, None, "sender gone, nothing left");
    }

    #[tokio::test]
    async fn bounded_and_closed() {
        let (tx, rx) = reply_queue(2);
        tx.push(&mut vec![Reply::PubRel(PacketId(1)); 2]).unwrap();
        assert_eq!(
            tx.push(&mut vec![Reply::PubRel(PacketId(2))]),
            Err(PushError::Full)
        );
        drop(rx);
        assert_eq!(
            tx.push(&mut vec![Reply::PubRel(PacketId(3))]),
            Err(PushError::Closed)
        );
    }
}
