//! The persistence contract of organizations.
//!
//! The rules live in [`super::OrgService`]; a store provides [`OrgTx`], primitive reads and writes
//! without judgement, and runs a whole operation inside one transaction that is exclusive from
//! its first statement ([`OrgStore::org_transaction`]). Reads return stored handshake states;
//! the service applies lazy expiry. Only store implementations know SQL.

use std::any::Any;

use chrono::{DateTime, Utc};

use super::OrgError;
use super::model::{
    Attribution, FeatureSet, Handshake, HandshakeState, JoinedMethod, Member, MembershipPeriod,
    MembershipScope, Organization,
};
use crate::ids::{AccountId, HandshakeId, OrgId};
use crate::store::StoreError;
use crate::store::accounts::NewAccount;

/// Which handshakes to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeFilter {
    /// Every handshake of the organization.
    Organization(OrgId),
    /// Every handshake the account sent or received.
    Party(AccountId),
    /// The `APPROVE_ALL_FEATURES` children of a parent.
    Children(HandshakeId),
}

/// Primitive reads and writes inside one transaction. They check nothing the service decides;
/// a uniqueness rule of the schema may still refuse a write with `StoreError::Conflict`.
pub trait OrgTx {
    /// The account's name, `None` if it does not exist.
    fn account_name(&self, account: &AccountId) -> Result<Option<String>, StoreError>;
    /// Creates an account with a fresh id and its owner user.
    fn insert_account(&self, new: &NewAccount, now: DateTime<Utc>)
    -> Result<AccountId, StoreError>;
    /// The live organization the account is in now, as a current member or as management account.
    fn current_organization(&self, account: &AccountId)
    -> Result<Option<Organization>, StoreError>;
    fn insert_organization(&self, org: &Organization) -> Result<(), StoreError>;
    fn set_feature_set(&self, org: &OrgId, feature_set: FeatureSet) -> Result<(), StoreError>;
    /// Marks the organization deleted at `now`; its history stays.
    fn delete_organization(&self, org: &OrgId, now: DateTime<Utc>) -> Result<(), StoreError>;
    /// Current members, oldest first.
    fn members(&self, org: &OrgId) -> Result<Vec<Member>, StoreError>;
    /// Opens a membership from `at`.
    fn join(
        &self,
        org: &OrgId,
        account: &AccountId,
        method: JoinedMethod,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Closes the account's current membership of `org` at `at`; false if it had none.
    fn leave(
        &self,
        org: &OrgId,
        account: &AccountId,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// As stored (no lazy expiry).
    fn handshake(&self, id: &HandshakeId) -> Result<Option<Handshake>, StoreError>;
    /// As stored (no lazy expiry), newest first.
    fn handshakes(&self, filter: &HandshakeFilter) -> Result<Vec<Handshake>, StoreError>;
    fn insert_handshake(&self, handshake: &Handshake, now: DateTime<Utc>)
    -> Result<(), StoreError>;
    fn set_handshake_state(
        &self,
        id: &HandshakeId,
        state: HandshakeState,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
}

/// The body of one transaction. Its output is type-erased so that [`OrgStore`] stays usable as
/// a trait object; [`super::OrgService`] restores the type.
pub type TxBody =
    Box<dyn FnOnce(&dyn OrgTx) -> Result<Box<dyn Any + Send>, OrgError> + Send + 'static>;

/// Organizations, memberships and handshakes, durably.
#[async_trait::async_trait]
pub trait OrgStore: Send + Sync {
    /// Runs `body` in one transaction that excludes every other writer from its first
    /// statement; commits if it returns `Ok`, rolls back otherwise.
    async fn org_transaction(&self, body: TxBody) -> Result<Box<dyn Any + Send>, OrgError>;

    /// Persists `EXPIRED` on every `OPEN`/`REQUESTED` handshake with `expires_at <= now`;
    /// returns how many changed.
    async fn sweep_expired(&self, now: DateTime<Utc>) -> Result<usize, StoreError>;

    /// Who paid for `account` at the instant `at` (M1).
    async fn payer_at(
        &self,
        account: &AccountId,
        at: DateTime<Utc>,
    ) -> Result<Attribution, StoreError>;

    /// Membership periods of the scope that overlap `[start, end)`, unclipped, ordered by start.
    async fn membership_periods(
        &self,
        scope: &MembershipScope,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<MembershipPeriod>, StoreError>;
}
