//! [`OrgService`]: the organization operations (SPEC A2–A7) and the membership history billing
//! reads (M1). Every rule of organizations and handshakes is decided here.
//!
//! Each operation is one transaction ([`OrgStore::org_transaction`]): what it reads is what it
//! writes against, and a concurrent operation sees all of it or none. Callers pass the account
//! on whose behalf they act (already authenticated and authorized) and `now` from the injected
//! clock. This module must not know HTTP or SQL.

use std::any::Any;
use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::OrgError;
use super::model::{
    Attribution, ENABLE_ALL_FEATURES_TTL, FeatureSet, Handshake, HandshakeAction, HandshakeKind,
    HandshakeState, INVITE_TTL, JoinedMethod, Member, MembershipPeriod, MembershipScope, OrgView,
    Organization,
};
use super::store::{HandshakeFilter, OrgStore, OrgTx};
use crate::billing::month::BillingMonth;
use crate::ids::{AccountId, HandshakeId, OrgId};
use crate::store::StoreError;
use crate::store::accounts::NewAccount;

/// The organization operations over a store.
#[derive(Clone)]
pub struct OrgService {
    store: Arc<dyn OrgStore>,
}

// === impl OrgService ===

impl OrgService {
    pub fn new(store: Arc<dyn OrgStore>) -> Self {
        Self { store }
    }

    /// A2: a standalone account creates an organization and becomes its management account.
    /// `feature_set` defaults to `ALL_FEATURES`.
    pub async fn create_organization(
        &self,
        caller: &AccountId,
        feature_set: Option<FeatureSet>,
        caller_has_mfa: bool,
        now: DateTime<Utc>,
    ) -> Result<Organization, OrgError> {
        if !caller_has_mfa {
            return Err(OrgError::MfaRequired);
        }
        let caller = caller.clone();
        self.transact(move |tx| {
            if tx.account_name(&caller)?.is_none() {
                return Err(OrgError::NoSuchAccount { account: caller });
            }
            if let Some(org) = tx.current_organization(&caller)? {
                return Err(OrgError::AlreadyInOrganization {
                    account: caller,
                    organization: org.id,
                });
            }
            let org = Organization {
                id: OrgId::generate(),
                management_account_id: caller,
                feature_set: feature_set.unwrap_or(FeatureSet::AllFeatures),
                created_at: now,
            };
            tx.insert_organization(&org)?;
            Ok(org)
        })
        .await
    }

    /// A7: the caller's organization, its members and its open handshakes. The management
    /// account sees every open handshake; a member sees the members too (as in AWS), but only
    /// the open handshakes it is a party to (its approval): whom the organization invites is
    /// the management account's business.
    pub async fn describe(
        &self,
        caller: &AccountId,
        now: DateTime<Utc>,
    ) -> Result<OrgView, OrgError> {
        let caller = caller.clone();
        self.transact(move |tx| {
            let organization = organization_of(tx, &caller)?;
            let members = tx.members(&organization.id)?;
            let is_management = organization.management_account_id == caller;
            let handshakes = tx
                .handshakes(&HandshakeFilter::Organization(organization.id.clone()))?
                .into_iter()
                .map(|h| h.at(now))
                .filter(|h| h.state.is_active())
                .filter(|h| {
                    is_management || h.from_account_id == caller || h.to_account_id == caller
                })
                .collect();
            Ok(OrgView {
                organization,
                members,
                handshakes,
            })
        })
        .await
    }

    /// A3 (management): creates an account and its owner inside the organization, joined at
    /// once (`CREATED`), in one transaction.
    pub async fn create_account(
        &self,
        caller: &AccountId,
        new: NewAccount,
        now: DateTime<Utc>,
    ) -> Result<Member, OrgError> {
        let caller = caller.clone();
        self.transact(move |tx| {
            let org = managed_organization(tx, &caller)?;
            let account_id = tx.insert_account(&new, now)?;
            tx.join(&org.id, &account_id, JoinedMethod::Created, now)?;
            Ok(Member {
                account_id,
                name: new.name,
                joined_method: JoinedMethod::Created,
                joined_at: now,
            })
        })
        .await
    }

    /// A4 (management): opens an `INVITE` to `target`, expiring [`INVITE_TTL`] later.
    pub async fn invite(
        &self,
        caller: &AccountId,
        target: &AccountId,
        now: DateTime<Utc>,
    ) -> Result<Handshake, OrgError> {
        let (caller, target) = (caller.clone(), target.clone());
        self.transact(move |tx| {
            let org = managed_organization(tx, &caller)?;
            if let Some(parent) = pending_migration(tx, &org.id, now)? {
                return Err(OrgError::InviteDisabledDuringEnableAllFeatures {
                    handshake: parent.id,
                });
            }
            if tx.account_name(&target)?.is_none() {
                return Err(OrgError::NoSuchAccount { account: target });
            }
            if tx.current_organization(&target)?.is_some() {
                return Err(OrgError::AccountAlreadyInOrganization { account: target });
            }
            let existing = tx
                .handshakes(&HandshakeFilter::Party(target.clone()))?
                .into_iter()
                .find(|h| {
                    h.kind == HandshakeKind::Invite
                        && h.organization_id == org.id
                        && h.to_account_id == target
                        && h.is_active_at(now)
                });
            if let Some(existing) = existing {
                return Err(OrgError::DuplicateHandshake {
                    account: target,
                    existing: existing.id,
                });
            }
            let invite = Handshake {
                id: HandshakeId::generate(),
                kind: HandshakeKind::Invite,
                state: HandshakeState::Open,
                organization_id: org.id,
                from_account_id: caller,
                to_account_id: target,
                parent_id: None,
                created_at: now,
                expires_at: now + INVITE_TTL,
            };
            tx.insert_handshake(&invite, now)?;
            Ok(invite)
        })
        .await
    }

    /// Every handshake the caller's account sent or received, newest first, in any state. The
    /// caller need not be in an organization (invited accounts are not).
    pub async fn handshakes_for(
        &self,
        caller: &AccountId,
        now: DateTime<Utc>,
    ) -> Result<Vec<Handshake>, OrgError> {
        let caller = caller.clone();
        self.transact(move |tx| {
            Ok(tx
                .handshakes(&HandshakeFilter::Party(caller))?
                .into_iter()
                .map(|h| h.at(now))
                .collect())
        })
        .await
    }

    /// A4/A5: the recipient accepts. An `INVITE` joins the organization (`INVITED`) from `now`;
    /// an `APPROVE_ALL_FEATURES` may open its parent; an `OPEN` `ENABLE_ALL_FEATURES` switches
    /// the feature set to `ALL_FEATURES`.
    pub async fn accept(
        &self,
        caller: &AccountId,
        id: &HandshakeId,
        now: DateTime<Utc>,
    ) -> Result<Handshake, OrgError> {
        self.transition(caller, id, HandshakeAction::Accept, now)
            .await
    }

    /// A4/A5: the recipient declines. A declined approval blocks the migration until that
    /// member is removed; the management account declining the parent abandons the migration.
    pub async fn decline(
        &self,
        caller: &AccountId,
        id: &HandshakeId,
        now: DateTime<Utc>,
    ) -> Result<Handshake, OrgError> {
        self.transition(caller, id, HandshakeAction::Decline, now)
            .await
    }

    /// A4/A5: the sender (the management account) cancels an invitation, or the whole
    /// enable-all-features request (its open approvals with it).
    pub async fn cancel(
        &self,
        caller: &AccountId,
        id: &HandshakeId,
        now: DateTime<Utc>,
    ) -> Result<Handshake, OrgError> {
        self.transition(caller, id, HandshakeAction::Cancel, now)
            .await
    }

    /// A5 (management, `CONSOLIDATED_BILLING` only): starts the switch to all features.
    /// Returns the parent: `REQUESTED` while invited members must approve, `OPEN` at once when
    /// there are none. Open invitations are canceled.
    pub async fn enable_all_features(
        &self,
        caller: &AccountId,
        now: DateTime<Utc>,
    ) -> Result<Handshake, OrgError> {
        let caller = caller.clone();
        self.transact(move |tx| {
            let org = managed_organization(tx, &caller)?;
            if org.feature_set == FeatureSet::AllFeatures {
                return Err(OrgError::AlreadyAllFeatures {
                    organization: org.id,
                });
            }
            if let Some(parent) = pending_migration(tx, &org.id, now)? {
                return Err(OrgError::AllFeaturesMigrationPending {
                    handshake: parent.id,
                });
            }
            for invite in tx
                .handshakes(&HandshakeFilter::Organization(org.id.clone()))?
                .into_iter()
                .filter(|h| h.kind == HandshakeKind::Invite && h.is_active_at(now))
            {
                tx.set_handshake_state(&invite.id, HandshakeState::Canceled, now)?;
            }
            let invited: Vec<Member> = tx
                .members(&org.id)?
                .into_iter()
                .filter(|m| m.joined_method == JoinedMethod::Invited)
                .collect();
            let expires_at = now + ENABLE_ALL_FEATURES_TTL;
            let parent = Handshake {
                id: HandshakeId::generate(),
                kind: HandshakeKind::EnableAllFeatures,
                state: if invited.is_empty() {
                    HandshakeState::Open
                } else {
                    HandshakeState::Requested
                },
                organization_id: org.id.clone(),
                from_account_id: caller.clone(),
                to_account_id: caller.clone(),
                parent_id: None,
                created_at: now,
                expires_at,
            };
            tx.insert_handshake(&parent, now)?;
            for member in invited {
                tx.insert_handshake(
                    &Handshake {
                        id: HandshakeId::generate(),
                        kind: HandshakeKind::ApproveAllFeatures,
                        state: HandshakeState::Open,
                        organization_id: org.id.clone(),
                        from_account_id: caller.clone(),
                        to_account_id: member.account_id,
                        parent_id: Some(parent.id.clone()),
                        created_at: now,
                        expires_at,
                    },
                    now,
                )?;
            }
            Ok(parent)
        })
        .await
    }

    /// A6 (management): removes a member from `now` on. Its open approval is canceled, which
    /// may let a pending migration proceed.
    pub async fn remove_account(
        &self,
        caller: &AccountId,
        member: &AccountId,
        now: DateTime<Utc>,
    ) -> Result<(), OrgError> {
        let (caller, member) = (caller.clone(), member.clone());
        self.transact(move |tx| {
            let org = managed_organization(tx, &caller)?;
            if member == org.management_account_id {
                return Err(OrgError::ManagementAccountCannotLeave {
                    organization: org.id,
                });
            }
            if tx.account_name(&member)?.is_none() {
                return Err(OrgError::NoSuchAccount { account: member });
            }
            end_membership(tx, &org.id, &member, now)
        })
        .await
    }

    /// A6: a member leaves from `now` on; the management account never can.
    pub async fn leave(&self, caller: &AccountId, now: DateTime<Utc>) -> Result<(), OrgError> {
        let caller = caller.clone();
        self.transact(move |tx| {
            let org = organization_of(tx, &caller)?;
            if caller == org.management_account_id {
                return Err(OrgError::ManagementAccountCannotLeave {
                    organization: org.id,
                });
            }
            end_membership(tx, &org.id, &caller, now)
        })
        .await
    }

    /// A6 (management): deletes an organization without members; its open handshakes are
    /// canceled and its history kept.
    pub async fn delete_organization(
        &self,
        caller: &AccountId,
        now: DateTime<Utc>,
    ) -> Result<(), OrgError> {
        let caller = caller.clone();
        self.transact(move |tx| {
            let org = managed_organization(tx, &caller)?;
            let members = tx.members(&org.id)?.len();
            if members > 0 {
                return Err(OrgError::OrganizationNotEmpty {
                    organization: org.id,
                    members,
                });
            }
            for h in tx
                .handshakes(&HandshakeFilter::Organization(org.id.clone()))?
                .into_iter()
                .filter(|h| h.is_active_at(now))
            {
                tx.set_handshake_state(&h.id, HandshakeState::Canceled, now)?;
            }
            tx.delete_organization(&org.id, now)?;
            Ok(())
        })
        .await
    }

    /// Persists `EXPIRED` on handshakes past their expiry; every read already treats them so.
    /// Returns how many changed. Run it periodically.
    pub async fn sweep_expired(&self, now: DateTime<Utc>) -> Result<usize, OrgError> {
        Ok(self.store.sweep_expired(now).await?)
    }

    /// M1: who paid for `account`'s usage at the instant `at`.
    pub async fn payer_at(
        &self,
        account: &AccountId,
        at: DateTime<Utc>,
    ) -> Result<Attribution, OrgError> {
        Ok(self.store.payer_at(account, at).await?)
    }

    /// Membership periods of the scope overlapping the months `first..=last` (unclipped; see
    /// [`MembershipPeriod::clipped`]).
    pub async fn membership_periods(
        &self,
        scope: &MembershipScope,
        first: BillingMonth,
        last: BillingMonth,
    ) -> Result<Vec<MembershipPeriod>, OrgError> {
        Ok(self
            .store
            .membership_periods(scope, first.start(), last.end())
            .await?)
    }

    async fn transition(
        &self,
        caller: &AccountId,
        id: &HandshakeId,
        action: HandshakeAction,
        now: DateTime<Utc>,
    ) -> Result<Handshake, OrgError> {
        let (caller, id) = (caller.clone(), id.clone());
        self.transact(move |tx| transition(tx, &caller, &id, action, now))
            .await
    }

    /// Runs `body` as one store transaction and restores its output type.
    async fn transact<T, F>(&self, body: F) -> Result<T, OrgError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn OrgTx) -> Result<T, OrgError> + Send + 'static,
    {
        let out = self
            .store
            .org_transaction(Box::new(move |tx| {
                body(tx).map(|v| Box::new(v) as Box<dyn Any + Send>)
            }))
            .await?;
        out.downcast::<T>().map(|v| *v).map_err(|_| {
            OrgError::Store(StoreError::Corrupt(
                "organization transaction returned an unexpected type".into(),
            ))
        })
    }
}

/// The caller's organization, as member or management account.
fn organization_of(tx: &dyn OrgTx, caller: &AccountId) -> Result<Organization, OrgError> {
    tx.current_organization(caller)?
        .ok_or_else(|| OrgError::NotInOrganization {
            account: caller.clone(),
        })
}

/// The caller's organization, if the caller is its management account.
fn managed_organization(tx: &dyn OrgTx, caller: &AccountId) -> Result<Organization, OrgError> {
    let org = organization_of(tx, caller)?;
    if org.management_account_id != *caller {
        return Err(OrgError::NotManagementAccount {
            organization: org.id,
            management: org.management_account_id,
        });
    }
    Ok(org)
}

/// The organization's enable-all-features parent that is still `REQUESTED` or `OPEN` at `now`.
fn pending_migration(
    tx: &dyn OrgTx,
    org: &OrgId,
    now: DateTime<Utc>,
) -> Result<Option<Handshake>, StoreError> {
    Ok(tx
        .handshakes(&HandshakeFilter::Organization(org.clone()))?
        .into_iter()
        .map(|h| h.at(now))
        .find(|h| h.kind == HandshakeKind::EnableAllFeatures && h.state.is_active()))
}

/// Opens a `REQUESTED` parent once every current member's approval is accepted. Approvals of
/// accounts that are no longer members (e.g. removed after declining) do not count.
fn advance_migration(tx: &dyn OrgTx, org: &OrgId, now: DateTime<Utc>) -> Result<(), StoreError> {
    let Some(parent) = pending_migration(tx, org, now)? else {
        return Ok(());
    };
    if parent.state != HandshakeState::Requested {
        return Ok(());
    }
    let members: HashSet<AccountId> = tx.members(org)?.into_iter().map(|m| m.account_id).collect();
    let complete = tx
        .handshakes(&HandshakeFilter::Children(parent.id.clone()))?
        .into_iter()
        .filter(|child| members.contains(&child.to_account_id))
        .all(|child| child.state_at(now) == HandshakeState::Accepted);
    if complete {
        tx.set_handshake_state(&parent.id, HandshakeState::Open, now)?;
    }
    Ok(())
}

/// Closes a membership at `now`, cancels the organization's open handshakes addressed to the
/// account (its approval) and lets a pending migration proceed without it.
fn end_membership(
    tx: &dyn OrgTx,
    org: &OrgId,
    account: &AccountId,
    now: DateTime<Utc>,
) -> Result<(), OrgError> {
    if !tx.leave(org, account, now)? {
        return Err(OrgError::NotAMember {
            account: account.clone(),
            organization: org.clone(),
        });
    }
    for h in tx
        .handshakes(&HandshakeFilter::Party(account.clone()))?
        .into_iter()
        .filter(|h| h.organization_id == *org && h.to_account_id == *account && h.is_active_at(now))
    {
        tx.set_handshake_state(&h.id, HandshakeState::Canceled, now)?;
    }
    advance_migration(tx, org, now)?;
    Ok(())
}

/// One move on one handshake: who may make it, from which state, and what it does.
fn transition(
    tx: &dyn OrgTx,
    caller: &AccountId,
    id: &HandshakeId,
    action: HandshakeAction,
    now: DateTime<Utc>,
) -> Result<Handshake, OrgError> {
    let no_such = || OrgError::NoSuchHandshake { id: id.clone() };
    let mut h = tx.handshake(id)?.ok_or_else(no_such)?.at(now);
    // Accounts that are neither party do not learn that the handshake exists.
    if *caller != h.from_account_id && *caller != h.to_account_id {
        return Err(no_such());
    }
    check_party(&h, caller, action)?;
    check_state(&h, action)?;

    let new_state = match action {
        HandshakeAction::Accept => HandshakeState::Accepted,
        HandshakeAction::Decline => HandshakeState::Declined,
        HandshakeAction::Cancel => HandshakeState::Canceled,
    };
    match (action, h.kind) {
        (HandshakeAction::Accept, HandshakeKind::Invite) => {
            // The account may have joined or created another organization since.
            if tx.current_organization(&h.to_account_id)?.is_some() {
                return Err(OrgError::AccountAlreadyInOrganization {
                    account: h.to_account_id.clone(),
                });
            }
            tx.join(
                &h.organization_id,
                &h.to_account_id,
                JoinedMethod::Invited,
                now,
            )?;
            tx.set_handshake_state(&h.id, new_state, now)?;
        }
        (HandshakeAction::Accept, HandshakeKind::ApproveAllFeatures) => {
            tx.set_handshake_state(&h.id, new_state, now)?;
            advance_migration(tx, &h.organization_id, now)?;
        }
        (HandshakeAction::Accept, HandshakeKind::EnableAllFeatures) => {
            tx.set_handshake_state(&h.id, new_state, now)?;
            tx.set_feature_set(&h.organization_id, FeatureSet::AllFeatures)?;
        }
        (_, HandshakeKind::EnableAllFeatures) => {
            // Abandoning the migration ends its open approvals too.
            tx.set_handshake_state(&h.id, new_state, now)?;
            for child in tx
                .handshakes(&HandshakeFilter::Children(h.id.clone()))?
                .into_iter()
                .filter(|c| c.is_active_at(now))
            {
                tx.set_handshake_state(&child.id, HandshakeState::Canceled, now)?;
            }
        }
        _ => tx.set_handshake_state(&h.id, new_state, now)?,
    }
    h.state = new_state;
    Ok(h)
}

fn check_party(h: &Handshake, caller: &AccountId, action: HandshakeAction) -> Result<(), OrgError> {
    let denied = |reason: String| {
        Err(OrgError::AccessDenied {
            id: h.id.clone(),
            reason,
        })
    };
    match action {
        HandshakeAction::Accept | HandshakeAction::Decline if *caller != h.to_account_id => {
            denied(format!(
                "only account {} can {} handshake {}",
                h.to_account_id,
                if action == HandshakeAction::Accept {
                    "accept"
                } else {
                    "decline"
                },
                h.id
            ))
        }
        HandshakeAction::Cancel if *caller != h.from_account_id => denied(format!(
            "only account {}, which sent handshake {}, can cancel it",
            h.from_account_id, h.id
        )),
        HandshakeAction::Cancel if h.kind == HandshakeKind::ApproveAllFeatures => {
            let parent = h
                .parent_id
                .as_ref()
                .map_or_else(|| "its parent".to_owned(), ToString::to_string);
            denied(format!(
                "an approval is answered by its member; cancel the enable-all-features handshake {parent} instead"
            ))
        }
        _ => Ok(()),
    }
}

/// Which states a move may start from (A4, A5).
fn check_state(h: &Handshake, action: HandshakeAction) -> Result<(), OrgError> {
    let parent = h.kind == HandshakeKind::EnableAllFeatures;
    match (h.state, action) {
        (HandshakeState::Open, _) => Ok(()),
        (HandshakeState::Requested, HandshakeAction::Accept) if parent => {
            Err(OrgError::HandshakeNotComplete { id: h.id.clone() })
        }
        // The management account may abandon a migration that is still waiting for approvals.
        (HandshakeState::Requested, HandshakeAction::Decline | HandshakeAction::Cancel)
            if parent =>
        {
            Ok(())
        }
        (HandshakeState::Accepted, HandshakeAction::Accept) => {
            Err(OrgError::HandshakeAlreadyInState {
                id: h.id.clone(),
                state: h.state,
            })
        }
        (state, action) => Err(OrgError::InvalidHandshakeTransition {
            id: h.id.clone(),
            state,
            action,
        }),
    }
}

#[cfg(test)]
mod tests;
