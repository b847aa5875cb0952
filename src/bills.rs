//! Bill assembly (SPEC M3–M6, S2): the glue between the journal (what was metered and booked),
//! the organizations (who was billed to whom, when), the services (plans) and the pure
//! arithmetic in `billing`.
//!
//! Owns deciding which accounts are on a payer's bill, which of an account's payers' bills it
//! may see, reading everything a bill is computed from, sealing a month FINAL and checking that
//! a FINAL bill still computes to its seal. It must not know HTTP (the API and the CLI render
//! what it returns) and it does no money arithmetic of its own (`billing::compute_bill` does).
//!
//! Reads go through a fresh read connection per bill, in one snapshot transaction (SQLite WAL,
//! PostgreSQL `REPEATABLE READ`: a consistent view while gateways write), on the blocking pool, so the CLI can run next to a live gateway.

use std::collections::BTreeSet;

use crate::db::{Conn, DbError, params};
use chrono::{DateTime, Duration, Utc};

use crate::billing::{
    Bill, BillError, BillInput, BillStatus, BillingMonth, Money, PriceHistory, Unit,
};
use crate::config::Config;
use crate::ids::AccountId;
use crate::journal::{
    FinalMonth, FinalizeError, Journal, JournalError, account_names, final_month, open_reader,
    usage_for_bill_through,
};
use crate::org::{MembershipRole, MembershipScope, OrgError, OrgService};
use crate::pricebook::{PriceBookStoreError, load_history};
use crate::services::{self, ServicesError};
use crate::store::sql::{SqlStore, to_ms};

/// How many times finalizing recomputes a bill whose month gained records meanwhile.
const FINALIZE_ATTEMPTS: usize = 5;

/// Everything bills are assembled from, borrowed from the app (or the CLI's own copies).
pub struct Bills<'a> {
    store: &'a SqlStore,
    orgs: &'a OrgService,
    finalize_grace: Duration,
}

/// A payer's bill for a month, as of one ledger snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The consolidated bill, or one account's view of it (`billed_to` set).
    pub bill: Bill,
    /// The last ledger record the bill was computed from.
    pub through_seq: u64,
    /// Present when the month is FINAL: the content hash of the consolidated bill.
    pub seal: Option<FinalMonth>,
}

/// What one account sees for a month: one bill, and the other payers its lines are on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountView {
    pub statement: Statement,
    /// Other payers whose bill of the month has lines of this account (it changed payer).
    pub also_billed_to: Vec<AccountId>,
}

#[derive(Debug, thiserror::Error)]
pub enum BillsError {
    #[error("the month `{month}` has not begun yet")]
    FutureMonth { month: BillingMonth },
    #[error("account {account} has no lines on a {month} bill of payer {payer}")]
    NoSuchBill {
        account: AccountId,
        payer: AccountId,
        month: BillingMonth,
    },
    #[error(
        "the {month} bill can be finalized from {earliest} on (the month's end plus the grace period)"
    )]
    TooEarly {
        month: BillingMonth,
        earliest: DateTime<Utc>,
        /// Seconds from the request until `earliest`.
        wait_secs: u64,
    },
    #[error(
        "the {month} charges of account {account} are billed to payer {payer}; only the payer finalizes its bill"
    )]
    NotPayer {
        account: AccountId,
        payer: AccountId,
        month: BillingMonth,
    },
    #[error("the {month} bill of payer {payer} is already FINAL (content hash {content_hash})")]
    AlreadyFinal {
        payer: AccountId,
        month: BillingMonth,
        content_hash: String,
    },
    /// The inputs of a FINAL bill changed (the ledger, plan periods or the price book were
    /// edited in the store): the bill is not shown rather than shown different from what was
    /// sealed.
    #[error(
        "the FINAL {month} bill of payer {payer} no longer computes to its sealed content hash {sealed} (now {computed}); the ledger, plan periods or price book were changed in the store"
    )]
    SealMismatch {
        payer: AccountId,
        month: BillingMonth,
        sealed: String,
        computed: String,
    },
    #[error("the {month} bill of payer {payer} kept gaining records while it was finalized")]
    LedgerBusy {
        payer: AccountId,
        month: BillingMonth,
    },
    #[error(transparent)]
    Prices(#[from] PriceBookStoreError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Org(#[from] OrgError),
    #[error(transparent)]
    Services(#[from] ServicesError),
    #[error(transparent)]
    Bill(#[from] BillError),
}

// === impl Bills ===

impl<'a> Bills<'a> {
    pub fn new(
        store: &'a SqlStore,
        orgs: &'a OrgService,
        config: &'a Config,
    ) -> Result<Self, BillsError> {
        Ok(Self {
            store,
            orgs,
            finalize_grace: crate::config::chrono_duration(config.billing.finalize_grace),
        })
    }

    /// The payer's consolidated bill: every account billed to it that month, itself included.
    /// A FINAL month is checked against its seal.
    pub async fn statement(
        &self,
        payer: &AccountId,
        month: BillingMonth,
        now: DateTime<Utc>,
    ) -> Result<Statement, BillsError> {
        check_begun(month, now)?;
        let seal = {
            let payer = payer.clone();
            self.read(move |c| final_month(c, &payer, month)).await?
        };
        let status = if seal.is_some() {
            BillStatus::Final
        } else {
            BillStatus::Estimated
        };
        // A sealed bill is read as of its seal: records after it never reach it (M6).
        let through = seal.as_ref().map(|s| s.through_seq);
        let (bill, through_seq) = self
            .compute(payer, month, now, status, true, through)
            .await?;
        if let Some(seal) = &seal {
            let computed = bill.content_hash_hex();
            if computed != seal.content_hash {
                return Err(BillsError::SealMismatch {
                    payer: payer.clone(),
                    month,
                    sealed: seal.content_hash.clone(),
                    computed,
                });
            }
        }
        Ok(Statement {
            bill,
            through_seq,
            seal,
        })
    }

    /// What `account` sees for `month` (SPEC M4). By default the bill of its payer at the
    /// month's end (for the current month: now): the consolidated bill when that is itself,
    /// else only its own lines on that payer's bill, marked `billed_to`. `payer` picks another
    /// of the month's payers; `also_billed_to` lists the others.
    pub async fn view(
        &self,
        account: &AccountId,
        month: BillingMonth,
        now: DateTime<Utc>,
        payer: Option<&AccountId>,
    ) -> Result<AccountView, BillsError> {
        check_begun(month, now)?;
        let end_payer = self.end_payer(account, month, now).await?;
        let payers = self.payers_of(account, month, &end_payer).await?;
        let chosen = payer.cloned().unwrap_or(end_payer);
        if &chosen != account && !payers.contains(&chosen) {
            return Err(BillsError::NoSuchBill {
                account: account.clone(),
                payer: chosen,
                month,
            });
        }
        let mut statement = self.statement(&chosen, month, now).await?;
        if &chosen != account {
            statement.bill =
                statement
                    .bill
                    .for_account(account)
                    .ok_or_else(|| BillsError::NoSuchBill {
                        account: account.clone(),
                        payer: chosen.clone(),
                        month,
                    })?;
        }
        Ok(AccountView {
            statement,
            also_billed_to: payers.into_iter().filter(|p| p != &chosen).collect(),
        })
    }

    /// Seals `account`'s own bill of `month` FINAL (SPEC M6): only after the month's end plus
    /// the grace period, only by the payer. Late records are booked on the next open month by
    /// the journal from the moment the seal commits.
    pub async fn finalize(
        &self,
        journal: &Journal,
        account: &AccountId,
        month: BillingMonth,
        now: DateTime<Utc>,
    ) -> Result<Statement, BillsError> {
        let earliest = month.end() + self.finalize_grace;
        if now < earliest {
            let wait_secs = u64::try_from((earliest - now).num_seconds())
                .unwrap_or(0)
                .max(1);
            return Err(BillsError::TooEarly {
                month,
                earliest,
                wait_secs,
            });
        }
        let sealed = {
            let payer = account.clone();
            self.read(move |c| final_month(c, &payer, month)).await?
        };
        if let Some(seal) = sealed {
            return Err(BillsError::AlreadyFinal {
                payer: account.clone(),
                month,
                content_hash: seal.content_hash,
            });
        }
        let end_payer = self.end_payer(account, month, now).await?;
        if &end_payer != account {
            let own = {
                let a = account.clone();
                self.read(move |c| ledger_payers_of(c, &a, month)).await?
            };
            if !own.contains(account) {
                return Err(BillsError::NotPayer {
                    account: account.clone(),
                    payer: end_payer,
                    month,
                });
            }
        }
        for _ in 0..FINALIZE_ATTEMPTS {
            let (bill, through_seq) = self
                .compute(account, month, now, BillStatus::Final, true, None)
                .await?;
            let hash = bill.content_hash_hex();
            match journal.mark_final(account, month, &hash, through_seq).await {
                Ok(seal) => {
                    return Ok(Statement {
                        bill,
                        through_seq,
                        seal: Some(seal),
                    });
                }
                Err(FinalizeError::LedgerMoved { .. }) => continue,
                Err(FinalizeError::AlreadyFinal { .. }) => {
                    let payer = account.clone();
                    let seal = self.read(move |c| final_month(c, &payer, month)).await?;
                    return Err(BillsError::AlreadyFinal {
                        payer: account.clone(),
                        month,
                        content_hash: seal.map(|s| s.content_hash).unwrap_or_default(),
                    });
                }
                Err(FinalizeError::Journal(e)) => return Err(e.into()),
            }
        }
        Err(BillsError::LedgerBusy {
            payer: account.clone(),
            month,
        })
    }

    /// Every payer with a bill for `month`: payers of the month's ledger records, and the
    /// payers (at the month's end) of accounts with a plan that month.
    pub async fn payers(
        &self,
        month: BillingMonth,
        now: DateTime<Utc>,
    ) -> Result<Vec<AccountId>, BillsError> {
        check_begun(month, now)?;
        let (mut payers, planned) = self
            .read(move |c| Ok((ledger_payers(c, month)?, accounts_with_plans(c, month)?)))
            .await?;
        for account in planned {
            payers.insert(self.end_payer(&account, month, now).await?);
        }
        Ok(payers.into_iter().collect())
    }

    /// Computes the payer's bill; plans only when `with_plans` (another payer's bill is read
    /// without them to find an account's charges elsewhere, which never include plans).
    /// `through` limits the ledger to its records up to that one (`None`: all of them); the
    /// charges elsewhere that plan lines read are limited to the same record, so a bill sealed
    /// through record N reads other payers' months as they were at N, whatever is booked on
    /// them later (M6: a FINAL bill never depends on another payer's open month).
    async fn compute(
        &self,
        payer: &AccountId,
        month: BillingMonth,
        now: DateTime<Utc>,
        status: BillStatus,
        with_plans: bool,
        through: Option<u64>,
    ) -> Result<(Bill, u64), BillsError> {
        let usage = {
            let payer = payer.clone();
            self.read(move |c| usage_for_bill_through(c, &payer, month, through))
                .await?
        };
        // The price book, not the config: a bill is a function of the store alone (issue 17).
        let prices = self.prices().await?;
        let mut ids: BTreeSet<AccountId> = self.members(payer, month).await?;
        ids.insert(payer.clone());
        ids.extend(usage.usage.iter().map(|u| u.account_id.clone()));
        ids.extend(usage.adjustments.iter().map(|a| a.usage.account_id.clone()));
        let accounts = {
            let ids = ids.clone();
            self.read(move |c| account_names(c, &ids)).await?
        };
        let mut plans = Vec::new();
        if with_plans {
            for account in &ids {
                if &self.end_payer(account, month, now).await? != payer {
                    continue;
                }
                let mut own = services::account_plans(self.store, &prices, account, month).await?;
                if own.is_empty() {
                    continue;
                }
                let elsewhere =
                    Box::pin(self.charges_elsewhere(account, payer, month, now, usage.through_seq))
                        .await?;
                for p in &mut own {
                    p.other_charges_elsewhere = elsewhere;
                }
                plans.extend(own);
            }
        }
        let input = BillInput {
            month,
            payer: payer.clone(),
            status,
            accounts,
            usage: usage.usage,
            prices,
            plans,
            adjustments: usage.adjustments,
        };
        Ok((crate::billing::compute_bill(&input)?, usage.through_seq))
    }

    /// The account's usage charges of `month` on the bills of payers other than `payer`, from
    /// the ledger's records up to `through`.
    async fn charges_elsewhere(
        &self,
        account: &AccountId,
        payer: &AccountId,
        month: BillingMonth,
        now: DateTime<Utc>,
        through: u64,
    ) -> Result<Money, BillsError> {
        let others = {
            let a = account.clone();
            self.read(move |c| ledger_payers_of(c, &a, month)).await?
        };
        let mut sum = Money::ZERO;
        for other in others.iter().filter(|o| *o != payer) {
            let (bill, _) = self
                .compute(
                    other,
                    month,
                    now,
                    BillStatus::Estimated,
                    false,
                    Some(through),
                )
                .await?;
            if let Some(on_it) = bill.account(account) {
                for line in &on_it.lines {
                    if line.original_month.is_none() && !matches!(line.unit, Unit::Plan(_)) {
                        sum = sum.checked_add(line.amount).map_err(BillError::from)?;
                    }
                }
            }
        }
        Ok(sum)
    }

    /// Accounts that were members of an organization `payer` managed, during `month`.
    async fn members(
        &self,
        payer: &AccountId,
        month: BillingMonth,
    ) -> Result<BTreeSet<AccountId>, BillsError> {
        let (start, end) = (month.start(), month.end());
        let mut out = BTreeSet::new();
        let own = self
            .orgs
            .membership_periods(&MembershipScope::Account(payer.clone()), month, month)
            .await?;
        let managed: BTreeSet<_> = own
            .iter()
            .filter(|p| p.role == MembershipRole::Management && &p.management_account_id == payer)
            .filter(|p| p.clipped(start, end).is_some())
            .map(|p| p.organization_id.clone())
            .collect();
        for org in managed {
            for period in self
                .orgs
                .membership_periods(&MembershipScope::Organization(org), month, month)
                .await?
            {
                if period.clipped(start, end).is_some() {
                    out.insert(period.account_id);
                }
            }
        }
        Ok(out)
    }

    /// Payers whose bill of `month` has lines of `account`: of its ledger records, of its
    /// membership periods, and its payer at the month's end.
    async fn payers_of(
        &self,
        account: &AccountId,
        month: BillingMonth,
        end_payer: &AccountId,
    ) -> Result<BTreeSet<AccountId>, BillsError> {
        let mut payers = {
            let a = account.clone();
            self.read(move |c| ledger_payers_of(c, &a, month)).await?
        };
        payers.insert(end_payer.clone());
        let (start, end) = (month.start(), month.end());
        for period in self
            .orgs
            .membership_periods(&MembershipScope::Account(account.clone()), month, month)
            .await?
        {
            if matches!(period.role, MembershipRole::Member(_))
                && period.clipped(start, end).is_some()
            {
                payers.insert(period.management_account_id);
            }
        }
        Ok(payers)
    }

    /// The account's payer at the end of `month`, or now for the current month: the bill its
    /// plans go on (S2).
    async fn end_payer(
        &self,
        account: &AccountId,
        month: BillingMonth,
        now: DateTime<Utc>,
    ) -> Result<AccountId, BillsError> {
        let last = month.end() - Duration::milliseconds(1);
        Ok(self.orgs.payer_at(account, now.min(last)).await?.payer)
    }

    /// Every price book version, checked against its chain.
    async fn prices(&self) -> Result<PriceHistory, BillsError> {
        let db = self.store.database().clone();
        tokio::task::spawn_blocking(move || {
            let conn = open_reader(&db)?;
            load_history(&conn).map_err(BillsError::from)
        })
        .await
        .map_err(|e| JournalError::Unavailable(format!("price book read task failed: {e}")))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Conn) -> Result<T, JournalError> + Send + 'static,
    ) -> Result<T, JournalError> {
        let db = self.store.database().clone();
        tokio::task::spawn_blocking(move || f(&open_reader(&db)?))
            .await
            .map_err(|e| JournalError::Unavailable(format!("bill read task failed: {e}")))?
    }
}

fn check_begun(month: BillingMonth, now: DateTime<Utc>) -> Result<(), BillsError> {
    if month.start() > now {
        return Err(BillsError::FutureMonth { month });
    }
    Ok(())
}

fn read_err(e: DbError) -> JournalError {
    JournalError::Unavailable(e.to_string())
}

fn parse_ids(ids: Vec<String>) -> Result<BTreeSet<AccountId>, JournalError> {
    ids.into_iter()
        .map(|id| {
            AccountId::parse(&id)
                .map_err(|e| JournalError::Corrupt(format!("ledger account `{id}`: {e}")))
        })
        .collect()
}

/// Payers of the records booked on `month`.
fn ledger_payers(conn: &Conn, month: BillingMonth) -> Result<BTreeSet<AccountId>, JournalError> {
    let ids = conn
        .query_map(
            "SELECT DISTINCT payer_account_id FROM ledger WHERE billing_month = ?1",
            params![month.to_string()],
            |r| r.get::<String>(0),
        )
        .map_err(read_err)?;
    parse_ids(ids)
}

/// Payers of `account`'s records booked on `month`.
fn ledger_payers_of(
    conn: &Conn,
    account: &AccountId,
    month: BillingMonth,
) -> Result<BTreeSet<AccountId>, JournalError> {
    let ids = conn
        .query_map(
            "SELECT DISTINCT payer_account_id FROM ledger WHERE account_id = ?1 AND billing_month = ?2",
            params![account.as_str(), month.to_string()],
            |r| r.get::<String>(0),
        )
        .map_err(read_err)?;
    parse_ids(ids)
}

/// Accounts with a plan period overlapping `month`.
fn accounts_with_plans(
    conn: &Conn,
    month: BillingMonth,
) -> Result<BTreeSet<AccountId>, JournalError> {
    let ids = conn
        .query_map(
            "SELECT DISTINCT account_id FROM plan_periods
             WHERE started_at < ?2 AND (ended_at IS NULL OR ended_at > ?1)",
            params![to_ms(month.start()), to_ms(month.end())],
            |r| r.get::<String>(0),
        )
        .map_err(read_err)?;
    parse_ids(ids)
}
