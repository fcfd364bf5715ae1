use mesh::{Incarnation, LogId, NodeId};
use openraft::{CommittedLeaderId, LogId as RaftLogId};

use super::*;

fn at(index: u64) -> EntryId {
    RaftLogId::new(CommittedLeaderId::new(1, 1), index)
}

fn log(node: u8, incarnation: u32) -> LogId {
    LogId {
        node: NodeId(node),
        incarnation: Incarnation(incarnation),
    }
}

fn run(state: &mut MetaState, command: MetaCommand) -> MetaResponse {
    let next = state.last_applied.map_or(1, |id| id.index + 1);
    state.apply(at(next), &command)
}

fn own(client_id: &str, node: u8, expected: Option<u8>) -> MetaCommand {
    MetaCommand::Own {
        client_id: client_id.into(),
        node: NodeId(node),
        expected: expected.map(NodeId),
    }
}

#[test]
fn open_log_registers_a_new_incarnation_open() {
    let mut state = MetaState::default();
    assert_eq!(
        run(&mut state, MetaCommand::OpenLog { log: log(2, 1) }),
        MetaResponse::Opened
    );
    assert_eq!(
        run(&mut state, MetaCommand::OpenLog { log: log(2, 3) }),
        MetaResponse::Opened
    );
    assert_eq!(state.logs.get(&log(2, 3)), Some(&LogStatus::Open));
    assert_eq!(state.latest_log(NodeId(2)), Some(log(2, 3)));
    assert_eq!(state.latest_log(NodeId(1)), None);
    assert_eq!(state.last_applied.map(|id| id.index), Some(2));
}

#[test]
fn open_log_refuses_the_same_or_an_older_incarnation_of_the_node() {
    let mut state = MetaState::default();
    run(&mut state, MetaCommand::OpenLog { log: log(2, 5) });
    let stale = MetaResponse::Refused(Refusal::StaleIncarnation { latest: log(2, 5) });
    assert_eq!(
        run(&mut state, MetaCommand::OpenLog { log: log(2, 5) }),
        stale
    );
    assert_eq!(
        run(&mut state, MetaCommand::OpenLog { log: log(2, 4) }),
        stale
    );
    // Another node's incarnations are its own business.
    assert_eq!(
        run(&mut state, MetaCommand::OpenLog { log: log(3, 1) }),
        MetaResponse::Opened
    );
    assert_eq!(state.logs.len(), 2);
}

#[test]
fn seal_log_is_idempotent_at_one_end_and_refused_elsewhere() {
    let mut state = MetaState::default();
    assert_eq!(
        run(
            &mut state,
            MetaCommand::SealLog {
                log: log(1, 1),
                end: 9
            }
        ),
        MetaResponse::Refused(Refusal::UnknownLog)
    );
    run(&mut state, MetaCommand::OpenLog { log: log(1, 1) });
    assert_eq!(
        run(
            &mut state,
            MetaCommand::SealLog {
                log: log(1, 1),
                end: 9
            }
        ),
        MetaResponse::Sealed { end: 9 }
    );
    assert_eq!(
        run(
            &mut state,
            MetaCommand::SealLog {
                log: log(1, 1),
                end: 9
            }
        ),
        MetaResponse::Sealed { end: 9 }
    );
    assert_eq!(
        run(
            &mut state,
            MetaCommand::SealLog {
                log: log(1, 1),
                end: 10
            }
        ),
        MetaResponse::Refused(Refusal::SealedAt { end: 9 })
    );
    assert_eq!(
        state.logs.get(&log(1, 1)),
        Some(&LogStatus::Sealed { end: 9 })
    );
    // A sealed log still counts for the node's latest incarnation.
    assert!(matches!(
        run(&mut state, MetaCommand::OpenLog { log: log(1, 1) }),
        MetaResponse::Refused(_)
    ));
}

#[test]
fn own_is_a_compare_and_set_that_names_the_current_owner_on_conflict() {
    let mut state = MetaState::default();
    assert_eq!(
        run(&mut state, own("c", 1, None)),
        MetaResponse::Owned { previous: None }
    );
    // A second node that also saw nobody loses the race.
    let conflict = MetaResponse::Refused(Refusal::OwnerIs {
        current: Some(NodeId(1)),
    });
    assert_eq!(run(&mut state, own("c", 2, None)), conflict);
    assert_eq!(run(&mut state, own("c", 2, Some(3))), conflict);
    // Taking it over from the owner it saw succeeds.
    assert_eq!(
        run(&mut state, own("c", 2, Some(1))),
        MetaResponse::Owned {
            previous: Some(NodeId(1))
        }
    );
    assert_eq!(state.owners.get("c"), Some(&NodeId(2)));
}

#[test]
fn release_is_only_by_the_owner() {
    let mut state = MetaState::default();
    let release = |node| MetaCommand::Release {
        client_id: "c".into(),
        node: NodeId(node),
    };
    assert_eq!(
        run(&mut state, release(1)),
        MetaResponse::Refused(Refusal::OwnerIs { current: None })
    );
    run(&mut state, own("c", 1, None));
    assert_eq!(
        run(&mut state, release(2)),
        MetaResponse::Refused(Refusal::OwnerIs {
            current: Some(NodeId(1))
        })
    );
    assert_eq!(run(&mut state, release(1)), MetaResponse::Released);
    assert!(state.owners.is_empty());
    assert_eq!(
        run(&mut state, own("c", 3, None)),
        MetaResponse::Owned { previous: None }
    );
}

#[test]
fn shared_groups_hold_members_in_one_order_and_vanish_when_empty() {
    let mut state = MetaState::default();
    let join = |node, id: &str| MetaCommand::JoinShared {
        group: "g".into(),
        node: NodeId(node),
        client_id: id.into(),
    };
    let leave = |node, id: &str| MetaCommand::LeaveShared {
        group: "g".into(),
        node: NodeId(node),
        client_id: id.into(),
    };
    assert_eq!(
        run(&mut state, join(3, "z")),
        MetaResponse::Joined { added: true }
    );
    assert_eq!(
        run(&mut state, join(1, "b")),
        MetaResponse::Joined { added: true }
    );
    assert_eq!(
        run(&mut state, join(1, "a")),
        MetaResponse::Joined { added: true }
    );
    assert_eq!(
        run(&mut state, join(1, "a")),
        MetaResponse::Joined { added: false }
    );
    let members: Vec<_> = state.shared["g"].iter().cloned().collect();
    assert_eq!(
        members,
        [
            (NodeId(1), "a".into()),
            (NodeId(1), "b".into()),
            (NodeId(3), "z".into())
        ]
    );
    assert_eq!(
        run(&mut state, leave(2, "a")),
        MetaResponse::Left { removed: false }
    );
    for (node, id) in [(1, "a"), (1, "b"), (3, "z")] {
        assert_eq!(
            run(&mut state, leave(node, id)),
            MetaResponse::Left { removed: true }
        );
    }
    assert!(state.shared.is_empty());
    assert_eq!(
        run(&mut state, leave(1, "a")),
        MetaResponse::Left { removed: false }
    );
}

#[test]
fn refused_commands_change_nothing_but_the_applied_position() {
    let mut state = MetaState::default();
    run(&mut state, own("c", 1, None));
    run(&mut state, MetaCommand::OpenLog { log: log(1, 1) });
    let before = state.clone();
    run(&mut state, own("c", 2, None));
    run(
        &mut state,
        MetaCommand::SealLog {
            log: log(9, 9),
            end: 1,
        },
    );
    assert_ne!(state.last_applied, before.last_applied);
    assert_eq!(
        (state.logs.clone(), state.owners.clone()),
        (before.logs, before.owners)
    );
}

#[test]
fn a_state_round_trips_through_its_json_image() {
    let mut state = MetaState::default();
    run(&mut state, MetaCommand::OpenLog { log: log(1, 1) });
    run(&mut state, MetaCommand::OpenLog { log: log(2, 7) });
    run(
        &mut state,
        MetaCommand::SealLog {
            log: log(1, 1),
            end: 40,
        },
    );
    run(&mut state, own("dev/1", 2, None));
    run(
        &mut state,
        MetaCommand::JoinShared {
            group: "g".into(),
            node: NodeId(1),
            client_id: "a".into(),
        },
    );
    let json = serde_json::to_vec(&state).unwrap();
    assert_eq!(serde_json::from_slice::<MetaState>(&json).unwrap(), state);
}

#[test]
fn an_image_with_a_session_owned_twice_is_refused() {
    let json = r#"{"last_applied":null,"membership":{"log_id":null,"membership":{"configs":[],"nodes":{}}},
        "logs":[],"owners":[{"client_id":"c","node":1},{"client_id":"c","node":2}],"shared":[]}"#;
    let err = serde_json::from_str::<MetaState>(json).unwrap_err();
    assert!(err.to_string().contains("two owners"), "{err}");
}
