//! The delivery credit as the router sees it: it asks for it, once, and before a batch that
//! leaves messages behind goes.

use super::*;

#[test]
fn a_message_for_a_connection_without_its_credit_asks_for_the_credit_once() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "sub", true);
    h.subscribe(C1, "t", QoS::AtMostOnce);
    h.connect(C2, "pub", true);
    assert!(
        h.pull(C1).is_empty(),
        "the first Pull: the router holds the credit"
    );
    h.publish(C2, "t", QoS::AtMostOnce, false, 0, b"1");
    assert_eq!(payloads(&h.deliveries(C1)), vec![b"1".to_vec()]);
    assert!(h.credit_wanted().is_empty(), "nothing waits");
    // The credit is out with that batch: the next message asks for it, once.
    h.publish(C2, "t", QoS::AtMostOnce, false, 0, b"2");
    assert!(h.deliveries(C1).is_empty());
    assert_eq!(h.credit_wanted(), vec![C1]);
    h.publish(C2, "t", QoS::AtMostOnce, false, 0, b"3");
    assert!(h.credit_wanted().is_empty(), "asked already");
    // The credit comes back (the driver takes it where the connection parked it).
    assert_eq!(payloads(&h.pull(C1)), vec![b"2".to_vec(), b"3".to_vec()]);
    assert!(h.credit_wanted().is_empty());
}

#[test]
fn a_batch_that_leaves_messages_behind_asks_for_its_credit_back_before_it_leaves() {
    let config = RouterConfig {
        deliver_records_max: 2,
        ..RouterConfig::default()
    };
    let mut h = harness(config);
    h.connect(C1, "sub", true);
    h.subscribe(C1, "t", QoS::AtMostOnce);
    h.connect(C2, "pub", true);
    for i in 0..3u8 {
        h.publish(C2, "t", QoS::AtMostOnce, false, 0, &[i]);
    }
    assert_eq!(h.credit_wanted(), vec![C1], "before the first Pull");
    assert_eq!(payloads(&h.pull(C1)), vec![vec![0], vec![1]]);
    assert_eq!(h.credit_wanted(), vec![C1], "one message left behind");
    assert_eq!(payloads(&h.pull(C1)), vec![vec![2]]);
    assert!(h.credit_wanted().is_empty(), "nothing left behind");
}

#[test]
fn a_new_connection_of_a_session_starts_without_the_old_ones_credit() {
    // The session outlives the connection; the new one starts without a credit
    // until its own first Pull, and the router asks the new connection for it.
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "sub", false);
    h.subscribe(C1, "t", QoS::AtLeastOnce);
    assert!(h.pull(C1).is_empty());
    h.connect(C2, "pub", true);
    h.publish(C2, "t", QoS::AtMostOnce, false, 0, b"1");
    assert_eq!(h.deliveries(C1).len(), 1);
    disconnect_with(&mut h, C1, DisconnectReason::Normal);
    h.connect(C3, "sub", false);
    h.publish(C2, "t", QoS::AtMostOnce, false, 0, b"2");
    assert!(h.deliveries(C3).is_empty(), "no credit yet");
    assert_eq!(h.credit_wanted(), vec![C3]);
    assert_eq!(payloads(&h.pull(C3)), vec![b"2".to_vec()]);
}
