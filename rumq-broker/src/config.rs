//! The broker's configuration: `config/rumq.toml` is compiled in as the default, and a
//! file given with `--config` replaces it (keys it leaves out keep their defaults).
//! Unknown keys and wrong types are errors that name the key and the line.
//! `[cluster]` and its command-line overrides are in `cluster`.

pub mod cluster;
pub mod listeners;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use commitlog::LogConfig;
use router::RouterConfig;
use serde::Deserialize;

use self::cluster::{ClusterConfig, ClusterOverrides, ClusterSection};
use self::listeners::ExtraListener;

/// The documented default configuration, as shipped in `config/rumq.toml`.
pub const DEFAULT_TOML: &str = include_str!("../../config/rumq.toml");

/// Everything the broker can be told.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Where to listen.
    pub listener: ListenerConfig,
    /// `[[listeners]]`: more listeners, each with its transport.
    pub listeners: Vec<ExtraListener>,
    /// Limits on what clients may do.
    pub limits: Limits,
    /// Who may connect.
    pub auth: AuthConfig,
    /// Router limits.
    pub router: RouterConfig,
    /// The message log.
    pub storage: LogConfig,
    /// Logging.
    pub log: LogSettings,
    /// `[cluster]` as written; absent: a single node (see `Config::cluster_config`).
    pub cluster: Option<ClusterSection>,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// The admin API.
    pub admin: AdminConfig,
}

/// `[admin]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Where the admin API is served; none: not at all.
    pub listen: Option<SocketAddr>,
    /// The bearer token requests must carry; required unless `listen` is loopback.
    pub token: Option<String>,
}

/// `[metrics]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where `/metrics` and `/health` are served; none: not at all.
    pub listen: Option<SocketAddr>,
    /// How often the `$SYS` topics are published, seconds; 0: never (`sys.rs`).
    pub sys_interval_secs: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: None,
            sys_interval_secs: 10,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            listener: ListenerConfig::default(),
            listeners: Vec::new(),
            limits: Limits::default(),
            auth: AuthConfig::default(),
            router: RouterConfig::default(),
            storage: LogConfig::default(),
            log: LogSettings::default(),
            cluster: None,
            metrics: MetricsConfig::default(),
            admin: AdminConfig::default(),
        }
    }
}

/// `[listener]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerConfig {
    /// TCP address for MQTT.
    pub addr: SocketAddr,
    /// A connection that read nothing and was sent nothing for this long parks:
    /// it gives up its task until there is something (`parking.rs`). 0: never.
    pub park_after_ms: u64,
    /// Threads that run the connection tasks. 0: one fewer than the cores (at least
    /// one), leaving a core to the router thread.
    pub connection_threads: usize,
    /// While the router thread sleeps, a connection applies its small requests
    /// itself rather than wake it (`driver.rs`). Off under `fsync = "always"`.
    pub inline_router: bool,
}

impl ListenerConfig {
    /// The connection threads to start on a machine with `cores` cores.
    pub fn connection_threads_for(&self, cores: usize) -> usize {
        match self.connection_threads {
            0 => cores.saturating_sub(1).max(1),
            n => n,
        }
    }
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            addr: SocketAddr::from(([0, 0, 0, 0], 1883)),
            park_after_ms: 1000,
            connection_threads: 0,
            inline_router: true,
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Concurrent connections.
    pub max_connections: usize,
    /// New connections accepted per second (0: no limit).
    pub connections_per_sec_max: u32,
    /// Distinct topic names one connection may publish to.
    pub topics_per_connection_max: usize,
    /// Largest packet in bytes.
    pub max_packet_size: usize,
    /// Time allowed for CONNECT.
    pub connect_timeout_ms: u64,
    /// Distinct topics.
    pub topics_max: usize,
    /// Inbound QoS 1/2 publishes awaiting acknowledgement per connection.
    pub inflight_in_max: usize,
    /// Time a blocked socket write may take.
    pub write_timeout_ms: u64,
    /// After a DISCONNECT from the broker: how long it reads what the client still
    /// sends before closing (see `connection::Connection::linger`).
    pub disconnect_linger_ms: u64,
    /// ... and how many bytes at most.
    pub disconnect_linger_bytes: usize,
    /// Longest keep alive a client may use, seconds (0: no limit). An MQTT 5 client
    /// asking for more (or for none) is told this value as the server keep alive.
    pub keep_alive_max_secs: u16,
    /// Topic aliases an MQTT 5 client may set per connection.
    pub topic_alias_max: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            connections_per_sec_max: 1000,
            topics_per_connection_max: 100_000,
            max_packet_size: 1024 * 1024,
            connect_timeout_ms: 10_000,
            topics_max: 1_000_000,
            inflight_in_max: 1024,
            write_timeout_ms: 60_000,
            disconnect_linger_ms: 1000,
            disconnect_linger_bytes: 64 * 1024,
            keep_alive_max_secs: 0,
            topic_alias_max: 64,
        }
    }
}

/// `[auth]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Accept clients without a user name.
    pub allow_anonymous: bool,
    /// Users and their argon2id password hashes (`passwords.rs`); none: user names
    /// are not checked.
    pub password_file: Option<PathBuf>,
    /// Password checks running at once (each holds 19 MiB while it runs).
    pub password_checks_max: usize,
    /// Who may publish and subscribe to what (`acl.rs`); none: everyone, everything.
    pub acl_file: Option<PathBuf>,
    /// Plain-text passwords, no longer accepted: read only to refuse them with a
    /// message saying how to convert.
    pub users: BTreeMap<String, String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            allow_anonymous: true,
            password_file: None,
            password_checks_max: 2,
            acl_file: None,
            users: BTreeMap::new(),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// A tracing filter.
    pub level: String,
    /// How each line is written.
    pub format: LogFormat,
}

/// `[log] format`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed, or a key is unknown or of the wrong type. The message
    /// from `toml` names the line, column and key.
    #[error("invalid config {origin}: {message}")]
    Parse {
        /// The file name, or "(built-in default)".
        origin: String,
        /// toml's message with line and key.
        message: String,
    },
    /// Values are inconsistent.
    #[error("invalid config {origin}: {message}")]
    Invalid {
        /// The file name.
        origin: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Parse TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        config.validate(origin)?;
        // The router counts messages per topic id; the ids stop at this.
        config.router.topics_max = config.limits.topics_max;
        Ok(config)
    }

    /// Load `path`, or the built-in default when `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            None => Config::from_toml(DEFAULT_TOML, &origin(None)),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                Config::from_toml(&text, &origin(Some(p)))
            }
        }
    }

    /// The cluster this node is in: `[cluster]` with the command line's `overrides`
    /// applied, checked. `None`: a single node (no section, no overrides). `path` is
    /// the file the section came from, for the error.
    pub fn cluster_config(
        &self,
        overrides: &ClusterOverrides,
        path: Option<&Path>,
    ) -> Result<Option<ClusterConfig>, ConfigError> {
        let record_bytes_max = self.storage.record_bytes_max;
        cluster::resolve(self.cluster.clone(), overrides, record_bytes_max).map_err(|message| {
            ConfigError::Invalid {
                origin: origin(path),
                message,
            }
        })
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            message,
        };
        self.storage
            .validate()
            .map_err(|e| invalid(format!("[storage]: {e}")))?;
        listeners::check(&self.listeners, self.listener.addr).map_err(invalid)?;
        if self.limits.max_packet_size < 16 || self.limits.max_packet_size > 268_435_460 {
            return Err(invalid(format!(
                "[limits] max_packet_size must be between 16 and 268435460, got {}",
                self.limits.max_packet_size
            )));
        }
        if self.limits.max_packet_size > self.storage.record_bytes_max as usize {
            return Err(invalid(format!(
                "[limits] max_packet_size ({}) must not exceed [storage] record_bytes_max ({})",
                self.limits.max_packet_size, self.storage.record_bytes_max
            )));
        }
        if self.limits.max_connections == 0 || self.limits.inflight_in_max == 0 {
            return Err(invalid(
                "[limits] max_connections and inflight_in_max must be > 0".into(),
            ));
        }
        if self.router.inflight_max == 0 || self.router.inflight_max >= usize::from(u16::MAX) {
            return Err(invalid(
                "[router] inflight_max must be between 1 and 65534".into(),
            ));
        }
        if !self.auth.users.is_empty() {
            return Err(invalid(
                "[auth.users]: passwords in the config file are no longer accepted (they were \
                 kept in clear text). For each user run `rumq-broker passwd FILE USER`, set \
                 [auth] password_file = \"FILE\", and remove [auth.users]"
                    .into(),
            ));
        }
        if let Some(addr) = self.admin.listen {
            let no_token = self.admin.token.as_deref().is_none_or(str::is_empty);
            if no_token && !addr.ip().is_loopback() {
                return Err(invalid(format!(
                    "[admin] token: required when [admin] listen ({addr}) is not a loopback \
                     address (the API can close any client)"
                )));
            }
        }
        if self.metrics.sys_interval_secs > 86_400 {
            return Err(invalid(format!(
                "[metrics] sys_interval_secs must be between 0 (off) and 86400, got {}",
                self.metrics.sys_interval_secs
            )));
        }
        if self.auth.password_checks_max == 0 {
            return Err(invalid("[auth] password_checks_max must be > 0".into()));
        }
        if self.router.deliver_records_max == 0 || self.router.append_batch_max == 0 {
            return Err(invalid(
                "[router] deliver_records_max and append_batch_max must be > 0".into(),
            ));
        }
        Ok(())
    }
}

/// How errors name the configuration that came from `path`.
fn origin(path: Option<&Path>) -> String {
    path.map_or_else(|| "(built-in default)".into(), |p| p.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_file_is_the_default() {
        let parsed = Config::from_toml(DEFAULT_TOML, "default").unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn missing_keys_keep_defaults() {
        let c = Config::from_toml("[listener]\naddr = \"127.0.0.1:1\"\n", "t").unwrap();
        assert_eq!(c.listener.addr.port(), 1);
        assert_eq!(c.limits, Limits::default());
    }

    #[test]
    fn connection_threads_leave_a_core_to_the_router_unless_set() {
        let auto = ListenerConfig::default();
        assert_eq!(auto.connection_threads_for(1), 1);
        assert_eq!(auto.connection_threads_for(2), 1);
        assert_eq!(auto.connection_threads_for(16), 15);
        let c = Config::from_toml("[listener]\nconnection_threads = 4\n", "t").unwrap();
        assert_eq!(c.listener.connection_threads_for(2), 4);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = Config::from_toml(
            "data_dir = \"x\"\n\n[limits]\nmax_conections = 5\n",
            "f.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("max_conections"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("f.toml"), "{err}");
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let err = Config::from_toml("[storage]\nfsync = 3\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("fsync") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn inconsistent_values_are_explained() {
        let err = Config::from_toml("[storage]\nsegment_bytes_max = 100\n", "f")
            .unwrap_err()
            .to_string();
        assert!(err.contains("record_bytes_max"), "{err}");
    }
}
