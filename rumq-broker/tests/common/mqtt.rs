//! A rumqttc client with every wait bounded.

use super::*;

/// rumqttc options for a client of `port` with a 30 s keepalive (clean session).
pub fn options(port: u16, client_id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// A connected rumqttc client whose event loop runs in a task that forwards events.
/// It does not reconnect: the first error ends it.
#[derive(Debug)]
pub struct Mqtt {
    /// The client handle.
    pub client: AsyncClient,
    /// The CONNACK it got.
    pub connack: ConnAck,
    events: mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
    pending: VecDeque<Publish>,
    task: JoinHandle<()>,
}

impl Mqtt {
    /// Connect with a clean session; panics unless accepted.
    pub async fn connect(port: u16, client_id: &str) -> Mqtt {
        Mqtt::connect_with(options(port, client_id)).await
    }

    /// Connect with `opts`; panics unless accepted.
    pub async fn connect_with(opts: MqttOptions) -> Mqtt {
        match Mqtt::try_connect(opts).await {
            Ok(m) => m,
            Err(e) => panic!("connect failed: {e:?}"),
        }
    }

    /// Connect with `opts`: the client, or the error the event loop reported.
    pub async fn try_connect(opts: MqttOptions) -> Result<Mqtt, ConnectionError> {
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        let first = tokio::time::timeout(STEP, eventloop.poll())
            .await
            .expect("no CONNACK in time")?;
        let connack = match first {
            Event::Incoming(Incoming::ConnAck(c)) => c,
            other => panic!("expected CONNACK, got {other:?}"),
        };
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let ev = eventloop.poll().await;
                let stop = ev.is_err();
                if tx.send(ev).is_err() || stop {
                    return;
                }
            }
        });
        Ok(Mqtt {
            client,
            connack,
            events,
            pending: VecDeque::new(),
            task,
        })
    }

    /// The next event; panics on timeout or connection error.
    async fn next(&mut self, what: &str) -> Event {
        match tokio::time::timeout(STEP, self.events.recv()).await {
            Err(_) => panic!("timed out waiting for {what}"),
            Ok(None) => panic!("event loop ended while waiting for {what}"),
            Ok(Some(Err(e))) => panic!("connection error while waiting for {what}: {e:?}"),
            Ok(Some(Ok(ev))) => ev,
        }
    }

    /// Wait for an incoming packet for which `want` returns `Some`; publishes seen on
    /// the way are kept for [`Mqtt::recv_publish`].
    async fn wait_for<T>(&mut self, what: &str, mut want: impl FnMut(&Incoming) -> Option<T>) -> T {
        loop {
            if let Event::Incoming(p) = self.next(what).await {
                if let Some(t) = want(&p) {
                    return t;
                }
                if let Incoming::Publish(publish) = p {
                    self.pending.push_back(publish);
                }
            }
        }
    }

    /// The next PUBLISH received.
    pub async fn recv_publish(&mut self) -> Publish {
        if let Some(p) = self.pending.pop_front() {
            return p;
        }
        self.wait_for("a PUBLISH", |p| match p {
            Incoming::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .await
    }

    /// Assert no PUBLISH arrives for `d`.
    pub async fn expect_no_publish(&mut self, d: Duration) {
        assert!(self.pending.is_empty(), "unexpected {:?}", self.pending);
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => return,
                Ok(Some(Ok(Event::Incoming(Incoming::Publish(p))))) => {
                    panic!("expected no PUBLISH, got {p:?}")
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => panic!("connection error: {e:?}"),
                Ok(None) => panic!("event loop ended"),
            }
        }
    }

    /// Subscribe and return the SUBACK's return codes.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<SubscribeReasonCode> {
        self.client.subscribe(filter, qos).await.unwrap();
        self.wait_for("SUBACK", |p| match p {
            Incoming::SubAck(s) => Some(s.return_codes.clone()),
            _ => None,
        })
        .await
    }

    /// Subscribe and assert it was granted at `qos`.
    pub async fn subscribed(&mut self, filter: &str, qos: QoS) {
        let codes = self.subscribe(filter, qos).await;
        assert_eq!(codes, vec![SubscribeReasonCode::Success(qos)], "{filter}");
    }

    /// Unsubscribe and wait for UNSUBACK.
    pub async fn unsubscribe(&mut self, filter: &str) {
        self.client.unsubscribe(filter).await.unwrap();
        self.wait_for("UNSUBACK", |p| {
            matches!(p, Incoming::UnsubAck(_)).then_some(())
        })
        .await;
    }

    /// Publish; for QoS 1 and 2 wait for PUBACK / PUBCOMP (one publish in flight).
    pub async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .await
            .unwrap();
        match qos {
            QoS::AtMostOnce => {
                // Wait until it was written, so that order against other clients
                // holds.
                loop {
                    if let Event::Outgoing(Outgoing::Publish(_)) = self.next("publish").await {
                        return;
                    }
                }
            }
            QoS::AtLeastOnce => {
                self.wait_for("PUBACK", |p| matches!(p, Incoming::PubAck(_)).then_some(()))
                    .await
            }
            QoS::ExactlyOnce => {
                self.wait_for("PUBCOMP", |p| {
                    matches!(p, Incoming::PubComp(_)).then_some(())
                })
                .await
            }
        }
    }

    /// Send DISCONNECT and wait until the broker closes the connection.
    pub async fn disconnect(mut self) {
        self.client.disconnect().await.unwrap();
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => panic!("broker did not close the connection after DISCONNECT"),
                Ok(None) | Ok(Some(Err(_))) => return,
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Drop the TCP connection without DISCONNECT.
    pub async fn kill(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    /// Wait for the connection to end with an error (the broker closed it).
    pub async fn closed(&mut self) -> ConnectionError {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => panic!("connection still open after {STEP:?}"),
                Ok(None) => panic!("event loop ended without an error"),
                Ok(Some(Err(e))) => return e,
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

impl Drop for Mqtt {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Expect a PUBLISH with exactly these fields (packet id and dup aside).
#[track_caller]
pub fn assert_publish(p: &Publish, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.qos, p.retain),
        (topic, payload, qos, retain),
        "{p:?}"
    );
    assert!(!p.dup, "unexpected DUP: {p:?}");
}
