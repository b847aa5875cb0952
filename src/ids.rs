//! Identifiers that cross module boundaries, parsed once at the edge ("parse, don't validate").
//!
//! Each type's constructor is the only place its format is checked; the rest of the crate can
//! rely on the invariant. Nothing here knows HTTP or SQL.

use std::fmt;

use rand::Rng;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} `{value}`: {expected}")]
pub struct InvalidId {
    pub kind: &'static str,
    pub value: String,
    pub expected: &'static str,
}

/// A 12-digit account id, e.g. `123456789012`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(String);

/// A user name: 1–64 characters of `A-Z a-z 0-9 + = , . @ _ -` (IAM's set). Names are unique
/// within an account regardless of case: compare with [`UserName::key`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserName(String);

/// A group name, same characters and length as a user name, unique per account regardless of case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupName(String);

/// An organization id: `o-` and 10 lowercase letters or digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrgId(String);

/// A handshake id: `h-` and 10 or more lowercase letters or digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HandshakeId(String);

/// A request id: 1–128 characters of `A-Z a-z 0-9 . _ -`. Generated ids are 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(String);

const LOWER_ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn random_lower_alnum(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| {
            let i = rng.gen_range(0..LOWER_ALNUM.len());
            char::from(LOWER_ALNUM.get(i).copied().unwrap_or(b'a'))
        })
        .collect()
}

/// The space characters [`is_space`] knows, as a regular-expression class body.
macro_rules! spaces {
    () => {
        "\\x20\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"
    };
}

/// The documented forms of the types below, as `docs/openapi.json` states them (ECMA-262 regular
/// expressions, as JSON Schema reads them). `tests/it/openapi.rs` checks that the document
/// carries each one and that the parsers here accept exactly what it matches.
pub mod pattern {
    pub const ACCOUNT_ID: &str = "^[0-9]{12}$";
    /// User and group names (IAM's set).
    pub const NAME: &str = "^[A-Za-z0-9+=,.@_-]{1,64}$";
    pub const HANDSHAKE_ID: &str = "^h-[a-z0-9]{10,64}$";
    /// 1–64 characters, no control character, no space at either end (nothing is trimmed).
    pub const ACCOUNT_NAME: &str = concat!(
        "^[^\\x00-\\x1f\\x7f-\\x9f",
        spaces!(),
        "]",
        "(?:[^\\x00-\\x1f\\x7f-\\x9f]{0,62}[^\\x00-\\x1f\\x7f-\\x9f",
        spaces!(),
        "])?$"
    );
    /// `local@domain`: neither part empty, no second `@`, no control character or space.
    pub const EMAIL: &str = concat!(
        "^[^@\\x00-\\x1f\\x7f-\\x9f",
        spaces!(),
        "]+@[^@\\x00-\\x1f\\x7f-\\x9f",
        spaces!(),
        "]+$"
    );
}

/// The longest account name, in characters.
pub const MAX_ACCOUNT_NAME: usize = 64;
/// The longest email address, in characters (RFC 5321's path limit).
pub const MAX_EMAIL: usize = 254;

/// A space that is not a control character: ECMA-262's `\s` less its controls, which is what
/// [`pattern`] spells out (Rust's `char::is_whitespace` differs at U+0085 and U+FEFF).
fn is_space(c: char) -> bool {
    matches!(
        c,
        ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202f}'
                | '\u{205f}'
                | '\u{3000}'
                | '\u{feff}'
    )
}

/// Whether `s` is an account name as [`pattern::ACCOUNT_NAME`] says: taken as sent, never trimmed.
pub fn is_account_name(s: &str) -> bool {
    let count = s.chars().count();
    (1..=MAX_ACCOUNT_NAME).contains(&count)
        && !s.chars().any(char::is_control)
        && !s.starts_with(is_space)
        && !s.ends_with(is_space)
}

/// Whether `s` is an email address as [`pattern::EMAIL`] says (and at most [`MAX_EMAIL`]
/// characters): the form only; nobody is mailed.
pub fn is_email(s: &str) -> bool {
    let part =
        |p: &str| !p.is_empty() && !p.chars().any(|c| c == '@' || c.is_control() || is_space(c));
    s.chars().count() <= MAX_EMAIL
        && s.split_once('@')
            .is_some_and(|(local, domain)| part(local) && part(domain))
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "+=,.@_-".contains(c)
}

macro_rules! string_id {
    ($ty:ident) => {
        impl $ty {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $ty {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                Self::parse(s)
            }
        }
    };
}

string_id!(AccountId);
string_id!(UserName);
string_id!(GroupName);
string_id!(OrgId);
string_id!(HandshakeId);
string_id!(RequestId);

// === impl AccountId ===

impl AccountId {
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidId {
                kind: "account id",
                value: truncate(s),
                expected: "expected exactly 12 digits",
            })
        }
    }

    /// A random id whose first digit is not zero (so it reads as a 12-digit number).
    /// Uniqueness is the store's job: it refuses an id it has ever seen.
    pub fn generate() -> Self {
        let mut rng = rand::thread_rng();
        let n: u64 = rng.gen_range(100_000_000_000..1_000_000_000_000);
        Self(n.to_string())
    }
}

// === impl UserName ===

impl UserName {
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        parse_name(s, "user name").map(Self)
    }

    /// The case-folded form that uniqueness is decided on.
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

// === impl GroupName ===

impl GroupName {
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        parse_name(s, "group name").map(Self)
    }

    /// The case-folded form that uniqueness is decided on.
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

fn parse_name(s: &str, kind: &'static str) -> Result<String, InvalidId> {
    if !s.is_empty() && s.len() <= 64 && s.chars().all(is_name_char) {
        Ok(s.to_owned())
    } else {
        Err(InvalidId {
            kind,
            value: truncate(s),
            expected: "expected 1 to 64 characters of letters, digits and + = , . @ _ -",
        })
    }
}

// === impl OrgId ===

impl OrgId {
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        match s.strip_prefix("o-") {
            Some(rest) if rest.len() == 10 && rest.bytes().all(|b| LOWER_ALNUM.contains(&b)) => {
                Ok(Self(s.to_owned()))
            }
            _ => Err(InvalidId {
                kind: "organization id",
                value: truncate(s),
                expected: "expected `o-` and 10 lowercase letters or digits",
            }),
        }
    }

    pub fn generate() -> Self {
        Self(format!("o-{}", random_lower_alnum(10)))
    }
}

// === impl HandshakeId ===

impl HandshakeId {
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        match s.strip_prefix("h-") {
            Some(rest)
                if (10..=64).contains(&rest.len())
                    && rest.bytes().all(|b| LOWER_ALNUM.contains(&b)) =>
            {
                Ok(Self(s.to_owned()))
            }
            _ => Err(InvalidId {
                kind: "handshake id",
                value: truncate(s),
                expected: "expected `h-` and 10 or more lowercase letters or digits",
            }),
        }
    }

    pub fn generate() -> Self {
        Self(format!("h-{}", random_lower_alnum(16)))
    }
}

// === impl RequestId ===

impl RequestId {
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        if !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidId {
                kind: "request id",
                value: truncate(s),
                expected: "expected 1 to 128 characters of letters, digits and . _ -",
            })
        }
    }

    pub fn generate() -> Self {
        let bytes: [u8; 16] = rand::random();
        Self(hex::encode(bytes))
    }
}

/// Echo at most 80 characters of bad input back, so an error never carries a huge value.
fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_are_twelve_digits() {
        assert!(AccountId::parse("123456789012").is_ok());
        assert!(AccountId::parse("12345678901").is_err());
        assert!(AccountId::parse("12345678901a").is_err());
        for _ in 0..100 {
            let id = AccountId::generate();
            assert!(AccountId::parse(id.as_str()).is_ok(), "{id}");
        }
    }

    #[test]
    fn user_names_compare_case_insensitively_by_key() {
        let a = UserName::parse("Alice").unwrap_or_else(|e| panic!("{e}"));
        let b = UserName::parse("alice").unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(a, b);
        assert_eq!(a.key(), b.key());
        assert!(UserName::parse("").is_err());
        assert!(UserName::parse("a/b").is_err());
        assert!(UserName::parse(&"x".repeat(65)).is_err());
    }

    #[test]
    fn org_and_handshake_ids_round_trip() {
        let o = OrgId::generate();
        assert!(OrgId::parse(o.as_str()).is_ok());
        assert!(OrgId::parse("o-ABCDEFGHIJ").is_err());
        let h = HandshakeId::generate();
        assert!(HandshakeId::parse(h.as_str()).is_ok());
        assert!(HandshakeId::parse("h-short").is_err());
    }

    #[test]
    fn request_ids_refuse_control_characters() {
        assert!(RequestId::parse("abc-123_x.y").is_ok());
        assert!(RequestId::parse("abc\r\nx").is_err());
        assert!(RequestId::parse(&"a".repeat(129)).is_err());
        assert_eq!(RequestId::generate().as_str().len(), 32);
    }
}
