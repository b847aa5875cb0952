//! `Secret`: a string that must never reach a log (SPEC U3).
//!
//! Passwords, TOTP secrets, access-key secrets and tokens travel as `Secret` so that a stray
//! `{:?}` or `{}` prints `[redacted]` instead of the value. Reading the value takes an explicit
//! [`Secret::expose`], which is easy to grep for. This module does not zero memory on drop.

use std::fmt;

/// A secret string whose `Debug` and `Display` print `[redacted]`. Deliberately not
/// `PartialEq`: secrets are compared in constant time by the module that owns them.
#[derive(Clone)]
pub struct Secret(String);

const REDACTED: &str = "[redacted]";

// === impl Secret ===

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value. Every call site is a place where the secret leaves this wrapper.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Length in bytes, for input limits that must not read the value into a message.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2-Password!");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        // Nested in a derived Debug, the value stays hidden too.
        #[derive(Debug)]
        #[allow(dead_code, reason = "only formatted")]
        struct Login {
            password: Secret,
        }
        let shown = format!(
            "{:?}",
            Login {
                password: s.clone()
            }
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(s.expose(), "hunter2-Password!");
        assert_eq!(s.len(), 17);
    }
}
