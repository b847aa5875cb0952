//! The `decisions` table (the decision log, SPEC D1): its row, the canonical encoding its chain
//! hashes, insert and verify. Policy reloads are rows of kind `reload`.
//!
//! The canonical encoding covers every column except `seq`, `prev_hash` and `hash`, from the
//! stored values (JSON columns as their stored text). Changing it breaks every existing chain:
//! add a `decisions/v2` tag instead.

use crate::db::{Conn, DbError, Row, Tx, params};

use super::{JournalError, VerifyError, VerifySummary};
use crate::chain::{self, Canonical, Hash};

/// The stored columns of one decision-log record, minus `seq`, `prev_hash` and `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DecisionRow {
    pub record_id: String,
    pub kind: String,
    pub time: i64,
    pub request_id: Option<String>,
    pub account_id: Option<String>,
    pub user_name: Option<String>,
    pub action: String,
    pub resource: String,
    pub source_ip: Option<String>,
    pub mfa: Option<bool>,
    pub decision: Option<String>,
    pub denied_by: Option<String>,
    pub account_policies: String,
    pub org_applied: bool,
    pub org_reason: Option<String>,
    pub org_policies: String,
    pub errors: String,
    pub policy_version: String,
    pub request_json: String,
    /// The `X-Request-Id` an untrusted client sent (F2); hashed only when present, so records
    /// from before the column hash as they always did.
    pub client_request_id: Option<String>,
}

/// The hashed columns, in the order of [`DecisionRow`] and of the canonical encoding.
pub(super) const COLUMNS: &str = "record_id, kind, time, request_id, account_id, user_name, \
     action, resource, source_ip, mfa, decision, denied_by, account_policies, org_applied, \
     org_reason, org_policies, errors, policy_version, request_json, client_request_id";

const CANONICAL_TAG: &str = "tollgate/decisions/v1";

// === impl DecisionRow ===

impl DecisionRow {
    pub fn canonical(&self) -> Vec<u8> {
        let mfa = self.mfa.map(|m| if m { "1" } else { "0" });
        let canonical = Canonical::new(CANONICAL_TAG)
            .str("record_id", &self.record_id)
            .str("kind", &self.kind)
            .i64("time", self.time)
            .opt_str("request_id", self.request_id.as_deref())
            .opt_str("account_id", self.account_id.as_deref())
            .opt_str("user_name", self.user_name.as_deref())
            .str("action", &self.action)
            .str("resource", &self.resource)
            .opt_str("source_ip", self.source_ip.as_deref())
            .opt_str("mfa", mfa)
            .opt_str("decision", self.decision.as_deref())
            .opt_str("denied_by", self.denied_by.as_deref())
            .str("account_policies", &self.account_policies)
            .bool("org_applied", self.org_applied)
            .opt_str("org_reason", self.org_reason.as_deref())
            .str("org_policies", &self.org_policies)
            .str("errors", &self.errors)
            .str("policy_version", &self.policy_version)
            .str("request_json", &self.request_json);
        match &self.client_request_id {
            Some(id) => canonical.str("client_request_id", id).finish(),
            None => canonical.finish(),
        }
    }

    pub fn insert(&self, tx: &Tx<'_>, seq: u64, prev: &Hash, hash: &Hash) -> Result<(), DbError> {
        tx.execute(
            &format!(
                "INSERT INTO decisions (seq, {COLUMNS}, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, \
             ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23)"
            ),
            params![
                seq as i64,
                self.record_id,
                self.kind,
                self.time,
                self.request_id,
                self.account_id,
                self.user_name,
                self.action,
                self.resource,
                self.source_ip,
                self.mfa,
                self.decision,
                self.denied_by,
                self.account_policies,
                self.org_applied,
                self.org_reason,
                self.org_policies,
                self.errors,
                self.policy_version,
                self.request_json,
                self.client_request_id,
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
            time: row.get(at + 2)?,
            request_id: row.get(at + 3)?,
            account_id: row.get(at + 4)?,
            user_name: row.get(at + 5)?,
            action: row.get(at + 6)?,
            resource: row.get(at + 7)?,
            source_ip: row.get(at + 8)?,
            mfa: row.get(at + 9)?,
            decision: row.get(at + 10)?,
            denied_by: row.get(at + 11)?,
            account_policies: row.get(at + 12)?,
            org_applied: row.get(at + 13)?,
            org_reason: row.get(at + 14)?,
            org_policies: row.get(at + 15)?,
            errors: row.get(at + 16)?,
            policy_version: row.get(at + 17)?,
            request_json: row.get(at + 18)?,
            client_request_id: row.get(at + 19)?,
        })
    }
}

/// The last record's position, for the writer to continue from.
pub(super) fn head(conn: &Conn) -> Result<super::ChainPosition, JournalError> {
    super::read::chain_head(conn, "decisions")
}

/// Verifies the whole decision-log chain in one read transaction.
pub(super) fn verify(conn: &Conn) -> Result<VerifySummary, VerifyError> {
    super::read::verify_table(conn, "decisions", COLUMNS, |row| {
        DecisionRow::from_row(row, 3).map(|r| r.canonical())
    })
}

/// Verifies the decision-log chain from a checkpoint left by retention.
pub(super) fn verify_from(
    conn: &Conn,
    first_seq: u64,
    prev_hash: Hash,
) -> Result<VerifySummary, VerifyError> {
    super::read::verify_table_from(conn, "decisions", COLUMNS, first_seq, prev_hash, |row| {
        DecisionRow::from_row(row, 3).map(|r| r.canonical())
    })
}
