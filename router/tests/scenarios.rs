//! Router scenarios as scripts: each file in `tests/scenarios/` feeds the router
//! events, one command a line, and holds the replies each produced below it (see the
//! `goldenscript` crate). The router runs on `MemStorage`, its clock is the script's,
//! and it is driven only through its public API, as the broker's driver drives it.
//! After a change of behaviour, re-bless the files with
//! `UPDATE_GOLDENFILES=1 cargo test -p router --test scenarios` and read the diff.
//!
//! Commands (connections are named `c1`, `c2`, ...; `qos` is 0, 1 or 2):
//!
//! | command | event |
//! |---|---|
//! | `config key=value...` | start over with these `RouterConfig` limits |
//! | `connect c1 client=ID [clean=true] [expiry=S] [receive_max=N] [will=TOPIC will_qos=Q will_payload=P will_delay=S]` | CONNECT (3.1.1 semantics unless `expiry` is given) |
//! | `publish c1 TOPIC PAYLOAD [qos=Q] [pkid=N] [retain=true]` | PUBLISH |
//! | `subscribe c1 FILTER [qos=Q] [pkid=N] [no_local=true] [rap=true] [rh=0/1/2] [id=N]` | SUBSCRIBE |
//! | `unsubscribe c1 FILTER [pkid=N]` | UNSUBSCRIBE |
//! | `puback`, `pubrec`, `pubrel`, `pubcomp` `c1 PKID` | the acks |
//! | `pull c1` | the connection returns its delivery credit |
//! | `disconnect c1 [abrupt=true] [expiry=S]` | the connection ends |
//! | `tick SECONDS` | the clock moves on; the router ticks |
//! | `crash` | the process dies: the router is dropped unflushed and opened again on the same storage |
//! | `state` | the persistent state (what a checkpoint holds): retained messages, sessions with their filters, pending retained messages, in-flight messages, inbound QoS 2 ids |
//! | `log` | the message log's records |
//!
//! Output: each reply as `c1 ← ...`, in order, then `c1: credit wanted` for each
//! connection whose delivery credit the router asks for.

use std::collections::HashMap;
use std::error::Error;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use goldenscript::{Command, Context, Runner};
use router::{
    Connect, ConnectionId, Delivery, DisconnectReason, Event, MemStorage, Message, NewMessage,
    PacketId, Publication, QoS, Reply, RetainHandling, Router, RouterConfig, Subscription, TopicId,
    Will,
};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

struct Scenario {
    config: RouterConfig,
    router: Router<MemStorage>,
    /// Topic ids as the broker's connections intern them.
    topics: HashMap<String, TopicId>,
    now: SystemTime,
}

impl Scenario {
    fn new(config: RouterConfig) -> Scenario {
        let router = Router::open(config.clone(), MemStorage::new(), MemStorage::new())
            .unwrap_or_else(|e| panic!("open: {e}"));
        Scenario {
            config,
            router,
            topics: HashMap::new(),
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
        }
    }

    fn topic(&mut self, name: &str) -> TopicId {
        let next = TopicId(u32::try_from(self.topics.len()).unwrap_or(u32::MAX));
        *self.topics.entry(name.to_owned()).or_insert(next)
    }

    fn publication(&mut self, topic: &str, payload: &str, qos: QoS, retain: bool) -> Publication {
        let time_ms = self
            .now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Publication {
            topic: self.topic(topic),
            qos,
            retain,
            record: NewMessage::new(qos, retain, time_ms, topic, payload.as_bytes()).framed(),
        }
    }

    /// The replies and credit requests since the last command, as text.
    fn output(&mut self) -> String {
        let mut out = String::new();
        let replies: Vec<_> = self.router.drain_outbox().collect();
        for (conn, reply) in replies {
            for line in reply_lines(&reply) {
                let _ = writeln!(out, "c{} ← {line}", conn.0);
            }
        }
        for conn in self.router.drain_credit_wanted() {
            let _ = writeln!(out, "c{}: credit wanted", conn.0);
        }
        out
    }
}

impl Runner for Scenario {
    type Command = Command;

    fn run(&mut self, command: &Command, _context: &Context) -> Result<String> {
        let mut args = Args::new(command);
        match command.name.as_str() {
            "config" => {
                let mut config = RouterConfig::default();
                while let Some((key, value)) = args.all.next_key() {
                    set_config(&mut config, key, value)?;
                }
                *self = Scenario::new(config);
            }
            "connect" => self.connect(&mut args)?,
            "publish" => self.publish(&mut args)?,
            "subscribe" => self.subscribe(&mut args)?,
            "unsubscribe" => {
                let conn = args.conn()?;
                let filters = vec![args.pos("filter")?.to_owned()];
                let pkid = PacketId(args.num("pkid", 1)?);
                self.router.handle(Event::Unsubscribe {
                    conn,
                    pkid,
                    filters,
                });
            }
            "puback" | "pubrec" | "pubrel" | "pubcomp" => self.ack(&command.name, &mut args)?,
            "pull" => {
                let conn = args.conn()?;
                self.router.handle(Event::Pull { conn });
            }
            "disconnect" => self.disconnect(&mut args)?,
            "tick" => {
                let secs: u64 = args.pos("seconds")?.parse()?;
                self.now += Duration::from_secs(secs);
                self.router.tick(self.now);
            }
            "crash" => self.crash()?,
            "state" => {
                args.all.reject_next()?;
                return Ok(state(&self.router));
            }
            "log" => {
                args.all.reject_next()?;
                return Ok(log(self.router.storage()));
            }
            name => return Err(format!("unknown command {name}").into()),
        }
        args.all.reject_next()?;
        Ok(self.output())
    }
}

impl Scenario {
    fn publish(&mut self, args: &mut Args<'_>) -> Result<()> {
        let conn = args.conn()?;
        let (topic, payload) = (args.pos("topic")?, args.pos("payload")?);
        let qos = args.qos()?;
        let pkid = (qos != QoS::AtMostOnce).then_some(PacketId(args.num("pkid", 1)?));
        let retain = args.flag("retain")?;
        let message = self.publication(topic, payload, qos, retain);
        self.router.handle(Event::Publish {
            conn,
            pkid,
            message,
        });
        Ok(())
    }

    fn ack(&mut self, name: &str, args: &mut Args<'_>) -> Result<()> {
        let conn = args.conn()?;
        let pkid = PacketId(args.pos("pkid")?.parse()?);
        self.router.handle(match name {
            "puback" => Event::PubAck { conn, pkid },
            "pubrec" => Event::PubRec { conn, pkid },
            "pubrel" => Event::PubRel { conn, pkid },
            _ => Event::PubComp { conn, pkid },
        });
        Ok(())
    }

    fn disconnect(&mut self, args: &mut Args<'_>) -> Result<()> {
        let conn = args.conn()?;
        let reason = if args.flag("abrupt")? {
            DisconnectReason::Abrupt
        } else {
            DisconnectReason::Normal
        };
        let session_expiry = args.all.take_key("expiry").map(str::parse).transpose()?;
        self.router.handle(Event::Disconnect {
            conn,
            reason,
            session_expiry,
        });
        Ok(())
    }

    /// The process dies: the router is dropped unflushed, and opened again on what
    /// its storage holds.
    fn crash(&mut self) -> Result<()> {
        let router = std::mem::replace(
            &mut self.router,
            Router::new(self.config.clone(), MemStorage::new()),
        );
        let (log, journal) = router.into_storage();
        let journal = journal.ok_or("no journal")?;
        self.router = Router::open(self.config.clone(), log, journal)?;
        Ok(())
    }

    fn connect(&mut self, args: &mut Args<'_>) -> Result<()> {
        let conn = args.conn()?;
        let client = args.all.take_key("client").unwrap_or("");
        let clean = args.flag("clean")?;
        let mut connect = Connect::v3(client, clean, None);
        if let Some(expiry) = args.all.take_key("expiry") {
            connect.session_expiry = expiry.parse()?;
        }
        connect.receive_maximum = args.num("receive_max", u16::MAX)?;
        if let Some(topic) = args.all.take_key("will") {
            let qos = QoS::from_u8(args.num("will_qos", 0)?).ok_or("bad will_qos")?;
            let payload = args.all.take_key("will_payload").unwrap_or("");
            let p = self.publication(topic, payload, qos, false);
            connect.will = Some(Will {
                topic: p.topic,
                qos,
                retain: false,
                record: p.record,
            });
            connect.will_delay = args.num("will_delay", 0)?;
        }
        self.router.handle(Event::Connect { conn, connect });
        Ok(())
    }

    fn subscribe(&mut self, args: &mut Args<'_>) -> Result<()> {
        let conn = args.conn()?;
        let filter = args.pos("filter")?;
        let mut sub = Subscription::new(filter, args.qos()?);
        sub.no_local = args.flag("no_local")?;
        sub.retain_as_published = args.flag("rap")?;
        sub.retain_handling = match args.num::<u8>("rh", 0)? {
            0 => RetainHandling::OnSubscribe,
            1 => RetainHandling::OnNewSubscription,
            _ => RetainHandling::Never,
        };
        let id = args.all.take_key("id").map(str::parse).transpose()?;
        let pkid = PacketId(args.num("pkid", 1)?);
        self.router.handle(Event::Subscribe {
            conn,
            pkid,
            filters: vec![sub],
            id,
        });
        Ok(())
    }
}

/// A command's arguments, taken as they are used.
struct Args<'a> {
    all: goldenscript::ArgumentConsumer<'a>,
}

impl<'a> Args<'a> {
    fn new(command: &'a Command) -> Args<'a> {
        Args {
            all: command.consume_args(),
        }
    }

    fn pos(&mut self, what: &str) -> Result<&'a str> {
        self.all
            .next_pos()
            .ok_or_else(|| format!("missing {what}").into())
    }

    fn conn(&mut self) -> Result<ConnectionId> {
        let name = self.pos("connection")?;
        let n = name
            .strip_prefix('c')
            .ok_or("a connection is named c1, c2, ...")?;
        Ok(ConnectionId(n.parse()?))
    }

    fn num<T: std::str::FromStr>(&mut self, key: &str, default: T) -> Result<T>
    where
        T::Err: Error + 'static,
    {
        match self.all.take_key(key) {
            Some(v) => Ok(v.parse()?),
            None => Ok(default),
        }
    }

    fn flag(&mut self, key: &str) -> Result<bool> {
        self.num(key, false)
    }

    fn qos(&mut self) -> Result<QoS> {
        QoS::from_u8(self.num("qos", 0)?).ok_or_else(|| "qos is 0, 1 or 2".into())
    }
}

fn set_config(config: &mut RouterConfig, key: &str, value: &str) -> Result<()> {
    match key {
        "inflight_max" => config.inflight_max = value.parse()?,
        "session_queue_max" => config.session_queue_max = value.parse()?,
        "deliver_records_max" => config.deliver_records_max = value.parse()?,
        "deliver_bytes_max" => config.deliver_bytes_max = value.parse()?,
        "subscriptions_max" => config.subscriptions_max = value.parse()?,
        "offline_bytes_max" => config.offline_bytes_max = value.parse()?,
        _ => return Err(format!("unknown config key {key}").into()),
    }
    Ok(())
}

/// One line per reply; a delivery batch one line per message.
fn reply_lines(reply: &Reply) -> Vec<String> {
    match reply {
        Reply::ConnAck {
            code,
            session_present,
            assigned_client_id,
        } => {
            let assigned = assigned_client_id
                .as_ref()
                .map_or(String::new(), |id| format!(" assigned={id}"));
            vec![format!(
                "connack {code:?} session_present={session_present}{assigned}"
            )]
        }
        Reply::PubAck(p, reason) => vec![format!("puback {} {reason:?}", p.0)],
        Reply::PubRec(p, reason) => vec![format!("pubrec {} {reason:?}", p.0)],
        Reply::PubRel(p) => vec![format!("pubrel {}", p.0)],
        Reply::PubComp { pkid, known } => vec![format!("pubcomp {} known={known}", pkid.0)],
        Reply::SubAck { pkid, codes } => vec![format!("suback {} {codes:?}", pkid.0)],
        Reply::UnsubAck { pkid, codes } => vec![format!("unsuback {} {codes:?}", pkid.0)],
        Reply::Deliver(items) => items.iter().map(delivery_line).collect(),
        Reply::Close(reason) => vec![format!("close {reason:?}")],
    }
}

fn delivery_line(d: &Delivery) -> String {
    let record = d.record.load().unwrap_or_default();
    let (topic, payload) = match Message::decode(&record) {
        Ok(m) => (
            String::from_utf8_lossy(&m.topic).into_owned(),
            String::from_utf8_lossy(&m.payload).into_owned(),
        ),
        Err(e) => (format!("<undecodable: {e}>"), String::new()),
    };
    let mut line = format!("deliver {topic} {payload:?} qos={}", d.qos as u8);
    if let Some(p) = d.pkid {
        let _ = write!(line, " pkid={}", p.0);
    }
    for (set, word) in [(d.dup, " dup"), (d.retain, " retain")] {
        if set {
            line.push_str(word);
        }
    }
    if !d.subscription_ids.is_empty() {
        let _ = write!(line, " ids={:?}", d.subscription_ids);
    }
    if d.lost_before > 0 {
        let _ = write!(line, " lost_before={}", d.lost_before);
    }
    line
}

/// The persistent state, one line per item.
fn state(router: &Router<MemStorage>) -> String {
    let snapshot = router.snapshot();
    let mut out = String::new();
    for record in &snapshot.retained {
        let _ = writeln!(out, "retained {}", message_text(record));
    }
    for s in &snapshot.sessions {
        let expiry = if s.expiry_secs == router::NEVER_EXPIRES {
            "never".to_string()
        } else {
            s.expiry_secs.to_string()
        };
        let _ = writeln!(
            out,
            "session {} expiry={expiry} resume={}",
            s.client_id, s.resume
        );
        for (filter, o) in &s.filters {
            let _ = writeln!(out, "  filter {filter} qos={}", o.qos as u8);
        }
        for (record, qos) in &s.retained {
            let _ = writeln!(
                out,
                "  pending retained {} at qos={}",
                message_text(record),
                *qos as u8
            );
        }
        for i in &s.inflight {
            let at = i.offset.map_or("retained".to_string(), |o| format!("@{o}"));
            let _ = writeln!(
                out,
                "  inflight pkid={} qos={} {at} released={}",
                i.pkid, i.qos as u8, i.released
            );
        }
        for p in &s.incoming_qos2 {
            let _ = writeln!(out, "  incoming_qos2 {p}");
        }
    }
    out
}

/// The message log, one record a line.
fn log(storage: &MemStorage) -> String {
    let mut out = String::new();
    for (offset, record) in storage.records() {
        let _ = writeln!(out, "{offset} {}", message_text(record));
    }
    out
}

fn message_text(record: &Bytes) -> String {
    match Message::decode(record) {
        Ok(m) => format!(
            "{} {:?} qos={}{}",
            String::from_utf8_lossy(&m.topic),
            String::from_utf8_lossy(&m.payload),
            m.qos as u8,
            if m.retain { " retain" } else { "" }
        ),
        Err(e) => format!("<undecodable: {e}>"),
    }
}

fn run(name: &str) {
    let path = format!("{}/tests/scenarios/{name}", env!("CARGO_MANIFEST_DIR"));
    goldenscript::run(&mut Scenario::new(RouterConfig::default()), &path)
        .unwrap_or_else(|e| panic!("{path}: {e}"));
}

/// One test per script; `every_script_is_run` keeps the list whole.
macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() { run(stringify!($name)); })*
        const SCRIPTS: &[&str] = &[$(stringify!($name)),*];
    };
}

scenarios!(
    connect,
    publish_subscribe,
    qos2,
    retained,
    sessions,
    wills,
    credit,
    shared,
    crash,
);

#[test]
fn every_script_is_run() {
    let dir = format!("{}/tests/scenarios", env!("CARGO_MANIFEST_DIR"));
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    found.sort();
    let mut listed: Vec<String> = SCRIPTS.iter().map(|s| (*s).to_string()).collect();
    listed.sort();
    assert_eq!(found, listed, "scripts in {dir} and the scenarios! list");
}

#[test]
fn every_script_gives_the_same_output_twice() {
    // The router is deterministic (no hash map with a random seed, no clock of its
    // own): what a simulation of the mesh will rely on.
    for name in SCRIPTS {
        let path = format!("{}/tests/scenarios/{name}", env!("CARGO_MANIFEST_DIR"));
        let input = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut outputs = (0..2).map(|_| {
            goldenscript::generate(&mut Scenario::new(RouterConfig::default()), &input)
                .unwrap_or_else(|e| panic!("{path}: {e}"))
        });
        assert_eq!(outputs.next(), outputs.next(), "{name}");
    }
}
