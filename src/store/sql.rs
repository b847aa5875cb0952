//! The store on SQL: the embedded SQLite database (`tollgate.db` in the data dir, WAL mode,
//! `synchronous=FULL`, so a committed transaction survives a power cut) or PostgreSQL shared by
//! several instances (SPEC O3). The statements are the same for both ([`crate::db`]); only the
//! schema migrations are written per dialect.
//!
//! Blocking calls run on tokio's blocking pool, never on a reactor thread. Schema changes are
//! numbered migrations (SQLite: tracked in `PRAGMA user_version`; PostgreSQL: in
//! `schema_version`, applied under an advisory lock so instances starting together take turns);
//! a database from a newer tollgate is refused rather than guessed at.
//!
//! # The caller cache
//! Every request reads its caller (`principal`: user, groups, organization, revocation of its
//! token) and the account's password policy. Those rows change rarely, so the answers are cached
//! in memory ([`CallerCache`]) and the request skips the blocking pool and SQLite altogether.
//! Correctness rests on one rule: **every call that changes any row bumps the store's
//! generation before it returns** ([`SqlStore::call`] compares SQLite's `total_changes`
//! around the closure, so no write method can forget), and a cached answer is used only while
//! the generation is the one it was read at (read under the same connection lock as the rows).
//! A group change, a logout, a password change, an organization move: each is a write, so the
//! very next request reads the store again (SPEC U7, U10). The month-to-date spend is not cached
//! here: it comes from the journal's [`SpendBook`], which its writer keeps exactly at the
//! committed `ledger_spend`. This holds because the serving process is the only writer of these
//! tables (the CLI subcommands only read them); so the cache is off on PostgreSQL, where other
//! instances write too, and every request reads its caller from the database.

pub mod accounts;
pub mod login;
pub mod org;
pub mod services;

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, RwLock};

use super::accounts::PrincipalRecord;
use super::{Health, StoreError};
use crate::auth::PasswordPolicyParams;
use crate::auth::sealing::SecretSealer;
use crate::config::{StoreConfig, StoreKind};
use crate::db::{Behavior, Conn, Database, PgDatabase, SqliteDatabase, params};
use crate::journal::SpendBook;

/// Migrations in order; entry `i` moves the schema from version `i` to `i + 1`. Never edit a
/// released entry: add a new one.
const SQLITE_MIGRATIONS: &[&str] = &[
    // 1: bookkeeping
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
     INSERT INTO meta (key, value) VALUES ('created_by', 'tollgate'), ('probe', '0');",
    // 2: accounts, users and their credentials; organizations, membership history, handshakes.
    // Times are unix milliseconds. Rows of accounts are never deleted, so ids are never reused.
    "CREATE TABLE accounts (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        email TEXT NOT NULL,
        created_at INTEGER NOT NULL
     ) STRICT;
     CREATE TABLE users (
        account_id TEXT NOT NULL REFERENCES accounts(id),
        name_key TEXT NOT NULL,
        name TEXT NOT NULL,
        is_owner INTEGER NOT NULL DEFAULT 0,
        password_hash TEXT NOT NULL,
        password_changed_at INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        failed_logins INTEGER NOT NULL DEFAULT 0,
        locked_until INTEGER,
        mfa_secret TEXT,
        mfa_enabled INTEGER NOT NULL DEFAULT 0,
        mfa_last_step INTEGER,
        tokens_valid_after INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (account_id, name_key)
     ) STRICT;
     CREATE TABLE password_history (
        account_id TEXT NOT NULL,
        name_key TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        changed_at INTEGER NOT NULL,
        FOREIGN KEY (account_id, name_key) REFERENCES users(account_id, name_key) ON DELETE CASCADE
     ) STRICT;
     CREATE INDEX password_history_user ON password_history(account_id, name_key, changed_at);
     CREATE TABLE password_policies (
        account_id TEXT PRIMARY KEY REFERENCES accounts(id),
        min_length INTEGER NOT NULL,
        require_uppercase INTEGER NOT NULL,
        require_lowercase INTEGER NOT NULL,
        require_digit INTEGER NOT NULL,
        require_symbol INTEGER NOT NULL,
        max_age_days INTEGER,
        reuse_prevention INTEGER,
        updated_at INTEGER NOT NULL
     ) STRICT;
     CREATE TABLE access_keys (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        name_key TEXT NOT NULL,
        secret_hash TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        FOREIGN KEY (account_id, name_key) REFERENCES users(account_id, name_key) ON DELETE CASCADE
     ) STRICT;
     CREATE INDEX access_keys_user ON access_keys(account_id, name_key);
     CREATE TABLE revoked_tokens (
        jti TEXT PRIMARY KEY,
        expires_at INTEGER NOT NULL
     ) STRICT;
     CREATE TABLE groups (
        account_id TEXT NOT NULL REFERENCES accounts(id),
        name_key TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (account_id, name_key)
     ) STRICT;
     CREATE TABLE group_members (
        account_id TEXT NOT NULL,
        group_key TEXT NOT NULL,
        user_key TEXT NOT NULL,
        added_at INTEGER NOT NULL,
        PRIMARY KEY (account_id, group_key, user_key),
        FOREIGN KEY (account_id, group_key) REFERENCES groups(account_id, name_key) ON DELETE CASCADE,
        FOREIGN KEY (account_id, user_key) REFERENCES users(account_id, name_key) ON DELETE CASCADE
     ) STRICT;
     CREATE TABLE organizations (
        id TEXT PRIMARY KEY,
        management_account_id TEXT NOT NULL REFERENCES accounts(id),
        feature_set TEXT NOT NULL CHECK (feature_set IN ('CONSOLIDATED_BILLING', 'ALL_FEATURES')),
        created_at INTEGER NOT NULL,
        deleted_at INTEGER
     ) STRICT;
     CREATE UNIQUE INDEX organizations_live_management
        ON organizations(management_account_id) WHERE deleted_at IS NULL;
     CREATE TABLE memberships (
        id INTEGER PRIMARY KEY,
        org_id TEXT NOT NULL REFERENCES organizations(id),
        account_id TEXT NOT NULL REFERENCES accounts(id),
        joined_method TEXT NOT NULL CHECK (joined_method IN ('CREATED', 'INVITED')),
        joined_at INTEGER NOT NULL,
        left_at INTEGER
     ) STRICT;
     CREATE UNIQUE INDEX memberships_current ON memberships(account_id) WHERE left_at IS NULL;
     CREATE INDEX memberships_org ON memberships(org_id, joined_at);
     CREATE TABLE handshakes (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('INVITE', 'ENABLE_ALL_FEATURES', 'APPROVE_ALL_FEATURES')),
        state TEXT NOT NULL CHECK (state IN ('REQUESTED', 'OPEN', 'ACCEPTED', 'DECLINED', 'CANCELED', 'EXPIRED')),
        org_id TEXT NOT NULL REFERENCES organizations(id),
        from_account_id TEXT NOT NULL REFERENCES accounts(id),
        to_account_id TEXT REFERENCES accounts(id),
        parent_id TEXT REFERENCES handshakes(id),
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
     ) STRICT;
     CREATE INDEX handshakes_org ON handshakes(org_id, state);
     CREATE INDEX handshakes_to ON handshakes(to_account_id, state);",
    // 3: the durable journal (src/journal): the metering ledger and the decision log, each its
    // own hash chain (seq = chain position); the running month-to-date spend per account; and
    // the months whose bills are FINAL (late records are booked on the next open month, M6).
    // Decimal amounts are exact strings; times are unix milliseconds.
    "CREATE TABLE ledger (
        seq INTEGER PRIMARY KEY,
        record_id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL CHECK (kind IN ('call', 'transfer')),
        call_record_id TEXT,
        event_time INTEGER NOT NULL,
        commit_time INTEGER NOT NULL,
        request_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        payer_account_id TEXT NOT NULL,
        org_id TEXT,
        user_name TEXT NOT NULL,
        service TEXT NOT NULL,
        action TEXT NOT NULL,
        method TEXT NOT NULL,
        status INTEGER NOT NULL,
        bytes_in INTEGER NOT NULL,
        bytes_out INTEGER NOT NULL,
        quantity INTEGER NOT NULL,
        per_request TEXT,
        per_gb_in TEXT,
        per_gb_out TEXT,
        tiered INTEGER NOT NULL,
        amount_requests TEXT NOT NULL,
        amount_gb_in TEXT NOT NULL,
        amount_gb_out TEXT NOT NULL,
        amount TEXT NOT NULL,
        billing_month TEXT NOT NULL,
        original_month TEXT,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        CHECK ((kind = 'transfer') = (call_record_id IS NOT NULL))
     ) STRICT;
     CREATE INDEX ledger_request ON ledger(request_id);
     CREATE INDEX ledger_payer_month ON ledger(payer_account_id, billing_month);
     CREATE INDEX ledger_call ON ledger(call_record_id) WHERE call_record_id IS NOT NULL;
     CREATE TABLE ledger_spend (
        account_id TEXT NOT NULL,
        month TEXT NOT NULL,
        amount TEXT NOT NULL,
        records INTEGER NOT NULL,
        PRIMARY KEY (account_id, month)
     ) STRICT, WITHOUT ROWID;
     CREATE TABLE final_months (
        payer_account_id TEXT NOT NULL,
        month TEXT NOT NULL,
        finalized_at INTEGER NOT NULL,
        content_hash TEXT NOT NULL,
        through_seq INTEGER NOT NULL,
        PRIMARY KEY (payer_account_id, month)
     ) STRICT;
     CREATE TABLE decisions (
        seq INTEGER PRIMARY KEY,
        record_id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL CHECK (kind IN ('service', 'api', 'reload')),
        time INTEGER NOT NULL,
        request_id TEXT,
        account_id TEXT,
        user_name TEXT,
        action TEXT NOT NULL,
        resource TEXT NOT NULL,
        source_ip TEXT,
        mfa INTEGER,
        decision TEXT CHECK (decision IN ('Allow', 'Deny')),
        denied_by TEXT CHECK (denied_by IN ('account', 'organization')),
        account_policies TEXT NOT NULL,
        org_applied INTEGER NOT NULL,
        org_reason TEXT,
        org_policies TEXT NOT NULL,
        errors TEXT NOT NULL,
        policy_version TEXT NOT NULL,
        request_json TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        CHECK ((kind = 'reload') = (decision IS NULL))
     ) STRICT;
     CREATE INDEX decisions_request ON decisions(request_id);
     CREATE INDEX decisions_account ON decisions(account_id, seq);
     CREATE INDEX decisions_account_user ON decisions(account_id, user_name COLLATE NOCASE, seq);
     CREATE INDEX decisions_account_action ON decisions(account_id, action, seq);
     CREATE INDEX decisions_account_decision ON decisions(account_id, decision, seq);
     CREATE INDEX decisions_time ON decisions(time);",
    // 4: service sign-ups and plan periods (SPEC S1, S2), half-open intervals in unix ms; at
    // most one open period per (account, service), enforced by the partial unique indexes.
    "CREATE TABLE service_signups (
        id INTEGER PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        service TEXT NOT NULL,
        signed_up_at INTEGER NOT NULL,
        signed_off_at INTEGER,
        CHECK (signed_off_at IS NULL OR signed_off_at >= signed_up_at)
     ) STRICT;
     CREATE UNIQUE INDEX service_signups_open
        ON service_signups(account_id, service) WHERE signed_off_at IS NULL;
     CREATE INDEX service_signups_account ON service_signups(account_id, service, signed_up_at);
     CREATE TABLE plan_periods (
        id INTEGER PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        service TEXT NOT NULL,
        plan TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        ended_at INTEGER,
        CHECK (ended_at IS NULL OR ended_at >= started_at)
     ) STRICT;
     CREATE UNIQUE INDEX plan_periods_open
        ON plan_periods(account_id, service) WHERE ended_at IS NULL;
     CREATE INDEX plan_periods_account ON plan_periods(account_id, started_at);",
    // 5: the audit archive (src/audit): every policy tree that was ever active, by version (its
    // content hash), with its full sources as a JSON object `{relative path: text}`, so old
    // decisions are explained with the policies of their time (D3); and the checkpoints that
    // retention leaves when it removes a verified prefix of the decision log (D5): verification
    // starts after the newest one.
    "CREATE TABLE policy_versions (
        version TEXT PRIMARY KEY,
        first_loaded_at INTEGER NOT NULL,
        sources_json TEXT NOT NULL
     ) STRICT;
     CREATE TABLE decision_checkpoints (
        through_seq INTEGER PRIMARY KEY,
        through_hash TEXT NOT NULL,
        pruned_at INTEGER NOT NULL,
        records INTEGER NOT NULL
     ) STRICT;",
    // edge (issue 16 item 14): the `X-Request-Id` an untrusted client sent, kept beside the
    // gateway's own id in both logs (F2). Hashed only when present (journal/ledger.rs).
    "ALTER TABLE ledger ADD COLUMN client_request_id TEXT;
     ALTER TABLE decisions ADD COLUMN client_request_id TEXT;",
    // 6 (issue 16, item 8): login failures per (subject, client address), for existing and
    // unknown users alike (src/store/sql/login.rs); the row with address `*` is the user-wide
    // lock. A user locked before this migration stays locked for everyone until its lock ends.
    // `users.failed_logins` and `users.locked_until` are no longer read.
    "CREATE TABLE login_failures (
        subject TEXT NOT NULL,
        address TEXT NOT NULL,
        failures INTEGER NOT NULL,
        last_failure_at INTEGER NOT NULL,
        locked_until INTEGER,
        PRIMARY KEY (subject, address)
     ) STRICT;
     CREATE INDEX login_failures_last ON login_failures(last_failure_at);
     CREATE TABLE login_failure_times (
        subject TEXT NOT NULL,
        at INTEGER NOT NULL
     ) STRICT;
     CREATE INDEX login_failure_times_subject ON login_failure_times(subject, at);
     CREATE INDEX login_failure_times_at ON login_failure_times(at);
     INSERT INTO login_failures (subject, address, failures, last_failure_at, locked_until)
        SELECT account_id || '/' || name_key, '*', 0, locked_until - 900000, locked_until
        FROM users WHERE locked_until IS NOT NULL;",
    // (issue 17) the price book: every set of route prices and plans the gateway ran with, as
    // numbered versions, hash-chained (`content` is the book as JSON, see `src/pricebook.rs`);
    // each ledger record names the version it was made under (NULL: before the price book).
    "CREATE TABLE price_versions (
        version INTEGER PRIMARY KEY,
        effective_from INTEGER NOT NULL,
        content TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
     ) STRICT;
     ALTER TABLE ledger ADD COLUMN price_version INTEGER;",
    // ledger marks (issue 17 item 6, SPEC M6, M7): a hash chain of the events that change what
    // the ledger's tail must look like: each FINAL seal (so deleting a `final_months` row is
    // seen) and each operator's acceptance of a truncated ledger (who, when, what was lost).
    // Every mark records the ledger head when it was made, a witness of the ledger's length.
    "CREATE TABLE ledger_marks (
        seq INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('final', 'accept_truncation')),
        time INTEGER NOT NULL,
        payer_account_id TEXT,
        month TEXT,
        content_hash TEXT,
        through_seq INTEGER NOT NULL,
        ledger_seq INTEGER NOT NULL,
        ledger_hash TEXT NOT NULL,
        witnessed_seq INTEGER NOT NULL,
        actor TEXT,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
     ) STRICT;",
];

/// The PostgreSQL schema, in the same numbering scheme as [`SQLITE_MIGRATIONS`] but its own
/// list. Same tables and columns; integers are `BIGINT`, generated ids `BIGSERIAL`, and
/// `password_history` has an explicit `rowid` so the statements written for SQLite's implicit
/// one run unchanged.
const POSTGRES_MIGRATIONS: &[&str] = &[
    // 1: everything of SQLite migrations 1 to 5.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     INSERT INTO meta (key, value) VALUES ('created_by', 'tollgate'), ('probe', '0');
     CREATE TABLE accounts (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        email TEXT NOT NULL,
        created_at BIGINT NOT NULL
     );
     CREATE TABLE users (
        account_id TEXT NOT NULL REFERENCES accounts(id),
        name_key TEXT NOT NULL,
        name TEXT NOT NULL,
        is_owner BIGINT NOT NULL DEFAULT 0,
        password_hash TEXT NOT NULL,
        password_changed_at BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        failed_logins BIGINT NOT NULL DEFAULT 0,
        locked_until BIGINT,
        mfa_secret TEXT,
        mfa_enabled BIGINT NOT NULL DEFAULT 0,
        mfa_last_step BIGINT,
        tokens_valid_after BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (account_id, name_key)
     );
     CREATE TABLE password_history (
        rowid BIGSERIAL PRIMARY KEY,
        account_id TEXT NOT NULL,
        name_key TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        changed_at BIGINT NOT NULL,
        FOREIGN KEY (account_id, name_key) REFERENCES users(account_id, name_key) ON DELETE CASCADE
     );
     CREATE INDEX password_history_user ON password_history(account_id, name_key, changed_at);
     CREATE TABLE password_policies (
        account_id TEXT PRIMARY KEY REFERENCES accounts(id),
        min_length BIGINT NOT NULL,
        require_uppercase BIGINT NOT NULL,
        require_lowercase BIGINT NOT NULL,
        require_digit BIGINT NOT NULL,
        require_symbol BIGINT NOT NULL,
        max_age_days BIGINT,
        reuse_prevention BIGINT,
        updated_at BIGINT NOT NULL
     );
     CREATE TABLE access_keys (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        name_key TEXT NOT NULL,
        secret_hash TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        FOREIGN KEY (account_id, name_key) REFERENCES users(account_id, name_key) ON DELETE CASCADE
     );
     CREATE INDEX access_keys_user ON access_keys(account_id, name_key);
     CREATE TABLE revoked_tokens (
        jti TEXT PRIMARY KEY,
        expires_at BIGINT NOT NULL
     );
     CREATE TABLE groups (
        account_id TEXT NOT NULL REFERENCES accounts(id),
        name_key TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (account_id, name_key)
     );
     CREATE TABLE group_members (
        account_id TEXT NOT NULL,
        group_key TEXT NOT NULL,
        user_key TEXT NOT NULL,
        added_at BIGINT NOT NULL,
        PRIMARY KEY (account_id, group_key, user_key),
        FOREIGN KEY (account_id, group_key) REFERENCES groups(account_id, name_key) ON DELETE CASCADE,
        FOREIGN KEY (account_id, user_key) REFERENCES users(account_id, name_key) ON DELETE CASCADE
     );
     CREATE TABLE organizations (
        id TEXT PRIMARY KEY,
        management_account_id TEXT NOT NULL REFERENCES accounts(id),
        feature_set TEXT NOT NULL CHECK (feature_set IN ('CONSOLIDATED_BILLING', 'ALL_FEATURES')),
        created_at BIGINT NOT NULL,
        deleted_at BIGINT
     );
     CREATE UNIQUE INDEX organizations_live_management
        ON organizations(management_account_id) WHERE deleted_at IS NULL;
     CREATE TABLE memberships (
        id BIGSERIAL PRIMARY KEY,
        org_id TEXT NOT NULL REFERENCES organizations(id),
        account_id TEXT NOT NULL REFERENCES accounts(id),
        joined_method TEXT NOT NULL CHECK (joined_method IN ('CREATED', 'INVITED')),
        joined_at BIGINT NOT NULL,
        left_at BIGINT
     );
     CREATE UNIQUE INDEX memberships_current ON memberships(account_id) WHERE left_at IS NULL;
     CREATE INDEX memberships_org ON memberships(org_id, joined_at);
     CREATE TABLE handshakes (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('INVITE', 'ENABLE_ALL_FEATURES', 'APPROVE_ALL_FEATURES')),
        state TEXT NOT NULL CHECK (state IN ('REQUESTED', 'OPEN', 'ACCEPTED', 'DECLINED', 'CANCELED', 'EXPIRED')),
        org_id TEXT NOT NULL REFERENCES organizations(id),
        from_account_id TEXT NOT NULL REFERENCES accounts(id),
        to_account_id TEXT REFERENCES accounts(id),
        parent_id TEXT REFERENCES handshakes(id),
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
     );
     CREATE INDEX handshakes_org ON handshakes(org_id, state);
     CREATE INDEX handshakes_to ON handshakes(to_account_id, state);
     CREATE TABLE ledger (
        seq BIGINT PRIMARY KEY,
        record_id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL CHECK (kind IN ('call', 'transfer')),
        call_record_id TEXT,
        event_time BIGINT NOT NULL,
        commit_time BIGINT NOT NULL,
        request_id TEXT NOT NULL,
        account_id TEXT NOT NULL,
        payer_account_id TEXT NOT NULL,
        org_id TEXT,
        user_name TEXT NOT NULL,
        service TEXT NOT NULL,
        action TEXT NOT NULL,
        method TEXT NOT NULL,
        status BIGINT NOT NULL,
        bytes_in BIGINT NOT NULL,
        bytes_out BIGINT NOT NULL,
        quantity BIGINT NOT NULL,
        per_request TEXT,
        per_gb_in TEXT,
        per_gb_out TEXT,
        tiered BIGINT NOT NULL,
        amount_requests TEXT NOT NULL,
        amount_gb_in TEXT NOT NULL,
        amount_gb_out TEXT NOT NULL,
        amount TEXT NOT NULL,
        billing_month TEXT NOT NULL,
        original_month TEXT,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        CHECK ((kind = 'transfer') = (call_record_id IS NOT NULL))
     );
     CREATE INDEX ledger_request ON ledger(request_id);
     CREATE INDEX ledger_payer_month ON ledger(payer_account_id, billing_month);
     CREATE INDEX ledger_call ON ledger(call_record_id) WHERE call_record_id IS NOT NULL;
     CREATE TABLE ledger_spend (
        account_id TEXT NOT NULL,
        month TEXT NOT NULL,
        amount TEXT NOT NULL,
        records BIGINT NOT NULL,
        PRIMARY KEY (account_id, month)
     );
     CREATE TABLE final_months (
        payer_account_id TEXT NOT NULL,
        month TEXT NOT NULL,
        finalized_at BIGINT NOT NULL,
        content_hash TEXT NOT NULL,
        through_seq BIGINT NOT NULL,
        PRIMARY KEY (payer_account_id, month)
     );
     CREATE TABLE decisions (
        seq BIGINT PRIMARY KEY,
        record_id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL CHECK (kind IN ('service', 'api', 'reload')),
        time BIGINT NOT NULL,
        request_id TEXT,
        account_id TEXT,
        user_name TEXT,
        action TEXT NOT NULL,
        resource TEXT NOT NULL,
        source_ip TEXT,
        mfa BIGINT,
        decision TEXT CHECK (decision IN ('Allow', 'Deny')),
        denied_by TEXT CHECK (denied_by IN ('account', 'organization')),
        account_policies TEXT NOT NULL,
        org_applied BIGINT NOT NULL,
        org_reason TEXT,
        org_policies TEXT NOT NULL,
        errors TEXT NOT NULL,
        policy_version TEXT NOT NULL,
        request_json TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        CHECK ((kind = 'reload') = (decision IS NULL))
     );
     CREATE INDEX decisions_request ON decisions(request_id);
     CREATE INDEX decisions_account ON decisions(account_id, seq);
     CREATE INDEX decisions_account_user ON decisions(account_id, lower(user_name), seq);
     CREATE INDEX decisions_account_action ON decisions(account_id, action, seq);
     CREATE INDEX decisions_account_decision ON decisions(account_id, decision, seq);
     CREATE INDEX decisions_time ON decisions(time);
     CREATE TABLE service_signups (
        id BIGSERIAL PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        service TEXT NOT NULL,
        signed_up_at BIGINT NOT NULL,
        signed_off_at BIGINT,
        CHECK (signed_off_at IS NULL OR signed_off_at >= signed_up_at)
     );
     CREATE UNIQUE INDEX service_signups_open
        ON service_signups(account_id, service) WHERE signed_off_at IS NULL;
     CREATE INDEX service_signups_account ON service_signups(account_id, service, signed_up_at);
     CREATE TABLE plan_periods (
        id BIGSERIAL PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        service TEXT NOT NULL,
        plan TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        ended_at BIGINT,
        CHECK (ended_at IS NULL OR ended_at >= started_at)
     );
     CREATE UNIQUE INDEX plan_periods_open
        ON plan_periods(account_id, service) WHERE ended_at IS NULL;
     CREATE INDEX plan_periods_account ON plan_periods(account_id, started_at);
     CREATE TABLE policy_versions (
        version TEXT PRIMARY KEY,
        first_loaded_at BIGINT NOT NULL,
        sources_json TEXT NOT NULL
     );
     CREATE TABLE decision_checkpoints (
        through_seq BIGINT PRIMARY KEY,
        through_hash TEXT NOT NULL,
        pruned_at BIGINT NOT NULL,
        records BIGINT NOT NULL
     );",
    // edge (issue 16 item 14): the `X-Request-Id` an untrusted client sent, kept beside the
    // gateway's own id in both logs (F2). Hashed only when present (journal/ledger.rs).
    "ALTER TABLE ledger ADD COLUMN client_request_id TEXT;
     ALTER TABLE decisions ADD COLUMN client_request_id TEXT;",
    // 2: as SQLite migration 6 (login failures per subject and client address).
    "CREATE TABLE login_failures (
        subject TEXT NOT NULL,
        address TEXT NOT NULL,
        failures BIGINT NOT NULL,
        last_failure_at BIGINT NOT NULL,
        locked_until BIGINT,
        PRIMARY KEY (subject, address)
     );
     CREATE INDEX login_failures_last ON login_failures(last_failure_at);
     CREATE TABLE login_failure_times (
        subject TEXT NOT NULL,
        at BIGINT NOT NULL
     );
     CREATE INDEX login_failure_times_subject ON login_failure_times(subject, at);
     CREATE INDEX login_failure_times_at ON login_failure_times(at);
     INSERT INTO login_failures (subject, address, failures, last_failure_at, locked_until)
        SELECT account_id || '/' || name_key, '*', 0, locked_until - 900000, locked_until
        FROM users WHERE locked_until IS NOT NULL;",
    // (issue 17) the price book (see the SQLite entry).
    "CREATE TABLE price_versions (
        version BIGINT PRIMARY KEY,
        effective_from BIGINT NOT NULL,
        content TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
     );
     ALTER TABLE ledger ADD COLUMN price_version BIGINT;",
    // ledger marks: as the SQLite migration of the same name.
    "CREATE TABLE ledger_marks (
        seq BIGINT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('final', 'accept_truncation')),
        time BIGINT NOT NULL,
        payer_account_id TEXT,
        month TEXT,
        content_hash TEXT,
        through_seq BIGINT NOT NULL,
        ledger_seq BIGINT NOT NULL,
        ledger_hash TEXT NOT NULL,
        witnessed_seq BIGINT NOT NULL,
        actor TEXT,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
     );",
];

/// The store, on either database.
#[derive(Clone)]
pub struct SqlStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    /// SQLite: the store's one read-write connection (the journal writer has its own).
    /// PostgreSQL: `None`; each call takes a connection from the pool.
    conn: Option<Mutex<Conn>>,
    /// Bumped by every call that changed a row (module docs).
    generation: AtomicU64,
    callers: RwLock<CallerCache>,
    /// The journal's spend book, once the journal is open; without it nothing is cached.
    spend: OnceLock<Arc<SpendBook>>,
    /// Seals TOTP secrets at rest, once the key is loaded (`auth::sealing`).
    sealer: OnceLock<SecretSealer>,
}

/// Most principals (one per live token) or password policies cached; beyond it the cache
/// starts over.
pub const CALLER_CACHE_CAPACITY: usize = 64 * 1024;

/// Answers read at one store generation; all of them are dropped when it moves on.
#[derive(Default)]
pub(crate) struct CallerCache {
    generation: u64,
    /// `(account, user key, jti)` -> the principal, its spend left at zero (filled per request).
    pub(crate) principals: HashMap<(String, String, String), PrincipalRecord>,
    pub(crate) password_policies: HashMap<String, Option<PasswordPolicyParams>>,
}

// === impl SqlStore ===

impl SqlStore {
    /// Opens the configured store and brings its schema up to date: SQLite in the data dir, or
    /// the PostgreSQL server. Blocking (PostgreSQL connects); call it before serving or on the
    /// blocking pool.
    pub fn open_config(config: &StoreConfig) -> Result<Self, StoreError> {
        match &config.kind {
            StoreKind::Sqlite => Self::open(&config.data_dir),
            StoreKind::Postgres {
                url,
                password,
                pool_size,
            } => Self::open_postgres(
                url,
                password.as_deref(),
                u32::try_from(*pool_size).unwrap_or(u32::MAX),
            ),
        }
    }

    /// Opens (creating on first start) `tollgate.db` in `data_dir` and brings its schema up to date.
    /// The data dir is created 0700 and the database file 0600.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        create_private_dir(data_dir)?;
        let path = data_dir.join("tollgate.db");
        if !path.exists() {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| {
                    StoreError::Unavailable(format!("cannot create `{}`: {e}", path.display()))
                })?;
        }
        let db = SqliteDatabase::new(path);
        let conn = db.connect()?;
        let store = Self::with(Database::Sqlite(Arc::new(db)), Some(conn));
        store.migrate_sqlite()?;
        Ok(store)
    }

    /// Connects to PostgreSQL at `url` and brings its schema up to date.
    pub fn open_postgres(
        url: &str,
        password: Option<&str>,
        pool_size: u32,
    ) -> Result<Self, StoreError> {
        let db = PgDatabase::open(url, password, pool_size)?;
        let store = Self::with(Database::Postgres(Arc::new(db)), None);
        store.migrate_postgres()?;
        Ok(store)
    }

    fn with(db: Database, conn: Option<Conn>) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                conn: conn.map(Mutex::new),
                generation: AtomicU64::new(0),
                callers: RwLock::new(CallerCache::default()),
                spend: OnceLock::new(),
                sealer: OnceLock::new(),
            }),
        }
    }

    /// The database, for the journal and the audit archive (which own their tables).
    pub fn database(&self) -> &Database {
        &self.inner.db
    }

    /// The SQLite file, if the store is embedded.
    pub fn path(&self) -> Option<&Path> {
        match &self.inner.db {
            Database::Sqlite(db) => Some(db.path()),
            Database::Postgres(_) => None,
        }
    }

    fn migrate_sqlite(&self) -> Result<(), StoreError> {
        let Some(conn) = &self.inner.conn else {
            return Ok(());
        };
        let conn = conn.lock();
        let current: i64 = conn.query_row("PRAGMA user_version", params![], |r| r.get(0))?;
        apply_migrations(&conn, SQLITE_MIGRATIONS, current, |tx, version| {
            tx.execute_batch(&format!("PRAGMA user_version = {version}"))
        })
    }

    fn migrate_postgres(&self) -> Result<(), StoreError> {
        let conn = self.inner.db.connect()?;
        // Held across the migrations' own transactions: instances starting together take turns,
        // and the later ones find the schema current.
        let mut outcome = Ok(());
        conn.with_session_lock("migrate", || {
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)",
            )?;
            let current: Option<i64> =
                conn.query_row("SELECT MAX(version) FROM schema_version", params![], |r| {
                    r.get(0)
                })?;
            outcome = apply_migrations(
                &conn,
                POSTGRES_MIGRATIONS,
                current.unwrap_or(0),
                |tx, version| {
                    tx.execute(
                        "INSERT INTO schema_version (version) VALUES (?1)",
                        params![version],
                    )
                    .map(|_| ())
                },
            );
            Ok(())
        })?;
        outcome
    }

    /// Runs `f` with a connection on the blocking pool. If `f` changed any row (even in a
    /// transaction it then rolled back), the generation moves on before this returns, so no
    /// cached caller read before the change is used after it.
    pub async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || match &inner.conn {
            Some(conn) => {
                let mut conn = conn.lock();
                let before = conn.total_changes();
                let result = f(&mut conn);
                if conn.total_changes() != before {
                    inner.generation.fetch_add(1, Ordering::AcqRel);
                }
                result
            }
            None => {
                let mut conn = inner.db.connect()?;
                f(&mut conn)
            }
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }

    /// Like [`SqlStore::call`], but a write does not move the generation on: only for tables
    /// that no cached answer is read from (the login failure counters, `login.rs`), so that a
    /// flood of failed logins does not make every other request read its caller again.
    pub async fn call_uncached<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || match &inner.conn {
            Some(conn) => f(&mut conn.lock()),
            None => {
                let mut conn = inner.db.connect()?;
                f(&mut conn)
            }
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }

    /// Lets principal reads take the month-to-date spend from the journal's book, which turns
    /// the caller cache on (module docs). Call once, right after opening the journal; ignored
    /// on a shared database, where the book would miss other instances' spend.
    pub fn attach_spend_book(&self, book: Arc<SpendBook>) {
        if !self.inner.db.is_shared() {
            let _ = self.inner.spend.set(book);
        }
    }

    /// Seals TOTP secrets from now on with `sealer`, and seals every secret still stored in
    /// plain text (the data migration of issue 16 item 15: it needs the key, which lives in
    /// the data dir, not in the database, so it runs here rather than as a numbered SQL
    /// migration). One exclusive transaction: instances of a fleet starting together take
    /// turns, and the later ones find nothing left to seal. Returns how many were sealed.
    pub async fn seal_mfa_secrets(&self, sealer: SecretSealer) -> Result<usize, StoreError> {
        let _ = self.inner.sealer.set(sealer.clone());
        self.call(move |conn| {
            let tx = conn.transaction(Behavior::Immediate)?;
            let plain = tx.query_map(
                "SELECT account_id, name_key, mfa_secret FROM users
                 WHERE mfa_secret IS NOT NULL AND mfa_secret NOT LIKE 'v1:%'",
                params![],
                |r| {
                    Ok((
                        r.get::<String>(0)?,
                        r.get::<String>(1)?,
                        r.get::<String>(2)?,
                    ))
                },
            )?;
            for (account, key, secret) in &plain {
                let sealed = sealer
                    .seal(secret, account, key)
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                tx.execute(
                    "UPDATE users SET mfa_secret = ?3 WHERE account_id = ?1 AND name_key = ?2",
                    params![account, key, sealed],
                )?;
            }
            tx.commit()?;
            Ok(plain.len())
        })
        .await
    }

    pub(crate) fn sealer(&self) -> Option<SecretSealer> {
        self.inner.sealer.get().cloned()
    }

    pub(crate) fn spend_book(&self) -> Option<&Arc<SpendBook>> {
        self.inner.spend.get()
    }

    /// The store's generation, read while holding the connection (so it matches the rows
    /// read under the same lock). Public for tests and diagnostics: it moves on with every
    /// write, and with it the caller cache is dropped.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Runs `f` on the cache if it is still at the current generation.
    pub(crate) fn cached<T>(&self, f: impl FnOnce(&CallerCache) -> Option<T>) -> Option<T> {
        self.inner.spend.get()?;
        let cache = self.inner.callers.read();
        if cache.generation != self.generation() {
            return None;
        }
        f(&cache)
    }

    /// Stores answers read at `generation` (a later generation empties the cache first; an
    /// answer from an older one is dropped).
    pub(crate) fn remember(&self, generation: u64, f: impl FnOnce(&mut CallerCache)) {
        if self.inner.spend.get().is_none() {
            return;
        }
        let mut cache = self.inner.callers.write();
        if generation < cache.generation {
            return;
        }
        if generation > cache.generation
            || cache.principals.len() >= CALLER_CACHE_CAPACITY
            || cache.password_policies.len() >= CALLER_CACHE_CAPACITY
        {
            cache.principals.clear();
            cache.password_policies.clear();
            cache.generation = generation;
        }
        f(&mut cache);
    }
}

/// Applies `migrations[current..]`, each in its own transaction that also records its number
/// with `record`.
fn apply_migrations(
    conn: &Conn,
    migrations: &[&str],
    current: i64,
    record: impl Fn(&Conn, i64) -> Result<(), crate::db::DbError>,
) -> Result<(), StoreError> {
    let target = migrations.len() as i64;
    if current > target {
        return Err(StoreError::Corrupt(format!(
            "database schema version {current} is newer than this tollgate knows ({target}); upgrade tollgate"
        )));
    }
    for (i, sql) in migrations.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction(Behavior::Immediate)?;
        tx.execute_batch(sql)?;
        record(&tx, (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl Health for SqlStore {
    async fn check_ready(&self) -> Result<(), StoreError> {
        self.call(|conn| {
            // A lock that a writer would need, taken and given back with nothing written:
            // SQLite's write lock; on PostgreSQL a lock on `meta` that conflicts only with a
            // lock held to keep writers out. Then one read. The transaction rolls back on drop.
            let tx = match conn.dialect() {
                crate::db::Dialect::Sqlite => conn.transaction(Behavior::Immediate)?,
                crate::db::Dialect::Postgres => {
                    let tx = conn.transaction(Behavior::Deferred)?;
                    tx.execute_batch("LOCK TABLE meta IN ROW SHARE MODE")?;
                    tx
                }
            };
            tx.query_row(
                "SELECT value FROM meta WHERE key = 'created_by'",
                params![],
                |r| r.get::<String>(0),
            )?;
            Ok(())
        })
        .await
    }
}

/// Times are stored as unix milliseconds.
pub fn to_ms(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn from_ms(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Creates `dir` (and parents) with mode 0700 if it does not exist.
pub fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create `{}`: {e}", dir.display()))
        })?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| {
            StoreError::Unavailable(format!("cannot restrict `{}`: {e}", dir.display()))
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn creates_private_files_and_migrates_once() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let data = dir.path().join("data");
        let store = SqlStore::open(&data).unwrap_or_else(|e| panic!("{e}"));
        let mode = |p: &Path| {
            fs::metadata(p)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0)
        };
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(store.path().unwrap()), 0o600);
        store.check_ready().await.unwrap_or_else(|e| panic!("{e}"));
        store
            .call(|c| Ok(c.execute("UPDATE meta SET value = '1' WHERE key = 'probe'", params![])?))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        drop(store);
        // A second open finds the schema current and keeps the data.
        let store = SqlStore::open(&data).unwrap_or_else(|e| panic!("{e}"));
        let probe: String = store
            .call(|c| {
                Ok(
                    c.query_row("SELECT value FROM meta WHERE key='probe'", params![], |r| {
                        r.get(0)
                    })?,
                )
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(probe, "1");
    }

    #[tokio::test]
    async fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = SqlStore::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        store
            .call(|c| Ok(c.execute_batch("PRAGMA user_version = 999")?))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        drop(store);
        assert!(matches!(
            SqlStore::open(dir.path()),
            Err(StoreError::Corrupt(_))
        ));
    }
}
