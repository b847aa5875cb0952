//! Authentication: who is calling. Passwords, TOTP, tokens, access keys and login lockout,
//! as pure functions and small services over plain data. Nothing here knows HTTP or SQL, and
//! nothing here reads the wall clock: every time comes in as an argument.
//!
//! # What is checked where
//!
//! - **Login** (U4, U5, U6): the caller loads the [`LoginAttempts`] of the [`LoginSubject`]
//!   (the account and user as sent, whether they exist or not) from the client's
//!   [`ClientAddress`], and refuses while [`LoginAttempts::is_locked`] (after waiting
//!   [`PasswordHasher::typical_login_check`]); then [`PasswordHasher::verify`] with a login
//!   [`Requester`] (pass `None` for an unknown account or user: it still costs one Argon2 verify
//!   and returns false); with MFA on, [`totp::verify`] with the stored last step; then
//!   [`LoginAttempts::after_failure`] or [`LoginAttempts::after_success`], as the store records
//!   them. A management-account user without MFA gets
//!   [`TokenIssuer::issue_mfa_enrollment`] instead of [`TokenIssuer::issue`].
//! - **Password change** (U2): [`PasswordPolicy::effective`] (management floor), then
//!   [`PasswordPolicy::check`], then [`PasswordHasher::is_reused`] against the history, then
//!   [`PasswordHasher::hash`]. [`PasswordPolicy::is_expired`] gates everything but a change.
//! - **Each request** (U7): [`TokenIssuer::verify`] checks size, `alg`, `kid`, signature, time,
//!   `iss` and `aud`. The caller then checks revocation: the `jti` against logged-out tokens and
//!   [`Claims::issued_before`] against the user's `tokens_valid_after`, and the [`Scope`] the
//!   call needs (an `MfaEnroll` token may only enroll MFA).
//! - **Access keys** (U8): [`access_key::verify_secret`] against the stored hash, then
//!   [`TokenIssuer::issue`] with `mfa = false`.
//! - **Upstream identity**: [`TokenIssuer::issue_identity`] for `X-Tollgate-Identity`.
//!
//! # What the caller must persist
//!
//! Per user: the [`PasswordHash`] PHC string, when it was changed, and the previous hashes
//! (as many as `reuse_prevention`); the TOTP secret ([`TotpSecret::to_base32`]), whether MFA is
//! on, and the last accepted TOTP step; `tokens_valid_after`, set to the
//! time of each password change; access keys as [`AccessKeyId`] + [`AccessKeySecretHash`].
//! Per account: the [`PasswordPolicyParams`]. Globally: logged-out `jti`s until their `exp`,
//! and the [`LoginAttempts`] per (subject, client address), bounded (`lockout`).
//! Signing keys persist themselves under the directory given to [`KeyRing::open`].
//!
//! No password, secret, hash or token is ever logged: they travel as [`Secret`] or types whose
//! `Debug` is redacted.

pub mod access_key;
pub mod client_address;
pub mod keys;
pub mod lockout;
pub mod password;
pub mod password_policy;
pub mod sealing;
pub mod secret;
pub mod token;
pub mod totp;

pub use access_key::{AccessKeyError, AccessKeyId, AccessKeySecretHash};
pub use client_address::ClientAddress;
pub use keys::{ActiveKey, KeyError, KeyRing, Kid};
pub use lockout::{AddressAttempts, Lock, LoginAttempts, LoginSubject};
pub use password::{Lane, PasswordError, PasswordHash, PasswordHasher, QueueLimits, Requester};
pub use password_policy::{
    PasswordPolicy, PasswordPolicyError, PasswordPolicyParams, PasswordPolicyRequest,
    PasswordPolicyViolation, PasswordRule,
};
pub use secret::Secret;
pub use token::{Claims, IssuedToken, Scope, TokenError, TokenIssuer};
pub use totp::{TotpError, TotpSecret};
