//! The subscription tree: topic filters, level by level, with the sessions subscribed
//! at each. Matching a topic name walks only the branches that can match (its literal
//! levels, `+` and `#`), so cost grows with topic depth, not with the number of filters.

use std::collections::BTreeMap;
use std::hash::Hash;

use crate::{QoS, SessionId};

/// A session's subscription to one filter, as stored (MQTT 5 options; a 3.1.1
/// subscription has the defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubOptions {
    /// Maximum QoS.
    pub qos: QoS,
    /// Skip the session's own publishes.
    pub no_local: bool,
    /// Keep the publish's retain flag.
    pub retain_as_published: bool,
    /// Subscription identifier.
    pub id: Option<u32>,
}

impl SubOptions {
    /// Default options at `qos`.
    pub fn qos(qos: QoS) -> SubOptions {
        SubOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            id: None,
        }
    }

    /// What the tree keeps of it.
    pub fn grant(&self) -> Grant {
        Grant {
            qos: self.qos,
            no_local: self.no_local,
            retain_as_published: self.retain_as_published,
            has_id: self.id.is_some(),
        }
    }
}

/// What one subscription grants, as far as matching needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Maximum QoS.
    pub qos: QoS,
    /// Skip the session's own publishes.
    pub no_local: bool,
    /// Keep the publish's retain flag.
    pub retain_as_published: bool,
    /// The subscription has an identifier (the session looks it up on delivery).
    pub has_id: bool,
}

impl Grant {
    /// A plain subscription at `qos` (3.1.1).
    pub fn qos(qos: QoS) -> Grant {
        Grant {
            qos,
            no_local: false,
            retain_as_published: false,
            has_id: false,
        }
    }

    /// One session's subscriptions matching one topic act as one: the highest QoS;
    /// no local only if every one says so; retain as published or an identifier if
    /// any has it.
    pub fn merge(&mut self, other: Grant) {
        self.qos = self.qos.max(other.qos);
        self.no_local &= other.no_local;
        self.retain_as_published |= other.retain_as_published;
        self.has_id |= other.has_id;
    }
}

#[derive(Debug)]
struct Node<K> {
    children: BTreeMap<Box<str>, Node<K>>,
    subscribers: BTreeMap<K, Grant>,
}

impl<K> Default for Node<K> {
    fn default() -> Self {
        Node {
            children: BTreeMap::new(),
            subscribers: BTreeMap::new(),
        }
    }
}

impl<K> Node<K> {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subscribers.is_empty()
    }
}

/// All subscriptions of all sessions (`K`: who subscribed; shared subscription
/// groups use the same tree with their own key).
#[derive(Debug)]
pub struct SubscriptionTree<K = SessionId> {
    root: Node<K>,
    len: usize,
}

impl<K> Default for SubscriptionTree<K> {
    fn default() -> Self {
        SubscriptionTree {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<K: Copy + Eq + Ord + Hash> SubscriptionTree<K> {
    /// Add or replace `session`'s subscription to `filter` (valid). Returns true when
    /// it is new (not a replacement).
    pub fn insert(&mut self, filter: &str, session: K, grant: Grant) -> bool {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        let new = node.subscribers.insert(session, grant).is_none();
        if new {
            self.len += 1;
        }
        new
    }

    /// Remove `session`'s subscription to `filter`; returns whether it existed.
    pub fn remove(&mut self, filter: &str, session: K) -> bool {
        let levels: Vec<&str> = filter.split('/').collect();
        let removed = remove_rec(&mut self.root, &levels, session);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Subscriptions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are none.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The sessions whose filters match `name`, each once, with its matching
    /// subscriptions merged (overlapping subscriptions deliver one copy, §3.3.5).
    pub fn matches(&self, name: &str, out: &mut Vec<(K, Grant)>) {
        out.clear();
        let levels: Vec<&str> = name.split('/').collect();
        let dollar = name.starts_with('$');
        collect(&self.root, &levels, dollar, out);
        out.sort_unstable_by_key(|(s, _)| *s);
        out.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1.merge(later.1);
            }
            same
        });
    }
}

fn remove_rec<K: Ord>(node: &mut Node<K>, levels: &[&str], session: K) -> bool {
    let Some((first, rest)) = levels.split_first() else {
        return node.subscribers.remove(&session).is_some();
    };
    let Some(child) = node.children.get_mut(*first) else {
        return false;
    };
    let removed = remove_rec(child, rest, session);
    if child.is_empty() {
        node.children.remove(*first);
    }
    removed
}

fn collect<K: Copy>(
    node: &Node<K>,
    levels: &[&str],
    dollar_first: bool,
    out: &mut Vec<(K, Grant)>,
) {
    // Wildcards at the first level never match `$` topics (§4.7.2).
    let wild_ok = !dollar_first;
    if wild_ok {
        if let Some(hash) = node.children.get("#") {
            // `a/#` also matches `a` itself, which is why this runs before the end check.
            out.extend(hash.subscribers.iter().map(|(s, q)| (*s, *q)));
        }
    }
    let Some((first, rest)) = levels.split_first() else {
        out.extend(node.subscribers.iter().map(|(s, q)| (*s, *q)));
        return;
    };
    if let Some(child) = node.children.get(*first) {
        collect(child, rest, false, out);
    }
    if wild_ok {
        if let Some(plus) = node.children.get("+") {
            collect(plus, rest, false, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic;
    use proptest::prelude::*;

    fn m(t: &SubscriptionTree, name: &str) -> Vec<(SessionId, QoS)> {
        let mut out = Vec::new();
        t.matches(name, &mut out);
        out.into_iter().map(|(s, g)| (s, g.qos)).collect()
    }

    #[test]
    fn overlapping_subscriptions_give_one_match_at_max_qos() {
        let mut t = SubscriptionTree::default();
        t.insert("a/+", SessionId(1), Grant::qos(QoS::AtMostOnce));
        t.insert("a/#", SessionId(1), Grant::qos(QoS::ExactlyOnce));
        t.insert("a/b", SessionId(2), Grant::qos(QoS::AtLeastOnce));
        assert_eq!(
            m(&t, "a/b"),
            vec![
                (SessionId(1), QoS::ExactlyOnce),
                (SessionId(2), QoS::AtLeastOnce)
            ]
        );
        assert_eq!(m(&t, "a"), vec![(SessionId(1), QoS::ExactlyOnce)]);
        assert!(m(&t, "b").is_empty());
    }

    #[test]
    fn overlapping_options_merge() {
        let mut t = SubscriptionTree::default();
        let local = Grant {
            no_local: true,
            ..Grant::qos(QoS::AtMostOnce)
        };
        t.insert("a/+", SessionId(1), local);
        let mut out = Vec::new();
        t.matches("a/b", &mut out);
        assert_eq!(out, vec![(SessionId(1), local)]);
        t.insert(
            "a/#",
            SessionId(1),
            Grant {
                retain_as_published: true,
                has_id: true,
                ..Grant::qos(QoS::AtLeastOnce)
            },
        );
        t.matches("a/b", &mut out);
        assert_eq!(
            out,
            vec![(
                SessionId(1),
                Grant {
                    qos: QoS::AtLeastOnce,
                    no_local: false,
                    retain_as_published: true,
                    has_id: true
                }
            )]
        );
    }

    #[test]
    fn remove_prunes() {
        let mut t = SubscriptionTree::default();
        assert!(t.insert("a/b/c", SessionId(1), Grant::qos(QoS::AtMostOnce)));
        assert!(!t.insert("a/b/c", SessionId(1), Grant::qos(QoS::AtLeastOnce)));
        assert!(t.remove("a/b/c", SessionId(1)));
        assert!(!t.remove("a/b/c", SessionId(1)));
        assert!(t.is_empty() && t.root.is_empty());
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just(String::new()),
            Just("$x".to_string())
        ]
    }

    fn filter_level() -> impl Strategy<Value = String> {
        prop_oneof![4 => level(), 1 => Just("+".to_string())]
    }

    proptest! {
        /// The tree agrees with matching every filter one by one.
        #[test]
        fn agrees_with_linear_matching(
            filters in proptest::collection::vec(
                (proptest::collection::vec(filter_level(), 1..4), any::<bool>()), 1..12),
            names in proptest::collection::vec(proptest::collection::vec(level(), 1..5), 1..12),
        ) {
            let mut t = SubscriptionTree::default();
            let filters: Vec<String> = filters.into_iter().map(|(ls, hash)| {
                let mut f = ls.join("/");
                if hash { f.push_str("/#"); }
                f
            }).collect();
            for (i, f) in filters.iter().enumerate() {
                prop_assume!(topic::validate_filter(f).is_ok());
                t.insert(f, SessionId(i as u32), Grant::qos(QoS::AtMostOnce));
            }
            for n in names {
                let name = n.join("/");
                if topic::validate_name(&name).is_err() { continue; }
                let got: Vec<u32> = m(&t, &name).into_iter().map(|(s, _)| s.0).collect();
                let want: Vec<u32> = filters.iter().enumerate()
                    .filter(|(_, f)| topic::matches(f, &name))
                    .map(|(i, _)| i as u32).collect();
                prop_assert_eq!(got, want, "name {:?} filters {:?}", name, filters);
            }
        }
    }
}
