//! The stock (non-Rust) clients the black-box tests drive, and the one check each test
//! makes before running one: a client that is missing fails the test with a message
//! naming its package and `scripts/test` (which installs it), never a silent pass.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// A stock client, as `scripts/test` installs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StockClient {
    /// `mosquitto_pub` and `mosquitto_sub`, from the Debian package `mosquitto-clients`.
    Mosquitto,
    /// The Python package `paho-mqtt` 2.x, run by `python3`.
    Paho,
    /// MQTT.js, the npm package `mqtt`, in `rumq-broker/tests/js/node_modules`, run by
    /// `node`.
    MqttJs,
}

/// Where the MQTT.js scripts and their `node_modules` are.
pub fn mqttjs_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js"))
}

impl StockClient {
    /// A command running `program` of this client, after [`StockClient::require`]
    /// (for MQTT.js, in [`mqttjs_dir`], where `node` finds the `mqtt` package).
    pub fn command(self, program: &str) -> Command {
        self.require();
        let mut cmd = Command::new(program);
        if self == StockClient::MqttJs {
            cmd.current_dir(mqttjs_dir());
        }
        cmd
    }

    /// Panics, naming the package and how to install it, unless this client can run.
    /// Checked once per test binary.
    pub fn require(self) {
        static CHECKED: [OnceLock<Result<(), String>>; 3] =
            [OnceLock::new(), OnceLock::new(), OnceLock::new()];
        let checked = CHECKED[self as usize].get_or_init(|| self.check());
        if let Err(why) = checked {
            panic!(
                "{why}\n{} is missing: this test drives it. Run the tests with \
                 `scripts/test`, which installs it ({}).",
                self.package(),
                self.install()
            );
        }
    }

    fn package(self) -> &'static str {
        match self {
            StockClient::Mosquitto => "the Debian package mosquitto-clients",
            StockClient::Paho => "the Python package paho-mqtt (2.x)",
            StockClient::MqttJs => "MQTT.js (the npm package mqtt)",
        }
    }

    fn install(self) -> &'static str {
        match self {
            StockClient::Mosquitto => "apt-get install mosquitto-clients",
            StockClient::Paho => "python3 -m pip install paho-mqtt==2.1.0",
            StockClient::MqttJs => {
                "npm ci in rumq-broker/tests/js; node itself: apt-get install nodejs npm"
            }
        }
    }

    fn check(self) -> Result<(), String> {
        match self {
            StockClient::Mosquitto => ["mosquitto_pub", "mosquitto_sub"]
                .into_iter()
                .try_for_each(|program| on_path(program).map(drop)),
            // CallbackAPIVersion is what the tests use and what paho-mqtt 1.x lacks.
            StockClient::Paho => runs(
                Command::new("python3").args([
                    "-c",
                    "import paho.mqtt.client as m; m.CallbackAPIVersion.VERSION2",
                ]),
                "python3 -c 'import paho.mqtt.client'",
            ),
            StockClient::MqttJs => runs(
                Command::new("node")
                    .args(["-e", "require('mqtt')"])
                    .current_dir(mqttjs_dir()),
                "node -e \"require('mqtt')\" in rumq-broker/tests/js",
            ),
        }
    }
}

/// The path of `program` in a directory of `$PATH`, as a shell would find it.
fn on_path(program: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|file| {
            file.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| format!("`{program}` is not in any directory of PATH"))
}

/// Ok when `cmd` runs and exits 0; else what went wrong, with the line of its stderr
/// that names the error (Python and Node.js print a trace around it).
fn runs(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("`{what}` could not start: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error = stderr
        .lines()
        .find(|line| line.contains("Error"))
        .or_else(|| stderr.lines().rfind(|line| !line.trim().is_empty()))
        .unwrap_or("");
    Err(format!(
        "`{what}` failed ({}): {}",
        out.status,
        error.trim()
    ))
}
