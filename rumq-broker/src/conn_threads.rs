//! The connection threads: each runs one single-threaded tokio runtime (an event
//! loop) with its own parking lot, and the connections given to it stay on it for
//! life.
//!
//! Why not one multi-threaded runtime: its scheduler runs the task woken last
//! first (its "LIFO slot", good for tasks that message each other), so when two
//! clients' bytes arrive in one poll of the reactor, the second client's connection
//! was read first. A subscriber's SUBSCRIBE and, right after it, another client's
//! PUBLISH to that topic reached the router in the wrong order, and the subscriber
//! missed the message in 130 of 200 trials (`tests/ordering.rs`). A single-threaded
//! runtime runs woken tasks in the order they were woken, which is the order in
//! which the reactor saw their sockets become readable: among the connections of one
//! thread the router gets requests in the order their bytes arrived. Across
//! threads the order is as close as two threads woken microseconds apart make it.
//!
//! Owns: the threads, their runtimes and lots, and which thread takes the next
//! connection (round-robin). The accept loop runs elsewhere (`server`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use crate::connection::{self, Parked, Shared};
use crate::parking::Lot;
use crate::tls::Edge;

/// The connection threads (see the module docs).
#[derive(Debug)]
pub struct ConnThreads {
    threads: Vec<ConnThread>,
    /// The thread that gets the next connection.
    next: usize,
}

#[derive(Debug)]
struct ConnThread {
    handle: Handle,
    lot: Option<Lot<Parked>>,
    stop: Option<oneshot::Sender<()>>,
    join: Option<std::thread::JoinHandle<()>>,
}

impl ConnThreads {
    /// Start `count` threads (at least one), each with a parking lot if `park`.
    pub fn start(count: usize, park: bool) -> anyhow::Result<Self> {
        let mut threads = Vec::with_capacity(count.max(1));
        for i in 0..count.max(1) {
            threads.push(ConnThread::start(i, park)?);
        }
        Ok(ConnThreads { threads, next: 0 })
    }

    /// Each thread's parking lot, by thread index (see [`Shared::new`]).
    pub fn lots(&self) -> Vec<Option<Lot<Parked>>> {
        self.threads.iter().map(|t| t.lot.clone()).collect()
    }

    /// Hand an accepted socket (registered with the calling runtime) to the next
    /// thread, which serves it from now on.
    pub fn spawn(
        &mut self,
        stream: TcpStream,
        shared: &Arc<Shared>,
        permit: OwnedSemaphorePermit,
        edge: Edge,
    ) -> std::io::Result<()> {
        let index = self.next;
        self.next = (self.next + 1) % self.threads.len();
        let thread = &self.threads[index];
        let socket = stream.into_std()?;
        // Registered with the chosen thread's reactor: entered here so that the task
        // spawned holds only the connection, not the socket a second time.
        let _entered = thread.handle.enter();
        let stream = TcpStream::from_std(socket)?;
        let thread_index = u16::try_from(index).unwrap_or(u16::MAX);
        let shared = shared.clone();
        let at = (shared, permit, thread_index);
        match edge {
            Edge::Tcp => thread
                .handle
                .spawn(connection::serve(stream, at.0, at.1, at.2)),
            edge => thread
                .handle
                .spawn(connection::serve_edge(stream, at, edge)),
        };
        Ok(())
    }

    /// Stop every thread; the connection tasks still there are dropped (after at most
    /// a second: see `ConnThread::start`).
    pub fn stop(mut self) {
        for t in &mut self.threads {
            if let Some(stop) = t.stop.take() {
                let _ = stop.send(());
            }
        }
        for t in &mut self.threads {
            if let Some(join) = t.join.take() {
                let _ = join.join();
            }
        }
    }
}

impl ConnThread {
    fn start(index: usize, park: bool) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start a connection thread's runtime")?;
        let handle = runtime.handle().clone();
        let lot = park.then(Lot::new).and_then(|made| match made {
            Ok(lot) => Some(lot),
            Err(e) => {
                tracing::warn!(error = %e, "cannot make a parking lot; connections will not park");
                None
            }
        });
        if let Some(lot) = &lot {
            handle.spawn(lot.clone().run());
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let join = std::thread::Builder::new()
            .name(format!("rumq-conn-{index}"))
            .spawn(move || {
                let _ = runtime.block_on(stopped);
                // Connections that outlived the shutdown grace period are dropped;
                // their ends of the router channel go with them.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .context("cannot start a connection thread")?;
        Ok(ConnThread {
            handle,
            lot,
            stop: Some(stop),
            join: Some(join),
        })
    }
}
