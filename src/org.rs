//! Organizations, membership and handshakes (SPEC A2–A7) and the membership history billing
//! attributes usage by (M1).
//!
//! - `model`: plain domain data; no serde, no SQL.
//! - `store`: [`OrgStore`], the persistence contract, and [`OrgTx`], the primitive reads and
//!   writes the rules need inside one transaction.
//! - `service`: [`OrgService`], one method per operation; every rule lives here.
//!
//! Invariants:
//! - each operation is one write transaction that holds the database from its first statement
//!   (SQLite `BEGIN IMMEDIATE`), so two concurrent accepts of one handshake cannot both win;
//! - an account is in at most one organization, as its management account or as a member; the
//!   management account has no membership row and can never leave;
//! - membership history is never rewritten: joining inserts `[joined_at, …)`, leaving closes it
//!   at the exact instant, so a bill can attribute any instant to exactly one payer;
//! - an active handshake at or past `expires_at` is `EXPIRED` on every read and transition,
//!   whether or not [`OrgService::sweep_expired`] has persisted it yet;
//! - time always comes in as an argument (the injected clock), never from `Utc::now`.
//!
//! Nothing here knows HTTP: the integrator maps [`OrgError`] to status codes in
//! `server/rejection.rs` (see each variant's doc for its SPEC code).

pub mod model;
pub mod service;
pub mod store;

pub use model::{
    Attribution, ENABLE_ALL_FEATURES_TTL, FeatureSet, Handshake, HandshakeAction, HandshakeKind,
    HandshakeState, INVITE_TTL, JoinedMethod, Member, MembershipPeriod, MembershipRole,
    MembershipScope, OrgView, Organization,
};
pub use service::OrgService;
pub use store::{HandshakeFilter, OrgStore, OrgTx};

use crate::ids::{AccountId, HandshakeId, OrgId};
use crate::store::StoreError;

/// Why an organization operation was refused. Variants are named for the SPEC error code they
/// map to (the HTTP status is noted on each).
#[derive(Debug, thiserror::Error)]
pub enum OrgError {
    /// 409 `AlreadyInOrganization` (A2).
    #[error(
        "account {account} is already in organization {organization}; leave or delete it before creating a new one"
    )]
    AlreadyInOrganization {
        account: AccountId,
        organization: OrgId,
    },
    /// 403 `MfaRequired` (A2).
    #[error(
        "creating an organization needs a session signed in with mfa; sign in again with your mfa code"
    )]
    MfaRequired,
    /// 404 `NotInOrganization`.
    #[error("account {account} is not in an organization")]
    NotInOrganization { account: AccountId },
    /// 403 `AccessDenied`: a management-only operation called by a member.
    #[error(
        "only the management account of organization {organization} can do this; ask the account {management} to do it"
    )]
    NotManagementAccount {
        organization: OrgId,
        management: AccountId,
    },
    /// 409 `AccountAlreadyInOrganization` (A4): the account is a member or the management
    /// account of some organization.
    #[error(
        "account {account} is already in an organization; it must leave it before it can join another"
    )]
    AccountAlreadyInOrganization { account: AccountId },
    /// 409 `DuplicateHandshake` (A4).
    #[error(
        "account {account} already has an open invitation {existing} from this organization; cancel it or wait for an answer"
    )]
    DuplicateHandshake {
        account: AccountId,
        existing: HandshakeId,
    },
    /// 409 `HandshakeAlreadyInState`: accepting an accepted handshake.
    #[error("handshake {id} is already {state}")]
    HandshakeAlreadyInState {
        id: HandshakeId,
        state: HandshakeState,
    },
    /// 409 `InvalidHandshakeTransition`: any other move out of a state that is not `OPEN`.
    #[error("handshake {id} is {state} and can no longer be {}", action.done())]
    InvalidHandshakeTransition {
        id: HandshakeId,
        state: HandshakeState,
        action: HandshakeAction,
    },
    /// 403 `AccessDenied`: the wrong party for this move (only the recipient accepts or
    /// declines, only the sender cancels; an approval is answered by its member only).
    #[error("{reason}")]
    AccessDenied { id: HandshakeId, reason: String },
    /// 409 `InviteDisabledDuringEnableAllFeatures` (A5).
    #[error(
        "invitations are disabled while enabling all features (handshake {handshake}) is pending; finish or cancel it first"
    )]
    InviteDisabledDuringEnableAllFeatures { handshake: HandshakeId },
    /// 409 `HandshakeNotComplete` (A5): the parent accepted before every member approved.
    #[error(
        "handshake {id} cannot be accepted yet: not every invited member has approved all features"
    )]
    HandshakeNotComplete { id: HandshakeId },
    /// 409 `AlreadyAllFeatures` (A5).
    #[error("organization {organization} already has all features enabled")]
    AlreadyAllFeatures { organization: OrgId },
    /// 409 `AllFeaturesMigrationPending` (A5).
    #[error(
        "enabling all features is already pending (handshake {handshake}); accept or cancel it"
    )]
    AllFeaturesMigrationPending { handshake: HandshakeId },
    /// 404 `NoSuchHandshake`: unknown, or the caller is neither its sender nor its recipient.
    #[error("no handshake {id} for this account")]
    NoSuchHandshake { id: HandshakeId },
    /// 404 `NoSuchAccount`: the account does not exist.
    #[error("no account {account}")]
    NoSuchAccount { account: AccountId },
    /// 404 `NoSuchAccount`: the account exists but is not a member of the caller's organization.
    #[error("account {account} is not a member of organization {organization}")]
    NotAMember {
        account: AccountId,
        organization: OrgId,
    },
    /// 409 `ManagementAccountCannotLeave` (A6): leaving, or being removed.
    #[error(
        "the management account cannot leave organization {organization}; remove every member and delete the organization instead"
    )]
    ManagementAccountCannotLeave { organization: OrgId },
    /// 409 `OrganizationNotEmpty` (A6).
    #[error(
        "organization {organization} still has {members} member(s); remove them before deleting it"
    )]
    OrganizationNotEmpty { organization: OrgId, members: usize },
    /// 500 or 503, as the store error says; details go to the log only.
    #[error(transparent)]
    Store(#[from] StoreError),
}
