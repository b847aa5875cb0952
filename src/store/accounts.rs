//! What the store remembers about accounts and their users: identity, credentials, login
//! attempts, MFA state, access keys, revoked tokens, groups and their members. Records here are plain data; the rules
//! (policies, lockout, TOTP) live in `auth`.

use chrono::{DateTime, Utc};

use crate::auth::{
    AccessKeyId, AccessKeySecretHash, ClientAddress, LoginAttempts, LoginSubject, PasswordHash,
    PasswordPolicyParams,
};
use crate::authz::OrgMembership;
use crate::ids::{AccountId, GroupName, UserName};

use super::StoreError;

/// A new account and its owner user, created together.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub name: String,
    pub email: String,
    pub owner: UserName,
    pub owner_password: PasswordHash,
}

#[derive(Debug, Clone)]
pub struct AccountRecord {
    pub id: AccountId,
    pub name: String,
    pub email: String,
    pub created_at: DateTime<Utc>,
}

/// A user's MFA state: enrollment gives a secret, a first good code turns it on. `Debug`
/// never shows the secret (U3).
#[derive(Clone, PartialEq, Eq)]
pub enum MfaState {
    Off,
    Pending {
        secret: String,
    },
    On {
        secret: String,
        last_step: Option<u64>,
    },
}

impl std::fmt::Debug for MfaState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const REDACTED: &str = "[redacted]";
        match self {
            Self::Off => f.write_str("Off"),
            Self::Pending { .. } => f
                .debug_struct("Pending")
                .field("secret", &format_args!("{REDACTED}"))
                .finish(),
            Self::On { last_step, .. } => f
                .debug_struct("On")
                .field("secret", &format_args!("{REDACTED}"))
                .field("last_step", last_step)
                .finish(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct UserRecord {
    pub account_id: AccountId,
    pub name: UserName,
    pub is_owner: bool,
    pub password_hash: PasswordHash,
    pub password_changed_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub mfa: MfaState,
    pub tokens_valid_after: DateTime<Utc>,
}

/// Everything a request needs to know about its caller, read in one go.
#[derive(Debug, Clone)]
pub struct PrincipalRecord {
    pub user: UserRecord,
    pub account_name: String,
    pub groups: Vec<GroupName>,
    /// The organization the account is in now, as member or as management account.
    pub organization: Option<OrgMembership>,
    /// Whether the token's `jti` was logged out.
    pub token_revoked: bool,
    /// The token was minted from an access key that no longer exists (U8).
    pub access_key_deleted: bool,
    /// The account's metered charges this UTC month so far (for spend-cap policies).
    pub month_to_date_spend: rust_decimal::Decimal,
}

#[derive(Debug, Clone)]
pub struct AccessKeyRecord {
    pub id: AccessKeyId,
    pub account_id: AccountId,
    pub user: UserName,
    pub secret_hash: AccessKeySecretHash,
    pub created_at: DateTime<Utc>,
}

/// A failed login as the store recorded it: the state just before and just after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedFailure {
    pub before: LoginAttempts,
    pub after: LoginAttempts,
}

// === impl RecordedFailure ===

impl RecordedFailure {
    /// This failure is the one that engaged a lock (for the lockout metric and log line,
    /// which must count a lock once however many failures race into it).
    pub fn engaged_a_lock(&self, now: DateTime<Utc>) -> bool {
        !self.before.is_locked(now) && self.after.is_locked(now)
    }
}

/// A group of an account's users (U10), with its members' names as they were created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    pub name: GroupName,
    pub created_at: DateTime<Utc>,
    pub members: Vec<UserName>,
}

/// What adding a user to a group, or removing one, did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupMemberChange {
    Changed,
    /// Already a member (adding) or not a member (removing); nothing written.
    Unchanged,
    NoSuchGroup,
    NoSuchUser,
}

/// Accounts and users, as the auth API and the pipeline use them.
#[async_trait::async_trait]
pub trait AccountStore: Send + Sync {
    /// Creates an account with a fresh, never used id, and its owner user.
    async fn create_account(
        &self,
        new: NewAccount,
        now: DateTime<Utc>,
    ) -> Result<AccountId, StoreError>;
    async fn account(&self, id: &AccountId) -> Result<Option<AccountRecord>, StoreError>;
    /// The organization the account is in now, as a member or as its management account.
    async fn organization_of(
        &self,
        account: &AccountId,
    ) -> Result<Option<OrgMembership>, StoreError>;
    async fn user(
        &self,
        account: &AccountId,
        user: &UserName,
    ) -> Result<Option<UserRecord>, StoreError>;
    /// The caller of a request: user, groups, account name, organization, revocation of `jti`,
    /// whether the token's `access_key` (if it came from one) still exists, and the account's
    /// spend in the month of `now`.
    async fn principal(
        &self,
        account: &AccountId,
        user: &UserName,
        jti: &str,
        access_key: Option<&AccessKeyId>,
        now: DateTime<Utc>,
    ) -> Result<Option<PrincipalRecord>, StoreError>;
    /// Fails with `Conflict` when the name is taken in this account, whatever its case.
    async fn create_user(
        &self,
        account: &AccountId,
        user: &UserName,
        password: PasswordHash,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// The login failures of `subject` (user or not) as seen from `address` at `now` (U4).
    async fn login_attempts(
        &self,
        subject: &LoginSubject,
        address: ClientAddress,
        now: DateTime<Utc>,
    ) -> Result<LoginAttempts, StoreError>;
    /// Counts a failed login at `now` ([`LoginAttempts::after_failure`]) against the state
    /// stored when the failure is recorded, not the one read before the password check, so
    /// failures racing each other (on any instance of a fleet) all count.
    async fn record_login_failure(
        &self,
        subject: &LoginSubject,
        address: ClientAddress,
        now: DateTime<Utc>,
    ) -> Result<RecordedFailure, StoreError>;
    /// Clears the address's series after a successful login, unless a lock holds at `now` (a
    /// racing failure may have locked while this login's password was being checked): then
    /// nothing changes and the locked state is returned, and the login must be refused.
    async fn record_login_success(
        &self,
        subject: &LoginSubject,
        address: ClientAddress,
        now: DateTime<Utc>,
    ) -> Result<LoginAttempts, StoreError>;
    /// Sets a new password, keeps the old one in the history (at most `keep` entries), and
    /// invalidates every token issued before `now`.
    async fn change_password(
        &self,
        account: &AccountId,
        user: &UserName,
        password: PasswordHash,
        now: DateTime<Utc>,
        keep: usize,
    ) -> Result<(), StoreError>;
    /// Earlier passwords, newest first (the current one is not included).
    async fn password_history(
        &self,
        account: &AccountId,
        user: &UserName,
    ) -> Result<Vec<PasswordHash>, StoreError>;
    async fn password_policy(
        &self,
        account: &AccountId,
    ) -> Result<Option<PasswordPolicyParams>, StoreError>;
    async fn put_password_policy(
        &self,
        account: &AccountId,
        policy: PasswordPolicyParams,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Starts (or restarts) enrollment with a new secret; MFA stays off until verified.
    async fn begin_mfa(
        &self,
        account: &AccountId,
        user: &UserName,
        secret: &str,
    ) -> Result<(), StoreError>;
    /// Turns MFA on with the step of the first accepted code.
    async fn enable_mfa(
        &self,
        account: &AccountId,
        user: &UserName,
        step: u64,
    ) -> Result<(), StoreError>;
    /// Records an accepted TOTP step if it is later than the last one; false means a replay
    /// (another request used this or a later step first).
    async fn accept_mfa_step(
        &self,
        account: &AccountId,
        user: &UserName,
        step: u64,
    ) -> Result<bool, StoreError>;
    /// Fails with `Conflict` when the user already has `max` keys.
    async fn create_access_key(&self, key: AccessKeyRecord, max: usize) -> Result<(), StoreError>;
    async fn access_key(&self, id: &AccessKeyId) -> Result<Option<AccessKeyRecord>, StoreError>;
    async fn access_keys(
        &self,
        account: &AccountId,
        user: &UserName,
    ) -> Result<Vec<AccessKeyRecord>, StoreError>;
    /// True when the key existed for this user.
    async fn delete_access_key(
        &self,
        account: &AccountId,
        user: &UserName,
        id: &AccessKeyId,
    ) -> Result<bool, StoreError>;
    /// Fails with `Conflict` when the account has a group of that name, whatever its case.
    async fn create_group(
        &self,
        account: &AccountId,
        group: &GroupName,
        now: DateTime<Utc>,
    ) -> Result<GroupRecord, StoreError>;
    /// The account's groups with their members, by name (case-folded).
    async fn groups(&self, account: &AccountId) -> Result<Vec<GroupRecord>, StoreError>;
    /// Deletes a group and its memberships; true when it existed.
    async fn delete_group(
        &self,
        account: &AccountId,
        group: &GroupName,
    ) -> Result<bool, StoreError>;
    async fn add_group_member(
        &self,
        account: &AccountId,
        group: &GroupName,
        user: &UserName,
        now: DateTime<Utc>,
    ) -> Result<GroupMemberChange, StoreError>;
    async fn remove_group_member(
        &self,
        account: &AccountId,
        group: &GroupName,
        user: &UserName,
    ) -> Result<GroupMemberChange, StoreError>;
    /// Remembers a logged-out token until it would have expired anyway.
    async fn revoke_token(
        &self,
        jti: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16 item 15: a `Debug` of a user (logs, panics, traces) never shows the TOTP secret.
    #[test]
    fn u3_mfa_state_debug_redacts_the_secret() {
        let secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP".to_owned();
        for state in [
            MfaState::Pending {
                secret: secret.clone(),
            },
            MfaState::On {
                secret: secret.clone(),
                last_step: Some(7),
            },
        ] {
            let shown = format!("{state:?} {state:#?}");
            assert!(!shown.contains(&secret), "{shown}");
            assert!(shown.contains("[redacted]"), "{shown}");
        }
        assert_eq!(format!("{:?}", MfaState::Off), "Off");
    }
}
