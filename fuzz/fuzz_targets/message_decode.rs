//! Arbitrary bytes into `router::Message::decode`, the parser for records read back
//! from the commitlog (a corrupt or hostile segment must not crash the broker).
//! Whatever decodes must survive an encode/decode round trip unchanged.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use router::Message;

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
    let again = Message::encode(m.qos, m.retain, m.time_ms, topic, &m.properties, &m.payload);
    let m2 = Message::decode(&again).expect("re-encoded message decodes");
    assert_eq!(m, m2);

    let framed =
        Message::encode_framed(m.qos, m.retain, m.time_ms, topic, &m.properties, &m.payload);
    assert_eq!(framed.payload(), again);
});
