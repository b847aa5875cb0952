//! Durable state. Everything the gateway must remember lives behind these traits, never in
//! memory alone: accounts, users, groups, organizations, service sign-ups and plans, the ledger,
//! the decision log.
//!
//! [`sql::SqlStore`] implements them on either database of [`crate::db`]: the embedded SQLite
//! file (one file in the data dir) or PostgreSQL shared by a fleet of instances (SPEC O3).
//! Domain modules call the traits; only this module (and the journal and audit archive, for their
//! own tables) knows SQL.

pub mod accounts;
pub mod services;
pub mod sql;

use std::sync::Arc;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached, opened or written (disk full, read-only, locked, down).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness rule refused the write (a taken name, a limit reached).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The stored data breaks an invariant this version relies on.
    #[error("store corrupt: {0}")]
    Corrupt(String),
}

/// Liveness, for `/readyz`.
#[async_trait::async_trait]
pub trait Health: Send + Sync {
    /// Proves the store answers right now and that nothing keeps writers out (the lock a
    /// write would need is taken and given back). It never writes: a probe called every few
    /// seconds by an orchestrator must add no durable write and must not drop the caller cache
    /// (SPEC O2).
    async fn check_ready(&self) -> Result<(), StoreError>;
}

/// The store as the rest of the gateway sees it.
pub trait Store: Health + accounts::AccountStore + services::ServiceStore {}

impl<T: Health + accounts::AccountStore + services::ServiceStore> Store for T {}

pub type SharedStore = Arc<dyn Store>;

// === impl StoreError ===

impl From<crate::db::DbError> for StoreError {
    fn from(e: crate::db::DbError) -> Self {
        use crate::db::DbError;
        match e {
            DbError::Constraint(m) => StoreError::Conflict(m),
            DbError::Type(m) => StoreError::Corrupt(m),
            DbError::NoRows | DbError::Unavailable(_) => StoreError::Unavailable(e.to_string()),
        }
    }
}
