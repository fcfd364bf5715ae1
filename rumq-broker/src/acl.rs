//! Access control in Mosquitto's `acl_file` syntax (`auth.acl_file`), so that
//! operators can bring theirs:
//!
//! ```text
//! # Before any `user` line: anonymous clients.
//! topic read public/#
//! user alice
//! topic readwrite alice/#
//! topic deny alice/secret
//! # Every client, with %c (client id) and %u (user name) put in.
//! pattern readwrite devices/%c/#
//! ```
//!
//! `topic [read|write|readwrite|deny] FILTER` (no access: readwrite) grants the
//! clients of the section it is in; `pattern ...` grants every client, wherever it
//! stands. What is not granted is denied, and `deny` wins over any grant. A pattern
//! whose `%c` or `%u` would put a `+`, `#` or `/` into a filter grants nothing
//! (a client id must not widen its own grant), and one naming `%u` grants nothing to
//! an anonymous client.
//!
//! Checked: a PUBLISH and a will (write) against the topic; a SUBSCRIBE filter
//! (read) must lie within a read grant and outside every deny; every delivery
//! (read) against its topic, so a retained message, a will or a message under a
//! denied topic of a wider subscription reaches only who may read it.
//!
//! Owns: the parsed file, and what it grants one client.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use router::topic;

/// What a rule grants, or takes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Access {
    fn reads(self) -> bool {
        matches!(self, Access::Read | Access::ReadWrite)
    }

    fn writes(self) -> bool {
        matches!(self, Access::Write | Access::ReadWrite)
    }
}

/// One `topic` or `pattern` line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    access: Access,
    filter: String,
}

/// A parsed ACL file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclFile {
    anonymous: Vec<Rule>,
    users: HashMap<String, Vec<Rule>>,
    patterns: Vec<Rule>,
}

/// What the file grants one client: its rules with `%c` and `%u` put in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientAcl {
    rules: Vec<Rule>,
}

impl AclFile {
    /// Read and parse the file at `path`; the error names the file and the line.
    pub fn load(path: &Path) -> Result<AclFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        AclFile::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parse the text of an ACL file; the error names the line.
    pub fn parse(text: &str) -> Result<AclFile, String> {
        let mut acl = AclFile::default();
        let mut user: Option<String> = None;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |why: String| format!("line {}: {why}", n + 1);
            let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let rest = rest.trim();
            match keyword {
                "user" if !rest.is_empty() => user = Some(rest.to_string()),
                "topic" | "pattern" => {
                    let rule = parse_rule(rest).map_err(at)?;
                    match (keyword, &user) {
                        ("pattern", _) => acl.patterns.push(rule),
                        (_, Some(u)) => acl.users.entry(u.clone()).or_default().push(rule),
                        (_, None) => acl.anonymous.push(rule),
                    }
                }
                _ => return Err(at(format!("expected user, topic or pattern, not {line:?}"))),
            }
        }
        Ok(acl)
    }

    /// What the file grants the client `client_id` with `user` (none: anonymous).
    pub fn for_client(&self, user: Option<&str>, client_id: &str) -> ClientAcl {
        let own = match user {
            None => &self.anonymous,
            Some(u) => self.users.get(u).map_or(&[][..], Vec::as_slice),
        };
        let mut rules = own.to_vec();
        for p in &self.patterns {
            if let Some(filter) = substitute(&p.filter, user, client_id) {
                rules.push(Rule {
                    access: p.access,
                    filter,
                });
            } else if p.access == Access::Deny {
                // A deny that cannot be put in denies as written.
                rules.push(p.clone());
            }
        }
        ClientAcl { rules }
    }
}

/// The ACL file in force, replaced whole by a reload (SIGHUP); connections see the
/// new one at their next check.
#[derive(Debug)]
pub struct AclSource {
    file: RwLock<Arc<AclFile>>,
    generation: AtomicU64,
}

impl AclSource {
    /// `file` in force.
    pub fn new(file: AclFile) -> AclSource {
        AclSource {
            file: RwLock::new(Arc::new(file)),
            generation: AtomicU64::new(0),
        }
    }

    /// Read `path` again and put it in force; on error the old file stays.
    pub fn reload(&self, path: &Path) -> Result<(), String> {
        let file = AclFile::load(path)?;
        *self.file.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(file);
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    fn current(&self) -> (u64, Arc<AclFile>) {
        let generation = self.generation.load(Ordering::Acquire);
        let file = self
            .file
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        (generation, file)
    }
}

/// One connection's ACL: what the file in force grants its client, worked out
/// again when a reload replaced the file.
#[derive(Debug)]
pub struct ConnAcl {
    source: Arc<AclSource>,
    generation: u64,
    user: Option<String>,
    client_id: String,
    granted: ClientAcl,
}

impl ConnAcl {
    /// The ACL of the client `client_id` with `user`.
    pub fn new(source: Arc<AclSource>, user: Option<String>, client_id: String) -> ConnAcl {
        let (generation, file) = source.current();
        let granted = file.for_client(user.as_deref(), &client_id);
        ConnAcl {
            source,
            generation,
            user,
            client_id,
            granted,
        }
    }

    /// What the file in force grants the client now.
    pub fn granted(&mut self) -> &ClientAcl {
        if self.source.generation.load(Ordering::Acquire) != self.generation {
            let (generation, file) = self.source.current();
            self.granted = file.for_client(self.user.as_deref(), &self.client_id);
            self.generation = generation;
        }
        &self.granted
    }
}

/// `[read|write|readwrite|deny] FILTER`.
fn parse_rule(rest: &str) -> Result<Rule, String> {
    let (access, filter) = match rest.split_once(char::is_whitespace) {
        Some((word, filter)) => match word {
            "read" => (Access::Read, filter.trim()),
            "write" => (Access::Write, filter.trim()),
            "readwrite" => (Access::ReadWrite, filter.trim()),
            "deny" => (Access::Deny, filter.trim()),
            _ => (Access::ReadWrite, rest),
        },
        None => (Access::ReadWrite, rest),
    };
    if filter.is_empty() {
        return Err("a topic or pattern line needs a filter".into());
    }
    // With %c and %u still in, a pattern's filter is checked as written.
    topic::validate_filter(filter).map_err(|e| format!("{filter:?}: {e}"))?;
    Ok(Rule {
        access,
        filter: filter.to_string(),
    })
}

/// `filter` with `%c` and `%u` put in; `None` when one is needed and missing, or
/// would bring a `+`, `#` or `/` in.
fn substitute(filter: &str, user: Option<&str>, client_id: &str) -> Option<String> {
    let safe = |s: &str| !s.is_empty() && !s.contains(['+', '#', '/']);
    let mut out = filter.to_string();
    if out.contains("%c") {
        if !safe(client_id) {
            return None;
        }
        out = out.replace("%c", client_id);
    }
    if out.contains("%u") {
        let u = user.filter(|u| safe(u))?;
        out = out.replace("%u", u);
    }
    Some(out)
}

impl ClientAcl {
    /// May the client publish to topic `name` (also: a will's topic)?
    pub fn may_write(&self, name: &str) -> bool {
        self.may(name, Access::writes)
    }

    /// May the client be sent a message of topic `name`?
    pub fn may_read(&self, name: &str) -> bool {
        self.may(name, Access::reads)
    }

    /// May the client subscribe to `filter`: every topic it matches readable as
    /// far as the filters tell (within a read grant), none of it wholly denied.
    pub fn may_subscribe(&self, filter: &str) -> bool {
        let filter = topic::shared(filter).map_or(filter, |(_, inner)| inner);
        let denied = self
            .rules
            .iter()
            .any(|r| r.access == Access::Deny && covers(&r.filter, filter));
        !denied
            && self
                .rules
                .iter()
                .any(|r| r.access.reads() && covers(&r.filter, filter))
    }

    fn may(&self, name: &str, grants: fn(Access) -> bool) -> bool {
        let mut granted = false;
        for r in &self.rules {
            if topic::matches(&r.filter, name) {
                if r.access == Access::Deny {
                    return false;
                }
                granted |= grants(r.access);
            }
        }
        granted
    }
}

/// Whether every topic `inner` matches, `outer` matches too.
fn covers(outer: &str, inner: &str) -> bool {
    let mut o = outer.split('/');
    let mut i = inner.split('/');
    loop {
        match (o.next(), i.next()) {
            (Some("#"), _) => return true,
            (None, None) => return true,
            (Some("+"), Some(level)) if level != "#" => {}
            (Some(a), Some(b)) if a == b && a != "+" => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# anonymous
topic read public/#

user alice
topic readwrite alice/#
topic deny alice/secret
topic write shared/in

user bob
topic bob/#

pattern readwrite devices/%c/#
pattern read users/%u/inbox
";

    fn acl() -> AclFile {
        AclFile::parse(FILE).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn sections_grant_their_users_and_deny_wins() {
        let alice = acl().for_client(Some("alice"), "a-1");
        assert!(alice.may_write("alice/x") && alice.may_read("alice/x"));
        assert!(!alice.may_read("alice/secret") && !alice.may_write("alice/secret"));
        assert!(alice.may_write("shared/in") && !alice.may_read("shared/in"));
        assert!(
            !alice.may_read("public/news"),
            "anonymous lines are not hers"
        );
        let bob = acl().for_client(Some("bob"), "b-1");
        assert!(
            bob.may_write("bob/1") && bob.may_read("bob/1"),
            "no access word: readwrite"
        );
        let anonymous = acl().for_client(None, "x");
        assert!(anonymous.may_read("public/news") && !anonymous.may_write("public/news"));
        let stranger = acl().for_client(Some("mallory"), "m");
        assert!(!stranger.may_read("public/news") && !stranger.may_write("alice/x"));
    }

    #[test]
    fn patterns_put_in_the_client_id_and_user_name_but_never_a_wildcard() {
        let a = acl().for_client(Some("alice"), "dev-7");
        assert!(a.may_write("devices/dev-7/temp") && !a.may_write("devices/dev-8/temp"));
        assert!(a.may_read("users/alice/inbox") && !a.may_read("users/bob/inbox"));
        let anonymous = acl().for_client(None, "dev-9");
        assert!(anonymous.may_write("devices/dev-9/t"));
        assert!(!anonymous.may_read("users//inbox") && !anonymous.may_read("users/%u/inbox"));
        for sneaky in ["#", "+", "a/b"] {
            let c = acl().for_client(Some(sneaky), sneaky);
            assert!(!c.may_write("devices/x/t"), "{sneaky}");
            assert!(!c.may_read("users/x/inbox"), "{sneaky}");
        }
    }

    #[test]
    fn a_subscription_must_lie_within_a_read_grant_and_outside_every_deny() {
        let alice = acl().for_client(Some("alice"), "a-1");
        for ok in [
            "alice/#",
            "alice/+/x",
            "alice/x",
            "devices/a-1/+",
            "$share/g/alice/#",
        ] {
            assert!(alice.may_subscribe(ok), "{ok}");
        }
        for no in [
            "#",
            "+/x",
            "alice/secret",
            "shared/in",
            "devices/+/t",
            "$share/g/#",
        ] {
            assert!(!alice.may_subscribe(no), "{no}");
        }
    }

    #[test]
    fn a_bad_line_is_refused_naming_it() {
        let e = AclFile::parse("user a\ntopic read a/#\ntopik read b\n").unwrap_err();
        assert!(e.starts_with("line 3:"), "{e}");
        let e = AclFile::parse("topic read a/#/b\n").unwrap_err();
        assert!(e.starts_with("line 1:") && e.contains("a/#/b"), "{e}");
        let e = AclFile::parse("topic\n").unwrap_err();
        assert!(e.contains("needs a filter"), "{e}");
    }

    #[test]
    fn covers_is_filter_containment() {
        for (outer, inner, want) in [
            ("a/#", "a/b/c", true),
            ("a/#", "a", true),
            ("a/+", "a/b", true),
            ("a/+", "a/+", true),
            ("a/+", "a/#", false),
            ("a/b", "a/+", false),
            ("#", "#", true),
            ("a/+/c", "a/b/c", true),
            ("a/+/c", "a/b/d", false),
        ] {
            assert_eq!(covers(outer, inner), want, "{outer} ⊇ {inner}");
        }
    }
}
