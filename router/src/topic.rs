//! Topic names and topic filters: validation and matching (MQTT 3.1.1 §4.7,
//! identical in 5.0).

/// Why a topic name or filter is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Zero length.
    #[error("empty")]
    Empty,
    /// Longer than a UTF-8 string may be on the wire.
    #[error("longer than 65535 bytes")]
    TooLong,
    /// Contains U+0000.
    #[error("contains a NUL character")]
    Nul,
    /// A wildcard in a topic name (PUBLISH).
    #[error("wildcards are not allowed in a topic name")]
    Wildcard,
    /// `#` not alone in the last level, or `+` not alone in its level.
    #[error("misplaced wildcard")]
    MisplacedWildcard,
    /// `$share/` without a group name (or with a wildcard in it) or without a filter.
    #[error("malformed shared subscription")]
    BadShare,
}

/// The prefix of a shared subscription (MQTT 5 §4.8.2, also honoured for 3.1.1).
pub const SHARE_PREFIX: &str = "$share/";

/// `$share/{group}/{filter}` → `(group, filter)`; `None` for any other filter.
#[must_use]
pub fn shared(filter: &str) -> Option<(&str, &str)> {
    filter.strip_prefix(SHARE_PREFIX)?.split_once('/')
}

fn common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > usize::from(u16::MAX) {
        return Err(TopicError::TooLong);
    }
    if s.contains('\0') {
        return Err(TopicError::Nul);
    }
    Ok(())
}

/// Check a topic name as published.
pub fn validate_name(name: &str) -> Result<(), TopicError> {
    common(name)?;
    if name.contains(['+', '#']) {
        return Err(TopicError::Wildcard);
    }
    Ok(())
}

/// Check a topic filter as subscribed (a shared one: its group and its filter).
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    common(filter)?;
    if filter.starts_with(SHARE_PREFIX) {
        let (group, inner) = shared(filter).ok_or(TopicError::BadShare)?;
        if group.is_empty() || group.contains(['+', '#']) || inner.is_empty() {
            return Err(TopicError::BadShare);
        }
        return validate_filter(inner);
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        if level.contains('#') && (level != "#" || !last) {
            return Err(TopicError::MisplacedWildcard);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::MisplacedWildcard);
        }
    }
    Ok(())
}

/// Does `filter` (valid) match topic `name` (valid)? Wildcards at the first level do
/// not match names starting with `$` (§4.7.2).
#[must_use]
pub fn matches(filter: &str, name: &str) -> bool {
    let mut f = filter.split('/');
    let mut n = name.split('/');
    let mut first = true;
    loop {
        match (f.next(), n.next()) {
            (Some("#"), _) => return !(first && name.starts_with('$')),
            (Some("+"), Some(_)) => {
                if first && name.starts_with('$') {
                    return false;
                }
            }
            (Some(fl), Some(nl)) => {
                if fl != nl {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        for ok in [
            "#",
            "+",
            "a/#",
            "a/+/b",
            "+/+",
            "/",
            "a//b",
            "$SYS/#",
            "sport/+/player1",
            "$share/g/#",
            "$share/group-1/a/+/b",
        ] {
            assert_eq!(validate_filter(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "a#",
            "a/#/b",
            "a/b+",
            "+a",
            "#/a",
            "a\0b",
            "$share/g",
            "$share//a",
            "$share/g+/a",
            "$share/g/",
            "$share/g/a/#/b",
        ] {
            assert!(validate_filter(bad).is_err(), "{bad}");
        }
        assert_eq!(shared("$share/g/a/b"), Some(("g", "a/b")));
        assert_eq!(shared("a/b"), None);
    }

    #[test]
    fn names() {
        assert_eq!(validate_name("a/b"), Ok(()));
        assert_eq!(validate_name("a/+"), Err(TopicError::Wildcard));
        assert_eq!(validate_name("#"), Err(TopicError::Wildcard));
        assert_eq!(validate_name(""), Err(TopicError::Empty));
    }

    #[test]
    fn matching_follows_the_spec_examples() {
        // §4.7.1.2
        for name in [
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
        ] {
            assert!(matches("sport/tennis/player1/#", name), "{name}");
        }
        assert!(matches("sport/#", "sport"));
        // §4.7.1.3
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("#", "a/b/c"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
    }

    #[test]
    fn dollar_topics_need_an_explicit_first_level() {
        assert!(!matches("#", "$SYS/broker"));
        assert!(!matches("+/broker", "$SYS/broker"));
        assert!(matches("$SYS/#", "$SYS/broker"));
        assert!(matches("$SYS/+", "$SYS/broker"));
    }
}
