//! Per-account password policy (SPEC U2): ranges, the management-account floor, checking a
//! candidate password against every rule at once, and password expiry.
//!
//! Pure: no hashing (see `password`), no storage. The caller stores [`PasswordPolicyParams`]
//! and rebuilds the policy with [`PasswordPolicy::new`], which is the only way to get one.

use std::fmt;
use std::ops::RangeInclusive;

use chrono::{DateTime, Duration, Utc};

/// The longest password any policy accepts, in characters: the top of `min_length`'s range, so
/// every policy can be met. At 4 bytes a character it stays within the hasher's byte cap
/// (`password::MAX_PASSWORD_BYTES`).
pub const MAX_PASSWORD_CHARS: u32 = 128;

/// Allowed `min_length` values (U2).
pub const MIN_LENGTH_RANGE: RangeInclusive<u32> = 8..=128;
/// Allowed `max_age_days` values (U2).
pub const MAX_AGE_DAYS_RANGE: RangeInclusive<u16> = 1..=1095;
/// Allowed `reuse_prevention` values (U2).
pub const REUSE_PREVENTION_RANGE: RangeInclusive<u8> = 1..=24;

/// The plain settings of a policy, as the API receives them and the store keeps them.
/// Not validated: turn them into a [`PasswordPolicy`] with [`PasswordPolicy::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicyParams {
    pub min_length: u32,
    pub require_uppercase: bool,
    pub require_lowercase: bool,
    pub require_digit: bool,
    pub require_symbol: bool,
    pub max_age_days: Option<u16>,
    pub reuse_prevention: Option<u8>,
}

/// Settings as a client asked for them, numbers not yet known to fit any range (or type):
/// [`PasswordPolicy::from_request`] checks them all and names every field that is off, even
/// one far outside what the stored type could hold (`-1`, `300` for `reuse_prevention`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicyRequest {
    pub min_length: i64,
    pub require_uppercase: bool,
    pub require_lowercase: bool,
    pub require_digit: bool,
    pub require_symbol: bool,
    pub max_age_days: Option<i64>,
    pub reuse_prevention: Option<i64>,
}

/// A password policy whose values are within the U2 ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy(PasswordPolicyParams);

/// One rule a password must meet; `Display` is the phrase a person reads after "needs".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordRule {
    MinLength(u32),
    MaxLength(u32),
    Uppercase,
    Lowercase,
    Digit,
    Symbol,
}

/// Every rule a candidate password does not meet, in policy order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the password needs {}", join_rules(.unmet))]
pub struct PasswordPolicyViolation {
    pub unmet: Vec<PasswordRule>,
}

/// Why a set of policy settings was refused; lists every out-of-range field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordPolicyError {
    #[error("invalid password policy: {}", join_fields(.0))]
    OutOfRange(Vec<FieldOutOfRange>),
}

/// One field outside its U2 range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FieldOutOfRange {
    #[error("`min_length` is {0}, must be 8 to 128")]
    MinLength(i64),
    #[error("`max_age_days` is {0}, must be 1 to 1095")]
    MaxAgeDays(i64),
    #[error("`reuse_prevention` is {0}, must be 1 to 24")]
    ReusePrevention(i64),
}

// === impl PasswordPolicy ===

impl PasswordPolicy {
    /// Validates every range at once and reports every field that is out of range.
    pub fn new(params: PasswordPolicyParams) -> Result<Self, PasswordPolicyError> {
        Self::from_request(PasswordPolicyRequest {
            min_length: i64::from(params.min_length),
            require_uppercase: params.require_uppercase,
            require_lowercase: params.require_lowercase,
            require_digit: params.require_digit,
            require_symbol: params.require_symbol,
            max_age_days: params.max_age_days.map(i64::from),
            reuse_prevention: params.reuse_prevention.map(i64::from),
        })
    }

    /// Checks a client's settings: every field outside its U2 range is reported, whatever the
    /// number.
    pub fn from_request(request: PasswordPolicyRequest) -> Result<Self, PasswordPolicyError> {
        let mut problems = Vec::new();
        let min_length = in_range(request.min_length, &MIN_LENGTH_RANGE);
        if min_length.is_none() {
            problems.push(FieldOutOfRange::MinLength(request.min_length));
        }
        let max_age_days = match request.max_age_days {
            Some(days) => {
                let checked = in_range(days, &MAX_AGE_DAYS_RANGE);
                if checked.is_none() {
                    problems.push(FieldOutOfRange::MaxAgeDays(days));
                }
                checked
            }
            None => None,
        };
        let reuse_prevention = match request.reuse_prevention {
            Some(count) => {
                let checked = in_range(count, &REUSE_PREVENTION_RANGE);
                if checked.is_none() {
                    problems.push(FieldOutOfRange::ReusePrevention(count));
                }
                checked
            }
            None => None,
        };
        match min_length {
            Some(min_length) if problems.is_empty() => Ok(Self(PasswordPolicyParams {
                min_length,
                require_uppercase: request.require_uppercase,
                require_lowercase: request.require_lowercase,
                require_digit: request.require_digit,
                require_symbol: request.require_symbol,
                max_age_days,
                reuse_prevention,
            })),
            _ => Err(PasswordPolicyError::OutOfRange(problems)),
        }
    }

    /// The settings, for the store and the API.
    pub fn params(&self) -> PasswordPolicyParams {
        self.0
    }

    pub fn max_age_days(&self) -> Option<u16> {
        self.0.max_age_days
    }

    /// How many previous passwords (the current one included) may not be reused.
    pub fn reuse_prevention(&self) -> Option<u8> {
        self.0.reuse_prevention
    }

    /// The policy that actually applies: a management account's users never get less than the
    /// default (U2), whatever the account set; other accounts get their policy as set.
    pub fn effective(&self, is_management_account: bool) -> Self {
        if !is_management_account {
            return *self;
        }
        let floor = Self::default().0;
        let own = self.0;
        Self(PasswordPolicyParams {
            min_length: own.min_length.max(floor.min_length),
            require_uppercase: own.require_uppercase || floor.require_uppercase,
            require_lowercase: own.require_lowercase || floor.require_lowercase,
            require_digit: own.require_digit || floor.require_digit,
            require_symbol: own.require_symbol || floor.require_symbol,
            ..own
        })
    }

    /// Checks a candidate password against every rule and reports all unmet ones together.
    /// Length counts characters; upper/lower/digit are ASCII; a symbol is printable ASCII that
    /// is not a letter, digit or space (U2). The length cap is a rule too, so an over-long
    /// password is a policy violation rather than a hashing error.
    pub fn check(&self, password: &str) -> Result<(), PasswordPolicyViolation> {
        let p = &self.0;
        let length = u32::try_from(password.chars().count()).unwrap_or(u32::MAX);
        let mut unmet = Vec::new();
        if length < p.min_length {
            unmet.push(PasswordRule::MinLength(p.min_length));
        }
        if length > MAX_PASSWORD_CHARS {
            unmet.push(PasswordRule::MaxLength(MAX_PASSWORD_CHARS));
        }
        let has = |f: fn(&char) -> bool| password.chars().any(|c| f(&c));
        if p.require_uppercase && !has(char::is_ascii_uppercase) {
            unmet.push(PasswordRule::Uppercase);
        }
        if p.require_lowercase && !has(char::is_ascii_lowercase) {
            unmet.push(PasswordRule::Lowercase);
        }
        if p.require_digit && !has(char::is_ascii_digit) {
            unmet.push(PasswordRule::Digit);
        }
        if p.require_symbol && !has(is_symbol) {
            unmet.push(PasswordRule::Symbol);
        }
        if unmet.is_empty() {
            Ok(())
        } else {
            Err(PasswordPolicyViolation { unmet })
        }
    }

    /// The character rules as one ECMA-262 regular expression (JSON Schema's `pattern`), for
    /// `docs/openapi.json`: each required class somewhere, in any order. Lengths are not in it
    /// (the document says them with `minLength` and `maxLength`); a policy that requires no
    /// class gives `None`. A string is matched exactly when [`Self::check`] finds no class
    /// rule unmet.
    pub fn pattern(&self) -> Option<String> {
        let p = &self.0;
        let classes: Vec<&str> = [
            (p.require_uppercase, "[A-Z]"),
            (p.require_lowercase, "[a-z]"),
            (p.require_digit, "[0-9]"),
            (p.require_symbol, SYMBOL_CLASS),
        ]
        .into_iter()
        .filter_map(|(required, class)| required.then_some(class))
        .collect();
        if classes.is_empty() {
            return None;
        }
        let mut orders = Vec::new();
        permutations(&classes, &mut Vec::new(), &mut orders);
        let any = "[\\s\\S]*";
        let branches: Vec<String> = orders
            .iter()
            .map(|order| format!("{any}{}{any}", order.join(any)))
            .collect();
        Some(format!("^(?:{})$", branches.join("|")))
    }

    /// Whether a password last changed at `changed_at` has outlived `max_age_days` at `now`.
    /// An expired password still logs in, but allows only a password change (U2).
    pub fn is_expired(&self, changed_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        match self.0.max_age_days {
            Some(days) => now >= changed_at + Duration::days(i64::from(days)),
            None => false,
        }
    }
}

impl Default for PasswordPolicy {
    /// U2's default: 8 characters with an upper-case letter, a lower-case letter, a digit and
    /// a symbol; no expiry, no reuse prevention.
    fn default() -> Self {
        Self(PasswordPolicyParams {
            min_length: 8,
            require_uppercase: true,
            require_lowercase: true,
            require_digit: true,
            require_symbol: true,
            max_age_days: None,
            reuse_prevention: None,
        })
    }
}

/// `value` as the range's type, if it lies in the range.
fn in_range<T>(value: i64, range: &RangeInclusive<T>) -> Option<T>
where
    T: TryFrom<i64> + PartialOrd,
{
    T::try_from(value).ok().filter(|v| range.contains(v))
}

/// The symbols of [`is_symbol`] as a regular-expression class: `!`–`/`, `:`–`@`, `[`–`` ` ``,
/// `{`–`~`.
const SYMBOL_CLASS: &str = "[!-/:-@\\[-`{-~]";

/// Every order of `items`, appended to `out`.
fn permutations<'a>(items: &[&'a str], prefix: &mut Vec<&'a str>, out: &mut Vec<Vec<&'a str>>) {
    if items.is_empty() {
        out.push(prefix.clone());
        return;
    }
    for (i, item) in items.iter().enumerate() {
        let rest: Vec<&str> = items
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, s)| *s)
            .collect();
        prefix.push(item);
        permutations(&rest, prefix, out);
        prefix.pop();
    }
}

fn is_symbol(c: &char) -> bool {
    c.is_ascii_graphic() && !c.is_ascii_alphanumeric()
}

// === impl PasswordRule ===

impl fmt::Display for PasswordRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MinLength(n) => write!(f, "at least {n} characters"),
            Self::MaxLength(n) => write!(f, "at most {n} characters"),
            Self::Uppercase => f.write_str("an upper-case letter"),
            Self::Lowercase => f.write_str("a lower-case letter"),
            Self::Digit => f.write_str("a digit"),
            Self::Symbol => f.write_str("a symbol"),
        }
    }
}

fn join_rules(rules: &[PasswordRule]) -> String {
    let parts: Vec<String> = rules.iter().map(ToString::to_string).collect();
    match parts.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => parts.concat(),
    }
}

fn join_fields(fields: &[FieldOutOfRange]) -> String {
    fields
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests;
