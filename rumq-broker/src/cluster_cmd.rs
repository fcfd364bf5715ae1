//! `rumq-broker cluster status --admin ADDR ...`: what each node of a cluster sees,
//! read from its admin API (`GET /cluster`, docs/operations.md) without touching
//! its data: the metadata group's members, leader and term, the log the node
//! writes with its commit, each follower's lag and link, and each replica it
//! holds. Exits 1 when a node cannot be read (named on stderr), 2 on bad
//! arguments.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

/// How long one node may take to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The most bytes of one answer read (a node's view is a few kB).
const ANSWER_BYTES_MAX: u64 = 4 << 20;

/// `rumq-broker cluster ...`
#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Print each node's view of the cluster: members, leader, logs, lag.
    Status {
        /// A node's admin API address ([admin] listen); once per node to ask.
        #[arg(long = "admin", value_name = "ADDR", required = true)]
        admins: Vec<SocketAddr>,
        /// The admin API's bearer token ([admin] token); else $RUMQ_ADMIN_TOKEN.
        #[arg(long)]
        token: Option<String>,
    },
}

/// Run a `cluster` subcommand.
pub fn run(cmd: &ClusterCommand) -> ExitCode {
    let ClusterCommand::Status { admins, token } = cmd;
    let token = token
        .clone()
        .or_else(|| std::env::var("RUMQ_ADMIN_TOKEN").ok());
    let mut failed = false;
    for &admin in admins {
        match get_cluster(admin, token.as_deref()) {
            Ok(view) => print!("{}", describe(&view)),
            Err(e) => {
                eprintln!("rumq-broker: cluster status: {admin}: {e}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// `GET /cluster` of the admin API at `admin`, parsed.
fn get_cluster(admin: SocketAddr, token: Option<&str>) -> Result<Value, String> {
    let mut s = TcpStream::connect_timeout(&admin, TIMEOUT).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let request =
        format!("GET /cluster HTTP/1.1\r\nHost: {admin}\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    (s.take(ANSWER_BYTES_MAX))
        .read_to_end(&mut answer)
        .map_err(|e| e.to_string())?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").ok_or("not an HTTP answer")?;
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    match status {
        "200" => serde_json::from_str(body).map_err(|e| format!("not a cluster view: {e}")),
        "401" => Err("the admin API wants a token (--token or RUMQ_ADMIN_TOKEN)".into()),
        "404" => Err("this broker is not in a cluster".into()),
        other => Err(format!("answered {other}: {}", body.trim())),
    }
}

/// One node's view as text.
fn describe(v: &Value) -> String {
    let n = |key: &str| v[key].as_u64().map_or("?".into(), |x| x.to_string());
    let meta = &v["meta"];
    let leader = meta["leader"]
        .as_u64()
        .map_or("none".into(), |l| l.to_string());
    let members: Vec<String> = (meta["members"].as_array().into_iter().flatten())
        .map(|m| format!("{}={}", m[0], m[1].as_str().unwrap_or("?")))
        .collect();
    let mut out = format!(
        "node {}: log {} head {} commit {}\n  metadata: leader {leader}, term {}, applied {}, members {}\n",
        n("node"),
        v["log"].as_str().unwrap_or("?"),
        n("head"),
        n("commit"),
        meta["term"],
        meta["last_applied"],
        members.join(" "),
    );
    for f in v["followers"].as_array().into_iter().flatten() {
        let link = if f["link_up"].as_bool() == Some(true) {
            "up"
        } else {
            "down"
        };
        out.push_str(&format!(
            "  follower {}: {} records behind, link {link}\n",
            f["node"], f["lag_records"]
        ));
    }
    for r in v["replicas"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  replica {}: head {} commit {}\n",
            r["log"].as_str().unwrap_or("?"),
            r["head"],
            r["commit"]
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_is_printed_one_line_per_log_and_peer() {
        let v: Value = serde_json::from_str(
            r#"{"node":1,"log":"1.3","head":12,"commit":10,
            "followers":[{"node":2,"lag_records":2,"link_up":true},{"node":3,"lag_records":12,"link_up":false}],
            "replicas":[{"log":"2.4","head":7,"commit":7}],
            "meta":{"leader":2,"term":5,"last_applied":40,"members":[[1,"127.0.0.1:7101"],[2,"127.0.0.1:7102"]]}}"#,
        )
        .unwrap();
        assert_eq!(
            describe(&v),
            "node 1: log 1.3 head 12 commit 10\n  \
             metadata: leader 2, term 5, applied 40, members 1=127.0.0.1:7101 2=127.0.0.1:7102\n  \
             follower 2: 2 records behind, link up\n  \
             follower 3: 12 records behind, link down\n  \
             replica 2.4: head 7 commit 7\n"
        );
    }
}
