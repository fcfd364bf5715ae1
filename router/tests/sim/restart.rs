//! A node of the simulation crashes and starts again, as `rumq-broker` does
//! (`cluster_node::open`, `earlier_run`, `replica_files`): a new run with a new,
//! empty log and journal; its persistent sessions carried over from the last run's
//! journal over the logs its "disk" holds (`Router::resume_run`); its earlier
//! runs' logs served as far as its peers confirm them; its copies of the others'
//! logs and journals opened again. Its peers learn of the new run's log when the
//! links come up (the broker's `Announce`). Its clients reconnect: the subscriber
//! to its persistent session, the publisher sending again what was not
//! acknowledged.

use std::collections::BTreeMap;

use mesh::{LogId, NodeId};
use router::{Connect, Event, LoadedJournal, MemStorage, PeerEvent, Router};

use super::{boot, run_of, Sim, NODES, PUBLISHER, SUBSCRIBER};

/// What a crashed node's "disk" holds: its logs and journals, by log.
struct Disk {
    logs: BTreeMap<LogId, MemStorage>,
    journals: BTreeMap<LogId, MemStorage>,
}

impl Sim {
    /// Node `i` stops: nothing more reaches it or leaves it.
    pub(super) fn crash(&mut self, i: usize) {
        tracing::info!(node = i + 1, now = ?self.now, "SIM crash");
        self.down[i] = true;
        self.crashes += 1;
        let node = NODES[i];
        self.wire.retain(|m| m.from != node && m.to != node);
    }

    /// Node `i` starts again from what it held when it crashed.
    pub(super) fn restart(&mut self, i: usize) {
        tracing::info!(node = i + 1, now = ?self.now, "SIM restart");
        let node = NODES[i];
        let earlier = run_of(node, self.runs[i]);
        let disk = self.disk_of(i);
        self.frozen.insert(earlier, disk.logs[&earlier].clone());
        let journal = &disk.journals[&earlier];
        let (snapshot, head) =
            router::replay_journal(journal).expect("the earlier run's journal replays");
        self.runs[i] += 1;
        let mut r = boot(run_of(node, self.runs[i]), self.ack_copies, self.now);
        if !snapshot.is_empty() {
            let mut logs = snapshot.logs();
            logs.insert(earlier);
            for log in logs {
                if let Some(storage) = disk.logs.get(&log) {
                    r.add_replica(log, storage.clone());
                }
            }
            (r.resume_run(snapshot, head, earlier)).expect("the new run's first checkpoint");
        }
        open_kept(&mut r, node, &disk);
        self.nodes[i] = r;
        self.down[i] = false;
        let up: Vec<usize> = (0..NODES.len())
            .filter(|j| *j != i && !self.down[*j])
            .collect();
        for j in up {
            self.link(i, j);
        }
        self.reconnect(i);
    }

    /// What node `i`'s router held, as its disk would.
    fn disk_of(&self, i: usize) -> Disk {
        let old = &self.nodes[i];
        let mut disk = Disk {
            logs: BTreeMap::new(),
            journals: BTreeMap::new(),
        };
        for (j, node) in NODES.iter().enumerate() {
            for run in 1..=self.runs[j] {
                let log = run_of(*node, run);
                if let Some(s) = old.replica(log) {
                    disk.logs.insert(log, s.clone());
                }
                if let Some(s) = old.journal_replica(log) {
                    disk.journals.insert(log, s.clone());
                }
            }
        }
        let own = run_of(NODES[i], self.runs[i]);
        disk.logs.insert(own, old.storage().clone());
        let journal = old.journal_storage().expect("a journal");
        disk.journals.insert(own, journal.clone());
        disk
    }

    /// The link between nodes `i` and `j` comes up: each learns the other's
    /// current log.
    fn link(&mut self, i: usize, j: usize) {
        for (a, b) in [(i, j), (j, i)] {
            let log = run_of(NODES[b], self.runs[b]);
            let r = &mut self.nodes[a];
            if r.replica(log).is_none() {
                r.add_replica(log, MemStorage::new());
                r.add_journal_replica(log, MemStorage::new());
            }
            r.handle_peer(PeerEvent::LinkUp { peer: NODES[b] });
            r.flush();
        }
        self.collect(i);
        self.collect(j);
    }

    /// Node `i`'s clients connect again: the subscriber to its session, the
    /// publisher sending again what it has no PUBACK for.
    fn reconnect(&mut self, i: usize) {
        self.last_seq[i].clear();
        for (conn, id) in [(PUBLISHER, "pub"), (SUBSCRIBER, "sub")] {
            self.nodes[i].handle(Event::Connect {
                conn,
                connect: Connect::v3(format!("{id}-{}", NODES[i].0), conn == PUBLISHER, None),
            });
        }
        let unacknowledged: Vec<(u16, u32)> =
            self.awaiting[i].iter().map(|(p, s)| (*p, *s)).collect();
        for (pkid, seq) in unacknowledged {
            self.send(i, pkid, seq);
        }
        self.nodes[i].handle(Event::Pull { conn: SUBSCRIBER });
        self.nodes[i].flush();
        self.collect(i);
    }
}

/// Open, as `replica_files::open_kept` does, what the disk holds beyond what the
/// sessions carried over read: earlier runs' own logs, and copies of the others'
/// logs and journals.
fn open_kept(r: &mut Router<MemStorage>, node: NodeId, disk: &Disk) {
    for (log, journal) in disk.journals.iter().filter(|(l, _)| l.node != node) {
        r.add_loaded_journal_replica(LoadedJournal::load(*log, journal.clone()));
    }
    for (log, storage) in &disk.logs {
        if r.replica(*log).is_some() {
            continue;
        }
        if log.node == node {
            r.add_earlier_own_log(*log, storage.clone());
        } else {
            r.add_replica(*log, storage.clone());
        }
    }
}
