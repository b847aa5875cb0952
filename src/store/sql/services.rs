//! `ServiceStore` on SQL (schema: the services migration). Each method is one transaction on
//! the blocking pool; changes take the write lock (`Behavior::Immediate`) so two racing sign-ups or plan changes of
//! one account serialise instead of both reading "nothing open". Partial unique indexes keep at
//! most one open sign-up and one open plan per (account, service) whatever happens.

use crate::db::{Behavior, DbError, OptionalExtension, Row, Tx, params};
use chrono::{DateTime, Utc};

use crate::ids::AccountId;
use crate::store::StoreError;
use crate::store::services::{
    PlanChange, PlanPeriodRecord, ServiceStore, SignoffOutcome, SignupOutcome, SignupPeriod,
};

use super::{SqlStore, from_ms, to_ms};

fn signup_from_row(row: &Row<'_>) -> Result<SignupPeriod, DbError> {
    Ok(SignupPeriod {
        service: row.get(0)?,
        signed_up_at: from_ms(row.get(1)?),
        signed_off_at: row.get::<Option<i64>>(2)?.map(from_ms),
    })
}

fn plan_from_row(row: &Row<'_>) -> Result<PlanPeriodRecord, DbError> {
    Ok(PlanPeriodRecord {
        service: row.get(0)?,
        plan: row.get(1)?,
        from: from_ms(row.get(2)?),
        until: row.get::<Option<i64>>(3)?.map(from_ms),
    })
}

fn open_signup(
    tx: &Tx<'_>,
    account: &AccountId,
    service: &str,
) -> Result<Option<SignupPeriod>, StoreError> {
    Ok(tx
        .query_row(
            "SELECT service, signed_up_at, signed_off_at FROM service_signups
             WHERE account_id = ?1 AND service = ?2 AND signed_off_at IS NULL",
            params![account.as_str(), service],
            signup_from_row,
        )
        .optional()?)
}

fn open_plan(
    tx: &Tx<'_>,
    account: &AccountId,
    service: &str,
) -> Result<Option<PlanPeriodRecord>, StoreError> {
    Ok(tx
        .query_row(
            "SELECT service, plan, started_at, ended_at FROM plan_periods
             WHERE account_id = ?1 AND service = ?2 AND ended_at IS NULL",
            params![account.as_str(), service],
            plan_from_row,
        )
        .optional()?)
}

/// Ends the open plan of `service` at `now`; returns it as ended.
fn end_plan(
    tx: &Tx<'_>,
    account: &AccountId,
    service: &str,
    now: DateTime<Utc>,
) -> Result<Option<PlanPeriodRecord>, StoreError> {
    let Some(open) = open_plan(tx, account, service)? else {
        return Ok(None);
    };
    // A clock that moved back must not make a period end before it began.
    let until = now.max(open.from);
    tx.execute(
        "UPDATE plan_periods SET ended_at = ?3
         WHERE account_id = ?1 AND service = ?2 AND ended_at IS NULL",
        params![account.as_str(), service, to_ms(until)],
    )?;
    Ok(Some(PlanPeriodRecord {
        until: Some(until),
        ..open
    }))
}

#[async_trait::async_trait]
impl ServiceStore for SqlStore {
    async fn sign_up(
        &self,
        account: &AccountId,
        service: &str,
        now: DateTime<Utc>,
    ) -> Result<SignupOutcome, StoreError> {
        let (account, service) = (account.clone(), service.to_owned());
        self.call(move |conn| {
            let tx = conn.transaction(Behavior::Immediate)?;
            if let Some(open) = open_signup(&tx, &account, &service)? {
                return Ok(SignupOutcome::AlreadySignedUp(open));
            }
            tx.execute(
                "INSERT INTO service_signups (account_id, service, signed_up_at) VALUES (?1, ?2, ?3)",
                params![account.as_str(), service, to_ms(now)],
            )?;
            tx.commit()?;
            Ok(SignupOutcome::Started(SignupPeriod {
                service,
                signed_up_at: now,
                signed_off_at: None,
            }))
        })
        .await
    }

    async fn sign_off(
        &self,
        account: &AccountId,
        service: &str,
        now: DateTime<Utc>,
    ) -> Result<SignoffOutcome, StoreError> {
        let (account, service) = (account.clone(), service.to_owned());
        self.call(move |conn| {
            let tx = conn.transaction(Behavior::Immediate)?;
            let Some(open) = open_signup(&tx, &account, &service)? else {
                return Ok(SignoffOutcome::NotSignedUp);
            };
            let until = now.max(open.signed_up_at);
            tx.execute(
                "UPDATE service_signups SET signed_off_at = ?3
                 WHERE account_id = ?1 AND service = ?2 AND signed_off_at IS NULL",
                params![account.as_str(), service, to_ms(until)],
            )?;
            let plan = end_plan(&tx, &account, &service, now)?;
            tx.commit()?;
            Ok(SignoffOutcome::Ended {
                signup: SignupPeriod {
                    signed_off_at: Some(until),
                    ..open
                },
                plan,
            })
        })
        .await
    }

    async fn is_signed_up(&self, account: &AccountId, service: &str) -> Result<bool, StoreError> {
        let (account, service) = (account.clone(), service.to_owned());
        self.call(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT 1 FROM service_signups
                     WHERE account_id = ?1 AND service = ?2 AND signed_off_at IS NULL",
                    params![account.as_str(), service],
                    |_| Ok(()),
                )
                .optional()?
                .is_some())
        })
        .await
    }

    async fn signup_periods(&self, account: &AccountId) -> Result<Vec<SignupPeriod>, StoreError> {
        let account = account.clone();
        self.call(move |conn| {
            let rows = conn.query_map(
                "SELECT service, signed_up_at, signed_off_at FROM service_signups
                 WHERE account_id = ?1 ORDER BY service, signed_up_at, id",
                params![account.as_str()],
                signup_from_row,
            )?;
            Ok(rows)
        })
        .await
    }

    async fn set_plan(
        &self,
        account: &AccountId,
        service: &str,
        plan: Option<&str>,
        require_signup: bool,
        now: DateTime<Utc>,
    ) -> Result<PlanChange, StoreError> {
        let (account, service, plan) =
            (account.clone(), service.to_owned(), plan.map(str::to_owned));
        self.call(move |conn| {
            let tx = conn.transaction(Behavior::Immediate)?;
            if require_signup && plan.is_some() && open_signup(&tx, &account, &service)?.is_none() {
                return Ok(PlanChange::NotSignedUp);
            }
            let current = open_plan(&tx, &account, &service)?;
            if current.as_ref().map(|c| c.plan.as_str()) == plan.as_deref() {
                return Ok(PlanChange::Unchanged { current });
            }
            let ended = end_plan(&tx, &account, &service, now)?;
            let started = match plan {
                None => None,
                Some(plan) => {
                    // Starts where the previous one ended, even if the clock moved back.
                    let from = ended.as_ref().and_then(|e| e.until).unwrap_or(now);
                    tx.execute(
                        "INSERT INTO plan_periods (account_id, service, plan, started_at)
                         VALUES (?1, ?2, ?3, ?4)",
                        params![account.as_str(), service, plan, to_ms(from)],
                    )?;
                    Some(PlanPeriodRecord {
                        service: service.clone(),
                        plan,
                        from,
                        until: None,
                    })
                }
            };
            tx.commit()?;
            Ok(PlanChange::Changed { ended, started })
        })
        .await
    }

    async fn plan_history(&self, account: &AccountId) -> Result<Vec<PlanPeriodRecord>, StoreError> {
        let account = account.clone();
        self.call(move |conn| {
            let rows = conn.query_map(
                "SELECT service, plan, started_at, ended_at FROM plan_periods
                 WHERE account_id = ?1 ORDER BY service, started_at, id",
                params![account.as_str()],
                plan_from_row,
            )?;
            Ok(rows)
        })
        .await
    }

    async fn plan_periods(
        &self,
        account: &AccountId,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<PlanPeriodRecord>, StoreError> {
        let account = account.clone();
        self.call(move |conn| {
            let rows = conn.query_map(
                "SELECT service, plan, started_at, ended_at FROM plan_periods
                 WHERE account_id = ?1 AND started_at < ?3 AND (ended_at IS NULL OR ended_at > ?2)
                 ORDER BY service, started_at, id",
                params![account.as_str(), to_ms(start), to_ms(end)],
                plan_from_row,
            )?;
            Ok(rows)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::accounts::{AccountStore, NewAccount};

    async fn store_with_account() -> (tempfile::TempDir, SqlStore, AccountId) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = SqlStore::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let hash = crate::auth::PasswordHash::from_phc(
            "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc"
                .to_owned(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let id = store
            .create_account(
                NewAccount {
                    name: "a".into(),
                    email: "a@example.com".into(),
                    owner: crate::ids::UserName::parse("owner").unwrap_or_else(|e| panic!("{e}")),
                    owner_password: hash,
                },
                t(0),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        (dir, store, id)
    }

    fn ok<T>(r: Result<T, StoreError>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap_or_default()
    }

    #[tokio::test]
    async fn sign_up_is_idempotent_and_sign_off_ends_the_plan_too() {
        let (_dir, store, a) = store_with_account().await;
        assert!(matches!(
            ok(store.sign_up(&a, "compute", t(10)).await),
            SignupOutcome::Started(_)
        ));
        assert!(matches!(
            ok(store.sign_up(&a, "compute", t(20)).await),
            SignupOutcome::AlreadySignedUp(p) if p.signed_up_at == t(10)
        ));
        assert!(ok(store.is_signed_up(&a, "compute").await));
        assert!(!ok(store.is_signed_up(&a, "storage").await));
        assert!(matches!(
            ok(store
                .set_plan(&a, "compute", Some("pro"), true, t(30))
                .await),
            PlanChange::Changed {
                ended: None,
                started: Some(_)
            }
        ));
        match ok(store.sign_off(&a, "compute", t(40)).await) {
            SignoffOutcome::Ended { signup, plan } => {
                assert_eq!(signup.signed_off_at, Some(t(40)));
                assert_eq!(plan.map(|p| p.until), Some(Some(t(40))));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            ok(store.sign_off(&a, "compute", t(50)).await),
            SignoffOutcome::NotSignedUp
        );
        assert_eq!(
            ok(store
                .set_plan(&a, "compute", Some("pro"), true, t(60))
                .await),
            PlanChange::NotSignedUp
        );
        ok(store.sign_up(&a, "compute", t(70)).await);
        let periods = ok(store.signup_periods(&a).await);
        assert_eq!(periods.len(), 2);
        assert_eq!(periods[1].signed_off_at, None);
    }

    #[tokio::test]
    async fn a_plan_change_splits_exactly_at_the_instant() {
        let (_dir, store, a) = store_with_account().await;
        ok(store
            .set_plan(&a, "support", Some("business"), false, t(0))
            .await);
        assert!(matches!(
            ok(store
                .set_plan(&a, "support", Some("business"), false, t(5))
                .await),
            PlanChange::Unchanged { current: Some(_) }
        ));
        let change = ok(store
            .set_plan(&a, "support", Some("enterprise"), false, t(100))
            .await);
        let PlanChange::Changed {
            ended: Some(ended),
            started: Some(started),
        } = change
        else {
            panic!("{change:?}");
        };
        assert_eq!(ended.until, Some(t(100)));
        assert_eq!(started.from, t(100));
        ok(store.set_plan(&a, "support", None, false, t(200)).await);
        assert!(matches!(
            ok(store.set_plan(&a, "support", None, false, t(300)).await),
            PlanChange::Unchanged { current: None }
        ));
        let all = ok(store.plan_history(&a).await);
        assert_eq!(
            all.iter()
                .map(|p| (p.plan.as_str(), p.from, p.until))
                .collect::<Vec<_>>(),
            [
                ("business", t(0), Some(t(100))),
                ("enterprise", t(100), Some(t(200)))
            ]
        );
        // Overlap is half-open: a period ending at `start` is outside.
        assert_eq!(ok(store.plan_periods(&a, t(100), t(150)).await).len(), 1);
        assert_eq!(ok(store.plan_periods(&a, t(99), t(101)).await).len(), 2);
        assert_eq!(ok(store.plan_periods(&a, t(200), t(300)).await).len(), 0);
        assert_eq!(
            all[0].clipped(t(50), t(300)),
            Some((t(50), t(100))),
            "clipped to the window"
        );
        assert_eq!(all[0].clipped(t(100), t(300)), None);
    }
}
