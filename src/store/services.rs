//! What the store remembers about the services an account uses (SPEC S1, S2): sign-up periods
//! (`signed_up_at` .. `signed_off_at`) and plan periods (`from` .. `until`), kept whole so a
//! month's bill can be recomputed exactly from them. Records here are plain data; which service
//! needs a sign-up and which plans exist is config, read by `services` and `api::services`.

use chrono::{DateTime, Utc};

use crate::ids::AccountId;

use super::StoreError;

/// One stretch during which an account was signed up for a service: `[signed_up_at,
/// signed_off_at)`; `signed_off_at` is `None` while it lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignupPeriod {
    pub service: String,
    pub signed_up_at: DateTime<Utc>,
    pub signed_off_at: Option<DateTime<Utc>>,
}

/// One stretch during which an account had one plan of a service: `[from, until)`; `until` is
/// `None` while it lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanPeriodRecord {
    pub service: String,
    pub plan: String,
    pub from: DateTime<Utc>,
    pub until: Option<DateTime<Utc>>,
}

/// What a sign-up did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignupOutcome {
    /// A new period started now.
    Started(SignupPeriod),
    /// The account was already signed up; nothing changed.
    AlreadySignedUp(SignupPeriod),
}

/// What a sign-off did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignoffOutcome {
    /// The open period ended now, and with it the plan of that service, if any.
    Ended {
        signup: SignupPeriod,
        plan: Option<PlanPeriodRecord>,
    },
    NotSignedUp,
}

/// What choosing (or ending) a plan did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanChange {
    /// The requested state was already the current one; nothing was written.
    Unchanged { current: Option<PlanPeriodRecord> },
    /// The previous plan (if any) ended now and the new one (if any) started now.
    Changed {
        ended: Option<PlanPeriodRecord>,
        started: Option<PlanPeriodRecord>,
    },
    /// The service needs a sign-up and the account has none open; nothing was written.
    NotSignedUp,
}

/// Sign-ups and plans, as the services API, the pipeline and the bill use them.
#[async_trait::async_trait]
pub trait ServiceStore: Send + Sync {
    /// Opens a sign-up period for `service` unless one is open.
    async fn sign_up(
        &self,
        account: &AccountId,
        service: &str,
        now: DateTime<Utc>,
    ) -> Result<SignupOutcome, StoreError>;
    /// Closes the open sign-up period and, in the same transaction, the service's open plan.
    async fn sign_off(
        &self,
        account: &AccountId,
        service: &str,
        now: DateTime<Utc>,
    ) -> Result<SignoffOutcome, StoreError>;
    /// Whether a sign-up period of `service` is open now (the S1 check on every call).
    async fn is_signed_up(&self, account: &AccountId, service: &str) -> Result<bool, StoreError>;
    /// Every sign-up period of the account, by service then start.
    async fn signup_periods(&self, account: &AccountId) -> Result<Vec<SignupPeriod>, StoreError>;
    /// Ends the open plan of `service` (if any) and starts `plan` (if `Some`), both at `now`, in
    /// one transaction. With `require_signup`, refuses unless a sign-up period is open.
    async fn set_plan(
        &self,
        account: &AccountId,
        service: &str,
        plan: Option<&str>,
        require_signup: bool,
        now: DateTime<Utc>,
    ) -> Result<PlanChange, StoreError>;
    /// Every plan period of the account, by service then start.
    async fn plan_history(&self, account: &AccountId) -> Result<Vec<PlanPeriodRecord>, StoreError>;
    /// The account's plan periods that overlap `[start, end)`, unclipped, by service then start.
    async fn plan_periods(
        &self,
        account: &AccountId,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<PlanPeriodRecord>, StoreError>;
}

// === impl PlanPeriodRecord ===

impl PlanPeriodRecord {
    /// The part of this period inside `[start, end)`, if any time of it lies there.
    pub fn clipped(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let from = self.from.max(start);
        let until = self.until.map_or(end, |u| u.min(end));
        (from < until).then_some((from, until))
    }
}
