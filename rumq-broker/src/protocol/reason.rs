//! The codes packets carry to say how something went: MQTT 5's reason codes (§2.4),
//! the ones the broker sends or reads, and, in [`return_code`], MQTT 3.1.1's CONNACK
//! and SUBACK return codes (§3.2.2.3, §3.9.3).

pub const SUCCESS: u8 = 0x00;
/// DISCONNECT from a client: close, and publish the will (§3.14.2.1).
pub const DISCONNECT_WITH_WILL: u8 = 0x04;
pub const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
/// The lowest error code: every code from here up is a failure.
pub const UNSPECIFIED_ERROR: u8 = 0x80;
pub const MALFORMED_PACKET: u8 = 0x81;
pub const PROTOCOL_ERROR: u8 = 0x82;
pub const UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x84;
pub const CLIENT_ID_NOT_VALID: u8 = 0x85;
pub const BAD_USER_NAME_OR_PASSWORD: u8 = 0x86;
pub const NOT_AUTHORIZED: u8 = 0x87;
pub const SERVER_UNAVAILABLE: u8 = 0x88;
pub const SERVER_BUSY: u8 = 0x89;
pub const SERVER_SHUTTING_DOWN: u8 = 0x8b;
pub const BAD_AUTHENTICATION_METHOD: u8 = 0x8c;
pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8d;
pub const SESSION_TAKEN_OVER: u8 = 0x8e;
pub const TOPIC_FILTER_INVALID: u8 = 0x8f;
pub const TOPIC_NAME_INVALID: u8 = 0x90;
pub const PACKET_ID_NOT_FOUND: u8 = 0x92;
pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
pub const PACKET_TOO_LARGE: u8 = 0x95;
pub const QUOTA_EXCEEDED: u8 = 0x97;
pub const PAYLOAD_FORMAT_INVALID: u8 = 0x99;

/// Whether a reason code reports a failure (0x80 and up, §2.4).
pub const fn is_error(code: u8) -> bool {
    code >= UNSPECIFIED_ERROR
}

/// MQTT 3.1 / 3.1.1 return codes: CONNACK's (§3.2.2.3) and SUBACK's failure
/// (§3.9.3).
pub mod return_code {
    pub const ACCEPTED: u8 = 0x00;
    pub const UNACCEPTABLE_PROTOCOL_VERSION: u8 = 0x01;
    pub const IDENTIFIER_REJECTED: u8 = 0x02;
    pub const SERVER_UNAVAILABLE: u8 = 0x03;
    pub const BAD_USER_NAME_OR_PASSWORD: u8 = 0x04;
    pub const NOT_AUTHORIZED: u8 = 0x05;
    /// SUBACK: the subscription was refused.
    pub const SUBSCRIBE_FAILURE: u8 = 0x80;
}
