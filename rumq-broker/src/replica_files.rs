//! Opening the peers' logs' replicas, and removing retired ones, off the router
//! thread.
//!
//! A replica kept from an earlier run is recovered when it is opened (its last
//! segment's index rebuilt, its torn tail cut) and a journal replica is read
//! whole to rebuild its writer's state: seconds, for a long one on a busy
//! machine. On the router thread that was a stall in which nothing was heard
//! from any peer, and after it every peer looked gone. So a thread opens them,
//! and the router thread takes them in when they are ready (`take_opened`, on
//! each pass of its loop); meanwhile the router neither fetches that log nor
//! answers for it, as before the peer announced it.
//!
//! A replica the router retired (`router/retire.rs`) comes back as its storage:
//! a thread closes it and removes its directory, renamed first to
//! `<dir>.removing` so that a crash halfway leaves nothing a later run opens as
//! that log (such leftovers are removed at the next start).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use commitlog::{Log, LogConfig};
use mesh::LogId;
use router::{LoadedJournal, Router};

use crate::cluster_node::{kept_logs, log_dir};

/// A peer's log's replicas, opened.
#[derive(Debug)]
struct Opened {
    log: LogId,
    /// Its session journal's replica, if it was to be opened and opened.
    journal: Option<LoadedJournal<Log>>,
    /// Its messages' replica, likewise.
    messages: Option<Log>,
    /// It is this node's own earlier run's log (`messages/`), not a replica.
    own: bool,
}

/// The replicas being opened, and the way back of those opened.
#[derive(Debug)]
pub struct Opener {
    /// Where replicas of the peers' messages go, and their config.
    messages: (PathBuf, LogConfig),
    /// Where replicas of the peers' session journals go, and their config.
    journals: (PathBuf, LogConfig),
    /// Where this node's own logs are (`messages/`).
    own_dir: PathBuf,
    /// Logs whose replicas a thread is opening now (never two opens of one
    /// directory at once).
    opening: BTreeSet<LogId>,
    tx: mpsc::Sender<Opened>,
    rx: mpsc::Receiver<Opened>,
}

impl Opener {
    /// Replicas of messages in `messages.0`, of journals in `journals.0`; this
    /// node's own logs in `own_dir`.
    pub fn new(
        messages: (PathBuf, LogConfig),
        journals: (PathBuf, LogConfig),
        own_dir: PathBuf,
    ) -> Opener {
        let (tx, rx) = mpsc::channel();
        Opener {
            messages,
            journals,
            own_dir,
            opening: BTreeSet::new(),
            tx,
            rx,
        }
    }

    /// Open `log`'s replicas (messages and session journal) the router does not
    /// keep yet, on a thread of their own.
    pub fn open(&mut self, router: &Router<Log>, log: LogId) {
        let dirs = self.replica_dirs(router, log, false);
        let job = self.job(log, dirs, false);
        self.spawn(job.into_iter().collect());
    }

    /// At the start, before any peer links: open every log kept on disk from
    /// earlier runs that the router does not read yet (this node's own earlier
    /// runs' logs, the replicas of logs their writers left behind). Each is
    /// served to the peers that lack some of it, and retired once no node needs
    /// it (`router/retire.rs`); left unopened, it would stay on disk for good.
    /// Here, not on a thread: a peer that asked for one before it was open would
    /// be told this node holds none of it, and not ask again.
    pub fn open_kept(&mut self, router: &mut Router<Log>, own: LogId) {
        let mut jobs = Vec::new();
        for log in kept_logs(&self.own_dir) {
            if log.node == own.node
                && log.incarnation < own.incarnation
                && router.replica(log).is_none()
            {
                let dir = (log_dir(&self.own_dir, log), self.messages.1.clone());
                jobs.extend(self.job(log, (None, Some(dir)), true));
            }
        }
        let mut logs = kept_logs(&self.messages.0);
        logs.extend(kept_logs(&self.journals.0));
        logs.sort();
        logs.dedup();
        for log in logs.into_iter().filter(|l| l.node != own.node) {
            let dirs = self.replica_dirs(router, log, true);
            jobs.extend(self.job(log, dirs, false));
        }
        for job in jobs {
            let opened = job.run();
            self.opening.remove(&opened.log);
            add(router, opened);
        }
    }

    /// The directories of `log`'s journal and messages replicas the router does
    /// not keep yet (with `kept`, only those on disk).
    fn replica_dirs(&self, router: &Router<Log>, log: LogId, kept: bool) -> (Dir, Dir) {
        let dir = |(root, config): &(PathBuf, LogConfig), missing: bool| {
            let dir = log_dir(root, log);
            (missing && (!kept || dir.exists())).then(|| (dir, config.clone()))
        };
        (
            dir(&self.journals, router.journal_replica(log).is_none()),
            dir(&self.messages, router.replica(log).is_none()),
        )
    }

    /// What opening `log`'s journal and messages (where given) takes, unless
    /// nothing is to be opened or it is being opened already.
    fn job(&mut self, log: LogId, (journal, messages): (Dir, Dir), own: bool) -> Option<Job> {
        let some = journal.is_some() || messages.is_some();
        (some && self.opening.insert(log)).then_some(Job {
            log,
            journal,
            messages,
            own,
        })
    }

    /// Run `jobs`, in order, on a thread.
    fn spawn(&mut self, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        let logs: Vec<LogId> = jobs.iter().map(|j| j.log).collect();
        let tx = self.tx.clone();
        let spawned = std::thread::Builder::new()
            .name("open-replicas".into())
            .spawn(move || {
                for job in jobs {
                    // The router thread is gone when nobody receives: stop.
                    if tx.send(job.run()).is_err() {
                        return;
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a thread to open replicas");
            for log in logs {
                self.opening.remove(&log);
            }
        }
    }

    /// Hand the router the replicas opened since the last call.
    pub fn take_opened(&mut self, router: &mut Router<Log>) {
        while let Ok(opened) = self.rx.try_recv() {
            self.opening.remove(&opened.log);
            add(router, opened);
        }
    }
}

/// Hand the router what was opened.
fn add(router: &mut Router<Log>, opened: Opened) {
    let log = opened.log;
    if let Some(j) = opened.journal {
        if router.add_loaded_journal_replica(j) {
            tracing::info!(%log, "replicating its session journal");
        }
    }
    let Some(m) = opened.messages else {
        return;
    };
    let added = if opened.own {
        router.add_earlier_own_log(log, m)
    } else {
        router.add_replica(log, m)
    };
    if added.is_some() {
        tracing::info!(%log, own = opened.own, "replicating");
    }
}

/// A log's directory and its config, if it is to be opened.
type Dir = Option<(PathBuf, LogConfig)>;

/// A log's replicas to open.
struct Job {
    log: LogId,
    journal: Dir,
    messages: Dir,
    own: bool,
}

impl Job {
    fn run(self) -> Opened {
        let log = self.log;
        Opened {
            log,
            journal: self.journal.and_then(|(dir, config)| {
                open_logged(log, dir, config, "journal replica")
                    .map(|storage| LoadedJournal::load(log, storage))
            }),
            messages: (self.messages)
                .and_then(|(dir, config)| open_logged(log, dir, config, "replica")),
            own: self.own,
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

/// The suffix of a directory being removed (after `<node>.<incarnation>`).
const REMOVING: &str = ".removing";

/// Close the retired replicas `logs` and remove their directories, on a thread.
pub fn remove(logs: Vec<Log>) {
    if logs.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("remove-replicas".into())
        .spawn(move || {
            for log in logs {
                let dir = log.dir().to_path_buf();
                drop(log);
                remove_dir(&dir);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start a thread to remove retired replicas; they stay on disk");
    }
}

/// Remove `dir`, renamed first (see the module docs).
fn remove_dir(dir: &Path) {
    let mut removing = dir.as_os_str().to_owned();
    removing.push(REMOVING);
    let removing = PathBuf::from(removing);
    let gone = std::fs::rename(dir, &removing).and_then(|()| std::fs::remove_dir_all(&removing));
    match gone {
        Ok(()) => tracing::info!(dir = %dir.display(), "removed a retired replica"),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a retired replica")
        }
    }
}

/// Remove what a removal a crash cut short left in `dirs`.
pub fn remove_leftovers(dirs: &[&Path]) {
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if e.file_name().to_string_lossy().ends_with(REMOVING) {
                if let Err(err) = std::fs::remove_dir_all(&path) {
                    tracing::warn!(dir = %path.display(), error = %err, "cannot remove a retired replica's leftover");
                }
            }
        }
    }
}
