//! A follower that lags past what the writer still holds of its log (retention
//! removed it while the follower was away) goes on from the writer's earliest
//! record, without the rest, instead of never replicating that log again.

use std::time::Duration;

use ::mesh::{NodeId, Stream};

use super::session_move::{carry, clean_subscriber, connect, log, node, publish, replies};
use super::*;
use crate::PeerEvent;

/// Node `peer` fetches `r`'s log (node 1's) from `from`, and `r` answers.
fn fetches_from(r: &mut Router<crate::MemStorage>, peer: u8, from: u64) {
    r.handle_peer(PeerEvent::Fetched {
        peer: NodeId(peer),
        log: log(1),
        stream: Stream::Messages,
        from: Offset(from),
        bytes_max: 1 << 20,
    });
    r.flush();
}

#[test]
fn a_follower_past_the_writers_retention_goes_on_from_its_earliest_record() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let (mut a, mut b) = (node(1), node(2));
    for r in [&mut a, &mut b] {
        tick_to(r, t0);
    }
    clean_subscriber(&mut b, C2);
    connect(&mut a, C1, "pub", None);
    for (pkid, payload) in (1..).zip(["m0", "m1", "m2", "m3", "m4"]) {
        publish(&mut a, C1, pkid, payload);
    }
    // Node 3 holds them all (they are committed); node 2 is away, and retention
    // removes m0 to m2 meanwhile.
    replies(&mut a, 3);
    a.storage.remove_before(Offset(3)).expect("memory removes");
    // Node 2 is back and fetches from where its copy ends.
    fetches_from(&mut a, 2, 0);
    carry(&mut a, 1, &mut b, 2);
    let copy = &b.mesh.as_deref().expect("a cluster node").replicas[0];
    assert_eq!(copy.id, log(1));
    let held = (
        copy.storage.open().map(crate::MemStorage::earliest),
        copy.storage.head(),
    );
    assert_eq!(held, (Some(Offset(3)), Offset(5)), "it goes on from m3");
    // It fetches on from there.
    let fetch = (b.drain_peer_outbox()).find(|(to, _)| *to == NodeId(1));
    assert!(
        matches!(
            fetch,
            Some((
                _,
                PeerReply::Fetch {
                    from: Offset(5),
                    ..
                }
            ))
        ),
        "{fetch:?}"
    );
    b.handle(Event::Pull { conn: C2 });
    let got = delivered(replies(&mut b, 1).into_iter().map(|(_, r)| r).collect());
    assert_eq!(payloads(&got), vec![b"m3".to_vec(), b"m4".to_vec()]);
}
