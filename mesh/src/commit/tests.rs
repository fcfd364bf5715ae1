use proptest::prelude::*;

use super::*;

const B: NodeId = NodeId(2);
const C: NodeId = NodeId(3);

#[test]
fn two_of_three_commit_at_the_second_highest_end() {
    let mut t = CommitTracker::new(2, [B, C], Offset(0));
    assert_eq!(
        t.local_end(Offset(10)),
        None,
        "the writer alone is one copy"
    );
    assert_eq!(t.follower_end(C, Offset(4)), Some(Offset(4)));
    assert_eq!(t.follower_end(B, Offset(7)), Some(Offset(7)));
    assert_eq!(
        t.follower_end(C, Offset(6)),
        None,
        "B at 7 is still the second"
    );
    assert_eq!(t.commit(), Offset(7));
    assert_eq!(t.lags().collect::<Vec<_>>(), vec![(B, 3), (C, 4)]);
}

#[test]
fn one_copy_commits_what_the_writer_holds_and_all_copies_wait_for_the_slowest() {
    let mut one = CommitTracker::new(1, [], Offset(5));
    assert_eq!(one.local_end(Offset(9)), Some(Offset(9)));

    let mut all = CommitTracker::new(3, [B, C], Offset(0));
    all.local_end(Offset(10));
    assert_eq!(all.follower_end(B, Offset(10)), None);
    assert_eq!(all.follower_end(C, Offset(3)), Some(Offset(3)));
}

#[test]
fn a_follower_cannot_claim_more_than_was_written_and_strangers_are_ignored() {
    let mut t = CommitTracker::new(2, [B, C], Offset(0));
    t.local_end(Offset(5));
    assert_eq!(t.follower_end(B, Offset(1_000)), Some(Offset(5)));
    assert_eq!(t.follower_end(NodeId(9), Offset(5)), None);
}

#[test]
fn more_copies_than_nodes_never_commit() {
    let mut t = CommitTracker::new(4, [B, C], Offset(0));
    t.local_end(Offset(5));
    assert_eq!(t.follower_end(B, Offset(5)), None);
    assert_eq!(t.follower_end(C, Offset(5)), None);
    assert_eq!(t.commit(), Offset(0));
}

proptest! {
    /// Against a model: after any reports, the commit is the highest offset that was
    /// at some point held by `ack_copies` nodes at once, and it never moves back.
    #[test]
    fn commit_is_monotonic_and_never_ahead_of_ack_copies_holders(
        ack_copies in 1usize..=3,
        steps in proptest::collection::vec((0u8..3, 0u64..50), 0..60),
    ) {
        let mut t = CommitTracker::new(ack_copies, [B, C], Offset(0));
        let mut ends = [0u64; 3];
        let mut best = 0u64;
        for (who, end) in steps {
            let before = t.commit();
            if who == 0 {
                ends[0] = ends[0].max(end);
                t.local_end(Offset(end));
            } else {
                ends[usize::from(who)] = end.min(ends[0]);
                t.follower_end(NodeId(who + 1), Offset(end));
            }
            let mut sorted = ends;
            sorted.sort_unstable_by(|a, b| b.cmp(a));
            best = best.max(sorted[ack_copies - 1]);
            prop_assert!(t.commit() >= before);
            prop_assert_eq!(t.commit(), Offset(best));
        }
    }
}
