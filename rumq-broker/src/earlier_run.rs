//! A cluster node's earlier run: each run writes a new log and a new session
//! journal (`messages/<node>.<incarnation>/`, `state/<node>.<incarnation>/`), and
//! the persistent sessions carry over from the last run's journal. Its log, and
//! the replicas its sessions read, are opened again (read only: no log is ever
//! extended by a second run), the journal's state is restored over them
//! (`Router::resume_run`), and written whole into this run's journal, so the run
//! after this one needs only this one's.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;
use commitlog::{Log, LogConfig};
use mesh::LogId;
use router::{Router, Snapshot};

use crate::cluster_node::{kept_logs, log_dir};
use crate::config::Config;

/// The last run before `this` whose session journal is on disk, if any.
pub fn last_run(data_dir: &Path, this: LogId) -> Option<LogId> {
    (kept_logs(&data_dir.join("state")).into_iter())
        .filter(|log| log.node == this.node && log.incarnation < this.incarnation)
        .max()
}

/// As [`last_run`], and remove the session journals of the runs before that one
/// (`state/<node>.<older>/`): a run carries its sessions over from the last run's
/// journal alone, which holds them whole from its first checkpoint on, so no run
/// reads the older ones again.
pub fn last_run_pruned(data_dir: &Path, this: LogId) -> Option<LogId> {
    let last = last_run(data_dir, this)?;
    let older = (kept_logs(&data_dir.join("state")).into_iter())
        .filter(|log| log.node == this.node && log.incarnation < last.incarnation);
    for log in older {
        let dir = log_dir(&data_dir.join("state"), log);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {
                tracing::info!(dir = %dir.display(), "removed the session journal of a run before the last")
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the session journal of an earlier run")
            }
        }
    }
    Some(last)
}

/// What the earlier run left: its journal's state and where its last batch was
/// committed, and when it last wrote.
pub struct EarlierRun {
    /// The run's log.
    pub log: LogId,
    snapshot: Snapshot,
    journal_head: Option<commitlog::Offset>,
    /// When its journal was last written (about when it stopped).
    pub last_written: Option<SystemTime>,
}

/// Read run `log`'s session journal.
pub fn read(config: &Config, log: LogId) -> anyhow::Result<EarlierRun> {
    let dir = log_dir(&config.data_dir.join("state"), log);
    let journal =
        Log::open(&dir, crate::server::journal_config(&config.storage)).with_context(|| {
            format!(
                "cannot open the earlier run's session journal in {}",
                dir.display()
            )
        })?;
    let (snapshot, journal_head) = router::replay_journal(&journal).with_context(|| {
        format!(
            "cannot read the earlier run's session journal in {}",
            dir.display()
        )
    })?;
    journal
        .close()
        .with_context(|| format!("cannot close {}", dir.display()))?;
    Ok(EarlierRun {
        log,
        snapshot,
        journal_head,
        last_written: last_written(&dir),
    })
}

/// The newest modification time of the files in `dir`.
fn last_written(dir: &Path) -> Option<SystemTime> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok()?.metadata().ok()?.modified().ok())
        .max()
}

impl EarlierRun {
    /// Whether it holds anything to carry over.
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_empty()
    }

    /// Open the earlier run's log and every log its sessions read, as the router's
    /// replicas (a peer's log is fetched on from its writer, if it still writes
    /// it), then restore the sessions over them and checkpoint. A log no longer on
    /// disk is logged; the places in it are kept (`Session::foreign`).
    pub fn resume(self, router: &mut Router<Log>, config: &Config) -> anyhow::Result<()> {
        let me = self.log.node;
        let mut logs = self.snapshot.logs();
        logs.insert(self.log);
        for log in logs {
            if router.replica(log).is_some() {
                continue;
            }
            let dir = if log.node == me {
                log_dir(&config.data_dir.join("messages"), log)
            } else {
                log_dir(&config.data_dir.join("replicas"), log)
            };
            open_kept(router, log, &dir, config.storage.clone());
        }
        let sessions = self.snapshot.sessions.len();
        router
            .resume_run(self.snapshot, self.journal_head, self.log)
            .context("cannot write the session journal's first checkpoint")?;
        tracing::info!(from = %self.log, sessions, "persistent sessions carried over from the earlier run");
        Ok(())
    }
}

/// Open log `log` kept in `dir` as one of the router's replicas.
fn open_kept(router: &mut Router<Log>, log: LogId, dir: &PathBuf, config: LogConfig) {
    if !dir.exists() {
        // Retired once every node was done with it (`router/retire.rs`), or lost.
        tracing::info!(%log, dir = %dir.display(), "a log the earlier run's sessions read is no longer on disk; their places in it are kept, not read");
        return;
    }
    match Log::open(dir, config) {
        Ok(storage) => {
            if router.add_replica(log, storage).is_some() {
                tracing::info!(%log, dir = %dir.display(), "reading a log kept from an earlier run");
            }
        }
        Err(e) => {
            tracing::error!(%log, dir = %dir.display(), error = %e, "cannot open a log the earlier run's sessions read; their positions in it are dropped")
        }
    }
}
