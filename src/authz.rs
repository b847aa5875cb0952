//! Authorization with Cedar: the schema's names, policy loading, immutable snapshots, decisions,
//! the live store with reload, and data-driven policy tests.
//!
//! Knows nothing of HTTP or SQL: callers build a plain [`Request`] and get a [`Decision`].
//!
//! Invariants:
//! - a request reads one [`PolicySnapshot`], once (`PolicyStore::load`), so it never sees a mix;
//! - a tree is validated whole before it is swapped in; a rejected tree keeps the last good one;
//! - each account is decided against its own set (or the one shared default set) and each
//!   organization against its own: decision cost does not grow with the number of accounts;
//! - any evaluation error denies (Cedar alone would skip an erroring `forbid`);
//! - policies are named by file and `@id`, never by Cedar's `policy0`.

mod decide;
mod entities;
mod loader;
pub mod names;
mod policy_tests;
mod request;
mod store;

pub use decide::{Decision, NotAppliedReason, OrgTier, PolicyRef, Tier, TierOutcome, Verdict};
pub use entities::BuildError;
pub use loader::{
    Diagnostic, LoadFailure, PolicyInfo, PolicySnapshot, TierPolicies, load_tree, load_tree_at,
};
pub use policy_tests::{CaseResult, PolicyTestReport, run_policy_tests, tests_dir};
pub use request::{
    FeatureSet, OrgMembership, Principal, Request, RequestContext, Resource, TargetAccount,
    TargetUser,
};
pub use store::{
    FailedReload, OrgStatus, OrgStatusKind, PolicyStore, PolicyWatcher, ReloadAttempt,
    ReloadCounters, ReloadObserver, ReloadRequester, ReloadTrigger, WATCH_DEBOUNCE,
};

#[cfg(test)]
mod tests;
