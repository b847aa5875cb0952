//! The policy archive: every tree that was ever active, by version, with its full sources, so a
//! decision is explained with the policy text of its time (D3); and the observer that archives
//! each new tree before it becomes active and records every reload attempt in the decision log
//! (P7, D1), whatever triggered it.
//!
//! A version is the content hash of the tree, so an archived tree proves itself: [`ArchivedTree::intact`]
//! is true only when its sources hash to its version. Nothing here decides anything.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::AuditError;
use crate::authz::{PolicySnapshot, ReloadAttempt, ReloadObserver, names};
use crate::clock::SharedClock;
use crate::db::{Conn, Database, OptionalExtension, params};
use crate::journal::{Journal, RecordId, ReloadEntry, ReloadFailure};
use crate::store::sql::{from_ms, to_ms};

/// One archived tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedTree {
    pub version: String,
    /// When this version was first active.
    pub first_loaded_at: DateTime<Utc>,
    /// Relative path -> text, schema included.
    pub sources: BTreeMap<String, String>,
    /// The sources hash to the version: the archive was not edited.
    pub intact: bool,
}

/// Archives the reloads of a running gateway: see the module docs.
pub struct AuditObserver {
    db: Database,
    journal: Journal,
    clock: SharedClock,
    /// To wait (bounded) for the reload record to be durable from a plain thread.
    runtime: Option<tokio::runtime::Handle>,
}

/// How long a reload waits for its record to be committed before it goes on without it.
const RECORD_WAIT: Duration = Duration::from_secs(10);

// === free functions ===

/// Archives `snapshot`'s sources under its version, unless that version is already archived.
/// Returns whether a row was added.
pub fn archive_snapshot(
    conn: &Conn,
    snapshot: &PolicySnapshot,
    now: DateTime<Utc>,
) -> Result<bool, AuditError> {
    let sources: Map<String, Value> = snapshot
        .sources()
        .iter()
        .map(|(path, text)| (path.clone(), Value::String(text.clone())))
        .collect();
    let added = conn.execute(
        "INSERT INTO policy_versions (version, first_loaded_at, sources_json)
         VALUES (?1, ?2, ?3) ON CONFLICT (version) DO NOTHING",
        params![
            snapshot.version(),
            to_ms(now),
            Value::Object(sources).to_string()
        ],
    )?;
    Ok(added > 0)
}

/// The archived tree of `version`, if it was archived.
pub fn archived_tree(conn: &Conn, version: &str) -> Result<Option<ArchivedTree>, AuditError> {
    let row: Option<(i64, String)> = conn
        .query_row(
            "SELECT first_loaded_at, sources_json FROM policy_versions WHERE version = ?1",
            params![version],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((first_loaded_at, json)) = row else {
        return Ok(None);
    };
    let corrupt = || AuditError::Corrupt(format!("archived sources of version `{version}`"));
    let value: Value = serde_json::from_str(&json).map_err(|_| corrupt())?;
    let sources = value
        .as_object()
        .ok_or_else(corrupt)?
        .iter()
        .map(|(path, text)| Some((path.clone(), text.as_str()?.to_owned())))
        .collect::<Option<BTreeMap<_, _>>>()
        .ok_or_else(corrupt)?;
    Ok(Some(ArchivedTree {
        version: version.to_owned(),
        first_loaded_at: from_ms(first_loaded_at),
        intact: content_hash(&sources) == version,
        sources,
    }))
}

/// The version a tree with these sources has: the loader's content hash (SHA-256 over each
/// `(path, bytes)` pair in path order, both length-prefixed).
pub fn content_hash(sources: &BTreeMap<String, String>) -> String {
    let mut hasher = Sha256::new();
    for (rel, text) in sources {
        hasher.update((rel.len() as u64).to_be_bytes());
        hasher.update(rel.as_bytes());
        hasher.update((text.len() as u64).to_be_bytes());
        hasher.update(text.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// The full text, as written, of the policy `@id(id)` in `file` of `sources`.
pub fn policy_text(sources: &BTreeMap<String, String>, file: &str, id: &str) -> Option<String> {
    let text = sources.get(file)?;
    let set = cedar_policy::PolicySet::from_str(text).ok()?;
    set.policies()
        .find(|p| p.annotation(names::ID_ANNOTATION) == Some(id))
        .map(|p| p.to_string())
}

// === impl AuditObserver ===

impl AuditObserver {
    /// `runtime`: the gateway's runtime, if any (reloads run on plain threads).
    pub fn new(
        db: Database,
        journal: Journal,
        clock: SharedClock,
        runtime: Option<tokio::runtime::Handle>,
    ) -> Self {
        Self {
            db,
            journal,
            clock,
            runtime,
        }
    }

    fn archive(&self, snapshot: &PolicySnapshot) -> Result<bool, AuditError> {
        let conn = self.db.connect()?;
        archive_snapshot(&conn, snapshot, self.clock.now())
    }
}

impl ReloadObserver for AuditObserver {
    fn activating(&self, snapshot: &PolicySnapshot) {
        match self.archive(snapshot) {
            Ok(_) => {}
            // The tree is valid and the operator asked for it: refusing it would keep a tree
            // they meant to replace. Explain says so when a version's text is missing.
            Err(e) => tracing::error!(
                version = snapshot.version(),
                error = %e,
                "cannot archive the policy tree; decisions under it cannot be explained with its text"
            ),
        }
    }

    fn attempted(&self, attempt: &ReloadAttempt<'_>) {
        let failure = attempt.failure.map(|f| match f.first() {
            Some(d) => ReloadFailure {
                file: d.file.clone(),
                line: d.line.and_then(|l| u32::try_from(l).ok()),
                column: d.column.and_then(|c| u32::try_from(c).ok()),
                message: d.message.clone(),
            },
            None => ReloadFailure {
                file: None,
                line: None,
                column: None,
                message: f.to_string(),
            },
        });
        let entry = ReloadEntry {
            record_id: RecordId::generate(),
            time: attempt.at,
            trigger: attempt.trigger,
            active_version: attempt.active_version.to_owned(),
            failure,
            requested_by: attempt
                .requested_by
                .map(|r| (r.account.clone(), r.user.clone())),
            request_id: attempt.requested_by.map(|r| r.request_id.clone()),
        };
        let ack = match self.journal.submit(entry) {
            Ok(ack) => ack,
            Err(e) => {
                tracing::error!(error = %e, "the reload attempt could not be recorded");
                return;
            }
        };
        // Wait on a channel, not on the runtime: this runs on the watcher thread or the
        // blocking pool, never on a reactor thread.
        let Some(runtime) = &self.runtime else { return };
        let (tx, rx) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let _ = tx.send(ack.await);
        });
        match rx.recv_timeout(RECORD_WAIT) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the reload attempt could not be recorded"),
            Err(_) => tracing::warn!("the reload record was not committed in time"),
        }
    }
}
