//! The organization domain as plain data: organizations, members, handshakes, the A7 view, and
//! the membership history billing reads (M1).
//!
//! No serde here: the API's DTOs convert from these explicitly, so a rename cannot silently change
//! the wire format. Nothing here knows HTTP or SQL, or reads the clock.

use std::fmt;

use chrono::{DateTime, Duration, Utc};

use crate::ids::{AccountId, HandshakeId, OrgId};

pub use crate::authz::FeatureSet;

/// How long an `INVITE` stays open (A4).
pub const INVITE_TTL: Duration = Duration::days(15);

/// How long an enable-all-features request (parent and children) stays open (A5).
pub const ENABLE_ALL_FEATURES_TTL: Duration = Duration::days(90);

/// A live organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    pub id: OrgId,
    /// The payer: created the organization, is not a member, can never leave it.
    pub management_account_id: AccountId,
    pub feature_set: FeatureSet,
    pub created_at: DateTime<Utc>,
}

/// How a member joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JoinedMethod {
    /// Created inside the organization (A3).
    Created,
    /// Accepted an invitation (A4).
    Invited,
}

/// A current member (linked account). The management account is never one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub account_id: AccountId,
    pub name: String,
    pub joined_method: JoinedMethod,
    pub joined_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandshakeKind {
    /// Management account -> an account outside any organization.
    Invite,
    /// The parent of an all-features migration: management account -> itself.
    EnableAllFeatures,
    /// One child per invited member: management account -> that member.
    ApproveAllFeatures,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandshakeState {
    /// A parent waiting for its children to be accepted.
    Requested,
    Open,
    Accepted,
    Declined,
    Canceled,
    Expired,
}

/// What a party does to a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandshakeAction {
    Accept,
    Decline,
    Cancel,
}

/// A handshake as of some instant: [`Handshake::at`] applies lazy expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    pub id: HandshakeId,
    pub kind: HandshakeKind,
    pub state: HandshakeState,
    pub organization_id: OrgId,
    pub from_account_id: AccountId,
    pub to_account_id: AccountId,
    /// Set on `APPROVE_ALL_FEATURES` children: their `ENABLE_ALL_FEATURES` parent.
    pub parent_id: Option<HandshakeId>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// What `GET /org` shows (A7): the organization, its current members and its open handshakes
/// (`OPEN` or `REQUESTED`, not expired).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgView {
    pub organization: Organization,
    pub members: Vec<Member>,
    pub handshakes: Vec<Handshake>,
}

/// Who pays for an account's usage at one instant (M1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribution {
    /// The management account of the organization the account was in, else the account itself.
    pub payer: AccountId,
    /// The organization the account was in at that instant, as member or as management
    /// account; its usage then counts toward that organization's volume tiers (M3).
    pub organization: Option<OrgId>,
}

/// The part an account played in an organization during a [`MembershipPeriod`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MembershipRole {
    /// From the organization's creation until its deletion.
    Management,
    Member(JoinedMethod),
}

/// An interval during which an account belonged to an organization: `[from, until)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipPeriod {
    pub organization_id: OrgId,
    pub management_account_id: AccountId,
    pub account_id: AccountId,
    pub role: MembershipRole,
    /// Inclusive: usage at this instant is billed to the management account.
    pub from: DateTime<Utc>,
    /// Exclusive (the instant of leaving, removal or deletion); `None` while it lasts.
    pub until: Option<DateTime<Utc>>,
}

/// Whose membership history to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipScope {
    /// Every account that was in the organization, the management account included.
    Organization(OrgId),
    /// Every organization the account was in, as member or management account.
    Account(AccountId),
}

// === impl JoinedMethod ===

impl JoinedMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "CREATED",
            Self::Invited => "INVITED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "CREATED" => Some(Self::Created),
            "INVITED" => Some(Self::Invited),
            _ => None,
        }
    }
}

impl fmt::Display for JoinedMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl HandshakeKind ===

impl HandshakeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invite => "INVITE",
            Self::EnableAllFeatures => "ENABLE_ALL_FEATURES",
            Self::ApproveAllFeatures => "APPROVE_ALL_FEATURES",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "INVITE" => Some(Self::Invite),
            "ENABLE_ALL_FEATURES" => Some(Self::EnableAllFeatures),
            "APPROVE_ALL_FEATURES" => Some(Self::ApproveAllFeatures),
            _ => None,
        }
    }
}

impl fmt::Display for HandshakeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl HandshakeState ===

impl HandshakeState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "REQUESTED",
            Self::Open => "OPEN",
            Self::Accepted => "ACCEPTED",
            Self::Declined => "DECLINED",
            Self::Canceled => "CANCELED",
            Self::Expired => "EXPIRED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "REQUESTED" => Some(Self::Requested),
            "OPEN" => Some(Self::Open),
            "ACCEPTED" => Some(Self::Accepted),
            "DECLINED" => Some(Self::Declined),
            "CANCELED" => Some(Self::Canceled),
            "EXPIRED" => Some(Self::Expired),
            _ => None,
        }
    }

    /// Not finished yet: `REQUESTED` or `OPEN`. Only these can expire.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Requested | Self::Open)
    }
}

impl fmt::Display for HandshakeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl HandshakeAction ===

impl HandshakeAction {
    /// The past participle, for messages: "cannot be accepted".
    pub fn done(self) -> &'static str {
        match self {
            Self::Accept => "accepted",
            Self::Decline => "declined",
            Self::Cancel => "canceled",
        }
    }
}

// === impl Handshake ===

impl Handshake {
    /// The state at `now`: an active handshake at or past `expires_at` is `EXPIRED`, whether or
    /// not the sweep has written that down yet.
    pub fn state_at(&self, now: DateTime<Utc>) -> HandshakeState {
        if self.state.is_active() && now >= self.expires_at {
            HandshakeState::Expired
        } else {
            self.state
        }
    }

    /// This handshake as seen at `now` (lazy expiry applied).
    pub fn at(mut self, now: DateTime<Utc>) -> Self {
        self.state = self.state_at(now);
        self
    }

    pub fn is_active_at(&self, now: DateTime<Utc>) -> bool {
        self.state_at(now).is_active()
    }
}

// === impl MembershipPeriod ===

impl MembershipPeriod {
    /// Whether the account belonged to the organization at `at`.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.from <= at && self.until.is_none_or(|u| at < u)
    }

    /// The part of this period inside `[start, end)`, if any.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    #[test]
    fn names_round_trip() {
        for k in [
            HandshakeKind::Invite,
            HandshakeKind::EnableAllFeatures,
            HandshakeKind::ApproveAllFeatures,
        ] {
            assert_eq!(HandshakeKind::parse(k.as_str()), Some(k));
        }
        for s in [
            HandshakeState::Requested,
            HandshakeState::Open,
            HandshakeState::Accepted,
            HandshakeState::Declined,
            HandshakeState::Canceled,
            HandshakeState::Expired,
        ] {
            assert_eq!(HandshakeState::parse(s.as_str()), Some(s));
        }
        for m in [JoinedMethod::Created, JoinedMethod::Invited] {
            assert_eq!(JoinedMethod::parse(m.as_str()), Some(m));
        }
        assert_eq!(HandshakeState::parse("open"), None);
    }

    #[test]
    fn only_active_handshakes_expire_at_their_instant() {
        let h = Handshake {
            id: HandshakeId::generate(),
            kind: HandshakeKind::Invite,
            state: HandshakeState::Open,
            organization_id: OrgId::generate(),
            from_account_id: AccountId::generate(),
            to_account_id: AccountId::generate(),
            parent_id: None,
            created_at: t(0),
            expires_at: t(100),
        };
        assert_eq!(h.state_at(t(99)), HandshakeState::Open);
        assert_eq!(h.state_at(t(100)), HandshakeState::Expired);
        let done = Handshake {
            state: HandshakeState::Accepted,
            ..h
        };
        assert_eq!(done.state_at(t(1000)), HandshakeState::Accepted);
    }

    #[test]
    fn periods_are_half_open() {
        let p = MembershipPeriod {
            organization_id: OrgId::generate(),
            management_account_id: AccountId::generate(),
            account_id: AccountId::generate(),
            role: MembershipRole::Member(JoinedMethod::Invited),
            from: t(10),
            until: Some(t(20)),
        };
        assert!(!p.contains(t(9)));
        assert!(p.contains(t(10)));
        assert!(p.contains(t(19)));
        assert!(!p.contains(t(20)));
        assert_eq!(p.clipped(t(0), t(15)), Some((t(10), t(15))));
        assert_eq!(p.clipped(t(20), t(30)), None);
    }
}
