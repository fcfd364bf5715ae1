//! One link to a peer node: a TCP connection (under TLS with `[cluster] tls_*`,
//! `peer_stream`) on which both ends proved they hold the cluster's secret
//! (`mesh::Dialer` / `mesh::Listener`), then carrying peer frames (`mesh::Frame`) in
//! both directions.
//!
//! The handshake has `handshake_timeout` to finish, so a connection that never
//! speaks (or speaks slowly) costs one socket for that long. A frame the decoder
//! refuses, a stranger, or a failed proof ends the link: the other end is told why
//! in a `Goodbye` when it can be (best effort, never waited for), and the error says
//! it for this end's log. Nothing a link received before its handshake completed, or
//! that failed to decode, goes anywhere.
//!
//! Owns: the socket, its read buffer (bounded by the frame limit) and write buffer.
//! Which nodes to link with, and what the frames mean, are the callers'.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use mesh::{AuthError, Channel, Dialer, Frame, FrameError, Listener, NodeId, Nonce, Secret};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::peer_stream::{PeerRead, PeerStream, PeerTls, PeerWrite};

/// What every link of a node shares.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// This node.
    pub me: NodeId,
    /// `cluster.secret`.
    pub secret: Secret,
    /// The largest frame accepted (`cluster.peer_frame_bytes_max`).
    pub frame_bytes_max: usize,
    /// How long the handshake may take (TLS's, then the secret's).
    pub handshake_timeout: Duration,
    /// TLS for every link, both ends' certificates checked (`[cluster] tls_*`);
    /// none: plain TCP.
    pub tls: Option<PeerTls>,
}

/// Why a link could not be made, or ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The socket failed.
    #[error("peer link: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent a frame that does not decode.
    #[error("peer link: {0}")]
    Frame(#[from] FrameError),
    /// The handshake failed.
    #[error("peer link: {0}")]
    Auth(#[from] AuthError),
    /// The handshake did not finish in time.
    #[error("peer link: no handshake within {0:?}")]
    HandshakeTimeout(Duration),
    /// The peer closed the link, saying why if it did.
    #[error("peer link closed by the peer{}", .0.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Closed(Option<String>),
    /// A `Records` frame whose records do not check.
    #[error("peer link: {0}")]
    Records(#[from] commitlog::record::BadFrames),
    /// No random bytes for a nonce.
    #[error("peer link: no random bytes for a nonce: {0}")]
    Random(String),
}

/// An authenticated link to one peer.
#[derive(Debug)]
pub struct Link {
    stream: PeerStream,
    peer: NodeId,
    channel: Channel,
    frame_bytes_max: usize,
    read_buf: BytesMut,
    write_buf: BytesMut,
}

impl Link {
    /// Connect to node `them` at `addr` for a link carrying `channel`, and prove who
    /// we are.
    pub async fn dial(
        addr: SocketAddr,
        (them, channel): (NodeId, Channel),
        config: &LinkConfig,
    ) -> Result<Link, LinkError> {
        // One deadline for the whole of it: the connection, TLS, the secret's proof.
        let timeout = config.handshake_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let stream = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
            .await
            .map_err(|_| LinkError::HandshakeTimeout(timeout))??;
        stream.set_nodelay(true)?;
        let stream = tokio::time::timeout_at(
            deadline,
            PeerStream::dialed(stream, addr, config.tls.as_ref()),
        )
        .await
        .map_err(|_| LinkError::HandshakeTimeout(timeout))??;
        let mut link = Link::new(stream, (them, channel), config.frame_bytes_max);
        let nonce = nonce()?;
        let handshake = async {
            let secret = config.secret.clone();
            let (dialer, hello) = Dialer::start(secret, (config.me, them), channel, nonce);
            link.send(&hello).await?;
            let challenge = link.recv().await?;
            match dialer.on_challenge(challenge) {
                Ok(proof) => link.send(&proof).await,
                Err(e) => Err(link.refuse(e).await),
            }
        };
        tokio::time::timeout_at(deadline, handshake)
            .await
            .map_err(|_| LinkError::HandshakeTimeout(timeout))??;
        Ok(link)
    }

    /// Take an accepted connection through the handshake: the link, with the node at
    /// the other end and the channel it asked for, if it is one `is_peer` names and it
    /// proves the secret.
    pub async fn accept(
        stream: TcpStream,
        is_peer: impl Fn(NodeId) -> bool,
        config: &LinkConfig,
    ) -> Result<Link, LinkError> {
        // One deadline for TLS and the secret's proof together.
        let timeout = config.handshake_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        stream.set_nodelay(true)?;
        let stream =
            tokio::time::timeout_at(deadline, PeerStream::accepted(stream, config.tls.as_ref()))
                .await
                .map_err(|_| LinkError::HandshakeTimeout(timeout))??;
        // Not yet known: no frame is addressed by it before the handshake ends.
        let mut link = Link::new(stream, (config.me, Channel::Data), config.frame_bytes_max);
        let listener = Listener::new(config.secret.clone(), config.me);
        let nonce = nonce()?;
        let handshake = async {
            let hello = link.recv().await?;
            let (awaiting, challenge) = match listener.on_hello(hello, is_peer, nonce) {
                Ok(answer) => answer,
                Err(e) => return Err(link.refuse(e).await),
            };
            link.send(&challenge).await?;
            let proof = link.recv().await?;
            match awaiting.on_proof(proof) {
                Ok(peer) => Ok(peer),
                Err(e) => Err(link.refuse(e).await),
            }
        };
        let (peer, channel) = tokio::time::timeout_at(deadline, handshake)
            .await
            .map_err(|_| LinkError::HandshakeTimeout(timeout))??;
        link.peer = peer;
        link.channel = channel;
        Ok(link)
    }

    fn new(stream: PeerStream, (peer, channel): (NodeId, Channel), frame_bytes_max: usize) -> Link {
        Link {
            stream,
            peer,
            channel,
            frame_bytes_max,
            read_buf: BytesMut::new(),
            write_buf: BytesMut::new(),
        }
    }

    /// The node at the other end.
    pub fn peer(&self) -> NodeId {
        self.peer
    }

    /// What the link carries.
    pub fn channel(&self) -> Channel {
        self.channel
    }

    /// Write one frame.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), LinkError> {
        send_frame(&mut self.stream, &mut self.write_buf, frame).await
    }

    /// The next frame. A `Goodbye` ends the link ([`LinkError::Closed`] with its
    /// reason), as does the peer closing its side; a frame that does not decode ends it
    /// with the decoder's error, after telling the peer.
    pub async fn recv(&mut self) -> Result<Frame, LinkError> {
        match next_frame(&mut self.stream, &mut self.read_buf, self.frame_bytes_max).await {
            Err(LinkError::Frame(e)) => Err(self.refuse(e).await),
            other => other,
        }
    }

    /// The link as a half that reads and a half that writes, for a link that carries
    /// requests both ways (each node fetches the other's log on the same data link).
    pub fn into_split(self) -> (LinkReader, LinkWriter) {
        let (read, write) = self.stream.into_split();
        let reader = LinkReader {
            half: read,
            peer: self.peer,
            frame_bytes_max: self.frame_bytes_max,
            read_buf: self.read_buf,
        };
        let writer = LinkWriter {
            half: write,
            peer: self.peer,
            write_buf: self.write_buf,
        };
        (reader, writer)
    }

    /// Tell the peer why the link ends (best effort: a peer that does not read is not
    /// waited for), and return the error for this end.
    async fn refuse(&mut self, e: impl Into<LinkError>) -> LinkError {
        let e = e.into();
        say_goodbye(&mut self.stream, &mut self.write_buf, &e.to_string()).await;
        e
    }
}

/// The reading half of a [`Link`] (see [`Link::into_split`]).
#[derive(Debug)]
pub struct LinkReader {
    half: PeerRead,
    peer: NodeId,
    frame_bytes_max: usize,
    read_buf: BytesMut,
}

impl LinkReader {
    /// The node at the other end.
    pub fn peer(&self) -> NodeId {
        self.peer
    }

    /// The next frame, as [`Link::recv`], except that a frame that does not decode is
    /// only returned: telling the peer is the writing half's ([`LinkWriter::goodbye`]).
    pub async fn recv(&mut self) -> Result<Frame, LinkError> {
        next_frame(&mut self.half, &mut self.read_buf, self.frame_bytes_max).await
    }
}

/// The writing half of a [`Link`] (see [`Link::into_split`]).
#[derive(Debug)]
pub struct LinkWriter {
    half: PeerWrite,
    peer: NodeId,
    write_buf: BytesMut,
}

impl LinkWriter {
    /// The node at the other end.
    pub fn peer(&self) -> NodeId {
        self.peer
    }

    /// Write one frame.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), LinkError> {
        send_frame(&mut self.half, &mut self.write_buf, frame).await
    }

    /// End the link, telling the peer why (best effort, as [`Link`] does).
    pub async fn goodbye(mut self, reason: &str) {
        say_goodbye(&mut self.half, &mut self.write_buf, reason).await;
    }
}

/// Send a `Goodbye` saying `reason` (waiting at most 100 ms: a peer that does not
/// read is not waited for), then close the writing side.
async fn say_goodbye(write: &mut (impl AsyncWrite + Unpin), buf: &mut BytesMut, reason: &str) {
    let goodbye = Frame::Goodbye {
        reason: reason.to_owned(),
    };
    let _ =
        tokio::time::timeout(Duration::from_millis(100), send_frame(write, buf, &goodbye)).await;
    let _ = write.shutdown().await;
}

/// Encode `frame` into `buf` and write it.
async fn send_frame(
    write: &mut (impl AsyncWrite + Unpin),
    buf: &mut BytesMut,
    frame: &Frame,
) -> Result<(), LinkError> {
    buf.clear();
    mesh::encode(frame, buf);
    write.write_all(buf).await?;
    // Under TLS a write can leave the end of a frame in the session's buffer when the
    // socket is full; only a flush sends it (on plain TCP it costs nothing).
    write.flush().await?;
    Ok(())
}

/// Read until `buf` holds a whole frame, and take it off.
async fn next_frame(
    read: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
    frame_bytes_max: usize,
) -> Result<Frame, LinkError> {
    loop {
        match mesh::decode(buf, frame_bytes_max)? {
            Some(Frame::Goodbye { reason }) => return Err(LinkError::Closed(Some(reason))),
            Some(frame) => return Ok(frame),
            None => {}
        }
        if read.read_buf(buf).await? == 0 {
            return Err(LinkError::Closed(None));
        }
    }
}

/// A fresh nonce from the operating system's random source.
fn nonce() -> Result<Nonce, LinkError> {
    let mut n = Nonce::default();
    getrandom::getrandom(&mut n).map_err(|e| LinkError::Random(e.to_string()))?;
    Ok(n)
}
