//! What the admin API reads: sessions, subscriptions, topics.

use super::*;
use crate::SubscriptionQuery;

#[test]
fn sessions_and_subscriptions_page_in_client_id_order() {
    let mut h = harness(RouterConfig::default());
    h.connect(C2, "b-dev", false);
    h.subscribe(C2, "home/+/temp", QoS::AtLeastOnce);
    h.subscribe(C2, "$share/g/home/#", QoS::AtMostOnce);
    h.connect(C1, "a-dev", true);
    h.subscribe(C1, "home/kitchen/temp", QoS::ExactlyOnce);
    h.connect(C3, "c-dev", false);
    disconnect(&mut h, C3);

    let (total, page) = h.router.sessions_page(0, 2);
    assert_eq!(total, 3);
    let ids: Vec<_> = page.iter().map(|s| s.client_id.as_str()).collect();
    assert_eq!(ids, ["a-dev", "b-dev"]);
    assert!(page[0].connected && page[0].clean && page[0].subscriptions == 1);
    assert!(!page[1].clean && page[1].subscriptions == 2);
    let (_, rest) = h.router.sessions_page(2, 10);
    assert_eq!(rest.len(), 1);
    assert!(!rest[0].connected, "c-dev is offline");
    assert_eq!(h.router.session_info("c-dev"), Some(rest[0].clone()));
    assert_eq!(h.router.session_info("nobody"), None);

    let all = SubscriptionQuery::default();
    let (total, page) = h.router.subscriptions_page(all, 0, 100);
    assert_eq!(total, 3);
    let filters: Vec<_> = page
        .iter()
        .map(|s| (s.client_id.as_str(), s.filter.as_str(), s.qos))
        .collect();
    assert_eq!(
        filters,
        [
            ("a-dev", "home/kitchen/temp", 2),
            ("b-dev", "$share/g/home/#", 0),
            ("b-dev", "home/+/temp", 1)
        ]
    );
    let who_gets = SubscriptionQuery {
        topic: Some("home/hall/temp"),
        ..all
    };
    let (total, page) = h.router.subscriptions_page(who_gets, 0, 1);
    assert_eq!((total, page.len()), (2, 1), "two match, one per page");
    let exact = SubscriptionQuery {
        filter: Some("home/+/temp"),
        ..all
    };
    assert_eq!(h.router.subscriptions_page(exact, 0, 100).0, 1);
}

#[test]
fn topics_count_messages_published_here_and_show_the_retained() {
    let mut h = harness(RouterConfig::default());
    h.connect(C1, "pub", true);
    for i in 0..3 {
        h.publish(C1, "home/a", QoS::AtLeastOnce, false, i + 1, b"x");
    }
    h.publish(C1, "home/b", QoS::AtLeastOnce, true, 9, b"r");
    h.publish(C1, "work/c", QoS::AtMostOnce, false, 0, b"y");
    h.router.flush();
    let ids: Vec<(Box<str>, TopicId)> = ["home/a", "home/b", "home/never", "work/c"]
        .iter()
        .map(|n| ((*n).into(), h.topics.intern(n).unwrap()))
        .collect();
    let (total, page) = h.router.topics("home/", &ids, (0, 10));
    assert_eq!(total, 3);
    let got: Vec<_> = page
        .into_iter()
        .map(|t| (t.topic, t.messages, t.retained))
        .collect();
    assert_eq!(
        got,
        [
            ("home/a".to_owned(), 3, false),
            ("home/b".to_owned(), 1, true),
            ("home/never".to_owned(), 0, false)
        ]
    );
    // Paged: the second of the three, and the count of all.
    let (total, page) = h.router.topics("home/", &ids, (1, 1));
    assert_eq!(
        (total, page.len(), page[0].topic.as_str()),
        (3, 1, "home/b")
    );
    // After a restart the retained message is still known, by name; the counts
    // start again.
    let h = h.restart();
    let (total, got) = h.router.topics("", &[], (0, 10));
    assert_eq!((total, got.len()), (1, 1));
    assert_eq!((got[0].topic.as_str(), got[0].messages), ("home/b", 0));
}
