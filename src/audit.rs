//! Decisions for security review (SPEC D2–D5) beyond what the journal writes: the archive of
//! every policy tree that was ever active, explaining one decision with the policy text of its
//! time, replaying the log against a draft tree (impact), and retention with checkpoints.
//!
//! Owns the `policy_versions` and `decision_checkpoints` tables (migration 5). It reads the
//! decision log only through `crate::journal`'s read side, with one exception written down in
//! [`retention`]: pruning removes a *verified prefix* of the `decisions` table under a
//! checkpoint, and never its newest record, so the journal writer's chain head is untouched.
//! It knows no HTTP; the CLI and the API render what it returns.

pub mod archive;
pub mod explain;
pub mod impact;
pub mod retention;

#[cfg(test)]
mod tests;

use crate::db::DbError;
use crate::journal::{JournalError, VerifyError};

pub use archive::{ArchivedTree, AuditObserver, archive_snapshot, archived_tree};
pub use explain::{Explanation, PolicyText, TierResult, explain};
pub use impact::{Flip, FlipGroup, ImpactReport, replay};
pub use retention::{ChainReport, Checkpoint, PruneReport, prune, verify_chain};

/// Why an audit operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// The audit tables could not be read or written.
    #[error("audit store: {0}")]
    Store(String),
    /// A stored audit value does not parse back.
    #[error("audit store corrupt: {0}")]
    Corrupt(String),
}

impl From<DbError> for AuditError {
    fn from(e: DbError) -> Self {
        AuditError::Store(e.to_string())
    }
}
