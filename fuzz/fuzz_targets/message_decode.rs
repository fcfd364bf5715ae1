//! Arbitrary bytes into `router::Message::decode`, the parser for records read back
//! from the commitlog (a corrupt or hostile segment must not crash the broker).
//! Whatever decodes must survive an encode/decode round trip unchanged.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use router::{Message, NewMessage, Origin};

fuzz_target!(|data: &[u8]| {
    let record = Bytes::copy_from_slice(data);
    let Ok(m) = Message::decode(&record) else {
        return;
    };
    // Zero-copy views must lie inside the record.
    assert!(m.topic.len() + m.properties.len() + m.payload.len() <= record.len());
    // decode validated the topic as UTF-8, so topic_str is never the fallback.
    assert_eq!(m.topic_str().as_bytes(), &m.topic[..]);

    let topic = m.topic_str();
    let origin = m.origin().map(|(client_id, pkid)| Origin { client_id, pkid });
    let new = NewMessage {
        qos: m.qos,
        retain: m.retain,
        time_ms: m.time_ms,
        expiry_secs: m.expiry_secs,
        origin,
        topic,
        properties: &m.properties,
        payload: &m.payload,
    };
    let framed = new.framed();
    let m2 = Message::decode(&framed.payload()).expect("re-encoded message decodes");
    assert_eq!(m, m2);

    // `encode` and `framed` write the same record.
    assert_eq!(new.encode(), framed.payload());
});
