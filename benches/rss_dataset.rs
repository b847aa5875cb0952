//! Builds the data set of issue 9's memory goal ("RSS <= 200 MiB with 10,000 accounts, 100,000
//! users and 1,000 policy files loaded") for `scripts/rss.sh`: a data dir and a policy tree that
//! `tollgate serve` opens as it would any other.
//!
//! Usage: `cargo run --release --example rss_dataset -- --out DIR [--accounts 10000]
//! [--users-per-account 10] [--policy-files 1000] [--policies-from policies]`.
//! Writes `DIR/data/tollgate.db` (the store, opened with `SqlStore::open` so every migration
//! runs, then filled with plain rusqlite in one transaction per 1,000 accounts),
//! `DIR/policies/` (a copy of the shipped tree plus one `accounts/<id>/access.cedar` per
//! policy file) and `DIR/dataset.env` (counts, the shared password and a few account ids, for
//! the script to source).
//!
//! Not shipped, and not a model for store code: it writes the tables of migration 2 directly,
//! so it must follow their columns. Every user gets the same Argon2id hash (argon2 crate
//! defaults, as `auth::password` makes them) of one known password: hashing 100,000 passwords
//! would take ~25 minutes of CPU and would not change what the gateway holds in memory.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use argon2::Argon2;
use argon2::password_hash::{PasswordHasher as _, SaltString};
use clap::Parser;
use rusqlite::{Connection, Transaction, params};

/// The password of every generated user (test data, not a secret).
const PASSWORD: &str = "Rss-dataset-pass-1!";
/// Accounts per transaction.
const BATCH: usize = 1_000;
/// Account ids are `FIRST_ID + i * ID_STRIDE`: 12 digits, never starting with 0, reproducible.
const FIRST_ID: u64 = 300_000_000_000;
const ID_STRIDE: u64 = 1_000_003;
/// Users 1..=4 of each account are in `readers`, 5..=6 in `writers`; 0 is the owner.
const READERS: std::ops::RangeInclusive<usize> = 1..=4;
const WRITERS: std::ops::RangeInclusive<usize> = 5..=6;
/// How many account ids of each kind `dataset.env` lists for the script's calls.
const SAMPLE: usize = 20;

#[derive(Debug, Parser)]
struct Args {
    /// Output directory (created; must be empty or absent).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 10_000)]
    accounts: usize,
    /// Users per account, the owner included.
    #[arg(long, default_value_t = 10)]
    users_per_account: usize,
    /// Accounts that get a policy folder with one file each (spread evenly over the accounts).
    #[arg(long, default_value_t = 1_000)]
    policy_files: usize,
    /// The shipped tree to start from (schema, default-account/, the example folder).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/policies"))]
    policies_from: PathBuf,
}

struct Counts {
    accounts: usize,
    users: usize,
    groups: usize,
    members: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.users_per_account == 0 {
        bail!("--users-per-account must be at least 1 (the owner)");
    }
    if args.policy_files > args.accounts {
        bail!("--policy-files cannot exceed --accounts (one file per account folder)");
    }
    if args.out.exists() && fs::read_dir(&args.out)?.next().is_some() {
        bail!("`{}` is not empty", args.out.display());
    }
    let data_dir = args.out.join("data");
    let policies_dir = args.out.join("policies");

    let ids: Vec<String> = (0..args.accounts)
        .map(|i| (FIRST_ID + i as u64 * ID_STRIDE).to_string())
        .collect();
    let with_folder = folder_flags(args.accounts, args.policy_files);

    // The store the normal way, so the schema is exactly what the gateway migrates to.
    drop(tollgate::store::sql::SqlStore::open(&data_dir)?);
    let hash = password_hash()?;
    let counts = fill_store(
        &data_dir.join("tollgate.db"),
        &ids,
        args.users_per_account,
        &hash,
    )?;

    copy_dir(&args.policies_from, &policies_dir)?;
    let mut files = 0;
    for (i, id) in ids.iter().enumerate() {
        if with_folder.get(i).copied().unwrap_or(false) {
            let dir = policies_dir.join("accounts").join(id);
            fs::create_dir_all(&dir)?;
            fs::write(dir.join("access.cedar"), account_policies(id, files))?;
            files += 1;
        }
    }

    let sample = |folder: bool| -> String {
        ids.iter()
            .zip(&with_folder)
            .filter(|(_, f)| **f == folder)
            .take(SAMPLE)
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut env = String::new();
    writeln!(env, "RSS_ACCOUNTS={}", counts.accounts)?;
    writeln!(env, "RSS_USERS={}", counts.users)?;
    writeln!(env, "RSS_GROUPS={}", counts.groups)?;
    writeln!(env, "RSS_GROUP_MEMBERS={}", counts.members)?;
    writeln!(env, "RSS_POLICY_FILES_GENERATED={files}")?;
    writeln!(env, "RSS_PASSWORD='{PASSWORD}'")?;
    writeln!(env, "RSS_FOLDER_ACCOUNTS='{}'", sample(true))?;
    writeln!(env, "RSS_PLAIN_ACCOUNTS='{}'", sample(false))?;
    fs::write(args.out.join("dataset.env"), env)?;

    println!(
        "rss_dataset: {} accounts, {} users, {} groups, {} group members, {} generated policy files in {}",
        counts.accounts,
        counts.users,
        counts.groups,
        counts.members,
        files,
        args.out.display()
    );
    Ok(())
}

/// Which accounts get a folder: `files` of them, evenly spaced from the first.
fn folder_flags(accounts: usize, files: usize) -> Vec<bool> {
    let mut flags = vec![false; accounts];
    if files == 0 {
        return flags;
    }
    for k in 0..files {
        if let Some(flag) = flags.get_mut(k * accounts / files) {
            *flag = true;
        }
    }
    flags
}

/// One Argon2id PHC string with the gateway's parameters (the argon2 crate's defaults).
fn password_hash() -> Result<String> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let hash = Argon2::default()
        .hash_password(PASSWORD.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    Ok(hash.to_string())
}

fn fill_store(db: &Path, ids: &[String], per_account: usize, hash: &str) -> Result<Counts> {
    let mut conn = Connection::open(db).with_context(|| format!("open `{}`", db.display()))?;
    conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;")?;
    let now = chrono::Utc::now().timestamp_millis();
    let mut counts = Counts {
        accounts: 0,
        users: 0,
        groups: 0,
        members: 0,
    };
    for (batch_no, batch) in ids.chunks(BATCH).enumerate() {
        let tx = conn.transaction()?;
        for (j, id) in batch.iter().enumerate() {
            let i = batch_no * BATCH + j;
            insert_account(&tx, id, i, per_account, hash, now, &mut counts)?;
        }
        tx.commit()?;
    }
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(counts)
}

fn insert_account(
    tx: &Transaction<'_>,
    id: &str,
    i: usize,
    per_account: usize,
    hash: &str,
    now: i64,
    counts: &mut Counts,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO accounts (id, name, email, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        id,
        format!("account {i}"),
        format!("billing+{i}@example.com"),
        now
    ])?;
    counts.accounts += 1;
    let mut user = tx.prepare_cached(
        "INSERT INTO users (account_id, name_key, name, is_owner, password_hash, password_changed_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
    )?;
    for u in 0..per_account {
        let name = user_name(u);
        user.execute(params![
            id,
            name.to_ascii_lowercase(),
            name,
            u == 0,
            hash,
            now
        ])?;
        counts.users += 1;
    }
    let mut group = tx.prepare_cached(
        "INSERT INTO groups (account_id, name_key, name, created_at) VALUES (?1, ?2, ?2, ?3)",
    )?;
    let mut member = tx.prepare_cached(
        "INSERT INTO group_members (account_id, group_key, user_key, added_at) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (name, users) in [("readers", READERS), ("writers", WRITERS)] {
        group.execute(params![id, name, now])?;
        counts.groups += 1;
        for u in users.filter(|u| *u < per_account) {
            member.execute(params![id, name, user_name(u).to_ascii_lowercase(), now])?;
            counts.members += 1;
        }
    }
    Ok(())
}

/// `owner` for user 0, then `user1`, `user2`, ...
fn user_name(u: usize) -> String {
    if u == 0 {
        "owner".to_owned()
    } else {
        format!("user{u}")
    }
}

/// A couple of realistic policies for account `id`, the `i`-th folder: every variant lets
/// `readers` read storage (what `scripts/rss.sh` calls with), and adds one of four common
/// restrictions or grants.
fn account_policies(id: &str, i: usize) -> String {
    let readers = format!(
        r#"// Generated by benches/rss_dataset.rs (variant {v}).
@id("readers-read-storage")
permit (
  principal in Tollgate::Group::"{id}/readers",
  action in [Tollgate::Action::"storage:GetObject", Tollgate::Action::"storage:ListObjects"],
  resource
);
"#,
        v = i % 4
    );
    let extra = match i % 4 {
        0 => format!(
            r#"
@id("writers-write-storage")
permit (
  principal in Tollgate::Group::"{id}/writers",
  action in [Tollgate::Action::"storage:PutObject", Tollgate::Action::"storage:DeleteObject"],
  resource
);

@id("delete-needs-mfa")
forbid (principal, action == Tollgate::Action::"storage:DeleteObject", resource)
unless {{ context.mfa }};
"#
        ),
        1 => format!(
            r#"
@id("billing-admins")
permit (
  principal in Tollgate::Group::"{id}/writers",
  action in [Tollgate::Action::"compute:SignUp", Tollgate::Action::"support:ChangePlan",
             Tollgate::Action::"billing:ViewBill"],
  resource
);

@id("compute-spend-cap")
forbid (principal, action == Tollgate::Action::"compute:RunJob", resource)
when {{ context.month_to_date_spend.greaterThanOrEqual(decimal("{cap}.00")) }};
"#,
            cap = 100 + (i % 9) * 50
        ),
        2 => format!(
            r#"
@id("writers-from-office")
permit (
  principal in Tollgate::Group::"{id}/writers",
  action in [Tollgate::Action::"storage:*", Tollgate::Action::"compute:*"],
  resource
)
when {{ context.source_ip.isInRange(ip("10.{o}.0.0/16")) }};

@id("no-writes-outside-office")
forbid (principal, action == Tollgate::Action::"storage:PutObject", resource)
unless {{ context.source_ip.isInRange(ip("10.{o}.0.0/16")) || principal.is_owner }};
"#,
            o = i % 256
        ),
        _ => format!(
            r#"
@id("support-for-everyone")
permit (
  principal,
  action in [Tollgate::Action::"support:CreateCase", Tollgate::Action::"support:DescribeCases"],
  resource
)
when {{ resource in principal.account }};

@id("contractor-until-2030")
permit (principal == Tollgate::User::"{id}/user9", action == Tollgate::Action::"compute:RunJob", resource)
when {{ context.time < 1893456000 && context.method == "POST" }};
"#
        ),
    };
    readers + &extra
}

/// Copies a tree of plain files and folders (the shipped policies).
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from).with_context(|| format!("read `{}`", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)
                .with_context(|| format!("copy `{}`", entry.path().display()))?;
        }
    }
    Ok(())
}
