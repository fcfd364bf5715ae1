//! Child processes: the mosquitto clients, the broker's CLI, a health probe.

use super::*;

/// Run a command to completion with a timeout; kills it and panics when it hangs.
pub fn run_with_timeout(cmd: &mut Command, within: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {within:?}; stderr: {}",
                String::from_utf8_lossy(&err.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

/// Lowercase hex of `bytes` (mosquitto_sub's `%x`).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A running `mosquitto_sub -d` whose subscription the broker has acknowledged.
/// Messages are printed as `MSG|<qos>|<retain>|<topic>|<payload hex>`.
#[derive(Debug)]
pub struct MosquittoSub {
    child: Child,
    out: Arc<LogBuf>,
    err: Arc<LogBuf>,
}

/// The `-F` format [`MosquittoSub`] passes.
pub const MOSQ_FORMAT: &str = "MSG|%q|%r|%t|%x";

impl MosquittoSub {
    /// Start `mosquitto_sub -h 127.0.0.1 -p PORT -d -F ... ARGS` and wait for its SUBACK.
    pub fn start(port: u16, args: &[&str]) -> MosquittoSub {
        let sub = MosquittoSub::spawn(port, args);
        sub.out
            .wait_for("received SUBACK", STEP, "mosquitto_sub output");
        sub
    }

    /// As `start`, without waiting for the SUBACK (a resumed session's messages
    /// may come first, and all it waits for).
    pub fn spawn(port: u16, args: &[&str]) -> MosquittoSub {
        StockClient::Mosquitto.require();
        // Line-buffered stdout, so that the debug lines arrive as they are printed.
        let mut child = Command::new("stdbuf")
            .args(["-oL", "mosquitto_sub"])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-d",
                "-F",
                MOSQ_FORMAT,
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mosquitto_sub");
        let out = collect_lines(child.stdout.take().unwrap());
        let err = collect_lines(child.stderr.take().unwrap());
        MosquittoSub { child, out, err }
    }

    /// Wait for it to exit (it should be run with -C and -W) and return its exit status
    /// and message lines (`MSG|...`, without the prefix).
    pub fn finish(mut self, within: Duration) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto_sub did not exit within {within:?}; stdout:\n{}\nstderr:\n{}",
                self.out.lock(),
                self.err.lock()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        // Let the reader threads reach EOF.
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until
            && (Arc::strong_count(&self.out) > 1 || Arc::strong_count(&self.err) > 1)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let lines = self
            .out
            .text
            .lock()
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("MSG|").map(str::to_string))
            .collect();
        (status, lines)
    }
}

impl Drop for MosquittoSub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `mosquitto_pub -h 127.0.0.1 -p PORT ARGS` and assert it succeeded.
pub fn mosquitto_pub(port: u16, args: &[&str]) {
    let out = mosquitto_pub_output(port, args);
    assert!(
        out.status.success(),
        "mosquitto_pub {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run `mosquitto_pub -h 127.0.0.1 -p PORT ARGS`, within [`STEP`]: how it ended.
pub fn mosquitto_pub_output(port: u16, args: &[&str]) -> Output {
    run_with_timeout(
        StockClient::Mosquitto
            .command("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args),
        STEP,
    )
}

/// An HTTP/1.1 request (`method path`, with a bearer `token` if given) on a fresh
/// connection to `addr`: the status code and the body, within [`STEP`].
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: rumq\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(STEP, s.read_to_string(&mut response))
        .await
        .expect("no HTTP response in time")
        .unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_owned())
}

/// Run `rumq-broker passwd FILE USER --password-stdin [extra...]` with `password` on
/// its standard input; its output (it must end within [`STEP`] × 3).
pub fn passwd(file: &Path, user: &str, password: &str, extra: &[&str]) -> Output {
    use std::io::Write;
    let mut child = Command::new(broker_bin())
        .arg("passwd")
        .arg(file)
        .arg(user)
        .arg("--password-stdin")
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rumq-broker passwd");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{password}\n").as_bytes()).unwrap();
    drop(stdin);
    let deadline = Instant::now() + STEP * 3;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "rumq-broker passwd did not end");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// A password file in `dir` with `users` and their passwords, made by the binary.
pub fn password_file(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
    let file = dir.join("passwd");
    for (user, password) in users {
        let out = passwd(&file, user, password, &[]);
        assert!(
            out.status.success(),
            "passwd {user}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    file
}

/// A client that is subscribed to `healthy/#` and publishes there itself.
pub struct Healthy {
    m: Mqtt,
    n: u32,
}

impl Healthy {
    pub async fn new(port: u16) -> Healthy {
        let mut m = Mqtt::connect(port, "healthy").await;
        m.subscribed("healthy/#", QoS::AtLeastOnce).await;
        Healthy { m, n: 0 }
    }

    /// Publish a fresh message and receive exactly it.
    pub async fn check(&mut self) {
        self.n += 1;
        let payload = format!("still fine {}", self.n);
        self.m
            .publish("healthy/t", QoS::AtLeastOnce, false, payload.as_bytes())
            .await;
        let p = self.m.recv_publish().await;
        assert_publish(&p, "healthy/t", payload.as_bytes(), QoS::AtLeastOnce, false);
    }
}
