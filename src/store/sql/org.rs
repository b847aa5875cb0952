//! `OrgStore` on SQL: organizations, membership history and handshakes (schema: migration 2).
//!
//! An operation's transaction is [`Behavior::Immediate`]: it takes the database's write lock
//! before its first read (SQLite `BEGIN IMMEDIATE`; PostgreSQL an advisory lock every instance
//! shares), so two operations, in this process or in another instance, never decide on the same
//! stale state: two instances accepting one handshake cannot both win. This file holds no rules; they are in `org::service`.

use std::any::Any;

use crate::db::{Behavior, DbError, OptionalExtension, Row, Tx, params};
use chrono::{DateTime, Utc};

use crate::authz::FeatureSet;
use crate::ids::{AccountId, HandshakeId, OrgId};
use crate::org::OrgError;
use crate::org::model::{
    Attribution, Handshake, HandshakeKind, HandshakeState, JoinedMethod, Member, MembershipPeriod,
    MembershipRole, MembershipScope, Organization,
};
use crate::org::store::{HandshakeFilter, OrgStore, OrgTx, TxBody};
use crate::store::StoreError;
use crate::store::accounts::NewAccount;

use super::accounts::insert_account;
use super::{SqlStore, from_ms, to_ms};

/// [`OrgTx`] over one open transaction.
struct SqlOrgTx<'a> {
    tx: &'a Tx<'a>,
}

const HANDSHAKE_COLUMNS: &str =
    "id, kind, state, org_id, from_account_id, to_account_id, parent_id, created_at, expires_at";

/// An instant later than any stored one, for open-ended periods in SQL comparisons.
const FOREVER_MS: i64 = i64::MAX;

fn corrupt(what: &str) -> DbError {
    DbError::corrupt(what)
}

fn account_col(row: &Row<'_>, i: usize, what: &str) -> Result<AccountId, DbError> {
    AccountId::parse(&row.get::<String>(i)?).map_err(|_| corrupt(what))
}

fn org_col(row: &Row<'_>, i: usize) -> Result<OrgId, DbError> {
    OrgId::parse(&row.get::<String>(i)?).map_err(|_| corrupt("org_id"))
}

fn handshake_from_row(row: &Row<'_>) -> Result<Handshake, DbError> {
    let id: String = row.get(0)?;
    let kind: String = row.get(1)?;
    let state: String = row.get(2)?;
    let to: Option<String> = row.get(5)?;
    let parent: Option<String> = row.get(6)?;
    Ok(Handshake {
        id: HandshakeId::parse(&id).map_err(|_| corrupt("handshake id"))?,
        kind: HandshakeKind::parse(&kind).ok_or_else(|| corrupt("handshake kind"))?,
        state: HandshakeState::parse(&state).ok_or_else(|| corrupt("handshake state"))?,
        organization_id: org_col(row, 3)?,
        from_account_id: account_col(row, 4, "from_account_id")?,
        to_account_id: to
            .and_then(|s| AccountId::parse(&s).ok())
            .ok_or_else(|| corrupt("to_account_id"))?,
        parent_id: parent
            .map(|p| HandshakeId::parse(&p).map_err(|_| corrupt("parent_id")))
            .transpose()?,
        created_at: from_ms(row.get(7)?),
        expires_at: from_ms(row.get(8)?),
    })
}

fn organization_from_row(row: &Row<'_>) -> Result<Organization, DbError> {
    let feature_set: String = row.get(2)?;
    Ok(Organization {
        id: org_col(row, 0)?,
        management_account_id: account_col(row, 1, "management_account_id")?,
        feature_set: FeatureSet::parse(&feature_set).ok_or_else(|| corrupt("feature_set"))?,
        created_at: from_ms(row.get(3)?),
    })
}

fn member_from_row(row: &Row<'_>) -> Result<Member, DbError> {
    let method: String = row.get(2)?;
    Ok(Member {
        account_id: account_col(row, 0, "account_id")?,
        name: row.get(1)?,
        joined_method: JoinedMethod::parse(&method).ok_or_else(|| corrupt("joined_method"))?,
        joined_at: from_ms(row.get(3)?),
    })
}

/// Columns: org_id, management_account_id, account_id, joined_method (NULL for the management
/// account), from, until.
fn period_from_row(row: &Row<'_>) -> Result<MembershipPeriod, DbError> {
    let method: Option<String> = row.get(3)?;
    let role = match method {
        None => MembershipRole::Management,
        Some(m) => {
            MembershipRole::Member(JoinedMethod::parse(&m).ok_or_else(|| corrupt("joined_method"))?)
        }
    };
    Ok(MembershipPeriod {
        organization_id: org_col(row, 0)?,
        management_account_id: account_col(row, 1, "management_account_id")?,
        account_id: account_col(row, 2, "account_id")?,
        role,
        from: from_ms(row.get(4)?),
        until: row.get::<Option<i64>>(5)?.map(from_ms),
    })
}

// === impl SqlOrgTx ===

impl OrgTx for SqlOrgTx<'_> {
    fn account_name(&self, account: &AccountId) -> Result<Option<String>, StoreError> {
        Ok(self
            .tx
            .query_row(
                "SELECT name FROM accounts WHERE id = ?1",
                params![account.as_str()],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn insert_account(
        &self,
        new: &NewAccount,
        now: DateTime<Utc>,
    ) -> Result<AccountId, StoreError> {
        insert_account(self.tx, new, now)
    }

    fn current_organization(
        &self,
        account: &AccountId,
    ) -> Result<Option<Organization>, StoreError> {
        Ok(self
            .tx
            .query_row(
                "SELECT o.id, o.management_account_id, o.feature_set, o.created_at
                 FROM organizations o
                 WHERE o.deleted_at IS NULL AND (o.management_account_id = ?1 OR o.id IN
                    (SELECT org_id FROM memberships WHERE account_id = ?1 AND left_at IS NULL))
                 LIMIT 1",
                params![account.as_str()],
                organization_from_row,
            )
            .optional()?)
    }

    fn insert_organization(&self, org: &Organization) -> Result<(), StoreError> {
        self.tx.execute(
            "INSERT INTO organizations (id, management_account_id, feature_set, created_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![
                org.id.as_str(),
                org.management_account_id.as_str(),
                org.feature_set.as_str(),
                to_ms(org.created_at)
            ],
        )?;
        Ok(())
    }

    fn set_feature_set(&self, org: &OrgId, feature_set: FeatureSet) -> Result<(), StoreError> {
        self.tx.execute(
            "UPDATE organizations SET feature_set = ?2 WHERE id = ?1",
            params![org.as_str(), feature_set.as_str()],
        )?;
        Ok(())
    }

    fn delete_organization(&self, org: &OrgId, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.tx.execute(
            "UPDATE organizations SET deleted_at = ?2 WHERE id = ?1 AND deleted_at IS NULL",
            params![org.as_str(), to_ms(now)],
        )?;
        Ok(())
    }

    fn members(&self, org: &OrgId) -> Result<Vec<Member>, StoreError> {
        let members = self.tx.query_map(
            "SELECT m.account_id, a.name, m.joined_method, m.joined_at
             FROM memberships m JOIN accounts a ON a.id = m.account_id
             WHERE m.org_id = ?1 AND m.left_at IS NULL
             ORDER BY m.joined_at, m.account_id",
            params![org.as_str()],
            member_from_row,
        )?;
        Ok(members)
    }

    fn join(
        &self,
        org: &OrgId,
        account: &AccountId,
        method: JoinedMethod,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.tx
            .execute(
                "INSERT INTO memberships (org_id, account_id, joined_method, joined_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![org.as_str(), account.as_str(), method.as_str(), to_ms(at)],
            )
            .map_err(|e| match e {
                DbError::Constraint(_) => {
                    StoreError::Conflict(format!("account {account} is already a member"))
                }
                e => e.into(),
            })?;
        Ok(())
    }

    fn leave(
        &self,
        org: &OrgId,
        account: &AccountId,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let updated = self.tx.execute(
            "UPDATE memberships SET left_at = ?3
             WHERE org_id = ?1 AND account_id = ?2 AND left_at IS NULL",
            params![org.as_str(), account.as_str(), to_ms(at)],
        )?;
        Ok(updated > 0)
    }

    fn handshake(&self, id: &HandshakeId) -> Result<Option<Handshake>, StoreError> {
        Ok(self
            .tx
            .query_row(
                &format!("SELECT {HANDSHAKE_COLUMNS} FROM handshakes WHERE id = ?1"),
                params![id.as_str()],
                handshake_from_row,
            )
            .optional()?)
    }

    fn handshakes(&self, filter: &HandshakeFilter) -> Result<Vec<Handshake>, StoreError> {
        let (condition, key) = match filter {
            HandshakeFilter::Organization(org) => ("org_id = ?1", org.as_str()),
            HandshakeFilter::Party(account) => (
                "(from_account_id = ?1 OR to_account_id = ?1)",
                account.as_str(),
            ),
            HandshakeFilter::Children(parent) => ("parent_id = ?1", parent.as_str()),
        };
        let handshakes = self.tx.query_map(
            &format!(
                "SELECT {HANDSHAKE_COLUMNS} FROM handshakes WHERE {condition}
             ORDER BY created_at DESC, id"
            ),
            params![key],
            handshake_from_row,
        )?;
        Ok(handshakes)
    }

    fn insert_handshake(&self, h: &Handshake, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.tx.execute(
            "INSERT INTO handshakes (id, kind, state, org_id, from_account_id, to_account_id,
                parent_id, created_at, expires_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                h.id.as_str(),
                h.kind.as_str(),
                h.state.as_str(),
                h.organization_id.as_str(),
                h.from_account_id.as_str(),
                h.to_account_id.as_str(),
                h.parent_id.as_ref().map(HandshakeId::as_str),
                to_ms(h.created_at),
                to_ms(h.expires_at),
                to_ms(now)
            ],
        )?;
        Ok(())
    }

    fn set_handshake_state(
        &self,
        id: &HandshakeId,
        state: HandshakeState,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.tx.execute(
            "UPDATE handshakes SET state = ?2, updated_at = ?3 WHERE id = ?1",
            params![id.as_str(), state.as_str(), to_ms(now)],
        )?;
        Ok(())
    }
}

// === impl SqlStore ===

#[async_trait::async_trait]
impl OrgStore for SqlStore {
    async fn org_transaction(&self, body: TxBody) -> Result<Box<dyn Any + Send>, OrgError> {
        self.call(move |conn| {
            let tx = conn.transaction(Behavior::Immediate)?;
            match body(&SqlOrgTx { tx: &tx }) {
                Ok(out) => {
                    tx.commit()?;
                    Ok(Ok(out))
                }
                // Dropping `tx` rolls back.
                Err(e) => Ok(Err(e)),
            }
        })
        .await?
    }

    async fn sweep_expired(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        self.call(move |conn| {
            let now = to_ms(now);
            Ok(conn.execute(
                "UPDATE handshakes SET state = 'EXPIRED', updated_at = ?1
                 WHERE state IN ('OPEN', 'REQUESTED') AND expires_at <= ?1",
                params![now],
            )?)
        })
        .await
    }

    async fn payer_at(
        &self,
        account: &AccountId,
        at: DateTime<Utc>,
    ) -> Result<Attribution, StoreError> {
        let account = account.clone();
        self.call(move |conn| {
            let tx = conn.transaction(Behavior::Deferred)?;
            let at = to_ms(at);
            // A member pays through its management account ...
            let member: Option<(String, String)> = tx
                .query_row(
                    "SELECT o.id, o.management_account_id
                     FROM memberships m JOIN organizations o ON o.id = m.org_id
                     WHERE m.account_id = ?1 AND m.joined_at <= ?2
                       AND COALESCE(m.left_at, ?3) > ?2
                     ORDER BY m.joined_at DESC LIMIT 1",
                    params![account.as_str(), at, FOREVER_MS],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((org, management)) = member {
                let corrupt =
                    |what: &str| StoreError::Corrupt(format!("organization {org}: bad {what}"));
                return Ok(Attribution {
                    payer: AccountId::parse(&management)
                        .map_err(|_| corrupt("management account"))?,
                    organization: Some(OrgId::parse(&org).map_err(|_| corrupt("id"))?),
                });
            }
            // ... a management account pays for itself, inside its organization's tiers ...
            let managed: Option<String> = tx
                .query_row(
                    "SELECT id FROM organizations
                     WHERE management_account_id = ?1 AND created_at <= ?2
                       AND COALESCE(deleted_at, ?3) > ?2
                     ORDER BY created_at DESC LIMIT 1",
                    params![account.as_str(), at, FOREVER_MS],
                    |r| r.get(0),
                )
                .optional()?;
            let organization = managed
                .map(|o| {
                    OrgId::parse(&o)
                        .map_err(|_| StoreError::Corrupt(format!("organization {o}: bad id")))
                })
                .transpose()?;
            // ... and a standalone account for itself alone.
            Ok(Attribution {
                payer: account,
                organization,
            })
        })
        .await
    }

    async fn membership_periods(
        &self,
        scope: &MembershipScope,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<MembershipPeriod>, StoreError> {
        let scope = scope.clone();
        self.call(move |conn| {
            let (member_cond, management_cond, key) = match &scope {
                MembershipScope::Organization(org) => ("m.org_id = ?1", "o.id = ?1", org.as_str()),
                MembershipScope::Account(account) => (
                    "m.account_id = ?1",
                    "o.management_account_id = ?1",
                    account.as_str(),
                ),
            };
            let sql = format!(
                "SELECT * FROM (
                    SELECT o.id, o.management_account_id, m.account_id, m.joined_method,
                           m.joined_at AS start, m.left_at AS until
                    FROM memberships m JOIN organizations o ON o.id = m.org_id
                    WHERE {member_cond}
                    UNION ALL
                    SELECT o.id, o.management_account_id, o.management_account_id, NULL,
                           o.created_at AS start, o.deleted_at AS until
                    FROM organizations o
                    WHERE {management_cond}) AS periods
                 WHERE start < ?2 AND COALESCE(until, ?4) > ?3
                 ORDER BY start, 3"
            );
            let tx = conn.transaction(Behavior::Deferred)?;
            let periods = {
                tx.query_map(
                    &sql,
                    params![key, to_ms(end), to_ms(start), FOREVER_MS],
                    period_from_row,
                )?
            };
            Ok(periods)
        })
        .await
    }
}
