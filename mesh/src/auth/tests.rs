use super::*;

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);
const C: NodeId = NodeId(3);

fn secret(s: &str) -> Secret {
    Secret::new(s.as_bytes()).unwrap()
}

fn peers(n: NodeId) -> bool {
    [A, B, C].contains(&n)
}

/// Run a handshake of dialer `a` (secret `sa`) to listener `b` (secret `sb`): what
/// each side concluded.
type Accepted = Option<Result<(NodeId, Channel), AuthError>>;

fn handshake(sa: &str, sb: &str) -> (Result<Frame, AuthError>, Accepted) {
    let (dialer, hello) = Dialer::start(secret(sa), (A, B), Channel::Data, [1; 32]);
    let listener = Listener::new(secret(sb), B);
    let (awaiting, challenge) = listener.on_hello(hello, peers, [2; 32]).unwrap();
    let proof = dialer.on_challenge(challenge);
    let accepted = proof.clone().ok().map(|p| awaiting.on_proof(p));
    (proof, accepted)
}

#[test]
fn two_nodes_with_the_same_secret_connect() {
    let (proof, accepted) = handshake("a secret of the cluster", "a secret of the cluster");
    assert!(matches!(proof, Ok(Frame::Proof { .. })));
    assert_eq!(accepted, Some(Ok((A, Channel::Data))));
}

#[test]
fn a_listener_without_the_secret_is_refused_by_the_dialer() {
    let (proof, accepted) = handshake("a secret of the cluster", "not the secret at all");
    assert_eq!(proof, Err(AuthError::BadProof(B)));
    assert_eq!(accepted, None);
}

#[test]
fn a_dialer_without_the_secret_is_refused_by_the_listener() {
    let listener = Listener::new(secret("a secret of the cluster"), B);
    let (_, hello) = Dialer::start(
        secret("not the secret at all"),
        (A, B),
        Channel::Data,
        [1; 32],
    );
    let (awaiting, _) = listener.on_hello(hello, peers, [2; 32]).unwrap();
    // The impostor cannot compute the proof; a guess, or the listener's own proof
    // reflected back, fails.
    let guessed = Frame::Proof { proof: [0; 32] };
    assert_eq!(awaiting.on_proof(guessed), Err(AuthError::BadProof(A)));
}

#[test]
fn the_listeners_proof_reflected_back_does_not_pass_as_the_dialers() {
    let listener = Listener::new(secret("a secret of the cluster"), B);
    let hello = Frame::Hello {
        from: A,
        to: B,
        channel: Channel::Data,
        nonce: [1; 32],
    };
    let (awaiting, challenge) = listener.on_hello(hello, peers, [2; 32]).unwrap();
    let Frame::Challenge { proof, .. } = challenge else {
        panic!("no challenge");
    };
    assert_eq!(
        awaiting.on_proof(Frame::Proof { proof }),
        Err(AuthError::BadProof(A))
    );
}

#[test]
fn a_proof_from_another_link_does_not_replay() {
    let s = "a secret of the cluster";
    // An eavesdropper saw a whole handshake with listener nonce [2; 32]...
    let (old_proof, _) = handshake(s, s);
    // ...and replays its proof on a link where the listener chose another nonce.
    let listener = Listener::new(secret(s), B);
    let hello = Frame::Hello {
        from: A,
        to: B,
        channel: Channel::Data,
        nonce: [1; 32],
    };
    let (awaiting, _) = listener.on_hello(hello, peers, [9; 32]).unwrap();
    assert_eq!(
        awaiting.on_proof(old_proof.unwrap()),
        Err(AuthError::BadProof(A))
    );
}

#[test]
fn strangers_wrong_targets_and_out_of_order_frames_are_refused() {
    let listener = Listener::new(secret("a secret of the cluster"), B);
    let hello = |from, to| Frame::Hello {
        from,
        to,
        channel: Channel::Meta,
        nonce: [1; 32],
    };
    let refused = |f| {
        listener
            .on_hello(f, peers, [2; 32])
            .map(|_| ())
            .unwrap_err()
    };
    assert_eq!(
        refused(hello(NodeId(9), B)),
        AuthError::WrongNode(NodeId(9))
    );
    assert_eq!(refused(hello(B, B)), AuthError::WrongNode(B));
    assert_eq!(refused(hello(A, C)), AuthError::WrongNode(C));
    assert_eq!(
        refused(Frame::Proof { proof: [0; 32] }),
        AuthError::Unexpected {
            expected: "Hello",
            got: "Proof"
        }
    );
    // The dialer meant B; C answering is refused.
    let (dialer, _) = Dialer::start(
        secret("a secret of the cluster"),
        (A, B),
        Channel::Data,
        [1; 32],
    );
    let from_c = Frame::Challenge {
        from: C,
        nonce: [2; 32],
        proof: [0; 32],
    };
    assert_eq!(dialer.on_challenge(from_c), Err(AuthError::WrongNode(C)));
}

#[test]
fn a_short_secret_is_refused_and_a_secret_is_never_printed() {
    assert_eq!(
        Secret::new("fifteen bytes!!").unwrap_err(),
        AuthError::SecretTooShort(15)
    );
    let s = secret("sixteen bytes!!!");
    assert_eq!(format!("{s:?}"), "Secret(16 bytes)");
}

#[test]
fn a_proof_for_one_channel_does_not_open_the_other() {
    let s = "a secret of the cluster";
    // A dialer proves itself for a meta link; its proof replayed on a data link with
    // the same nonces fails.
    let (dialer, _) = Dialer::start(secret(s), (A, B), Channel::Meta, [1; 32]);
    let listener = Listener::new(secret(s), B);
    let meta_hello = Frame::Hello {
        from: A,
        to: B,
        channel: Channel::Meta,
        nonce: [1; 32],
    };
    let (_, challenge) = listener.on_hello(meta_hello, peers, [2; 32]).unwrap();
    let meta_proof = dialer.on_challenge(challenge).unwrap();
    let data_hello = Frame::Hello {
        from: A,
        to: B,
        channel: Channel::Data,
        nonce: [1; 32],
    };
    let (awaiting, _) = listener.on_hello(data_hello, peers, [2; 32]).unwrap();
    assert_eq!(awaiting.on_proof(meta_proof), Err(AuthError::BadProof(A)));
}
