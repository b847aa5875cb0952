//! The archive proves itself by its version hash, and finds a policy's text by file and `@id`.

use std::path::PathBuf;

use chrono::Utc;

use super::archive::{content_hash, policy_text};
use super::{archive_snapshot, archived_tree};
use crate::authz::{PolicySnapshot, load_tree};
use crate::db::params;
use crate::store::sql::SqlStore;

fn shipped() -> PolicySnapshot {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies");
    load_tree(&dir, &[]).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_archived_sources_hash_to_the_version() {
    let snapshot = shipped();
    assert_eq!(content_hash(snapshot.sources()), snapshot.version());
}

#[test]
fn policy_text_is_the_policy_as_written() {
    let snapshot = shipped();
    let text = policy_text(
        snapshot.sources(),
        "default-account/owner.cedar",
        "owner-full-access",
    )
    .unwrap_or_default();
    assert!(text.starts_with("@id(\"owner-full-access\")"), "{text}");
    assert!(text.ends_with("when { principal.is_owner && resource in principal.account };"));
    assert_eq!(
        policy_text(snapshot.sources(), "default-account/owner.cedar", "nope"),
        None
    );
    assert_eq!(policy_text(snapshot.sources(), "missing.cedar", "x"), None);
}

#[test]
fn an_archived_tree_round_trips_and_an_edit_is_detected() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = SqlStore::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let conn = store.database().connect().unwrap_or_else(|e| panic!("{e}"));
    let snapshot = shipped();
    assert!(archive_snapshot(&conn, &snapshot, Utc::now()).unwrap_or(false));
    assert!(
        !archive_snapshot(&conn, &snapshot, Utc::now()).unwrap_or(true),
        "a version is archived once"
    );
    let tree = archived_tree(&conn, snapshot.version())
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("archived"));
    assert!(tree.intact);
    assert_eq!(&tree.sources, snapshot.sources());

    conn.execute(
        "UPDATE policy_versions SET sources_json = replace(sources_json, 'is_owner', 'is_admin')",
        params![],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let tree = archived_tree(&conn, snapshot.version())
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("archived"));
    assert!(
        !tree.intact,
        "an edited archive no longer hashes to its version"
    );
    assert!(archived_tree(&conn, "unknown").ok().flatten().is_none());
}
