//! Shared subscriptions (`$share/{group}/{filter}`, MQTT 5 §4.8.2; 3.1.1 clients may
//! use them too): the sessions subscribed under one group name and filter form a
//! group, and each message matching the filter goes to one of them — the next in
//! turn that can take it, preferring members that are online.
//!
//! Groups are matched with the same tree as ordinary subscriptions, keyed by group.
//! Members keep the full `$share/…` string among their own filters, so the journal
//! and a restart rebuild groups from the sessions.
//!
//! In a cluster a group spans nodes: the cluster's metadata says which nodes have
//! members of each group (`set_nodes`), and every node gives each message to the
//! same one of them, by the message's cluster-wide key (`assigned_here`); that node
//! gives it to one of its members, as above.

use std::collections::{BTreeMap, HashMap};

use mesh::NodeId;

use crate::id::IdMap;
use crate::subscriptions::{Grant, SubscriptionTree};
use crate::{topic, SessionId};

/// A shared subscription group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(pub u32);

#[derive(Debug)]
struct Group {
    /// `$share/{group}/{filter}`.
    full: String,
    /// The filter without `$share/{group}/`.
    filter: String,
    members: Vec<(SessionId, Grant)>,
    /// Where the next turn starts.
    next: usize,
}

/// Who may take a message, as the router sees each member now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Online and keeping up: the first choice.
    Online,
    /// Offline but persistent and keeping up: queues QoS 1/2 until it returns.
    Offline,
    /// Cannot take it (behind and reading from the log, or gone).
    No,
}

/// Every shared subscription group.
#[derive(Debug, Default)]
pub struct SharedGroups {
    tree: SubscriptionTree<GroupId>,
    groups: IdMap<GroupId, Group>,
    by_name: BTreeMap<String, GroupId>,
    next_id: u32,
    /// A group was added or removed since `take_changed`.
    changed: bool,
    /// In a cluster: this node, and the nodes with members of each group (sorted),
    /// as the cluster's metadata last said.
    cluster: Option<(NodeId, HashMap<String, Vec<NodeId>>)>,
}

impl SharedGroups {
    /// Add `sid` to the group of `full` (`$share/{group}/{filter}`, validated), or
    /// replace its options there.
    pub fn join(&mut self, full: &str, sid: SessionId, grant: Grant) {
        let Some((_, inner)) = topic::shared(full) else {
            return;
        };
        let gid = match self.by_name.get(full) {
            Some(g) => *g,
            None => {
                let g = GroupId(self.next_id);
                self.next_id = self.next_id.wrapping_add(1);
                self.by_name.insert(full.to_owned(), g);
                self.groups.insert(
                    g,
                    Group {
                        full: full.to_owned(),
                        filter: inner.to_owned(),
                        members: Vec::new(),
                        next: 0,
                    },
                );
                self.tree.insert(inner, g, grant);
                self.changed = true;
                g
            }
        };
        if let Some(group) = self.groups.get_mut(&gid) {
            match group.members.iter_mut().find(|(s, _)| *s == sid) {
                Some(m) => m.1 = grant,
                None => group.members.push((sid, grant)),
            }
        }
    }

    /// Take `sid` out of the group of `full`; the group goes when its last member
    /// does. Returns whether it was a member.
    pub fn leave(&mut self, full: &str, sid: SessionId) -> bool {
        let Some(gid) = self.by_name.get(full).copied() else {
            return false;
        };
        let Some(group) = self.groups.get_mut(&gid) else {
            return false;
        };
        let before = group.members.len();
        group.members.retain(|(s, _)| *s != sid);
        let left = group.members.len() < before;
        if group.members.is_empty() {
            self.tree.remove(&group.filter, gid);
            self.groups.remove(&gid);
            self.by_name.remove(full);
            self.changed = true;
        }
        left
    }

    /// Every group with a member here (`$share/{group}/{filter}`), if that set
    /// changed since the last call.
    pub fn take_changed(&mut self) -> Option<Vec<String>> {
        if !std::mem::take(&mut self.changed) {
            return None;
        }
        Some(self.by_name.keys().cloned().collect())
    }

    /// This router is node `me` of a cluster: messages are shared among nodes.
    pub fn join_cluster(&mut self, me: NodeId) {
        self.cluster = Some((me, HashMap::new()));
        self.changed = true;
    }

    /// The nodes with members of group `full`, as the cluster's metadata applied.
    pub fn set_nodes(&mut self, full: &str, mut nodes: Vec<NodeId>) {
        let Some((_, by_group)) = self.cluster.as_mut() else {
            return;
        };
        nodes.sort_unstable();
        nodes.dedup();
        if nodes.is_empty() {
            by_group.remove(full);
        } else {
            by_group.insert(full.to_owned(), nodes);
        }
    }

    /// Whether the message with cluster-wide `key` goes to a member of group `gid`
    /// on this node: always outside a cluster; in one, if this node is the one the
    /// key picks among the group's nodes (this one counted, as it has members,
    /// before the metadata says so: a message may then reach two members while a
    /// node joins, never none).
    pub fn assigned_here(&self, gid: GroupId, key: u64) -> bool {
        let Some((me, by_group)) = &self.cluster else {
            return true;
        };
        let Some(nodes) = self.groups.get(&gid).and_then(|g| by_group.get(&g.full)) else {
            return true;
        };
        let with_me = !nodes.contains(me);
        let n = nodes.len() + usize::from(with_me);
        let Ok(i) = usize::try_from(key % n as u64) else {
            return true;
        };
        // `me` in its sorted place when the list lacks it.
        let mine = nodes.partition_point(|n| n < me);
        let picked = match i.cmp(&mine) {
            std::cmp::Ordering::Equal if with_me => Some(*me),
            std::cmp::Ordering::Greater if with_me => nodes.get(i - 1).copied(),
            _ => nodes.get(i).copied(),
        };
        picked == Some(*me)
    }

    /// The groups whose filter matches topic `name`.
    pub fn matches(&self, name: &str, out: &mut Vec<GroupId>) {
        let mut found = Vec::new();
        self.tree.matches(name, &mut found);
        out.clear();
        out.extend(found.into_iter().map(|(g, _)| g));
    }

    /// The member to send the next message of group `gid` to, skipping `except`:
    /// the next online member in turn, else the next offline one, else none.
    pub fn pick(
        &mut self,
        gid: GroupId,
        except: Option<SessionId>,
        availability: impl Fn(SessionId) -> Availability,
    ) -> Option<(SessionId, Grant)> {
        let group = self.groups.get_mut(&gid)?;
        let n = group.members.len();
        let mut offline = None;
        for k in 0..n {
            let i = (group.next + k) % n;
            let (sid, grant) = group.members[i];
            if Some(sid) == except {
                continue;
            }
            match availability(sid) {
                Availability::Online => {
                    group.next = (i + 1) % n;
                    return Some((sid, grant));
                }
                Availability::Offline if offline.is_none() => offline = Some((i, sid, grant)),
                _ => {}
            }
        }
        let (i, sid, grant) = offline?;
        group.next = (i + 1) % n;
        Some((sid, grant))
    }

    /// Groups held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.groups.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::QoS;

    fn grant() -> Grant {
        Grant::qos(QoS::AtLeastOnce)
    }

    #[test]
    fn members_take_turns_online_first() {
        let mut g = SharedGroups::default();
        g.join("$share/g/a/+", SessionId(1), grant());
        g.join("$share/g/a/+", SessionId(2), grant());
        g.join("$share/g/a/+", SessionId(3), grant());
        let mut found = Vec::new();
        g.matches("a/b", &mut found);
        assert_eq!(found.len(), 1);
        let gid = found[0];
        let online = |s: SessionId| {
            if s == SessionId(2) {
                Availability::Offline
            } else {
                Availability::Online
            }
        };
        let picks: Vec<u32> = (0..4)
            .map(|_| g.pick(gid, None, online).unwrap().0 .0)
            .collect();
        assert_eq!(picks, vec![1, 3, 1, 3], "the offline member waits");
        // Nobody online: the offline member takes it.
        let none_online = |s: SessionId| {
            if s == SessionId(2) {
                Availability::Offline
            } else {
                Availability::No
            }
        };
        assert_eq!(g.pick(gid, None, none_online).unwrap().0, SessionId(2));
        assert_eq!(
            g.pick(gid, Some(SessionId(2)), none_online),
            None,
            "nobody else can"
        );
    }

    #[test]
    fn in_a_cluster_each_key_goes_to_one_node_and_a_node_not_listed_yet_counts_itself() {
        let node = |me: u8, nodes: &[u8]| {
            let mut g = SharedGroups::default();
            g.join_cluster(NodeId(me));
            g.join("$share/g/t", SessionId(1), grant());
            g.set_nodes("$share/g/t", nodes.iter().map(|n| NodeId(*n)).collect());
            let mut found = Vec::new();
            g.matches("t", &mut found);
            (g, found[0])
        };
        // Node 2's join is not applied yet where it runs: it counts itself in.
        let nodes = [node(1, &[1, 2, 3]), node(2, &[1, 3]), node(3, &[3, 1, 2])];
        let mut per_node = [0; 3];
        for key in 0..300u64 {
            let here: Vec<bool> = nodes
                .iter()
                .map(|(g, gid)| g.assigned_here(*gid, key))
                .collect();
            assert_eq!(
                here.iter().filter(|h| **h).count(),
                1,
                "key {key}: {here:?}"
            );
            for (n, h) in per_node.iter_mut().zip(&here) {
                *n += usize::from(*h);
            }
        }
        assert!(per_node.iter().all(|n| *n > 0), "{per_node:?}");
        // Outside a cluster every member is here.
        let mut single = SharedGroups::default();
        single.join("$share/g/t", SessionId(1), grant());
        assert!(single.assigned_here(GroupId(0), 7));
    }

    #[test]
    fn groups_are_per_name_and_filter_and_go_with_their_last_member() {
        let mut g = SharedGroups::default();
        g.join("$share/x/t", SessionId(1), grant());
        g.join("$share/y/t", SessionId(2), grant());
        let mut found = Vec::new();
        g.matches("t", &mut found);
        assert_eq!(found.len(), 2, "two groups, each gets a copy");
        assert!(g.leave("$share/x/t", SessionId(1)));
        assert!(!g.leave("$share/x/t", SessionId(1)));
        g.matches("t", &mut found);
        assert_eq!(found.len(), 1);
        assert_eq!(g.len(), 1);
    }
}
