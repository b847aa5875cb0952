//! Integration tests: the real gateway on loopback, real upstream servers, real HTTP.
//! One file per area; `support` has the test gateway, the recording upstream and the client.
//! Test names start with the SPEC rule they cover.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

// Shared scaffolding: not every helper is used by every area at every moment.
#[allow(dead_code)]
mod support;

mod auth;
mod billing;
mod caching;
mod config_errors;
mod decisions;
mod demo;
mod forwarding;
mod groups;
mod hardening;
mod openapi;
mod ops;
mod org;
mod policies;
mod services;
