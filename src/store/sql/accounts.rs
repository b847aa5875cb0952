//! `AccountStore` on SQL (either database). Each method is one transaction on the blocking pool.

use crate::db::{Behavior, Conn, DbError, OptionalExtension, Row, Tx, params};
use chrono::{DateTime, Utc};

use crate::auth::sealing::SecretSealer;
use crate::auth::{
    AccessKeyId, AccessKeySecretHash, ClientAddress, LoginAttempts, LoginSubject, PasswordHash,
    PasswordPolicyParams,
};
use crate::authz::{FeatureSet, OrgMembership};
use crate::ids::{AccountId, GroupName, OrgId, UserName};
use crate::store::StoreError;
use crate::store::accounts::{
    AccessKeyRecord, AccountRecord, AccountStore, GroupMemberChange, GroupRecord, MfaState,
    NewAccount, PrincipalRecord, RecordedFailure, UserRecord,
};

use super::{SqlStore, from_ms, to_ms};

/// `failed_logins` and `locked_until` are no longer read: login failures live in
/// `login_failures` (see `login.rs`), keyed by what a login names, whether the user exists or not.
const USER_COLUMNS: &str =
    "account_id, name, is_owner, password_hash, password_changed_at, created_at,
     failed_logins, locked_until, mfa_secret, mfa_enabled, mfa_last_step, tokens_valid_after";

/// Inserts an account with a fresh id and its owner, inside the caller's transaction (so
/// creating a member account can join the organization in the same transaction).
pub fn insert_account(
    tx: &Tx<'_>,
    new: &NewAccount,
    now: DateTime<Utc>,
) -> Result<AccountId, StoreError> {
    // A collision among 9*10^11 ids is rare; try a few before giving up.
    for _ in 0..16 {
        let id = AccountId::generate();
        let inserted = tx.execute(
            "INSERT INTO accounts (id, name, email, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO NOTHING",
            params![id.as_str(), new.name, new.email, to_ms(now)],
        )?;
        if inserted == 1 {
            insert_user(tx, &id, &new.owner, &new.owner_password, true, now)?;
            return Ok(id);
        }
    }
    Err(StoreError::Unavailable(
        "could not find an unused account id".into(),
    ))
}

fn insert_user(
    tx: &Tx<'_>,
    account: &AccountId,
    user: &UserName,
    password: &PasswordHash,
    is_owner: bool,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let inserted = tx.execute(
        "INSERT INTO users (account_id, name_key, name, is_owner, password_hash, password_changed_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
         ON CONFLICT (account_id, name_key) DO NOTHING",
        params![account.as_str(), user.key(), user.as_str(), is_owner, password.as_str(), to_ms(now)],
    )?;
    if inserted == 0 {
        return Err(StoreError::Conflict(format!(
            "user `{user}` already exists in account {account}"
        )));
    }
    Ok(())
}

/// A user row; its TOTP secret opened with `sealer` (see `auth::sealing`).
fn user_from_row(row: &Row<'_>, sealer: Option<&SecretSealer>) -> Result<UserRecord, DbError> {
    let account: String = row.get(0)?;
    let name: String = row.get(1)?;
    let hash: String = row.get(3)?;
    let secret: Option<String> = row.get(8)?;
    let secret = match (secret, sealer) {
        (Some(stored), Some(sealer)) => Some(
            sealer
                .open_value(&stored, &account, &name.to_ascii_lowercase())
                .map_err(|e| DbError::corrupt(format!("mfa_secret: {e}")))?,
        ),
        (Some(stored), None) if SecretSealer::is_sealed(&stored) => {
            return Err(DbError::corrupt(
                "mfa_secret is sealed and this store has no key to open it",
            ));
        }
        (other, _) => other,
    };
    let enabled: bool = row.get(9)?;
    let last_step: Option<i64> = row.get(10)?;
    let mfa = match (secret, enabled) {
        (Some(secret), true) => MfaState::On {
            secret,
            last_step: last_step.map(|s| s as u64),
        },
        (Some(secret), false) => MfaState::Pending { secret },
        (None, _) => MfaState::Off,
    };
    let corrupt = |what: &str| DbError::corrupt(what);
    Ok(UserRecord {
        account_id: AccountId::parse(&account).map_err(|_| corrupt("account_id"))?,
        name: UserName::parse(&name).map_err(|_| corrupt("name"))?,
        is_owner: row.get(2)?,
        password_hash: PasswordHash::from_phc(hash).map_err(|_| corrupt("password_hash"))?,
        password_changed_at: from_ms(row.get(4)?),
        created_at: from_ms(row.get(5)?),
        mfa,
        tokens_valid_after: from_ms(row.get(11)?),
    })
}

fn access_key_from_row(row: &Row<'_>) -> Result<AccessKeyRecord, DbError> {
    let corrupt = |what: &str| DbError::corrupt(what);
    let id: String = row.get(0)?;
    let account: String = row.get(1)?;
    let user: String = row.get(2)?;
    let hash: String = row.get(3)?;
    Ok(AccessKeyRecord {
        id: AccessKeyId::parse(&id).map_err(|_| corrupt("id"))?,
        account_id: AccountId::parse(&account).map_err(|_| corrupt("account_id"))?,
        user: UserName::parse(&user).map_err(|_| corrupt("user"))?,
        secret_hash: AccessKeySecretHash::from_hex(&hash).map_err(|_| corrupt("secret_hash"))?,
        created_at: from_ms(row.get(4)?),
    })
}

/// The organization an account is in now: as a current member, or as a live organization's
/// management account.
pub fn current_organization(
    conn: &Conn,
    account: &AccountId,
) -> Result<Option<OrgMembership>, StoreError> {
    let row: Option<(String, String, String)> = conn
        .query_row(
            "SELECT o.id, o.feature_set, o.management_account_id FROM organizations o
             WHERE o.deleted_at IS NULL AND (o.management_account_id = ?1 OR o.id IN
                (SELECT org_id FROM memberships WHERE account_id = ?1 AND left_at IS NULL))
             LIMIT 1",
            params![account.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((id, feature_set, management)) = row else {
        return Ok(None);
    };
    let corrupt = |what: &str| StoreError::Corrupt(format!("organization {id}: bad {what}"));
    Ok(Some(OrgMembership {
        id: OrgId::parse(&id).map_err(|_| corrupt("id"))?,
        feature_set: FeatureSet::parse(&feature_set).ok_or_else(|| corrupt("feature set"))?,
        management_account: AccountId::parse(&management)
            .map_err(|_| corrupt("management account"))?,
    }))
}

/// Whether the group and the user exist, read inside a change's transaction.
fn group_and_user(
    tx: &Tx<'_>,
    account: &AccountId,
    group_key: &str,
    user_key: &str,
) -> Result<Option<GroupMemberChange>, StoreError> {
    let exists = |sql: &str, key: &str| -> Result<bool, StoreError> {
        Ok(tx
            .query_row(sql, params![account.as_str(), key], |_| Ok(()))
            .optional()?
            .is_some())
    };
    if !exists(
        "SELECT 1 FROM groups WHERE account_id = ?1 AND name_key = ?2",
        group_key,
    )? {
        return Ok(Some(GroupMemberChange::NoSuchGroup));
    }
    if !exists(
        "SELECT 1 FROM users WHERE account_id = ?1 AND name_key = ?2",
        user_key,
    )? {
        return Ok(Some(GroupMemberChange::NoSuchUser));
    }
    Ok(None)
}

/// Adds or removes one group membership with `write` (which returns the rows it changed), after
/// checking that both the group and the user exist, in one transaction.
fn change_group_member(
    conn: &mut Conn,
    account: &AccountId,
    group_key: &str,
    user_key: &str,
    write: impl FnOnce(&Tx<'_>) -> Result<usize, DbError>,
) -> Result<GroupMemberChange, StoreError> {
    let tx = conn.transaction(Behavior::Immediate)?;
    if let Some(missing) = group_and_user(&tx, account, group_key, user_key)? {
        return Ok(missing);
    }
    let changed = write(&tx)?;
    tx.commit()?;
    Ok(if changed == 1 {
        GroupMemberChange::Changed
    } else {
        GroupMemberChange::Unchanged
    })
}

#[async_trait::async_trait]
impl AccountStore for SqlStore {
    async fn create_account(
        &self,
        new: NewAccount,
        now: DateTime<Utc>,
    ) -> Result<AccountId, StoreError> {
        self.call(move |conn| {
            let tx = conn.transaction(Behavior::Deferred)?;
            let id = insert_account(&tx, &new, now)?;
            tx.commit()?;
            Ok(id)
        })
        .await
    }

    async fn account(&self, id: &AccountId) -> Result<Option<AccountRecord>, StoreError> {
        let id = id.clone();
        self.call(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT name, email, created_at FROM accounts WHERE id = ?1",
                    params![id.as_str()],
                    |r| {
                        Ok(AccountRecord {
                            id: id.clone(),
                            name: r.get(0)?,
                            email: r.get(1)?,
                            created_at: from_ms(r.get(2)?),
                        })
                    },
                )
                .optional()?)
        })
        .await
    }

    async fn organization_of(
        &self,
        account: &AccountId,
    ) -> Result<Option<OrgMembership>, StoreError> {
        let account = account.clone();
        self.call(move |conn| current_organization(conn, &account))
            .await
    }

    async fn user(
        &self,
        account: &AccountId,
        user: &UserName,
    ) -> Result<Option<UserRecord>, StoreError> {
        let (account, key) = (account.clone(), user.key());
        let sealer = self.sealer();
        self.call(move |conn| {
            Ok(conn
                .query_row(
                    &format!(
                        "SELECT {USER_COLUMNS} FROM users WHERE account_id = ?1 AND name_key = ?2"
                    ),
                    params![account.as_str(), key],
                    |r| user_from_row(r, sealer.as_ref()),
                )
                .optional()?)
        })
        .await
    }

    async fn principal(
        &self,
        account: &AccountId,
        user: &UserName,
        jti: &str,
        access_key: Option<&AccessKeyId>,
        now: DateTime<Utc>,
    ) -> Result<Option<PrincipalRecord>, StoreError> {
        let month = crate::billing::BillingMonth::containing(now)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?
            .to_string();
        let key = (account.as_str().to_owned(), user.key(), jti.to_owned());
        // The caller cache (see `store::sql`): no blocking hop while nothing changed.
        if let Some(spend) = self
            .spend_book()
            .and_then(|b| b.get(account.as_str(), &month))
            && let Some(mut found) = self.cached(|c| c.principals.get(&key).cloned())
        {
            found.month_to_date_spend = spend.as_decimal();
            return Ok(Some(found));
        }
        let store = self.clone();
        let account = account.clone();
        let access_key = access_key.cloned();
        let sealer = self.sealer();
        self.call(move |conn| {
            let generation = store.generation();
            let tx = conn.transaction(Behavior::Deferred)?;
            let found = tx
                .query_row(
                    &format!(
                        "SELECT {USER_COLUMNS}, (SELECT name FROM accounts WHERE id = ?1)
                         FROM users WHERE account_id = ?1 AND name_key = ?2"
                    ),
                    params![account.as_str(), key.1],
                    |r| Ok((user_from_row(r, sealer.as_ref())?, r.get::<String>(12)?)),
                )
                .optional()?;
            let Some((user, account_name)) = found else {
                return Ok(None);
            };
            let groups = {
                let names = tx.query_map(
                    "SELECT g.name FROM group_members m JOIN groups g
                       ON g.account_id = m.account_id AND g.name_key = m.group_key
                     WHERE m.account_id = ?1 AND m.user_key = ?2 ORDER BY g.name_key",
                    params![account.as_str(), key.1],
                    |r| r.get::<String>(0),
                )?;
                names
                    .iter()
                    .filter_map(|n| GroupName::parse(n).ok())
                    .collect()
            };
            let organization = current_organization(&tx, &account)?;
            // The token's own state in one statement: logged out, and (for a token from an
            // access key) whether the key is gone (U8). A deleted key is a changed row, so on
            // SQLite the caller cache is dropped with it; on PostgreSQL this is read per call.
            let (token_revoked, access_key_deleted) = match &access_key {
                None => (
                    tx.query_row(
                        "SELECT 1 FROM revoked_tokens WHERE jti = ?1",
                        params![key.2],
                        |_| Ok(()),
                    )
                    .optional()?
                    .is_some(),
                    false,
                ),
                Some(id) => tx.query_row(
                    "SELECT EXISTS (SELECT 1 FROM revoked_tokens WHERE jti = ?1),
                            EXISTS (SELECT 1 FROM access_keys
                                    WHERE id = ?2 AND account_id = ?3 AND name_key = ?4)",
                    params![key.2, id.as_str(), account.as_str(), key.1],
                    |r| Ok((r.get::<bool>(0)?, !r.get::<bool>(1)?)),
                )?,
            };
            let read_spend = || crate::journal::month_to_date_spend(&tx, &account, now);
            let month_to_date_spend = match store.spend_book() {
                Some(book) => book.get_or_load(account.as_str(), &month, read_spend),
                None => read_spend(),
            }
            .map(|m| m.as_decimal())
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            let record = PrincipalRecord {
                user,
                account_name,
                groups,
                organization,
                token_revoked,
                access_key_deleted,
                month_to_date_spend,
            };
            let cached = PrincipalRecord {
                month_to_date_spend: rust_decimal::Decimal::ZERO,
                ..record.clone()
            };
            store.remember(generation, |c| {
                c.principals.insert(key, cached);
            });
            Ok(Some(record))
        })
        .await
    }

    async fn create_user(
        &self,
        account: &AccountId,
        user: &UserName,
        password: PasswordHash,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (account, user) = (account.clone(), user.clone());
        self.call(move |conn| {
            let tx = conn.transaction(Behavior::Deferred)?;
            insert_user(&tx, &account, &user, &password, false, now)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn login_attempts(
        &self,
        subject: &LoginSubject,
        address: ClientAddress,
        now: DateTime<Utc>,
    ) -> Result<LoginAttempts, StoreError> {
        let subject = subject.clone();
        self.call_uncached(move |conn| super::login::attempts(conn, &subject, address, now))
            .await
    }

    async fn record_login_failure(
        &self,
        subject: &LoginSubject,
        address: ClientAddress,
        now: DateTime<Utc>,
    ) -> Result<RecordedFailure, StoreError> {
        let subject = subject.clone();
        self.call_uncached(move |conn| {
            super::login::record_failure(
                conn,
                &subject,
                address,
                now,
                crate::auth::lockout::TABLE_CAPACITY,
            )
        })
        .await
    }

    async fn record_login_success(
        &self,
        subject: &LoginSubject,
        address: ClientAddress,
        now: DateTime<Utc>,
    ) -> Result<LoginAttempts, StoreError> {
        let subject = subject.clone();
        self.call_uncached(move |conn| super::login::record_success(conn, &subject, address, now))
            .await
    }

    async fn change_password(
        &self,
        account: &AccountId,
        user: &UserName,
        password: PasswordHash,
        now: DateTime<Utc>,
        keep: usize,
    ) -> Result<(), StoreError> {
        let (account, key) = (account.clone(), user.key());
        self.call(move |conn| {
            let tx = conn.transaction(Behavior::Deferred)?;
            tx.execute(
                "INSERT INTO password_history (account_id, name_key, password_hash, changed_at)
                 SELECT account_id, name_key, password_hash, password_changed_at FROM users
                 WHERE account_id = ?1 AND name_key = ?2",
                params![account.as_str(), key],
            )?;
            tx.execute(
                "DELETE FROM password_history WHERE account_id = ?1 AND name_key = ?2 AND rowid NOT IN
                   (SELECT rowid FROM password_history WHERE account_id = ?1 AND name_key = ?2
                    ORDER BY changed_at DESC, rowid DESC LIMIT ?3)",
                params![account.as_str(), key, keep as i64],
            )?;
            tx.execute(
                "UPDATE users SET password_hash = ?3, password_changed_at = ?4, tokens_valid_after = ?4,
                        failed_logins = 0, locked_until = NULL
                 WHERE account_id = ?1 AND name_key = ?2",
                params![account.as_str(), key, password.as_str(), to_ms(now)],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn password_history(
        &self,
        account: &AccountId,
        user: &UserName,
    ) -> Result<Vec<PasswordHash>, StoreError> {
        let (account, key) = (account.clone(), user.key());
        self.call(move |conn| {
            let hashes = conn.query_map(
                "SELECT password_hash FROM password_history WHERE account_id = ?1 AND name_key = ?2
                 ORDER BY changed_at DESC, rowid DESC",
                params![account.as_str(), key],
                |r| r.get::<String>(0),
            )?;
            Ok(hashes
                .into_iter()
                .filter_map(|h| PasswordHash::from_phc(h).ok())
                .collect())
        })
        .await
    }

    async fn password_policy(
        &self,
        account: &AccountId,
    ) -> Result<Option<PasswordPolicyParams>, StoreError> {
        if let Some(found) = self.cached(|c| c.password_policies.get(account.as_str()).copied()) {
            return Ok(found);
        }
        let store = self.clone();
        let account = account.clone();
        self.call(move |conn| {
            let generation = store.generation();
            let found = conn
                .query_row(
                    "SELECT min_length, require_uppercase, require_lowercase, require_digit, require_symbol,
                            max_age_days, reuse_prevention
                     FROM password_policies WHERE account_id = ?1",
                    params![account.as_str()],
                    |r| {
                        Ok(PasswordPolicyParams {
                            min_length: r.get(0)?,
                            require_uppercase: r.get(1)?,
                            require_lowercase: r.get(2)?,
                            require_digit: r.get(3)?,
                            require_symbol: r.get(4)?,
                            max_age_days: r.get(5)?,
                            reuse_prevention: r.get(6)?,
                        })
                    },
                )
                .optional()?;
            store.remember(generation, |c| {
                c.password_policies
                    .insert(account.as_str().to_owned(), found);
            });
            Ok(found)
        })
        .await
    }

    async fn put_password_policy(
        &self,
        account: &AccountId,
        p: PasswordPolicyParams,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let account = account.clone();
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO password_policies (account_id, min_length, require_uppercase, require_lowercase,
                    require_digit, require_symbol, max_age_days, reuse_prevention, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (account_id) DO UPDATE SET min_length = ?2, require_uppercase = ?3,
                    require_lowercase = ?4, require_digit = ?5, require_symbol = ?6, max_age_days = ?7,
                    reuse_prevention = ?8, updated_at = ?9",
                params![
                    account.as_str(),
                    p.min_length,
                    p.require_uppercase,
                    p.require_lowercase,
                    p.require_digit,
                    p.require_symbol,
                    p.max_age_days,
                    p.reuse_prevention,
                    to_ms(now)
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn begin_mfa(
        &self,
        account: &AccountId,
        user: &UserName,
        secret: &str,
    ) -> Result<(), StoreError> {
        let key = user.key();
        let secret = match self.sealer() {
            Some(sealer) => sealer
                .seal(secret, account.as_str(), &key)
                .map_err(|e| StoreError::Unavailable(e.to_string()))?,
            None => secret.to_owned(),
        };
        let account = account.clone();
        self.call(move |conn| {
            conn.execute(
                "UPDATE users SET mfa_secret = ?3, mfa_enabled = 0, mfa_last_step = NULL
                 WHERE account_id = ?1 AND name_key = ?2",
                params![account.as_str(), key, secret],
            )?;
            Ok(())
        })
        .await
    }

    async fn enable_mfa(
        &self,
        account: &AccountId,
        user: &UserName,
        step: u64,
    ) -> Result<(), StoreError> {
        let (account, key) = (account.clone(), user.key());
        self.call(move |conn| {
            conn.execute(
                "UPDATE users SET mfa_enabled = 1, mfa_last_step = ?3
                 WHERE account_id = ?1 AND name_key = ?2 AND mfa_secret IS NOT NULL",
                params![account.as_str(), key, step as i64],
            )?;
            Ok(())
        })
        .await
    }

    async fn accept_mfa_step(
        &self,
        account: &AccountId,
        user: &UserName,
        step: u64,
    ) -> Result<bool, StoreError> {
        let (account, key) = (account.clone(), user.key());
        self.call(move |conn| {
            // Compare-and-set in one statement: two logins racing with one code cannot both win.
            let updated = conn.execute(
                "UPDATE users SET mfa_last_step = ?3
                 WHERE account_id = ?1 AND name_key = ?2 AND (mfa_last_step IS NULL OR mfa_last_step < ?3)",
                params![account.as_str(), key, step as i64],
            )?;
            Ok(updated == 1)
        })
        .await
    }

    async fn create_access_key(&self, key: AccessKeyRecord, max: usize) -> Result<(), StoreError> {
        self.call(move |conn| {
            let tx = conn.transaction(Behavior::Immediate)?;
            let count: i64 = tx.query_row(
                "SELECT COUNT(*) FROM access_keys WHERE account_id = ?1 AND name_key = ?2",
                params![key.account_id.as_str(), key.user.key()],
                |r| r.get(0),
            )?;
            if count as usize >= max {
                return Err(StoreError::Conflict(format!("user `{}` already has {max} access keys", key.user)));
            }
            tx.execute(
                "INSERT INTO access_keys (id, account_id, name_key, secret_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![key.id.as_str(), key.account_id.as_str(), key.user.key(), key.secret_hash.as_str(), to_ms(key.created_at)],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn access_key(&self, id: &AccessKeyId) -> Result<Option<AccessKeyRecord>, StoreError> {
        let id = id.clone();
        self.call(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT k.id, k.account_id, u.name, k.secret_hash, k.created_at FROM access_keys k
                     JOIN users u ON u.account_id = k.account_id AND u.name_key = k.name_key WHERE k.id = ?1",
                    params![id.as_str()],
                    access_key_from_row,
                )
                .optional()?)
        })
        .await
    }

    async fn access_keys(
        &self,
        account: &AccountId,
        user: &UserName,
    ) -> Result<Vec<AccessKeyRecord>, StoreError> {
        let (account, key) = (account.clone(), user.key());
        self.call(move |conn| {
            let keys = conn.query_map(
                "SELECT k.id, k.account_id, u.name, k.secret_hash, k.created_at FROM access_keys k
                 JOIN users u ON u.account_id = k.account_id AND u.name_key = k.name_key
                 WHERE k.account_id = ?1 AND k.name_key = ?2 ORDER BY k.created_at",
                params![account.as_str(), key],
                access_key_from_row,
            )?;
            Ok(keys)
        })
        .await
    }

    async fn delete_access_key(
        &self,
        account: &AccountId,
        user: &UserName,
        id: &AccessKeyId,
    ) -> Result<bool, StoreError> {
        let (account, key, id) = (account.clone(), user.key(), id.clone());
        self.call(move |conn| {
            let deleted = conn.execute(
                "DELETE FROM access_keys WHERE id = ?1 AND account_id = ?2 AND name_key = ?3",
                params![id.as_str(), account.as_str(), key],
            )?;
            Ok(deleted == 1)
        })
        .await
    }

    async fn create_group(
        &self,
        account: &AccountId,
        group: &GroupName,
        now: DateTime<Utc>,
    ) -> Result<GroupRecord, StoreError> {
        let (account, group) = (account.clone(), group.clone());
        self.call(move |conn| {
            let inserted = conn.execute(
                "INSERT INTO groups (account_id, name_key, name, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (account_id, name_key) DO NOTHING",
                params![account.as_str(), group.key(), group.as_str(), to_ms(now)],
            )?;
            if inserted == 0 {
                return Err(StoreError::Conflict(format!(
                    "group `{group}` already exists in account {account}"
                )));
            }
            Ok(GroupRecord {
                name: group,
                created_at: now,
                members: Vec::new(),
            })
        })
        .await
    }

    async fn groups(&self, account: &AccountId) -> Result<Vec<GroupRecord>, StoreError> {
        let account = account.clone();
        self.call(move |conn| {
            let tx = conn.transaction(Behavior::Deferred)?;
            let corrupt = |what: &str| StoreError::Corrupt(format!("account {account}: bad {what}"));
            let mut groups: Vec<(String, GroupRecord)> = {
                let rows = tx.query_map("SELECT name_key, name, created_at FROM groups WHERE account_id = ?1 ORDER BY name_key", params![account.as_str()], |r| {
                        Ok((r.get::<String>(0)?, r.get::<String>(1)?, r.get::<i64>(2)?))
                    })?;
                rows.into_iter()
                    .map(|(key, name, created_at)| {
                        let name = GroupName::parse(&name).map_err(|_| corrupt("group name"))?;
                        Ok((key, GroupRecord { name, created_at: from_ms(created_at), members: Vec::new() }))
                    })
                    .collect::<Result<_, StoreError>>()?
            };
            let members = tx.query_map("SELECT m.group_key, u.name FROM group_members m JOIN users u
                   ON u.account_id = m.account_id AND u.name_key = m.user_key
                 WHERE m.account_id = ?1 ORDER BY m.group_key, m.user_key", params![account.as_str()], |r| {
                    Ok((r.get::<String>(0)?, r.get::<String>(1)?))
                })?;
            for (group_key, user) in members {
                let user = UserName::parse(&user).map_err(|_| corrupt("user name"))?;
                if let Some((_, g)) = groups.iter_mut().find(|(k, _)| *k == group_key) {
                    g.members.push(user);
                }
            }
            Ok(groups.into_iter().map(|(_, g)| g).collect())
        })
        .await
    }

    async fn delete_group(
        &self,
        account: &AccountId,
        group: &GroupName,
    ) -> Result<bool, StoreError> {
        let (account, key) = (account.clone(), group.key());
        self.call(move |conn| {
            // Memberships go with it (ON DELETE CASCADE).
            let deleted = conn.execute(
                "DELETE FROM groups WHERE account_id = ?1 AND name_key = ?2",
                params![account.as_str(), key],
            )?;
            Ok(deleted == 1)
        })
        .await
    }

    async fn add_group_member(
        &self,
        account: &AccountId,
        group: &GroupName,
        user: &UserName,
        now: DateTime<Utc>,
    ) -> Result<GroupMemberChange, StoreError> {
        let (account, group_key, user_key) = (account.clone(), group.key(), user.key());
        self.call(move |conn| {
            change_group_member(conn, &account, &group_key, &user_key, |tx| {
                tx.execute(
                    "INSERT INTO group_members (account_id, group_key, user_key, added_at)
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                    params![account.as_str(), group_key, user_key, to_ms(now)],
                )
            })
        })
        .await
    }

    async fn remove_group_member(
        &self,
        account: &AccountId,
        group: &GroupName,
        user: &UserName,
    ) -> Result<GroupMemberChange, StoreError> {
        let (account, group_key, user_key) = (account.clone(), group.key(), user.key());
        self.call(move |conn| {
            change_group_member(conn, &account, &group_key, &user_key, |tx| {
                tx.execute(
                    "DELETE FROM group_members WHERE account_id = ?1 AND group_key = ?2 AND user_key = ?3",
                    params![account.as_str(), group_key, user_key],
                )
            })
        })
        .await
    }

    async fn revoke_token(
        &self,
        jti: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let jti = jti.to_owned();
        self.call(move |conn| {
            let tx = conn.transaction(Behavior::Deferred)?;
            tx.execute(
                "INSERT INTO revoked_tokens (jti, expires_at) VALUES (?1, ?2) ON CONFLICT (jti) DO NOTHING",
                params![jti, to_ms(expires_at)],
            )?;
            // Tokens past their expiry are refused anyway; forget them.
            tx.execute("DELETE FROM revoked_tokens WHERE expires_at < ?1", params![to_ms(now)])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }
}
