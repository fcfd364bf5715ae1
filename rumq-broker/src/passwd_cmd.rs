//! `rumq-broker passwd FILE USER`: add a user to a password file, change their
//! password, or (`--delete`) remove them. The password is asked twice on the
//! terminal, without echo, or read from one line of standard input with
//! `--password-stdin` (for scripts). The file is created if missing and always
//! written whole, readable by its owner only (`passwords.rs`).

use std::io::{BufRead, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::passwords::Passwords;

/// The subcommand's arguments.
#[derive(Debug, clap::Args)]
pub struct PasswdArgs {
    /// The password file (created if missing).
    file: PathBuf,
    /// The user to add, change or delete.
    user: String,
    /// Read the password from the first line of standard input instead of asking.
    #[arg(long)]
    password_stdin: bool,
    /// Remove the user instead.
    #[arg(long, conflicts_with = "password_stdin")]
    delete: bool,
}

/// Run the subcommand: exit 0 when the file was written, 1 otherwise (saying why).
pub fn run(args: &PasswdArgs) -> ExitCode {
    match change(args) {
        Ok(what) => {
            eprintln!("rumq-broker passwd: {what}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("rumq-broker passwd: {why}");
            ExitCode::FAILURE
        }
    }
}

fn change(args: &PasswdArgs) -> Result<String, String> {
    let mut passwords = match Passwords::load(&args.file) {
        Ok(p) => p,
        Err(crate::passwords::PasswordFileError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Passwords::default()
        }
        Err(e) => return Err(e.to_string()),
    };
    let (user, file) = (&args.user, args.file.display());
    let what = if args.delete {
        if !passwords.remove(user) {
            return Err(format!("no user {user:?} in {file}"));
        }
        format!("removed {user:?} from {file}")
    } else {
        let password = if args.password_stdin {
            password_from_stdin()?
        } else {
            password_from_terminal()?
        };
        if password.is_empty() {
            return Err("an empty password is not accepted".into());
        }
        passwords
            .set(user, password.as_bytes())
            .map_err(|e| e.to_string())?;
        format!("set the password of {user:?} in {file}")
    };
    passwords.write(&args.file).map_err(|e| e.to_string())?;
    Ok(what)
}

fn password_from_stdin() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

fn password_from_terminal() -> Result<String, String> {
    let first = ask_hidden("Password: ")?;
    let second = ask_hidden("Again: ")?;
    if first != second {
        return Err("the two passwords differ; nothing was changed".into());
    }
    Ok(first)
}

/// Ask on the terminal with its echo off (restored after).
fn ask_hidden(prompt: &str) -> Result<String, String> {
    let no_tty = |e: std::io::Error| {
        format!("cannot ask for a password without a terminal ({e}); use --password-stdin")
    };
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(no_tty)?;
    let fd = tty.as_raw_fd();
    // SAFETY: `termios` is plain data that tcgetattr fills; `fd` is open (`tty`).
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
        return Err(no_tty(std::io::Error::last_os_error()));
    }
    let mut quiet = saved;
    quiet.c_lflag &= !libc::ECHO;
    // SAFETY: `quiet` is a valid termios read from the same terminal.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    let mut answer = String::new();
    let asked = (&tty)
        .write_all(prompt.as_bytes())
        .and_then(|()| std::io::BufReader::new(&tty).read_line(&mut answer));
    // SAFETY: restores what tcgetattr returned.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    let _ = (&tty).write_all(b"\n");
    asked.map_err(no_tty)?;
    Ok(answer.trim_end_matches(['\n', '\r']).to_owned())
}
