//! The subscription tree: topic filters, level by level, with the sessions subscribed
//! at each. Matching a topic name walks only the branches that can match (its literal
//! levels, `+` and `#`), so cost grows with topic depth, not with the number of filters.

use std::collections::HashMap;

use crate::{QoS, SessionId};

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    subscribers: HashMap<SessionId, QoS>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subscribers.is_empty()
    }
}

/// All subscriptions of all sessions.
#[derive(Debug, Default)]
pub struct SubscriptionTree {
    root: Node,
    len: usize,
}

impl SubscriptionTree {
    /// Add or replace `session`'s subscription to `filter` (valid). Returns true when
    /// it is new (not a replacement).
    pub fn insert(&mut self, filter: &str, session: SessionId, qos: QoS) -> bool {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        let new = node.subscribers.insert(session, qos).is_none();
        if new {
            self.len += 1;
        }
        new
    }

    /// Remove `session`'s subscription to `filter`; returns whether it existed.
    pub fn remove(&mut self, filter: &str, session: SessionId) -> bool {
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

    /// The sessions whose filters match `name`, each once, with the highest QoS of its
    /// matching subscriptions (overlapping subscriptions deliver one copy, §3.3.5).
    pub fn matches(&self, name: &str, out: &mut Vec<(SessionId, QoS)>) {
        out.clear();
        let levels: Vec<&str> = name.split('/').collect();
        let dollar = name.starts_with('$');
        collect(&self.root, &levels, dollar, out);
        out.sort_unstable_by_key(|(s, q)| (*s, std::cmp::Reverse(*q)));
        out.dedup_by_key(|(s, _)| *s);
    }
}

fn remove_rec(node: &mut Node, levels: &[&str], session: SessionId) -> bool {
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

fn collect(node: &Node, levels: &[&str], dollar_first: bool, out: &mut Vec<(SessionId, QoS)>) {
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
        out
    }

    #[test]
    fn overlapping_subscriptions_give_one_match_at_max_qos() {
        let mut t = SubscriptionTree::default();
        t.insert("a/+", SessionId(1), QoS::AtMostOnce);
        t.insert("a/#", SessionId(1), QoS::ExactlyOnce);
        t.insert("a/b", SessionId(2), QoS::AtLeastOnce);
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
    fn remove_prunes() {
        let mut t = SubscriptionTree::default();
        assert!(t.insert("a/b/c", SessionId(1), QoS::AtMostOnce));
        assert!(!t.insert("a/b/c", SessionId(1), QoS::AtLeastOnce));
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
                t.insert(f, SessionId(i as u32), QoS::AtMostOnce);
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
