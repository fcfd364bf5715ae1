//! The password file (`auth.password_file`): one `user:hash` line per user, the hash
//! an argon2id PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`), as
//! `rumq-broker passwd FILE USER` writes it. Blank lines and lines starting with `#`
//! are ignored.
//!
//! Checking a password costs tens of milliseconds of CPU and 19 MiB of memory on
//! purpose (that is what makes a stolen file slow to attack), so the connections
//! never do it on their own threads (see `connection/handshake.rs`). A user that
//! does not exist costs the same as one that does: the check runs against a fixed
//! hash, so the time to answer does not tell which user names exist.
//!
//! Owns: parsing, checking, adding and removing users, writing the file; and the
//! [`Checker`] the connections ask, which runs at most `auth.password_checks_max`
//! checks at once, on tokio's blocking threads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::Semaphore;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// What a bad password file is.
#[derive(Debug, thiserror::Error)]
pub enum PasswordFileError {
    /// The file cannot be read or written.
    #[error("password file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not `user:hash` with an argon2 PHC hash.
    #[error("password file {}, line {line}: {why}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based.
        line: usize,
        /// What is wrong with it.
        why: String,
    },
    /// A user name that cannot be written to the file.
    #[error("user name {0:?}: {1}")]
    BadUser(String, &'static str),
    /// Hashing failed.
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// The users and their password hashes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Passwords {
    users: BTreeMap<String, String>,
}

impl Passwords {
    /// Read and check the file at `path`.
    pub fn load(path: &Path) -> Result<Passwords, PasswordFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| PasswordFileError::Io {
            path: path.into(),
            source,
        })?;
        Passwords::parse(&text, path)
    }

    /// Check the file's text (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Passwords, PasswordFileError> {
        let mut users = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: String| PasswordFileError::Line {
                path: path.into(),
                line: i + 1,
                why,
            };
            let Some((user, hash)) = line.split_once(':') else {
                return Err(bad("expected user:hash".into()));
            };
            check_user(user).map_err(|e| bad(e.to_string()))?;
            let parsed =
                PasswordHash::new(hash).map_err(|e| bad(format!("not a PHC hash: {e}")))?;
            if !parsed.algorithm.as_str().starts_with("argon2") {
                return Err(bad(format!("{} is not an argon2 hash", parsed.algorithm)));
            }
            if users.insert(user.to_owned(), hash.to_owned()).is_some() {
                return Err(bad(format!("user {user:?} appears twice")));
            }
        }
        Ok(Passwords { users })
    }

    /// How many users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether `password` is `user`'s. As slow for a user that does not exist as for
    /// one that does (see the module docs): call it off the connection threads.
    pub fn check(&self, user: &str, password: &[u8]) -> bool {
        let hash = self
            .users
            .get(user)
            .map_or(UNKNOWN_USER_HASH, String::as_str);
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        let ok = Argon2::default().verify_password(password, &parsed).is_ok();
        ok && self.users.contains_key(user)
    }

    /// Add `user`, or change their password.
    pub fn set(&mut self, user: &str, password: &[u8]) -> Result<(), PasswordFileError> {
        check_user(user).map_err(|why| PasswordFileError::BadUser(user.into(), why))?;
        let mut salt = [0u8; 16];
        getrandom::getrandom(&mut salt).map_err(|e| PasswordFileError::Hash(e.to_string()))?;
        let salt =
            SaltString::encode_b64(&salt).map_err(|e| PasswordFileError::Hash(e.to_string()))?;
        let hash = Argon2::default()
            .hash_password(password, &salt)
            .map_err(|e| PasswordFileError::Hash(e.to_string()))?;
        self.users.insert(user.to_owned(), hash.to_string());
        Ok(())
    }

    /// Remove `user`; whether they were there.
    pub fn remove(&mut self, user: &str) -> bool {
        self.users.remove(user).is_some()
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        self.users
            .iter()
            .map(|(user, hash)| format!("{user}:{hash}\n"))
            .collect()
    }

    /// Write the file at `path` in one step (a temporary file renamed over it),
    /// readable by its owner only.
    pub fn write(&self, path: &Path) -> Result<(), PasswordFileError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| PasswordFileError::Io {
            path: path.into(),
            source,
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(self.to_text().as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// Password checks for the connections: off their threads, at most `max` at once
/// (each takes 19 MiB while it runs; the others wait their turn).
#[derive(Debug)]
pub struct Checker {
    /// Replaced whole by [`Checker::reload`]; a check in progress keeps the file it
    /// started with.
    passwords: RwLock<Arc<Passwords>>,
    permits: Arc<Semaphore>,
}

impl Checker {
    /// Checks against `passwords`, `max` at a time (at least one).
    pub fn new(passwords: Passwords, max: usize) -> Checker {
        Checker {
            passwords: RwLock::new(Arc::new(passwords)),
            permits: Arc::new(Semaphore::new(max.max(1))),
        }
    }

    /// Read the file at `path` again and check against it from now on; a file that
    /// does not load leaves the one in use (the error says why). How many users.
    pub fn reload(&self, path: &Path) -> Result<usize, PasswordFileError> {
        let fresh = Passwords::load(path)?;
        let users = fresh.len();
        *self
            .passwords
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(fresh);
        Ok(users)
    }

    /// Whether `password` is `user`'s (see [`Passwords::check`]).
    pub async fn check(&self, user: &str, password: &[u8]) -> bool {
        let Ok(_permit) = self.permits.clone().acquire_owned().await else {
            return false;
        };
        let passwords = self
            .passwords
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let (user, password) = (user.to_owned(), password.to_vec());
        tokio::task::spawn_blocking(move || {
            let ok = passwords.check(&user, &password);
            tracing::debug!(user, ok, "password checked");
            ok
        })
        .await
        .unwrap_or(false)
    }
}

/// A user name must fit the file's format.
fn check_user(user: &str) -> Result<(), &'static str> {
    if user.is_empty() {
        return Err("is empty");
    }
    if user.contains(':') || user.contains('\n') || user.contains('\r') {
        return Err("may not contain ':' or a line break");
    }
    if user.starts_with('#') {
        return Err("may not start with '#'");
    }
    Ok(())
}

/// The hash checked against when the user does not exist (of a password nobody
/// knows), so that an unknown user costs what a known one does.
const UNKNOWN_USER_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$cnVtcS11bmtub3duLXVzZXI$yWSzB6bQmGEqsCxGuSeLxSYrtUa2bLEBiNzGnR5DCpU";

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> &'static Path {
        Path::new("/etc/rumq/passwd")
    }

    #[test]
    fn set_check_remove_and_read_back() {
        let mut p = Passwords::default();
        p.set("alice", b"wonderland").unwrap();
        p.set("bob", b"builder").unwrap();
        assert!(p.check("alice", b"wonderland"));
        assert!(!p.check("alice", b"builder"));
        assert!(!p.check("carol", b"wonderland"));
        let again = Passwords::parse(&p.to_text(), path()).unwrap();
        assert_eq!(again, p);
        assert!(again.check("bob", b"builder"));
        assert!(p.remove("bob"));
        assert!(!p.remove("bob"));
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn the_unknown_user_hash_is_a_valid_argon2id_hash() {
        let parsed = PasswordHash::new(UNKNOWN_USER_HASH).unwrap();
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
        assert_eq!(
            parsed.params,
            PasswordHash::new(&{
                let mut p = Passwords::default();
                p.set("x", b"y").unwrap();
                p.users["x"].clone()
            })
            .unwrap()
            .params
        );
    }

    #[test]
    fn bad_lines_are_named_with_their_number() {
        let cases = [
            ("alice\n", "line 1: expected user:hash"),
            ("# ok\n\nalice:plain\n", "line 3: not a PHC hash"),
            (
                ":$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA\n",
                "line 1: is empty",
            ),
            (
                "a:$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGg\n",
                "line 1: pbkdf2-sha256 is not an argon2 hash",
            ),
        ];
        for (text, want) in cases {
            let e = Passwords::parse(text, path()).unwrap_err().to_string();
            assert!(
                e.contains("/etc/rumq/passwd") && e.contains(want),
                "{text:?}: {e}"
            );
        }
        let mut p = Passwords::default();
        p.set("a", b"1").unwrap();
        let twice = format!("{0}{0}", p.to_text());
        let e = Passwords::parse(&twice, path()).unwrap_err().to_string();
        assert!(e.contains("line 2: user \"a\" appears twice"), "{e}");
        assert!(p.set("a:b", b"1").is_err());
    }

    #[test]
    fn the_file_is_written_whole_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("passwd");
        let mut p = Passwords::default();
        p.set("alice", b"wonderland").unwrap();
        p.write(&file).unwrap();
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(Passwords::load(&file)
            .unwrap()
            .check("alice", b"wonderland"));
        assert!(!dir.path().join("passwd.tmp").exists());
    }
}
