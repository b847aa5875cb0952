//! Scenarios through `OrgService` on a real SQLite store in a temp dir. Time is moved by hand.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use tempfile::TempDir;

use super::*;
use crate::auth::PasswordHash;
use crate::ids::UserName;
use crate::org::MembershipRole;
use crate::store::accounts::AccountStore;
use crate::store::sql::SqlStore;

const FAKE_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

struct World {
    dir: TempDir,
    store: SqlStore,
    org: OrgService,
    t0: DateTime<Utc>,
}

fn new_account(name: &str) -> NewAccount {
    NewAccount {
        name: name.to_owned(),
        email: format!("{name}@example.com"),
        owner: UserName::parse("owner").unwrap(),
        owner_password: PasswordHash::from_phc(FAKE_PHC).unwrap(),
    }
}

fn open(path: &Path) -> (SqlStore, OrgService) {
    let store = SqlStore::open(path).unwrap();
    let org = OrgService::new(Arc::new(store.clone()));
    (store, org)
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (store, org) = open(dir.path());
        Self {
            dir,
            store,
            org,
            // 2026-03-10T12:00:00Z
            t0: DateTime::from_timestamp(1_773_144_000, 0).unwrap(),
        }
    }

    /// `t0` plus `secs` seconds.
    fn at(&self, secs: i64) -> DateTime<Utc> {
        self.t0 + Duration::seconds(secs)
    }

    async fn signup(&self, name: &str) -> AccountId {
        self.store
            .create_account(new_account(name), self.t0)
            .await
            .unwrap()
    }

    /// A standalone account that creates an organization with `feature_set`.
    async fn management(&self, name: &str, feature_set: FeatureSet) -> (AccountId, Organization) {
        let p = self.signup(name).await;
        let org = self
            .org
            .create_organization(&p, Some(feature_set), true, self.t0)
            .await
            .unwrap();
        (p, org)
    }

    /// Invites `account` into `p`'s organization and accepts at `t0`.
    async fn join(&self, p: &AccountId, account: &AccountId) {
        let h = self.org.invite(p, account, self.t0).await.unwrap();
        self.org.accept(account, &h.id, self.t0).await.unwrap();
    }

    async fn state(&self, caller: &AccountId, id: &HandshakeId) -> HandshakeState {
        self.org
            .handshakes_for(caller, self.t0)
            .await
            .unwrap()
            .into_iter()
            .find(|h| h.id == *id)
            .map(|h| h.state)
            .unwrap()
    }

    async fn state_at(
        &self,
        caller: &AccountId,
        id: &HandshakeId,
        now: DateTime<Utc>,
    ) -> HandshakeState {
        self.org
            .handshakes_for(caller, now)
            .await
            .unwrap()
            .into_iter()
            .find(|h| h.id == *id)
            .map(|h| h.state)
            .unwrap()
    }
}

macro_rules! assert_err {
    ($result:expr, $pattern:pat $(if $guard:expr)?) => {
        match $result {
            Err($pattern) $(if $guard)? => {}
            other => panic!("expected {}, got {other:?}", stringify!($pattern)),
        }
    };
}

#[tokio::test]
async fn the_full_story_ends_in_all_features() {
    let w = World::new();
    let p = w.signup("payer").await;
    let b = w.signup("bravo").await;

    let org = w
        .org
        .create_organization(&p, Some(FeatureSet::ConsolidatedBilling), true, w.t0)
        .await
        .unwrap();
    assert_eq!(org.management_account_id, p);
    assert_eq!(org.feature_set, FeatureSet::ConsolidatedBilling);
    assert!(OrgId::parse(org.id.as_str()).is_ok());

    let a = w
        .org
        .create_account(&p, new_account("alpha"), w.at(10))
        .await
        .unwrap();
    assert_eq!(a.joined_method, JoinedMethod::Created);
    assert_eq!(a.joined_at, w.at(10));
    // The owner user was created with the account (A3).
    assert!(
        w.store
            .user(&a.account_id, &UserName::parse("owner").unwrap())
            .await
            .unwrap()
            .is_some()
    );

    let invite = w.org.invite(&p, &b, w.at(20)).await.unwrap();
    assert_eq!(invite.kind, HandshakeKind::Invite);
    assert_eq!(invite.state, HandshakeState::Open);
    assert_eq!(invite.expires_at, w.at(20) + Duration::days(15));
    assert_eq!((&invite.from_account_id, &invite.to_account_id), (&p, &b));
    // B sees it; so does P; the open invitation shows in the view.
    assert!(
        w.org
            .handshakes_for(&b, w.at(21))
            .await
            .unwrap()
            .iter()
            .any(|h| h.id == invite.id)
    );
    let view = w.org.describe(&p, w.at(21)).await.unwrap();
    assert_eq!(view.handshakes.len(), 1);

    let accepted = w.org.accept(&b, &invite.id, w.at(30)).await.unwrap();
    assert_eq!(accepted.state, HandshakeState::Accepted);

    let view = w.org.describe(&b, w.at(31)).await.unwrap();
    assert_eq!(view.organization.id, org.id);
    let members: Vec<_> = view
        .members
        .iter()
        .map(|m| (m.account_id.clone(), m.joined_method, m.joined_at))
        .collect();
    assert_eq!(
        members,
        vec![
            (a.account_id.clone(), JoinedMethod::Created, w.at(10)),
            (b.clone(), JoinedMethod::Invited, w.at(30)),
        ]
    );
    assert_eq!(view.members[1].name, "bravo");
    assert!(view.handshakes.is_empty(), "{:?}", view.handshakes);

    let parent = w.org.enable_all_features(&p, w.at(40)).await.unwrap();
    assert_eq!(parent.kind, HandshakeKind::EnableAllFeatures);
    assert_eq!(parent.state, HandshakeState::Requested);
    assert_eq!(parent.expires_at, w.at(40) + Duration::days(90));
    // One child, for the invited member only.
    let view = w.org.describe(&p, w.at(41)).await.unwrap();
    let children: Vec<_> = view
        .handshakes
        .iter()
        .filter(|h| h.kind == HandshakeKind::ApproveAllFeatures)
        .collect();
    assert_eq!(children.len(), 1);
    let child = children[0].clone();
    assert_eq!(child.to_account_id, b);
    assert_eq!(child.parent_id.as_ref(), Some(&parent.id));
    assert!(
        w.org
            .handshakes_for(&a.account_id, w.at(41))
            .await
            .unwrap()
            .is_empty()
    );

    assert_err!(
        w.org.accept(&p, &parent.id, w.at(42)).await,
        OrgError::HandshakeNotComplete { .. }
    );
    w.org.accept(&b, &child.id, w.at(50)).await.unwrap();
    assert_eq!(
        w.state_at(&p, &parent.id, w.at(51)).await,
        HandshakeState::Open
    );
    let done = w.org.accept(&p, &parent.id, w.at(60)).await.unwrap();
    assert_eq!(done.state, HandshakeState::Accepted);

    let view = w.org.describe(&p, w.at(61)).await.unwrap();
    assert_eq!(view.organization.feature_set, FeatureSet::AllFeatures);
    assert!(view.handshakes.is_empty());
    assert_err!(
        w.org.enable_all_features(&p, w.at(70)).await,
        OrgError::AlreadyAllFeatures { .. }
    );
}

#[tokio::test]
async fn creating_an_organization_needs_mfa_and_a_standalone_account() {
    let w = World::new();
    let p = w.signup("payer").await;
    assert_err!(
        w.org.create_organization(&p, None, false, w.t0).await,
        OrgError::MfaRequired
    );
    assert_err!(
        w.org.describe(&p, w.t0).await,
        OrgError::NotInOrganization { .. }
    );

    let org = w
        .org
        .create_organization(&p, None, true, w.t0)
        .await
        .unwrap();
    assert_eq!(org.feature_set, FeatureSet::AllFeatures, "the default");
    assert_err!(
        w.org.create_organization(&p, None, true, w.t0).await,
        OrgError::AlreadyInOrganization { .. }
    );

    let b = w.signup("bravo").await;
    w.join(&p, &b).await;
    assert_err!(
        w.org.create_organization(&b, None, true, w.t0).await,
        OrgError::AlreadyInOrganization { organization, .. } if organization == org.id
    );

    let ghost = AccountId::generate();
    assert_err!(
        w.org.create_organization(&ghost, None, true, w.t0).await,
        OrgError::NoSuchAccount { .. }
    );
}

#[tokio::test]
async fn accounts_in_no_organization_get_not_in_organization() {
    let w = World::new();
    let s = w.signup("solo").await;
    let other = w.signup("other").await;
    assert_err!(
        w.org.describe(&s, w.t0).await,
        OrgError::NotInOrganization { .. }
    );
    assert_err!(
        w.org.leave(&s, w.t0).await,
        OrgError::NotInOrganization { .. }
    );
    assert_err!(
        w.org.invite(&s, &other, w.t0).await,
        OrgError::NotInOrganization { .. }
    );
    assert_err!(
        w.org.create_account(&s, new_account("x"), w.t0).await,
        OrgError::NotInOrganization { .. }
    );
    assert_err!(
        w.org.enable_all_features(&s, w.t0).await,
        OrgError::NotInOrganization { .. }
    );
    assert_err!(
        w.org.remove_account(&s, &other, w.t0).await,
        OrgError::NotInOrganization { .. }
    );
    assert_err!(
        w.org.delete_organization(&s, w.t0).await,
        OrgError::NotInOrganization { .. }
    );
    // Listing handshakes needs no organization: invited accounts are outside one.
    assert!(w.org.handshakes_for(&s, w.t0).await.unwrap().is_empty());
}

#[tokio::test]
async fn management_operations_refuse_members() {
    let w = World::new();
    let (p, _) = w.management("payer", FeatureSet::ConsolidatedBilling).await;
    let b = w.signup("bravo").await;
    let c = w.signup("charlie").await;
    w.join(&p, &b).await;
    w.join(&p, &c).await;
    let outsider = w.signup("outsider").await;

    assert_err!(
        w.org.create_account(&b, new_account("x"), w.t0).await,
        OrgError::NotManagementAccount { management, .. } if management == p
    );
    assert_err!(
        w.org.invite(&b, &outsider, w.t0).await,
        OrgError::NotManagementAccount { .. }
    );
    assert_err!(
        w.org.enable_all_features(&b, w.t0).await,
        OrgError::NotManagementAccount { .. }
    );
    assert_err!(
        w.org.remove_account(&b, &c, w.t0).await,
        OrgError::NotManagementAccount { .. }
    );
    assert_err!(
        w.org.delete_organization(&b, w.t0).await,
        OrgError::NotManagementAccount { .. }
    );
    // Nothing changed.
    assert_eq!(w.org.describe(&p, w.t0).await.unwrap().members.len(), 2);
}

#[tokio::test]
async fn invitations_refuse_accounts_in_organizations_duplicates_and_strangers() {
    let w = World::new();
    let (p, _) = w.management("payer", FeatureSet::ConsolidatedBilling).await;
    let (q, _) = w.management("other-payer", FeatureSet::AllFeatures).await;
    let qm = w
        .org
        .create_account(&q, new_account("q-member"), w.t0)
        .await
        .unwrap()
        .account_id;
    let pm = w
        .org
        .create_account(&p, new_account("p-member"), w.t0)
        .await
        .unwrap()
        .account_id;
    let b = w.signup("bravo").await;

    for target in [&q, &qm, &pm, &p] {
        assert_err!(
            w.org.invite(&p, target, w.t0).await,
            OrgError::AccountAlreadyInOrganization { account } if account == *target
        );
    }
    assert_err!(
        w.org.invite(&p, &AccountId::generate(), w.t0).await,
        OrgError::NoSuchAccount { .. }
    );

    let first = w.org.invite(&p, &b, w.t0).await.unwrap();
    assert_err!(
        w.org.invite(&p, &b, w.at(1)).await,
        OrgError::DuplicateHandshake { existing, .. } if existing == first.id
    );
    // Another organization may invite the same account.
    w.org.invite(&q, &b, w.at(2)).await.unwrap();
    // Once the first is canceled, a new one is fine.
    w.org.cancel(&p, &first.id, w.at(3)).await.unwrap();
    w.org.invite(&p, &b, w.at(4)).await.unwrap();
}

#[tokio::test]
async fn only_the_right_party_moves_a_handshake() {
    let w = World::new();
    let (p, _) = w.management("payer", FeatureSet::ConsolidatedBilling).await;
    let b = w.signup("bravo").await;
    let stranger = w.signup("stranger").await;
    let h = w.org.invite(&p, &b, w.t0).await.unwrap();

    assert_err!(
        w.org.accept(&p, &h.id, w.t0).await,
        OrgError::AccessDenied { .. }
    );
    assert_err!(
        w.org.decline(&p, &h.id, w.t0).await,
        OrgError::AccessDenied { .. }
    );
    assert_err!(
        w.org.cancel(&b, &h.id, w.t0).await,
        OrgError::AccessDenied { .. }
    );
    for result in [
        w.org.accept(&stranger, &h.id, w.t0).await,
        w.org.cancel(&stranger, &h.id, w.t0).await,
        w.org.accept(&b, &HandshakeId::generate(), w.t0).await,
    ] {
        assert_err!(result, OrgError::NoSuchHandshake { .. });
    }
    assert_eq!(w.state(&b, &h.id).await, HandshakeState::Open);

    // Accepting an accepted handshake: already in state; anything else out of it: invalid.
    w.org.accept(&b, &h.id, w.at(1)).await.unwrap();
    assert_err!(
        w.org.accept(&b, &h.id, w.at(2)).await,
        OrgError::HandshakeAlreadyInState {
            state: HandshakeState::Accepted,
            ..
        }
    );
    assert_err!(
        w.org.decline(&b, &h.id, w.at(2)).await,
        OrgError::InvalidHandshakeTransition {
            state: HandshakeState::Accepted,
            action: HandshakeAction::Decline,
            ..
        }
    );
    assert_err!(
        w.org.cancel(&p, &h.id, w.at(2)).await,
        OrgError::InvalidHandshakeTransition { .. }
    );

    // Out of DECLINED and CANCELED every move is invalid.
    let c = w.signup("charlie").await;
    let declined = w.org.invite(&p, &c, w.at(3)).await.unwrap();
    w.org.decline(&c, &declined.id, w.at(4)).await.unwrap();
    for result in [
        w.org.accept(&c, &declined.id, w.at(5)).await,
        w.org.decline(&c, &declined.id, w.at(5)).await,
        w.org.cancel(&p, &declined.id, w.at(5)).await,
    ] {
        assert_err!(
            result,
            OrgError::InvalidHandshakeTransition {
                state: HandshakeState::Declined,
                ..
            }
        );
    }
    let canceled = w.org.invite(&p, &c, w.at(6)).await.unwrap();
    w.org.cancel(&p, &canceled.id, w.at(7)).await.unwrap();
    assert_err!(
        w.org.accept(&c, &canceled.id, w.at(8)).await,
        OrgError::InvalidHandshakeTransition {
            state: HandshakeState::Canceled,
            ..
        }
    );
    // Declining and canceling never joined anyone.
    assert_err!(
        w.org.describe(&c, w.at(9)).await,
        OrgError::NotInOrganization { .. }
    );
}

#[tokio::test]
async fn handshakes_expire_by_time_alone() {
    let w = World::new();
    let (p, _) = w.management("payer", FeatureSet::ConsolidatedBilling).await;
    let b = w.signup("bravo").await;
    let h = w.org.invite(&p, &b, w.t0).await.unwrap();
    let expiry = w.t0 + Duration::days(15);

    let just_before = expiry - Duration::milliseconds(1);
    assert_eq!(
        w.state_at(&b, &h.id, just_before).await,
        HandshakeState::Open
    );
    assert_eq!(w.state_at(&b, &h.id, expiry).await, HandshakeState::Expired);
    assert!(
        w.org
            .describe(&p, expiry)
            .await
            .unwrap()
            .handshakes
            .is_empty()
    );
    assert_err!(
        w.org.accept(&b, &h.id, expiry).await,
        OrgError::InvalidHandshakeTransition {
            state: HandshakeState::Expired,
            ..
        }
    );
    assert_err!(
        w.org.cancel(&p, &h.id, expiry).await,
        OrgError::InvalidHandshakeTransition { .. }
    );
    // An expired invitation is no duplicate.
    let again = w.org.invite(&p, &b, expiry).await.unwrap();

    // The sweep persists only what has expired, once.
    assert_eq!(w.org.sweep_expired(just_before).await.unwrap(), 0);
    assert_eq!(w.org.sweep_expired(expiry).await.unwrap(), 1);
    assert_eq!(w.org.sweep_expired(expiry).await.unwrap(), 0);
    // Persisted: even a read at an earlier instant now sees EXPIRED.
    assert_eq!(w.state_at(&b, &h.id, w.t0).await, HandshakeState::Expired);
    assert_eq!(
        w.state_at(&b, &again.id, expiry).await,
        HandshakeState::Open
    );

    // An enable-all-features request expires after 90 days, children included.
    w.org.accept(&b, &again.id, expiry).await.unwrap();
    let parent = w.org.enable_all_features(&p, expiry).await.unwrap();
    let late = expiry + Duration::days(90);
    assert_err!(
        w.org
            .enable_all_features(&p, late - Duration::seconds(1))
            .await,
        OrgError::AllFeaturesMigrationPending { .. }
    );
    assert_eq!(
        w.state_at(&p, &parent.id, late).await,
        HandshakeState::Expired
    );
    assert!(
        w.org
            .handshakes_for(&b, late)
            .await
            .unwrap()
            .iter()
            .filter(|h| h.kind == HandshakeKind::ApproveAllFeatures)
            .all(|h| h.state == HandshakeState::Expired)
    );
    let fresh = w.org.enable_all_features(&p, late).await.unwrap();
    assert_eq!(fresh.state, HandshakeState::Requested);
    assert_eq!(
        w.org.sweep_expired(late).await.unwrap(),
        2,
        "parent and child"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_accepts_one_wins() {
    let w = World::new();
    let (p, _) = w.management("payer", FeatureSet::ConsolidatedBilling).await;
    for round in 0..5 {
        let b = w.signup(&format!("bravo-{round}")).await;
        let h = w.org.invite(&p, &b, w.t0).await.unwrap();
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let (org, b, id, now) = (w.org.clone(), b.clone(), h.id.clone(), w.at(1));
                tokio::spawn(async move { org.accept(&b, &id, now).await })
            })
            .collect();
        let mut wins = 0;
        let mut already = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(h) => {
                    assert_eq!(h.state, HandshakeState::Accepted);
                    wins += 1;
                }
                Err(OrgError::HandshakeAlreadyInState { .. }) => already += 1,
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!((wins, already), (1, 1), "round {round}");
    }
    // Each account joined exactly once.
    let view = w.org.describe(&p, w.at(2)).await.unwrap();
    assert_eq!(view.members.len(), 5);
    let periods = w
        .org
        .membership_periods(
            &MembershipScope::Organization(view.organization.id.clone()),
            BillingMonth::containing(w.t0).unwrap(),
            BillingMonth::containing(w.t0).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(periods.len(), 6, "five members and the management account");
}

/// Two stores on one file stand for two gateway processes: only the database's own locking
/// (`BEGIN IMMEDIATE`) can keep both from deciding on the same `OPEN` state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_accepting_at_once_one_wins() {
    let w = World::new();
    let (_other_store, other) = open(w.dir.path());
    let (p, _) = w.management("payer", FeatureSet::ConsolidatedBilling).await;
    for round in 0..10 {
        let b = w.signup(&format!("bravo-{round}")).await;
        let h = w.org.invite(&p, &b, w.t0).await.unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let tasks: Vec<_> = [w.org.clone(), other.clone()]
            .into_iter()
            .map(|org| {
                let (b, id, now, barrier) = (b.clone(), h.id.clone(), w.at(1), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    org.accept(&b, &id, now).await
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(match task.await.unwrap() {
                Ok(_) => "won",
                Err(OrgError::HandshakeAlreadyInState { .. }) => "already",
                Err(e) => panic!("round {round}: unexpected {e:?}"),
            });
        }
        outcomes.sort_unstable();
        assert_eq!(outcomes, vec!["already", "won"], "round {round}");
    }
}

#[tokio::test]
async fn state_survives_reopening_the_store() {
    let w = World::new();
    let (p, org) = w.management("payer", FeatureSet::ConsolidatedBilling).await;
    let b = w.signup("bravo").await;
    let c = w.signup("charlie").await;
    w.join(&p, &b).await;
    let pending = w.org.invite(&p, &c, w.at(5)).await.unwrap();
    let before = w.org.describe(&p, w.at(6)).await.unwrap();

    let World {
        dir,
        store,
        org: service,
        ..
    } = w;
    drop(service);
    drop(store);
    let (_store, reopened) = open(dir.path());
    let after = reopened
        .describe(&p, w_t0() + Duration::seconds(6))
        .await
        .unwrap();
    assert_eq!(after, before);
    assert_eq!(after.organization.id, org.id);
    assert_eq!(after.handshakes.first().map(|h| &h.id), Some(&pending.id));
    reopened
        .accept(&c, &pending.id, w_t0() + Duration::seconds(7))
        .await
        .unwrap();
    assert_eq!(
        reopened
            .describe(&c, w_t0() + Duration::seconds(8))
            .await
            .unwrap()
            .members
            .len(),
        2
    );
}

fn w_t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_773_144_000, 0).unwrap()
}

#[tokio::test]
async fn the_payer_changes_at_the_exact_join_and_leave_instants() {
    let w = World::new();
    let (p, org) = w.management("payer", FeatureSet::ConsolidatedBilling).await;
    let b = w.signup("bravo").await;
    let ms = Duration::milliseconds(1);
    // Joins on the 10th at 12:00:30.123, leaves on the 20th at 08:00.
    let joined = w.t0 + Duration::seconds(30) + Duration::milliseconds(123);
    let left = w.t0 + Duration::days(9) + Duration::hours(20);
    let h = w.org.invite(&p, &b, w.t0).await.unwrap();
    w.org.accept(&b, &h.id, joined).await.unwrap();
    w.org.leave(&b, left).await.unwrap();

    let standalone = Attribution {
        payer: b.clone(),
        organization: None,
    };
    let member = Attribution {
        payer: p.clone(),
        organization: Some(org.id.clone()),
    };
    assert_eq!(w.org.payer_at(&b, joined - ms).await.unwrap(), standalone);
    assert_eq!(w.org.payer_at(&b, joined).await.unwrap(), member);
    assert_eq!(w.org.payer_at(&b, left - ms).await.unwrap(), member);
    assert_eq!(w.org.payer_at(&b, left).await.unwrap(), standalone);
    // The management account pays for itself, inside its organization.
    assert_eq!(
        w.org.payer_at(&p, joined).await.unwrap(),
        Attribution {
            payer: p.clone(),
            organization: Some(org.id.clone()),
        }
    );
    assert_eq!(
        w.org.payer_at(&p, w.t0 - ms).await.unwrap().organization,
        None,
        "before the organization existed"
    );

    // The month's periods say the same, for the organization and for the account.
    let march = BillingMonth::new(2026, 3).unwrap();
    let periods = w
        .org
        .membership_periods(&MembershipScope::Organization(org.id.clone()), march, march)
        .await
        .unwrap();
    assert_eq!(periods.len(), 2);
    assert_eq!(periods[0].role, MembershipRole::Management);
    assert_eq!((periods[0].from, periods[0].until), (w.t0, None));
    assert_eq!(periods[1].account_id, b);
    assert_eq!(
        periods[1].role,
        MembershipRole::Member(JoinedMethod::Invited)
    );
    assert_eq!((periods[1].from, periods[1].until), (joined, Some(left)));
    assert!(periods[1].contains(joined) && !periods[1].contains(left));

    let own = w
        .org
        .membership_periods(&MembershipScope::Account(b.clone()), march, march)
        .await
        .unwrap();
    assert_eq!(own, vec![periods[1].clone()]);
    // April: B is outside; only the management account's open period overlaps.
    let april = BillingMonth::new(2026, 4).unwrap();
    assert!(
        w.org
            .membership_periods(&MembershipScope::Account(b.clone()), april, april)
            .await
            .unwrap()
            .is_empty()
    );
    let feb = BillingMonth::new(2026, 2).unwrap();
    assert!(
        w.org
            .membership_periods(&MembershipScope::Organization(org.id.clone()), feb, feb)
            .await
            .unwrap()
            .is_empty()
    );

    // Rejoining opens a second period; the first is kept.
    let h = w.org.invite(&p, &b, left).await.unwrap();
    let rejoined = left + Duration::days(2);
    w.org.accept(&b, &h.id, rejoined).await.unwrap();
    assert_eq!(
        w.org.payer_at(&b, left + Duration::days(1)).await.unwrap(),
        standalone
    );
    assert_eq!(w.org.payer_at(&b, rejoined).await.unwrap(), member);
    assert_eq!(
        w.org
            .membership_periods(&MembershipScope::Account(b.clone()), march, april)
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn removing_the_decliner_unblocks_the_migration() {
    let w = World::new();
    let (p, _) = w.management("payer", FeatureSet::ConsolidatedBilling).await;
    let b = w.signup("bravo").await;
    let c = w.signup("charlie").await;
    let d = w.signup("delta").await;
    w.join(&p, &b).await;
    w.join(&p, &c).await;
    w.join(&p, &d).await;

    let parent = w.org.enable_all_features(&p, w.at(10)).await.unwrap();
    let child_of = |account: &AccountId| {
        let account = account.clone();
        let org = w.org.clone();
        let now = w.at(11);
        async move {
            org.handshakes_for(&account, now)
                .await
                .unwrap()
                .into_iter()
                .find(|h| h.kind == HandshakeKind::ApproveAllFeatures)
                .unwrap()
        }
    };
    let (cb, cc, cd) = (child_of(&b).await, child_of(&c).await, child_of(&d).await);

    // The management account cannot answer for a member, nor cancel one approval.
    assert_err!(
        w.org.accept(&p, &cb.id, w.at(12)).await,
        OrgError::AccessDenied { .. }
    );
    assert_err!(
        w.org.cancel(&p, &cb.id, w.at(12)).await,
        OrgError::AccessDenied { .. }
    );

    w.org.decline(&b, &cb.id, w.at(20)).await.unwrap();
    w.org.accept(&c, &cc.id, w.at(21)).await.unwrap();
    assert_eq!(w.state(&p, &parent.id).await, HandshakeState::Requested);
    assert_err!(
        w.org.accept(&p, &parent.id, w.at(22)).await,
        OrgError::HandshakeNotComplete { .. }
    );
    // A declined approval cannot be taken back.
    assert_err!(
        w.org.accept(&b, &cb.id, w.at(23)).await,
        OrgError::InvalidHandshakeTransition {
            state: HandshakeState::Declined,
            ..
        }
    );
    // No invitations while it is pending.
    let e = w.signup("echo").await;
    assert_err!(
        w.org.invite(&p, &e, w.at(24)).await,
        OrgError::InviteDisabledDuringEnableAllFeatures { handshake } if handshake == parent.id
    );
    // A created account needs no approval and does not hold it up.
    w.org
        .create_account(&p, new_account("foxtrot"), w.at(25))
        .await
        .unwrap();

    // D leaves with its approval open: it is canceled, but B still blocks.
    w.org.leave(&d, w.at(30)).await.unwrap();
    assert_eq!(w.state(&d, &cd.id).await, HandshakeState::Canceled);
    assert_eq!(w.state(&p, &parent.id).await, HandshakeState::Requested);

    w.org.remove_account(&p, &b, w.at(40)).await.unwrap();
    assert_eq!(w.state(&p, &parent.id).await, HandshakeState::Open);
    w.org.accept(&p, &parent.id, w.at(50)).await.unwrap();
    let view = w.org.describe(&c, w.at(51)).await.unwrap();
    assert_eq!(view.organization.feature_set, FeatureSet::AllFeatures);
    let ids: Vec<_> = view.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(ids, vec!["charlie", "foxtrot"]);
}

#[tokio::test]
async fn enabling_all_features_without_invited_members_opens_at_once() {
    let w = World::new();
    let (p, _) = w.management("payer", FeatureSet::ConsolidatedBilling).await;
    w.org
        .create_account(&p, new_account("alpha"), w.t0)
        .await
        .unwrap();
    let b = w.signup("bravo").await;
    let invite = w.org.invite(&p, &b, w.t0).await.unwrap();

    let parent = w.org.enable_all_features(&p, w.at(1)).await.unwrap();
    assert_eq!(parent.state, HandshakeState::Open);
    // The open invitation was canceled.
    assert_eq!(w.state(&b, &invite.id).await, HandshakeState::Canceled);
    assert_err!(
        w.org.enable_all_features(&p, w.at(2)).await,
        OrgError::AllFeaturesMigrationPending { handshake } if handshake == parent.id
    );
    // Canceling the request ends it; a new one may start.
    w.org.cancel(&p, &parent.id, w.at(3)).await.unwrap();
    assert_eq!(
        w.org
            .describe(&p, w.at(3))
            .await
            .unwrap()
            .organization
            .feature_set,
        FeatureSet::ConsolidatedBilling
    );
    w.org.invite(&p, &b, w.at(4)).await.unwrap();
    let again = w.org.enable_all_features(&p, w.at(5)).await.unwrap();
    w.org.accept(&p, &again.id, w.at(6)).await.unwrap();
    assert_eq!(
        w.org
            .describe(&p, w.at(7))
            .await
            .unwrap()
            .organization
            .feature_set,
        FeatureSet::AllFeatures
    );
}

#[tokio::test]
async fn canceling_the_parent_cancels_open_approvals() {
    let w = World::new();
    let (p, _) = w.management("payer", FeatureSet::ConsolidatedBilling).await;
    let b = w.signup("bravo").await;
    w.join(&p, &b).await;
    let parent = w.org.enable_all_features(&p, w.at(1)).await.unwrap();
    let canceled = w.org.decline(&p, &parent.id, w.at(2)).await.unwrap();
    assert_eq!(canceled.state, HandshakeState::Declined);
    let states: Vec<_> = w
        .org
        .handshakes_for(&b, w.at(3))
        .await
        .unwrap()
        .into_iter()
        .filter(|h| h.kind == HandshakeKind::ApproveAllFeatures)
        .map(|h| h.state)
        .collect();
    assert_eq!(states, vec![HandshakeState::Canceled]);
}

#[tokio::test]
async fn accepting_after_joining_elsewhere_fails_cleanly() {
    let w = World::new();
    let (p, _) = w.management("payer", FeatureSet::ConsolidatedBilling).await;
    let (q, _) = w
        .management("other-payer", FeatureSet::ConsolidatedBilling)
        .await;
    let b = w.signup("bravo").await;
    let from_p = w.org.invite(&p, &b, w.t0).await.unwrap();
    let from_q = w.org.invite(&q, &b, w.t0).await.unwrap();
    w.org.accept(&b, &from_p.id, w.at(1)).await.unwrap();
    assert_err!(
        w.org.accept(&b, &from_q.id, w.at(2)).await,
        OrgError::AccountAlreadyInOrganization { .. }
    );
    // Nothing changed: still open, B still only in P's organization.
    assert_eq!(w.state(&b, &from_q.id).await, HandshakeState::Open);
    assert_eq!(
        w.org
            .describe(&b, w.at(3))
            .await
            .unwrap()
            .organization
            .management_account_id,
        p
    );
    // Once B leaves, the other invitation can still be accepted.
    w.org.leave(&b, w.at(4)).await.unwrap();
    w.org.accept(&b, &from_q.id, w.at(5)).await.unwrap();

    // An account that created its own organization meanwhile cannot accept either.
    let c = w.signup("charlie").await;
    let to_c = w.org.invite(&p, &c, w.at(6)).await.unwrap();
    w.org
        .create_organization(&c, None, true, w.at(7))
        .await
        .unwrap();
    assert_err!(
        w.org.accept(&c, &to_c.id, w.at(8)).await,
        OrgError::AccountAlreadyInOrganization { .. }
    );
}

#[tokio::test]
async fn leaving_removing_and_deleting() {
    let w = World::new();
    let (p, org) = w.management("payer", FeatureSet::AllFeatures).await;
    let b = w.signup("bravo").await;
    let c = w.signup("charlie").await;
    let outsider = w.signup("outsider").await;
    w.join(&p, &b).await;
    w.join(&p, &c).await;

    assert_err!(
        w.org.leave(&p, w.at(1)).await,
        OrgError::ManagementAccountCannotLeave { .. }
    );
    assert_err!(
        w.org.remove_account(&p, &p, w.at(1)).await,
        OrgError::ManagementAccountCannotLeave { .. }
    );
    assert_err!(
        w.org.remove_account(&p, &outsider, w.at(1)).await,
        OrgError::NotAMember { .. }
    );
    assert_err!(
        w.org
            .remove_account(&p, &AccountId::generate(), w.at(1))
            .await,
        OrgError::NoSuchAccount { .. }
    );
    assert_err!(
        w.org.delete_organization(&p, w.at(1)).await,
        OrgError::OrganizationNotEmpty { members: 2, .. }
    );

    w.org.leave(&b, w.at(2)).await.unwrap();
    assert_err!(
        w.org.describe(&b, w.at(3)).await,
        OrgError::NotInOrganization { .. }
    );
    w.org.remove_account(&p, &c, w.at(4)).await.unwrap();
    assert_err!(
        w.org.remove_account(&p, &c, w.at(5)).await,
        OrgError::NotAMember { .. }
    );

    let pending = w.org.invite(&p, &outsider, w.at(6)).await.unwrap();
    w.org.delete_organization(&p, w.at(7)).await.unwrap();
    assert_err!(
        w.org.describe(&p, w.at(8)).await,
        OrgError::NotInOrganization { .. }
    );
    assert_eq!(
        w.state(&outsider, &pending.id).await,
        HandshakeState::Canceled
    );
    // History stays: B was billed to P while it was a member.
    assert_eq!(
        w.org.payer_at(&b, w.at(1)).await.unwrap().organization,
        Some(org.id.clone())
    );
    assert_eq!(
        w.org.payer_at(&p, w.at(8)).await.unwrap().organization,
        None
    );
    // And P may start over.
    let next = w
        .org
        .create_organization(&p, None, true, w.at(9))
        .await
        .unwrap();
    assert_ne!(next.id, org.id);
}

#[tokio::test]
async fn members_see_every_member_but_only_their_own_open_handshakes() {
    let w = World::new();
    let (p, _) = w.management("payer", FeatureSet::ConsolidatedBilling).await;
    let b = w.signup("bravo").await;
    let c = w.signup("charlie").await;
    let d = w.signup("delta").await;
    w.join(&p, &b).await;
    w.join(&p, &c).await;

    // An invitation to an outside account: the management account's business only.
    w.org.invite(&p, &d, w.at(1)).await.unwrap();
    let full = w.org.describe(&p, w.at(2)).await.unwrap();
    assert_eq!(full.handshakes.len(), 1);
    let seen_by_b = w.org.describe(&b, w.at(2)).await.unwrap();
    assert_eq!(seen_by_b.members, full.members, "members see every member");
    assert!(
        seen_by_b.handshakes.is_empty(),
        "{:?}",
        seen_by_b.handshakes
    );

    // A migration: the parent and one approval each for B and C; B sees its own only.
    let parent = w.org.enable_all_features(&p, w.at(3)).await.unwrap();
    let full = w.org.describe(&p, w.at(4)).await.unwrap();
    assert_eq!(full.handshakes.len(), 3, "{:?}", full.handshakes);
    let seen_by_b = w.org.describe(&b, w.at(4)).await.unwrap();
    let own: Vec<_> = seen_by_b
        .handshakes
        .iter()
        .map(|h| (h.kind, h.to_account_id.clone(), h.parent_id.clone()))
        .collect();
    assert_eq!(
        own,
        vec![(
            HandshakeKind::ApproveAllFeatures,
            b.clone(),
            Some(parent.id)
        )]
    );
}
