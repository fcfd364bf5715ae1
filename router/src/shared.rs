//! Shared subscriptions (`$share/{group}/{filter}`, MQTT 5 §4.8.2; 3.1.1 clients may
//! use them too): the sessions subscribed under one group name and filter form a
//! group, and each message matching the filter goes to one of them — the next in
//! turn that can take it, preferring members that are online.
//!
//! Groups are matched with the same tree as ordinary subscriptions, keyed by group.
//! Members keep the full `$share/…` string among their own filters, so the journal
//! and a restart rebuild groups from the sessions.

use std::collections::BTreeMap;

use crate::id::IdMap;
use crate::subscriptions::{Grant, SubscriptionTree};
use crate::{topic, SessionId};

/// A shared subscription group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(pub u32);

#[derive(Debug)]
struct Group {
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
                        filter: inner.to_owned(),
                        members: Vec::new(),
                        next: 0,
                    },
                );
                self.tree.insert(inner, g, grant);
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
        }
        left
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
