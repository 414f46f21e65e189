//! Identifiers as newtypes that parse: a value of one of these types is valid.
//!
//! Each holds its text as an `Arc<str>`: a clone is a reference count, not an
//! allocation. A ball moves hundreds of thousands of entries of a mega
//! contest, and each moved entry's id travels from the contest's state to
//! the background refresh of its sorted sets; the id maps that index entries
//! share the text with the entries themselves.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} `{value}`: {reason}")]
pub struct IdError {
    pub kind: &'static str,
    pub value: String,
    pub reason: &'static str,
}

const MAX_ID_LEN: usize = 64;
const MAX_NAME_LEN: usize = 100;

fn parse_id(kind: &'static str, value: &str) -> Result<(), IdError> {
    let error = |reason| IdError {
        kind,
        value: value.chars().take(80).collect(),
        reason,
    };
    if value.is_empty() {
        return Err(error("must not be empty"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(error("must be at most 64 bytes"));
    }
    // No ':' (nor anything else outside this set): ids are joined with ':'
    // in Redis keys and in the entry token's input, HMAC(secret,
    // "contest_id:entry_id"), so a ':' inside an id would let two different
    // pairs share one key or one token.
    if !value
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
    {
        return Err(error(
            "may hold only ASCII letters, digits, '-', '_' and '.'",
        ));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident, $kind:literal, $parse:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn parse(value: &str) -> Result<$name, IdError> {
                $parse($kind, value).map(|()| $name(Arc::from(value)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Whether `value` is valid, without building the id (no
            /// allocation: for the read API's hottest route).
            pub fn check(value: &str) -> Result<(), IdError> {
                $parse($kind, value)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(value: &str) -> Result<$name, IdError> {
                $name::parse(value)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<$name, D::Error> {
                let text = String::deserialize(deserializer)?;
                $name::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A match: Cricsheet's match id, e.g. `1136561`.
    MatchId,
    "match id",
    parse_id
);
id_type!(
    /// A contest of one match.
    ContestId,
    "contest id",
    parse_id
);
id_type!(
    /// One entry (a team) in a contest.
    EntryId,
    "entry id",
    parse_id
);
id_type!(
    /// The user who owns entries.
    UserId,
    "user id",
    parse_id
);
id_type!(
    /// A player as Cricsheet names them, e.g. `RG Sharma`.
    PlayerName,
    "player name",
    parse_name
);

fn parse_name(kind: &'static str, value: &str) -> Result<(), IdError> {
    let error = |reason| IdError {
        kind,
        value: value.chars().take(80).collect(),
        reason,
    };
    if value.trim().is_empty() {
        return Err(error("must not be blank"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(error("must be at most 100 bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err(error("must not hold control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_or_explain() {
        assert_eq!(MatchId::parse("1136561").unwrap().as_str(), "1136561");
        assert!(ContestId::parse("c-1_mega.2").is_ok());
        let error = EntryId::parse("e 42").unwrap_err();
        assert_eq!(error.kind, "entry id");
        assert!(error.to_string().contains("e 42"));
        assert!(UserId::parse("").is_err());
        assert!(ContestId::parse(&"x".repeat(65)).is_err());
        assert!(PlayerName::parse("Mustafizur Rahman").is_ok());
        assert!(PlayerName::parse("  ").is_err());
        assert!(PlayerName::parse("a\nb").is_err());
    }

    #[test]
    fn a_colon_is_refused_so_joined_ids_stay_unambiguous() {
        // HMAC(secret, "contest:entry") would give ("a:b", "c") and
        // ("a", "b:c") the same token.
        for id in ["a:b", "b:c", ":", "c1:"] {
            let error = ContestId::parse(id).unwrap_err();
            assert!(error.to_string().contains("may hold only"), "{error}");
            assert!(EntryId::parse(id).is_err());
            assert!(MatchId::parse(id).is_err());
            assert!(UserId::parse(id).is_err());
        }
    }

    #[test]
    fn ids_deserialize_through_parse() {
        let ok: ContestId = serde_json::from_str("\"c1\"").unwrap();
        assert_eq!(ok.as_str(), "c1");
        assert!(serde_json::from_str::<ContestId>("\"c/1\"").is_err());
    }
}
