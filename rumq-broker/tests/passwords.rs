//! The password file: `rumq-broker passwd` writes it, the broker lets its users in
//! with their passwords (argon2id, checked off the connection threads) and no one
//! else, an unknown user costs a check as a known one does, and plain-text passwords
//! in the config are refused with a way to convert them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::*;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn passwd_adds_changes_and_deletes_users() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let out = passwd(&file, "alice", "wonderland", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the file is its owner's only");
    let first = std::fs::read_to_string(&file).unwrap();
    assert!(first.starts_with("alice:$argon2id$v=19$"), "{first}");
    assert!(!first.contains("wonderland"));

    // A new password: a new hash (and a new salt), bob added beside alice.
    assert!(passwd(&file, "alice", "looking-glass", &[])
        .status
        .success());
    assert!(passwd(&file, "bob", "builder", &[]).status.success());
    let second = std::fs::read_to_string(&file).unwrap();
    assert_eq!(second.lines().count(), 2);
    assert!(!second.contains(first.trim()));

    let delete = |user: &str| {
        run_with_timeout(
            Command::new(broker_bin()).args(["passwd", file.to_str().unwrap(), user, "--delete"]),
            STEP,
        )
    };
    let out = delete("carol");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no user \"carol\""),
        "{}",
        stderr(&out)
    );
    let out = delete("alice");
    assert!(out.status.success(), "{}", stderr(&out));
    let third = std::fs::read_to_string(&file).unwrap();
    assert!(
        third.starts_with("bob:") && third.lines().count() == 1,
        "{third}"
    );

    let out = passwd(&file, "dave", "", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("empty password"));
    let out = passwd(&file, "a:b", "pw", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("may not contain ':'"),
        "{}",
        stderr(&out)
    );
}

fn broker_with_users(dir: &std::path::Path) -> Broker {
    let file = password_file(dir, &[("alice", "wonderland"), ("bob", "builder")]);
    Broker::with_config_logging(
        &format!("[auth]\npassword_file = {:?}\n", file.display().to_string()),
        "info,rumq_broker::passwords=debug",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_get_in_with_their_passwords_and_no_one_else() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_users(dir.path());
    broker.wait_for_log("password file loaded users=2", STEP);
    let port = broker.port();

    // mosquitto_pub with the right password publishes; with a wrong one, or as a
    // user the file does not have, it is refused.
    mosquitto_pub(
        port,
        &["-u", "alice", "-P", "wonderland", "-t", "t", "-m", "ok"],
    );
    for (user, password) in [("alice", "builder"), ("mallory", "wonderland")] {
        let out = run_with_timeout(
            StockClient::Mosquitto.command("mosquitto_pub").args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-u",
                user,
                "-P",
                password,
                "-t",
                "t",
                "-m",
                "no",
            ]),
            STEP,
        );
        assert!(!out.status.success(), "{user}/{password} got in");
        let why = stderr(&out).to_lowercase();
        assert!(
            why.contains("bad user name or password") || why.contains("not authori"),
            "{why}"
        );
    }
    // Raw: the CONNACK codes, and an unknown user costs a check as alice does (the
    // answer's timing does not tell which user names exist).
    for (user, password, code) in [("bob", "builder", 0u8), ("bob", "x", 4), ("zed", "x", 4)] {
        let mut opts = ConnectOpts::new(&format!("raw-{user}-{password}"));
        opts.username = Some(user.into());
        opts.password = Some(password.as_bytes().to_vec());
        let (_raw, connack) = Raw::connect(port, &opts).await;
        assert_eq!(connack, [0x20, 0x02, 0x00, code], "{user}/{password}");
    }
    broker.wait_for_log_count("password checked", 6, STEP);
    assert_eq!(broker.stderr().matches("password checked").count(), 6);
}

#[test]
fn passwords_in_the_config_are_refused_with_the_way_to_convert() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rumq.toml");
    std::fs::write(&config, "[auth.users]\nalice = \"secret\"\n").unwrap();
    let out = run_with_timeout(
        Command::new(broker_bin()).args(["--config", config.to_str().unwrap()]),
        STEP,
    );
    assert_eq!(out.status.code(), Some(2));
    let e = stderr(&out);
    assert!(
        e.contains("[auth.users]") && e.contains("rumq-broker passwd FILE USER"),
        "{e}"
    );

    let missing = dir.path().join("nope");
    std::fs::write(
        &config,
        format!(
            "[auth]\npassword_file = {:?}\n",
            missing.display().to_string()
        ),
    )
    .unwrap();
    let out = run_with_timeout(
        Command::new(broker_bin()).args(["--config", config.to_str().unwrap()]),
        STEP,
    );
    assert_eq!(out.status.code(), Some(2));
    let e = stderr(&out);
    assert!(e.contains("password_file") && e.contains("nope"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_password_file_and_keeps_the_old_one_if_the_new_is_bad() {
    let dir = tempfile::tempdir().unwrap();
    let file = password_file(dir.path(), &[("alice", "wonderland")]);
    let broker = Broker::with_config(&format!(
        "[auth]\npassword_file = {:?}\n",
        file.display().to_string()
    ));
    let port = broker.port();
    let login = |user: &'static str, password: &'static str| async move {
        let mut opts = ConnectOpts::new(&format!("c-{user}"));
        opts.username = Some(user.into());
        opts.password = Some(password.as_bytes().to_vec());
        Raw::connect(port, &opts).await
    };
    // alice stays connected through both reloads.
    let (mut alice, connack) = login("alice", "wonderland").await;
    assert_eq!(connack, CONNACK_OK);
    assert_eq!(login("bob", "builder").await.1, [0x20, 0x02, 0x00, 4]);

    assert!(passwd(&file, "bob", "builder", &[]).status.success());
    let hup = |n| {
        let status = Command::new("kill")
            .args(["-HUP", &broker.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        broker.wait_for_log_count("password file", n, STEP);
    };
    hup(2); // "loaded" at start, "reloaded" now
    assert!(broker.stderr().contains("password file reloaded users=2"));
    assert_eq!(login("bob", "builder").await.1, CONNACK_OK);

    std::fs::write(&file, "not a password file\n").unwrap();
    hup(3);
    assert!(
        broker.stderr().contains("password file not reloaded"),
        "{}",
        broker.stderr()
    );
    assert_eq!(
        login("bob", "builder").await.1,
        CONNACK_OK,
        "the old file stays"
    );
    alice.send(&PINGREQ).await;
    assert_eq!(alice.recv().await.bytes(), PINGRESP);
}
