//! The `ledger` table: its row, the canonical encoding its chain hashes, insert and verify.
//!
//! The canonical encoding covers every column except `seq`, `prev_hash` and `hash`, in table
//! order, from the stored values themselves, so what is verified is exactly what is stored.
//! Changing this encoding breaks every existing chain: add a `ledger/v2` tag instead.

use crate::db::{Conn, DbError, Row, Tx, params};

use super::{JournalError, VerifyError, VerifySummary};
use crate::chain::{self, Canonical, Hash};

/// The stored columns of one ledger record, minus `seq`, `prev_hash` and `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LedgerRow {
    pub record_id: String,
    pub kind: String,
    pub call_record_id: Option<String>,
    pub event_time: i64,
    pub commit_time: i64,
    pub request_id: String,
    pub account_id: String,
    pub payer_account_id: String,
    pub org_id: Option<String>,
    pub user_name: String,
    pub service: String,
    pub action: String,
    pub method: String,
    pub status: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub quantity: i64,
    pub per_request: Option<String>,
    pub per_gb_in: Option<String>,
    pub per_gb_out: Option<String>,
    pub tiered: bool,
    pub amount_requests: String,
    pub amount_gb_in: String,
    pub amount_gb_out: String,
    pub amount: String,
    pub billing_month: String,
    pub original_month: Option<String>,
    /// The `X-Request-Id` an untrusted client sent (F2); hashed only when present, so records
    /// from before the column hash as they always did.
    pub client_request_id: Option<String>,
    /// The price book version the record was made under (`None` before the price book).
    pub price_version: Option<i64>,
}

/// The hashed columns, in the order of [`LedgerRow`] and of the canonical encoding.
const COLUMNS: &str = "record_id, kind, call_record_id, event_time, commit_time, request_id, \
     account_id, payer_account_id, org_id, user_name, service, action, method, status, bytes_in, \
     bytes_out, quantity, per_request, per_gb_in, per_gb_out, tiered, amount_requests, \
     amount_gb_in, amount_gb_out, amount, billing_month, original_month, client_request_id, \
     price_version";

/// Records without a price version (written before the price book) keep their v1 encoding, so
/// existing chains still verify; records with one are v2, which adds it.
const CANONICAL_TAG: &str = "tollgate/ledger/v1";
const CANONICAL_TAG_V2: &str = "tollgate/ledger/v2";

// === impl LedgerRow ===

impl LedgerRow {
    pub fn canonical(&self) -> Vec<u8> {
        let tag = if self.price_version.is_some() {
            CANONICAL_TAG_V2
        } else {
            CANONICAL_TAG
        };
        let c = Canonical::new(tag)
            .str("record_id", &self.record_id)
            .str("kind", &self.kind)
            .opt_str("call_record_id", self.call_record_id.as_deref())
            .i64("event_time", self.event_time)
            .i64("commit_time", self.commit_time)
            .str("request_id", &self.request_id)
            .str("account_id", &self.account_id)
            .str("payer_account_id", &self.payer_account_id)
            .opt_str("org_id", self.org_id.as_deref())
            .str("user_name", &self.user_name)
            .str("service", &self.service)
            .str("action", &self.action)
            .str("method", &self.method)
            .i64("status", self.status)
            .i64("bytes_in", self.bytes_in)
            .i64("bytes_out", self.bytes_out)
            .i64("quantity", self.quantity)
            .opt_str("per_request", self.per_request.as_deref())
            .opt_str("per_gb_in", self.per_gb_in.as_deref())
            .opt_str("per_gb_out", self.per_gb_out.as_deref())
            .bool("tiered", self.tiered)
            .str("amount_requests", &self.amount_requests)
            .str("amount_gb_in", &self.amount_gb_in)
            .str("amount_gb_out", &self.amount_gb_out)
            .str("amount", &self.amount)
            .str("billing_month", &self.billing_month)
            .opt_str("original_month", self.original_month.as_deref());
        let c = match &self.client_request_id {
            Some(id) => c.str("client_request_id", id),
            None => c,
        };
        match self.price_version {
            Some(v) => c.i64("price_version", v).finish(),
            None => c.finish(),
        }
    }

    pub fn insert(&self, tx: &Tx<'_>, seq: u64, prev: &Hash, hash: &Hash) -> Result<(), DbError> {
        tx.execute(
            &format!(
                "INSERT INTO ledger (seq, {COLUMNS}, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, \
             ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, \
             ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32)"
            ),
            params![
                seq as i64,
                self.record_id,
                self.kind,
                self.call_record_id,
                self.event_time,
                self.commit_time,
                self.request_id,
                self.account_id,
                self.payer_account_id,
                self.org_id,
                self.user_name,
                self.service,
                self.action,
                self.method,
                self.status,
                self.bytes_in,
                self.bytes_out,
                self.quantity,
                self.per_request,
                self.per_gb_in,
                self.per_gb_out,
                self.tiered,
                self.amount_requests,
                self.amount_gb_in,
                self.amount_gb_out,
                self.amount,
                self.billing_month,
                self.original_month,
                self.client_request_id,
                self.price_version,
                chain::to_hex(prev),
                chain::to_hex(hash),
            ],
        )?;
        Ok(())
    }

    /// Reads the hashed columns starting at column `at` of `row`.
    pub fn from_row(row: &Row<'_>, at: usize) -> Result<Self, DbError> {
        Ok(Self {
            record_id: row.get(at)?,
            kind: row.get(at + 1)?,
            call_record_id: row.get(at + 2)?,
            event_time: row.get(at + 3)?,
            commit_time: row.get(at + 4)?,
            request_id: row.get(at + 5)?,
            account_id: row.get(at + 6)?,
            payer_account_id: row.get(at + 7)?,
            org_id: row.get(at + 8)?,
            user_name: row.get(at + 9)?,
            service: row.get(at + 10)?,
            action: row.get(at + 11)?,
            method: row.get(at + 12)?,
            status: row.get(at + 13)?,
            bytes_in: row.get(at + 14)?,
            bytes_out: row.get(at + 15)?,
            quantity: row.get(at + 16)?,
            per_request: row.get(at + 17)?,
            per_gb_in: row.get(at + 18)?,
            per_gb_out: row.get(at + 19)?,
            tiered: row.get(at + 20)?,
            amount_requests: row.get(at + 21)?,
            amount_gb_in: row.get(at + 22)?,
            amount_gb_out: row.get(at + 23)?,
            amount: row.get(at + 24)?,
            billing_month: row.get(at + 25)?,
            original_month: row.get(at + 26)?,
            client_request_id: row.get(at + 27)?,
            price_version: row.get(at + 28)?,
        })
    }
}

/// The last record's position, for the writer to continue from.
pub(super) fn head(conn: &Conn) -> Result<super::ChainPosition, JournalError> {
    super::read::chain_head(conn, "ledger")
}

/// Verifies the whole ledger chain in one read transaction.
pub(super) fn verify(conn: &Conn) -> Result<VerifySummary, VerifyError> {
    super::read::verify_table(conn, "ledger", COLUMNS, |row| {
        LedgerRow::from_row(row, 3).map(|r| r.canonical())
    })
}
