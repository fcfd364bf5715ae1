//! The link handshake: both ends prove they hold the cluster's secret
//! (`cluster.secret`) without sending it, bound to this link's two fresh nonces.
//!
//! ```text
//! dialer                                   listener
//!   Hello { from: A, to: B, channel, nonce: na }  ─▶
//!                                        ◀─  Challenge { from: B, nonce: nb,
//!                                                        proof: mac(L, A, B, na, nb) }
//!   Proof { proof: mac(D, A, B, na, nb) } ─▶
//! ```
//!
//! `mac` is HMAC-SHA256 keyed by the secret over a domain tag, the role of the prover
//! (`L`istener or `D`ialer), both node ids, the channel and both nonces. The roles keep a proof from
//! being reflected back as the other side's, and the nonces (fresh per link, from the
//! caller) keep an old handshake from being replayed. Proofs are compared in constant
//! time (`Mac::verify_slice`). This proves who is at the other end when the link
//! starts; what follows is not protected against a man in the middle until the peer
//! link runs over mutual TLS.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::frame::Frame;
use crate::ids::{Channel, NodeId};

/// The fewest bytes a cluster secret may have.
pub const SECRET_MIN_BYTES: usize = 16;
/// The domain of every proof: another protocol keyed by the same secret cannot
/// produce one.
const DOMAIN: &[u8] = b"rumq-peer-v1";
/// The prover roles.
const DIALER: u8 = b'D';
const LISTENER: u8 = b'L';

/// What a proof binds of the link: the dialer, the listener, the channel.
type Link = (NodeId, NodeId, Channel);

/// A link's nonce: 32 random bytes, fresh per link.
pub type Nonce = [u8; 32];

/// The cluster's shared secret. Its `Debug` does not print it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

impl Secret {
    /// The secret, if it is at least [`SECRET_MIN_BYTES`] long.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Secret, AuthError> {
        let bytes = bytes.into();
        if bytes.len() < SECRET_MIN_BYTES {
            return Err(AuthError::SecretTooShort(bytes.len()));
        }
        Ok(Secret(bytes))
    }

    /// The MAC over one proof's inputs; `None` never happens (HMAC takes keys of every
    /// length), and would make every proof fail, closing the link.
    fn mac(
        &self,
        role: u8,
        (dialer, listener, channel): Link,
        (na, nb): (&Nonce, &Nonce),
    ) -> Option<Hmac<Sha256>> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).ok()?;
        mac.update(DOMAIN);
        mac.update(&[role, dialer.0, listener.0, channel.to_byte()]);
        mac.update(na);
        mac.update(nb);
        Some(mac)
    }

    fn proof(&self, role: u8, ids: Link, nonces: (&Nonce, &Nonce)) -> [u8; 32] {
        self.mac(role, ids, nonces)
            .map(|m| m.finalize().into_bytes().into())
            .unwrap_or_default()
    }

    fn verify(&self, role: u8, ids: Link, nonces: (&Nonce, &Nonce), proof: &[u8; 32]) -> bool {
        self.mac(role, ids, nonces)
            .is_some_and(|m| m.verify_slice(proof).is_ok())
    }
}

/// Why a handshake failed; the link is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// `cluster.secret` is too short.
    #[error("the cluster secret has {0} bytes; it needs at least {SECRET_MIN_BYTES}")]
    SecretTooShort(usize),
    /// A frame other than the one the handshake expects next.
    #[error("expected {expected} during the link handshake, got {got}")]
    Unexpected {
        /// The frame expected.
        expected: &'static str,
        /// The frame received.
        got: &'static str,
    },
    /// The peer is not the node it should be: not the one dialed, not this node's
    /// peer, or this node's own id.
    #[error("node {0} is not a peer this link may connect")]
    WrongNode(NodeId),
    /// The peer's proof does not verify: it does not hold the secret.
    #[error("node {0} failed to prove the cluster secret")]
    BadProof(NodeId),
}

/// The side that opened the link.
#[derive(Debug)]
pub struct Dialer {
    secret: Secret,
    me: NodeId,
    them: NodeId,
    channel: Channel,
    nonce: Nonce,
}

impl Dialer {
    /// Start a handshake with `them` for a link carrying `channel`: the `Hello` to
    /// send first.
    pub fn start(
        secret: Secret,
        (me, them): (NodeId, NodeId),
        channel: Channel,
        nonce: Nonce,
    ) -> (Dialer, Frame) {
        let hello = Frame::Hello {
            from: me,
            to: them,
            channel,
            nonce,
        };
        let dialer = Dialer {
            secret,
            me,
            them,
            channel,
            nonce,
        };
        (dialer, hello)
    }

    /// The listener's `Challenge`: checked, and answered with the `Proof` to send,
    /// after which the link is up.
    pub fn on_challenge(self, frame: Frame) -> Result<Frame, AuthError> {
        let Frame::Challenge { from, nonce, proof } = frame else {
            return Err(unexpected("Challenge", &frame));
        };
        if from != self.them {
            return Err(AuthError::WrongNode(from));
        }
        let ids = (self.me, self.them, self.channel);
        if !self
            .secret
            .verify(LISTENER, ids, (&self.nonce, &nonce), &proof)
        {
            return Err(AuthError::BadProof(from));
        }
        let proof = self.secret.proof(DIALER, ids, (&self.nonce, &nonce));
        Ok(Frame::Proof { proof })
    }
}

/// The side that accepted the link.
#[derive(Debug)]
pub struct Listener {
    secret: Secret,
    me: NodeId,
}

/// A listener's handshake after its `Challenge`, waiting for the dialer's `Proof`.
#[derive(Debug)]
pub struct AwaitingProof {
    secret: Secret,
    me: NodeId,
    them: NodeId,
    channel: Channel,
    nonces: (Nonce, Nonce),
}

impl Listener {
    /// Accept links for node `me`.
    pub fn new(secret: Secret, me: NodeId) -> Listener {
        Listener { secret, me }
    }

    /// The dialer's `Hello`: checked (`is_peer` says which nodes may connect), and
    /// answered with the `Challenge` to send, carrying this side's `nonce`.
    pub fn on_hello(
        &self,
        frame: Frame,
        is_peer: impl Fn(NodeId) -> bool,
        nonce: Nonce,
    ) -> Result<(AwaitingProof, Frame), AuthError> {
        let Frame::Hello {
            from,
            to,
            channel,
            nonce: na,
        } = frame
        else {
            return Err(unexpected("Hello", &frame));
        };
        if to != self.me {
            return Err(AuthError::WrongNode(to));
        }
        if from == self.me || !is_peer(from) {
            return Err(AuthError::WrongNode(from));
        }
        let proof = self
            .secret
            .proof(LISTENER, (from, self.me, channel), (&na, &nonce));
        let challenge = Frame::Challenge {
            from: self.me,
            nonce,
            proof,
        };
        let awaiting = AwaitingProof {
            secret: self.secret.clone(),
            me: self.me,
            them: from,
            channel,
            nonces: (na, nonce),
        };
        Ok((awaiting, challenge))
    }
}

impl AwaitingProof {
    /// The dialer's `Proof`: the node at the other end, and what the link carries,
    /// once it verifies.
    pub fn on_proof(self, frame: Frame) -> Result<(NodeId, Channel), AuthError> {
        let Frame::Proof { proof } = frame else {
            return Err(unexpected("Proof", &frame));
        };
        let (na, nb) = &self.nonces;
        let ids = (self.them, self.me, self.channel);
        if !self.secret.verify(DIALER, ids, (na, nb), &proof) {
            return Err(AuthError::BadProof(self.them));
        }
        Ok((self.them, self.channel))
    }
}

fn unexpected(expected: &'static str, got: &Frame) -> AuthError {
    AuthError::Unexpected {
        expected,
        got: got.kind(),
    }
}

#[cfg(test)]
mod tests;
