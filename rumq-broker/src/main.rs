//! `rumq-broker`: the binary. Loads the configuration, opens the message log, starts
//! the router thread and the listener, and shuts down gracefully on SIGTERM / Ctrl-C.
//!
//! | module | owns |
//! |---|---|
//! | `config` | the TOML configuration and its validation; `[cluster]` and its command-line overrides |
//! | `protocol` | MQTT bytes ↔ the broker's internal model |
//! | `connection` | one client connection's task |
//! | `driver` | the router behind its lock, the router thread, the request channel |
//! | `replies` | one connection's queue of replies from the router thread |
//! | `credit` | the word through which a connection returns its delivery credit, without an event when nothing waits |
//! | `interner` | topic name ↔ `TopicId`, shared by the connections (the router reads names from records) |
//! | `parking` | quiet connections, waiting without a task |
//! | `server` | listener, connection limit, shutdown |
//! | `admin`, `clients` | the admin API; the clients connected now |
//! | `accept_rate` | the new-connections-per-second limit |
//! | `passwords` | the password file: argon2id hashes, the checks off the connection threads |
//! | `passwd_cmd` | `rumq-broker passwd FILE USER`: adding, changing, removing users |
//! | `metrics` | the Prometheus endpoint: counters read from the router thread at each scrape |
//! | `log_cmd` | `rumq-broker log inspect|tail DIR`: a log read without the broker |
//! | `cluster_cmd` | `rumq-broker cluster status --admin ADDR`: each node's view of the cluster, from its admin API |
//! | `heap` | how much freed memory the allocator keeps |

mod accept_rate;
mod acl;
mod admin;
mod clients;
mod cluster_cmd;
mod cluster_node;
mod cluster_view;
mod config;
mod conn_threads;
mod connection;
mod credit;
mod driver;
mod earlier_run;
mod heap;
mod log_cmd;
mod metrics;
mod owners;
mod parking;
mod passwd_cmd;
mod passwords;
mod replica_files;
mod replies;
mod server;
mod sys;
mod tls;

// The protocol edge is the library half of this package (so it can be fuzzed).
use rumq_broker::protocol;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use mesh::NodeId;

use crate::acl::AclFile;
use crate::config::cluster::{self, ClusterConfig, ClusterOverrides, Peer};
use crate::config::Config;
use crate::passwords::Passwords;

/// An MQTT broker whose every publish lands in a commitlog on disk.
#[derive(Debug, Parser)]
#[command(name = "rumq-broker", version)]
struct Cli {
    /// Instead of running the broker.
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration file (TOML). Without it the built-in default is used.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen on this address instead of the configured one (e.g. 127.0.0.1:1883).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Keep data here instead of the configured data_dir.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Log level or tracing filter (overrides [log] level), e.g. "debug".
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Print the default configuration file and exit.
    #[arg(long)]
    print_default_config: bool,
    /// This node's id in the cluster, 1 to 255 (overrides [cluster] node_id).
    #[arg(long, value_name = "N", value_parser = cluster::parse_node_id)]
    node_id: Option<NodeId>,
    /// Listen for the cluster's other nodes here (overrides [cluster] listen).
    #[arg(long, value_name = "ADDR")]
    cluster_listen: Option<SocketAddr>,
    /// Another node of the cluster, e.g. 2=127.0.0.1:7102; once per node. Given, they
    /// replace [cluster] peers.
    #[arg(long = "peer", value_name = "ID=ADDR")]
    peers: Vec<Peer>,
}

/// What the binary can do besides running the broker.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Add a user to a password file (auth.password_file), change their password, or
    /// remove them.
    Passwd(passwd_cmd::PasswdArgs),
    /// Read a log directory without starting the broker or changing it.
    #[command(subcommand)]
    Log(log_cmd::LogCommand),
    /// Ask the nodes of a cluster, through their admin APIs, what each sees.
    #[command(subcommand)]
    Cluster(cluster_cmd::ClusterCommand),
}

impl Cli {
    fn cluster_overrides(&self) -> ClusterOverrides {
        ClusterOverrides {
            node_id: self.node_id,
            listen: self.cluster_listen,
            peers: self.peers.clone(),
        }
    }
}

/// The configuration file with the command line's overrides, and the cluster they
/// describe (`None`: a single node).
fn load_config(cli: Cli) -> Result<(Config, Option<ClusterConfig>), config::ConfigError> {
    let mut config = Config::load(cli.config.as_deref())?;
    let cluster = config.cluster_config(&cli.cluster_overrides(), cli.config.as_deref())?;
    if let Some(addr) = cli.listen {
        config.listener.addr = addr;
    }
    if let Some(dir) = cli.data_dir {
        config.data_dir = dir;
    }
    if let Some(level) = cli.log_level {
        config.log.level = level;
    }
    Ok((config, cluster))
}

/// The tracing filter for `level`: openraft's own lines are off unless it names them
/// (a node alone logs an election every few hundred ms); `cluster_node` logs the
/// metadata group's leader as it changes.
fn log_filter(level: &str) -> String {
    if level.contains("openraft") {
        level.to_string()
    } else {
        format!("{level},openraft=off")
    }
}

/// What the start reads beside the configuration: the password file, the ACL file,
/// and each `[[listeners]]` entry's certificates (its TLS acceptor, `None` for a
/// plain one). An error names the key and the file.
fn load_files(
    config: &Config,
    cluster: Option<&ClusterConfig>,
) -> Result<server::StartFiles, String> {
    let passwords = match &config.auth.password_file {
        None => None,
        Some(path) => {
            Some(Passwords::load(path).map_err(|e| format!("[auth] password_file: {e}"))?)
        }
    };
    let acl = match &config.auth.acl_file {
        None => None,
        Some(path) => Some(AclFile::load(path).map_err(|e| format!("[auth] acl_file: {e}"))?),
    };
    let acceptors = config
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| {
            tls::edge(l).map_err(|e| format!("[[listeners]] #{} ({}): {e}", i + 1, l.addr))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let peer_tls = match cluster.and_then(|c| c.tls.as_ref()) {
        None => None,
        Some(files) => Some(tls::peer_tls(files).map_err(|e| format!("[cluster] tls: {e}"))?),
    };
    Ok(server::StartFiles {
        peer_tls,
        passwords,
        edges: acceptors,
        acl,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Passwd(args)) => return passwd_cmd::run(args),
        Some(Command::Log(cmd)) => return log_cmd::run(cmd),
        Some(Command::Cluster(cmd)) => return cluster_cmd::run(cmd),
        None => {}
    }
    if cli.print_default_config {
        print!("{}", config::DEFAULT_TOML);
        return ExitCode::SUCCESS;
    }
    let (config, cluster) = match load_config(cli) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("rumq-broker: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(c) = &cluster {
        // A peer listener that cannot be bound is a configuration error: said now,
        // before the data directory is touched (the server binds it again).
        if let Err(e) = std::net::TcpListener::bind(c.listen) {
            eprintln!(
                "rumq-broker: [cluster] listen: cannot listen on {}: {e}",
                c.listen
            );
            return ExitCode::from(2);
        }
    }
    let filter = match tracing_subscriber::EnvFilter::try_new(log_filter(&config.log.level)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("rumq-broker: invalid log level {:?}: {e}", config.log.level);
            return ExitCode::from(2);
        }
    };
    let lines = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        config::LogFormat::Text => lines
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        config::LogFormat::Json => lines.json().with_ansi(false).init(),
    }
    if !heap::keep_freed_memory() {
        tracing::debug!("allocator thresholds not set");
    }
    let files = match load_files(&config, cluster.as_ref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("rumq-broker: {e}");
            return ExitCode::from(2);
        }
    };
    match server::run(config, files, cluster) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("rumq-broker: {e:#}");
            ExitCode::FAILURE
        }
    }
}
