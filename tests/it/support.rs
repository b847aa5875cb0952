//! Test scaffolding: `TestGateway` (the app in-process on port 0 with a temp data dir and a
//! manual clock), `Upstream` (a recording upstream server), `Client` and a raw-socket helper,
//! `mfa` (owners with MFA on and MFA logins), and `binary()` for tests that must run the real
//! executable.

pub mod backend;
pub mod client;
pub mod faulty;
pub mod gateway;
pub mod mfa;
pub mod org;
pub mod process;
pub mod upstream;

pub use client::Client;
pub use gateway::{Account, TestGateway};
pub use mfa::MfaAccount;
pub use upstream::Upstream;

/// Path of the built `tollgate` binary.
pub fn binary() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_tollgate"))
}
