//! Opening a peer's logs' replicas off the router thread.
//!
//! A replica kept from an earlier run is recovered when it is opened (its last
//! segment's index rebuilt, its torn tail cut) and a journal replica is read
//! whole to rebuild its writer's state: seconds, for a long one on a busy
//! machine. On the router thread that was a stall in which nothing was heard
//! from any peer, and after it every peer looked gone. So a thread opens them,
//! and the router thread takes them in when they are ready (`take_opened`, on
//! each pass of its loop); meanwhile the router neither fetches that log nor
//! answers for it, as before the peer announced it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::mpsc;

use commitlog::{Log, LogConfig};
use mesh::LogId;
use router::{LoadedJournal, Router};

use crate::cluster_node::log_dir;

/// A peer's log's replicas, opened.
#[derive(Debug)]
struct Opened {
    log: LogId,
    /// Its session journal's replica, if it was to be opened and opened.
    journal: Option<LoadedJournal<Log>>,
    /// Its messages' replica, likewise.
    messages: Option<Log>,
}

/// The replicas being opened, and the way back of those opened.
#[derive(Debug)]
pub struct Opener {
    /// Where replicas of the peers' messages go, and their config.
    messages: (PathBuf, LogConfig),
    /// Where replicas of the peers' session journals go, and their config.
    journals: (PathBuf, LogConfig),
    /// Logs whose replicas a thread is opening now (never two opens of one
    /// directory at once).
    opening: BTreeSet<LogId>,
    tx: mpsc::Sender<Opened>,
    rx: mpsc::Receiver<Opened>,
}

impl Opener {
    /// Replicas of messages in `messages.0`, of journals in `journals.0`.
    pub fn new(messages: (PathBuf, LogConfig), journals: (PathBuf, LogConfig)) -> Opener {
        let (tx, rx) = mpsc::channel();
        Opener {
            messages,
            journals,
            opening: BTreeSet::new(),
            tx,
            rx,
        }
    }

    /// Open `log`'s replicas (messages and session journal) the router does not
    /// keep yet, on a thread of their own.
    pub fn open(&mut self, router: &Router<Log>, log: LogId) {
        let journal = router.journal_replica(log).is_none();
        let messages = router.replica(log).is_none();
        if !(journal || messages) || !self.opening.insert(log) {
            return;
        }
        let journal = journal.then(|| (log_dir(&self.journals.0, log), self.journals.1.clone()));
        let messages = messages.then(|| (log_dir(&self.messages.0, log), self.messages.1.clone()));
        let tx = self.tx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("open-{log}"))
            .spawn(move || {
                let opened = Opened {
                    log,
                    journal: journal.and_then(|(dir, config)| {
                        open_logged(log, dir, config, "journal replica")
                            .map(|storage| LoadedJournal::load(log, storage))
                    }),
                    messages: messages
                        .and_then(|(dir, config)| open_logged(log, dir, config, "replica")),
                };
                // The router thread is gone when nobody receives: nothing to do.
                let _ = tx.send(opened);
            });
        if let Err(e) = spawned {
            tracing::error!(%log, error = %e, "cannot start a thread to open a replica");
            self.opening.remove(&log);
        }
    }

    /// Hand the router the replicas opened since the last call.
    pub fn take_opened(&mut self, router: &mut Router<Log>) {
        while let Ok(opened) = self.rx.try_recv() {
            self.opening.remove(&opened.log);
            let log = opened.log;
            if let Some(j) = opened.journal {
                if router.add_loaded_journal_replica(j) {
                    tracing::info!(%log, "replicating its session journal");
                }
            }
            if let Some(m) = opened.messages {
                if router.add_replica(log, m).is_some() {
                    tracing::info!(%log, "replicating");
                }
            }
        }
    }
}

/// The log in `dir`, or `None` after saying why not (`what` it is).
fn open_logged(log: LogId, dir: PathBuf, config: LogConfig, what: &str) -> Option<Log> {
    match Log::open(&dir, config) {
        Ok(storage) => Some(storage),
        Err(e) => {
            tracing::error!(%log, dir = %dir.display(), error = %e, "cannot open a {what}");
            None
        }
    }
}
