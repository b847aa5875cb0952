//! Reads a policies tree into an immutable [`PolicySnapshot`], or rejects it whole with every
//! problem found (file, line, column, message), never just the first.
//!
//! Order, as tinytodo does it: read everything, parse, re-key each policy by its `@id`, validate
//! strictly against the schema, check the required actions, and only then build the per-account
//! and per-organization sets. Nothing here swaps anything in; that is [`super::PolicyStore`]'s job.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::ffi::DetailedError;
use cedar_policy::{Authorizer, Policy, PolicyId, PolicySet, Schema, ValidationMode, Validator};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::entities::TypeNames;
use super::names;
use crate::clock::{Clock, SystemClock};
use crate::ids::{AccountId, OrgId};

/// One problem with a policies tree, precise enough for an admin to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Relative to the policies directory, `/`-separated; `None` for the tree itself.
    pub file: Option<String>,
    /// 1-based; `None` when the problem is the whole file or tree.
    pub line: Option<usize>,
    /// 1-based, in characters.
    pub column: Option<usize>,
    pub message: String,
}

/// A rejected tree: every diagnostic found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadFailure {
    pub diagnostics: Vec<Diagnostic>,
}

/// An immutable, fully validated policies tree. A request reads one snapshot, once.
#[derive(Debug)]
pub struct PolicySnapshot {
    pub(super) version: String,
    pub(super) loaded_at: DateTime<Utc>,
    pub(super) schema: Schema,
    pub(super) names: TypeNames,
    pub(super) authorizer: Authorizer,
    /// The set of every account without its own folder: `default-account/` only, shared.
    pub(super) default_tier: Arc<TierPolicies>,
    /// `default-account/` + `accounts/<id>/`, one set per account with policies of its own.
    pub(super) accounts: HashMap<AccountId, Arc<TierPolicies>>,
    /// One set per `orgs/<org-id>/` folder (possibly empty).
    pub(super) orgs: BTreeMap<OrgId, Arc<TierPolicies>>,
    pub(super) sources: BTreeMap<String, String>,
}

/// The policies of one tier (an account's or an organization's), keyed by `@id`.
#[derive(Debug)]
pub struct TierPolicies {
    pub(super) set: PolicySet,
    pub(super) policies: HashMap<String, PolicyInfo>,
}

/// Where a policy came from, for explain and for naming it in decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInfo {
    /// Relative path of its file.
    pub file: String,
    /// Its `@id`.
    pub id: String,
    /// 1-based line where the policy (with its annotations) starts.
    pub line: usize,
    /// The full policy text as written.
    pub text: String,
}

/// Where a policy file sits in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    Default,
    Account(AccountId),
    Org(OrgId),
}

struct SourceFile {
    rel: String,
    place: Place,
    text: String,
}

struct ParsedPolicy {
    info: PolicyInfo,
    policy: Policy,
}

/// Accumulates what a walk finds.
#[derive(Default)]
struct Walk {
    diagnostics: Vec<Diagnostic>,
    /// (relative path, bytes) of every file that counts, for the content hash.
    hashed: Vec<(String, Vec<u8>)>,
    schema: Option<(String, String)>,
    policy_files: Vec<SourceFile>,
    org_folders: Vec<OrgId>,
}

// === impl Diagnostic ===

impl Diagnostic {
    fn tree(message: impl Into<String>) -> Self {
        Self {
            file: None,
            line: None,
            column: None,
            message: message.into(),
        }
    }

    fn file(file: &str, message: impl Into<String>) -> Self {
        Self {
            file: Some(file.to_owned()),
            line: None,
            column: None,
            message: message.into(),
        }
    }

    fn at(file: &str, text: &str, offset: usize, message: impl Into<String>) -> Self {
        let (line, column) = line_column(text, offset);
        Self {
            file: Some(file.to_owned()),
            line: Some(line),
            column: Some(column),
            message: message.into(),
        }
    }

    /// From one of Cedar's miette diagnostics whose labels are offsets into `text`.
    fn cedar(file: &str, text: &str, err: &DetailedError, fallback_offset: Option<usize>) -> Self {
        let mut message = err.message.clone();
        if let Some(help) = &err.help {
            message.push_str(" (help: ");
            message.push_str(help);
            message.push(')');
        }
        let offset = err
            .source_locations
            .first()
            .map(|l| l.loc.start)
            .or(fallback_offset);
        match offset {
            Some(offset) => Self::at(file, text, offset, message),
            None => Self::file(file, message),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line, self.column) {
            (Some(file), Some(line), Some(column)) => write!(f, "{file}:{line}:{column}: ")?,
            (Some(file), Some(line), None) => write!(f, "{file}:{line}: ")?,
            (Some(file), None, _) => write!(f, "{file}: ")?,
            (None, _, _) => {}
        }
        f.write_str(&self.message)
    }
}

/// 1-based line and character column of a byte offset (clamped to the text).
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = text.get(..offset).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

// === impl LoadFailure ===

impl LoadFailure {
    fn new(diagnostics: Vec<Diagnostic>) -> Self {
        Self { diagnostics }
    }

    /// The first problem, for one-line summaries (`GET /policies`'s `last_error`).
    pub fn first(&self) -> Option<&Diagnostic> {
        self.diagnostics.first()
    }
}

impl fmt::Display for LoadFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "policies rejected ({} problem", self.diagnostics.len())?;
        if self.diagnostics.len() != 1 {
            f.write_str("s")?;
        }
        f.write_str(")")?;
        for d in &self.diagnostics {
            write!(f, "\n  {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadFailure {}

// === impl PolicySnapshot ===

impl PolicySnapshot {
    /// The content hash of the tree (hex SHA-256 over sorted relative paths and bytes).
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn loaded_at(&self) -> DateTime<Utc> {
        self.loaded_at
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The account tier of `account`: its own set, or the shared default set.
    pub fn account_policies(&self, account: &AccountId) -> &TierPolicies {
        self.accounts.get(account).unwrap_or(&self.default_tier)
    }

    /// Whether `account` has a set of its own (`accounts/<id>/` with policies).
    pub fn has_account_folder(&self, account: &AccountId) -> bool {
        self.accounts.contains_key(account)
    }

    /// The guardrails of `org`, if it has a folder.
    pub fn org_policies(&self, org: &OrgId) -> Option<&TierPolicies> {
        self.orgs.get(org).map(Arc::as_ref)
    }

    /// Every `orgs/<org-id>/` folder, sorted.
    pub fn org_folders(&self) -> impl Iterator<Item = &OrgId> {
        self.orgs.keys()
    }

    /// Every file that counted (schema and `*.cedar`), relative path -> text, for archiving.
    pub fn sources(&self) -> &BTreeMap<String, String> {
        &self.sources
    }

    pub(super) fn same_ptr(a: &Arc<TierPolicies>, b: &TierPolicies) -> bool {
        std::ptr::eq(Arc::as_ptr(a), b)
    }

    /// Whether `account` is decided with the shared default set (no folder of its own).
    pub fn uses_shared_default(&self, account: &AccountId) -> bool {
        Self::same_ptr(&self.default_tier, self.account_policies(account))
    }
}

// === impl TierPolicies ===

impl TierPolicies {
    /// The policy with this `@id`.
    pub fn policy(&self, id: &str) -> Option<&PolicyInfo> {
        self.policies.get(id)
    }

    /// Every policy of the tier, in no particular order.
    pub fn policies(&self) -> impl Iterator<Item = &PolicyInfo> {
        self.policies.values()
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    fn build(policies: &[&ParsedPolicy]) -> Result<Self, Diagnostic> {
        let mut set = PolicySet::new();
        let mut infos = HashMap::with_capacity(policies.len());
        for p in policies {
            set.add(p.policy.clone()).map_err(|e| Diagnostic {
                file: Some(p.info.file.clone()),
                line: Some(p.info.line),
                column: Some(1),
                message: e.to_string(),
            })?;
            infos.insert(p.info.id.clone(), p.info.clone());
        }
        Ok(Self {
            set,
            policies: infos,
        })
    }
}

/// Loads and validates the tree at `dir`, stamping it with the wall clock.
///
/// `required_actions` are the route actions from config; the API actions in
/// [`names::API_ACTIONS`] are always required too.
pub fn load_tree(dir: &Path, required_actions: &[&str]) -> Result<PolicySnapshot, LoadFailure> {
    load_tree_at(dir, required_actions, SystemClock.now())
}

/// [`load_tree`] with an injected load time.
pub fn load_tree_at(
    dir: &Path,
    required_actions: &[&str],
    now: DateTime<Utc>,
) -> Result<PolicySnapshot, LoadFailure> {
    let walk = walk_tree(dir)?;
    let Walk {
        mut diagnostics,
        mut hashed,
        schema: schema_source,
        policy_files,
        org_folders,
    } = walk;

    let schema = match &schema_source {
        None => {
            diagnostics.push(Diagnostic::file(
                names::SCHEMA_FILE,
                format!("missing schema: every tree needs `{}`", names::SCHEMA_FILE),
            ));
            None
        }
        Some((rel, text)) => match Schema::from_cedarschema_str(text) {
            Ok((schema, _warnings)) => Some(schema),
            Err(e) => {
                diagnostics.push(Diagnostic::cedar(rel, text, &DetailedError::from(&e), None));
                None
            }
        },
    };

    if let Some(schema) = &schema {
        check_actions(schema, required_actions, &mut diagnostics);
    }

    // Parse and re-key every file; validate each file's policies on their own (validation is per
    // policy, so this is the same verdict as validating each tier, done once per file).
    let validator = schema.as_ref().map(|s| Validator::new(s.clone()));
    let mut parsed: Vec<(Place, Vec<ParsedPolicy>)> = Vec::with_capacity(policy_files.len());
    for file in &policy_files {
        let policies = parse_file(file, &mut diagnostics);
        if let Some(validator) = &validator {
            validate_file(file, &policies, validator, &mut diagnostics);
        }
        parsed.push((file.place.clone(), policies));
    }

    // Group by tier, checking `@id` uniqueness within each tier.
    let mut default: Vec<&ParsedPolicy> = Vec::new();
    let mut by_account: BTreeMap<AccountId, Vec<&ParsedPolicy>> = BTreeMap::new();
    let mut by_org: BTreeMap<OrgId, Vec<&ParsedPolicy>> =
        org_folders.into_iter().map(|o| (o, Vec::new())).collect();
    for (place, policies) in &parsed {
        let bucket = match place {
            Place::Default => &mut default,
            Place::Account(a) => by_account.entry(a.clone()).or_default(),
            Place::Org(o) => by_org.entry(o.clone()).or_default(),
        };
        bucket.extend(policies.iter());
    }
    let mut default_ids: HashMap<&str, &PolicyInfo> = HashMap::new();
    check_unique(
        &default,
        &mut default_ids,
        "default-account/",
        &mut diagnostics,
    );
    for (account, policies) in &by_account {
        let mut ids = default_ids.clone();
        let tier =
            format!("the account tier of `{account}` (default-account/ and accounts/{account}/)");
        check_unique(policies, &mut ids, &tier, &mut diagnostics);
    }
    for (org, policies) in &by_org {
        let mut ids = HashMap::new();
        check_unique(
            policies,
            &mut ids,
            &format!("orgs/{org}/"),
            &mut diagnostics,
        );
    }

    let (Some(schema), true) = (schema, diagnostics.is_empty()) else {
        return Err(LoadFailure::new(diagnostics));
    };

    let build = || -> Result<PolicySnapshot, Diagnostic> {
        let default_tier = Arc::new(TierPolicies::build(&default)?);
        let mut accounts = HashMap::with_capacity(by_account.len());
        for (account, own) in &by_account {
            if own.is_empty() {
                continue;
            }
            let all: Vec<&ParsedPolicy> = default.iter().chain(own.iter()).copied().collect();
            accounts.insert(account.clone(), Arc::new(TierPolicies::build(&all)?));
        }
        let mut orgs = BTreeMap::new();
        for (org, policies) in &by_org {
            orgs.insert(org.clone(), Arc::new(TierPolicies::build(policies)?));
        }
        let names = TypeNames::new(&schema)
            .map_err(|e| Diagnostic::file(names::SCHEMA_FILE, e.to_string()))?;
        hashed.sort_by(|a, b| a.0.cmp(&b.0));
        let mut sources = BTreeMap::new();
        if let Some((rel, text)) = &schema_source {
            sources.insert(rel.clone(), text.clone());
        }
        for f in &policy_files {
            sources.insert(f.rel.clone(), f.text.clone());
        }
        Ok(PolicySnapshot {
            version: content_hash(&hashed),
            loaded_at: now,
            schema,
            names,
            authorizer: Authorizer::new(),
            default_tier,
            accounts,
            orgs,
            sources,
        })
    };
    build().map_err(|d| LoadFailure::new(vec![d]))
}

/// Hex SHA-256 over `(path, bytes)` pairs, each length-prefixed so no two trees collide by
/// shifting bytes between a name and a body.
fn content_hash(files: &[(String, Vec<u8>)]) -> String {
    let mut hasher = Sha256::new();
    for (rel, bytes) in files {
        hasher.update((rel.len() as u64).to_be_bytes());
        hasher.update(rel.as_bytes());
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    }
    hex::encode(hasher.finalize())
}

fn check_actions(schema: &Schema, required: &[&str], diagnostics: &mut Vec<Diagnostic>) {
    let declared: std::collections::HashSet<String> = schema
        .actions()
        .filter(|uid| uid.type_name().to_string() == names::ACTION_TYPE)
        .map(|uid| uid.id().unescaped().to_owned())
        .collect();
    let mut missing: Vec<&str> = names::API_ACTIONS
        .iter()
        .chain(required.iter())
        .copied()
        .filter(|a| !declared.contains(*a))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    for action in missing {
        diagnostics.push(Diagnostic::file(
            names::SCHEMA_FILE,
            format!(
                "action `{action}` is used by the gateway or a route but is not declared in the schema; add `action \"{action}\" appliesTo {{ ... }};` to namespace {}",
                names::NAMESPACE
            ),
        ));
    }
}

fn parse_file(file: &SourceFile, diagnostics: &mut Vec<Diagnostic>) -> Vec<ParsedPolicy> {
    let set = match PolicySet::from_str(&file.text) {
        Ok(set) => set,
        Err(errs) => {
            for e in errs.iter() {
                diagnostics.push(Diagnostic::cedar(
                    &file.rel,
                    &file.text,
                    &DetailedError::from(e),
                    None,
                ));
            }
            return Vec::new();
        }
    };
    // `from_str` names policies policy0, policy1, ... in file order, and keeps each one's
    // original text; walking them in that order finds each text's offset in the file.
    let count = set.policies().count() + set.templates().count();
    let mut cursor = 0;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let cedar_id = PolicyId::new(format!("policy{i}"));
        let (text, annotation, policy) = if let Some(p) = set.policy(&cedar_id) {
            (
                p.to_string(),
                p.annotation(names::ID_ANNOTATION).map(str::to_owned),
                Some(p),
            )
        } else if let Some(t) = set.template(&cedar_id) {
            (
                t.to_string(),
                t.annotation(names::ID_ANNOTATION).map(str::to_owned),
                None,
            )
        } else {
            continue;
        };
        let offset = file
            .text
            .get(cursor..)
            .and_then(|rest| rest.find(&text))
            .map_or(cursor, |i| cursor + i);
        cursor = offset + text.len();
        let line = line_column(&file.text, offset).0;
        let Some(policy) = policy else {
            diagnostics.push(Diagnostic::at(
                &file.rel,
                &file.text,
                offset,
                "templates (policies with ?principal or ?resource) are not supported; write a static policy",
            ));
            continue;
        };
        let id = match annotation {
            Some(id) if !id.trim().is_empty() => id,
            Some(_) => {
                diagnostics.push(Diagnostic::at(
                    &file.rel,
                    &file.text,
                    offset,
                    "policy has an empty `@id`; give it a name unique within its tier, e.g. @id(\"read-only-group\")",
                ));
                continue;
            }
            None => {
                diagnostics.push(Diagnostic::at(
                    &file.rel,
                    &file.text,
                    offset,
                    "policy has no `@id(\"...\")` annotation; every policy needs one, unique within its tier",
                ));
                continue;
            }
        };
        out.push(ParsedPolicy {
            policy: policy.new_id(PolicyId::new(&id)),
            info: PolicyInfo {
                file: file.rel.clone(),
                id,
                line,
                text,
            },
        });
    }
    out
}

fn validate_file(
    file: &SourceFile,
    policies: &[ParsedPolicy],
    validator: &Validator,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let mut set = PolicySet::new();
    let mut starts: HashMap<String, usize> = HashMap::new();
    for p in policies {
        // A duplicate id is reported by the uniqueness check; validate the first one only.
        if set.add(p.policy.clone()).is_ok() {
            let start = line_start_offset(&file.text, p.info.line);
            starts.insert(p.info.id.clone(), start);
        }
    }
    let result = validator.validate(&set, ValidationMode::Strict);
    for e in result.validation_errors() {
        let fallback = starts.get(e.policy_id().to_string().as_str()).copied();
        let mut d = Diagnostic::cedar(&file.rel, &file.text, &DetailedError::from(e), fallback);
        d.message = format!("policy `{}`: {}", e.policy_id(), d.message);
        diagnostics.push(d);
    }
}

fn line_start_offset(text: &str, line: usize) -> usize {
    if line <= 1 {
        return 0;
    }
    text.match_indices('\n')
        .nth(line - 2)
        .map_or(0, |(i, _)| i + 1)
}

fn check_unique<'a>(
    policies: &[&'a ParsedPolicy],
    seen: &mut HashMap<&'a str, &'a PolicyInfo>,
    tier: &str,
    diagnostics: &mut Vec<Diagnostic>,
) {
    for p in policies {
        let info = &p.info;
        if let Some(first) = seen.get(info.id.as_str()) {
            diagnostics.push(Diagnostic {
                file: Some(info.file.clone()),
                line: Some(info.line),
                column: Some(1),
                message: format!(
                    "duplicate @id `{}`: already used by {} line {}; ids must be unique within {tier}",
                    info.id, first.file, first.line
                ),
            });
        } else {
            seen.insert(info.id.as_str(), info);
        }
    }
}

// --- the walk ---

fn walk_tree(dir: &Path) -> Result<Walk, LoadFailure> {
    let root = fs::canonicalize(dir).map_err(|e| {
        LoadFailure::new(vec![Diagnostic::tree(format!(
            "cannot open policies directory `{}`: {e}",
            dir.display()
        ))])
    })?;
    let mut walk = Walk::default();
    for (name, path, kind) in entries(&root, &root, "", &mut walk.diagnostics) {
        match (name.as_str(), kind) {
            (names::SCHEMA_FILE, Kind::File) => {
                if let Some(text) = read_text(&path, &name, &mut walk) {
                    walk.schema = Some((name, text));
                }
            }
            (names::DEFAULT_ACCOUNT_DIR, Kind::Dir) => {
                read_policy_dir(&root, &path, &name, Place::Default, &mut walk);
            }
            (names::ACCOUNTS_DIR, Kind::Dir) => {
                for (sub, sub_path, sub_kind) in entries(&root, &path, &name, &mut walk.diagnostics)
                {
                    let rel = format!("{name}/{sub}");
                    match sub_kind {
                        Kind::Dir => match AccountId::parse(&sub) {
                            Ok(id) => {
                                read_policy_dir(&root, &sub_path, &rel, Place::Account(id), &mut walk)
                            }
                            Err(_) => walk.diagnostics.push(Diagnostic::file(
                                &rel,
                                format!("`{sub}` is not an account id; folders under accounts/ must be named by a 12-digit account id"),
                            )),
                        },
                        Kind::File if is_cedar(&sub) => walk.diagnostics.push(Diagnostic::file(
                            &rel,
                            "policy files belong in accounts/<12-digit account id>/, not directly in accounts/",
                        )),
                        Kind::File => {}
                    }
                }
            }
            (names::ORGS_DIR, Kind::Dir) => {
                for (sub, sub_path, sub_kind) in entries(&root, &path, &name, &mut walk.diagnostics)
                {
                    let rel = format!("{name}/{sub}");
                    match sub_kind {
                        Kind::Dir => match OrgId::parse(&sub) {
                            Ok(id) => {
                                walk.org_folders.push(id.clone());
                                read_policy_dir(&root, &sub_path, &rel, Place::Org(id), &mut walk)
                            }
                            Err(_) => walk.diagnostics.push(Diagnostic::file(
                                &rel,
                                format!("`{sub}` is not an organization id; folders under orgs/ must be named `o-` and 10 lowercase letters or digits"),
                            )),
                        },
                        Kind::File if is_cedar(&sub) => walk.diagnostics.push(Diagnostic::file(
                            &rel,
                            "policy files belong in orgs/<org-id>/, not directly in orgs/",
                        )),
                        Kind::File => {}
                    }
                }
            }
            (names::TESTS_DIR, Kind::Dir) => {}
            (_, Kind::Dir) => walk.diagnostics.push(Diagnostic::file(
                &name,
                format!("unexpected folder `{name}`; a policies tree holds default-account/, accounts/<id>/, orgs/<org-id>/ and tests/"),
            )),
            (_, Kind::File) if is_cedar(&name) => walk.diagnostics.push(Diagnostic::file(
                &name,
                "policy files belong in default-account/, accounts/<id>/ or orgs/<org-id>/",
            )),
            (_, Kind::File) => {}
        }
    }
    Ok(walk)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
}

fn is_cedar(name: &str) -> bool {
    name.ends_with(".cedar")
}

/// The visible entries of `dir`, sorted by name, with symlinks resolved and checked to stay
/// inside `root`. Hidden entries (`.git`, editor swap files) are skipped.
fn entries(
    root: &Path,
    dir: &Path,
    rel_dir: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<(String, PathBuf, Kind)> {
    let rel_of = |name: &str| {
        if rel_dir.is_empty() {
            name.to_owned()
        } else {
            format!("{rel_dir}/{name}")
        }
    };
    let read = match fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) => {
            diagnostics.push(Diagnostic::file(
                if rel_dir.is_empty() { "." } else { rel_dir },
                format!("cannot read folder: {e}"),
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for entry in read {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                diagnostics.push(Diagnostic::file(
                    if rel_dir.is_empty() { "." } else { rel_dir },
                    format!("cannot read folder entry: {e}"),
                ));
                continue;
            }
        };
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            diagnostics.push(Diagnostic::file(
                &rel_of(&entry.file_name().to_string_lossy()),
                "file name is not UTF-8",
            ));
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let rel = rel_of(&name);
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) => {
                diagnostics.push(Diagnostic::file(&rel, format!("cannot stat: {e}")));
                continue;
            }
        };
        let meta = if meta.file_type().is_symlink() {
            match fs::canonicalize(&path) {
                Ok(target) if target.starts_with(root) => match fs::metadata(&target) {
                    Ok(meta) => meta,
                    Err(e) => {
                        diagnostics.push(Diagnostic::file(
                            &rel,
                            format!("cannot stat link target: {e}"),
                        ));
                        continue;
                    }
                },
                Ok(target) => {
                    diagnostics.push(Diagnostic::file(
                        &rel,
                        format!(
                            "symbolic link points outside the policies directory (to `{}`); copy the file into the tree instead",
                            target.display()
                        ),
                    ));
                    continue;
                }
                Err(e) => {
                    diagnostics.push(Diagnostic::file(&rel, format!("broken symbolic link: {e}")));
                    continue;
                }
            }
        } else {
            meta
        };
        let kind = if meta.is_dir() {
            Kind::Dir
        } else if meta.is_file() {
            Kind::File
        } else {
            continue;
        };
        out.push((name, path, kind));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn read_policy_dir(root: &Path, dir: &Path, rel_dir: &str, place: Place, walk: &mut Walk) {
    for (name, path, kind) in entries(root, dir, rel_dir, &mut walk.diagnostics) {
        let rel = format!("{rel_dir}/{name}");
        match kind {
            Kind::File if is_cedar(&name) => {
                if let Some(text) = read_text(&path, &rel, walk) {
                    walk.policy_files.push(SourceFile {
                        rel,
                        place: place.clone(),
                        text,
                    });
                }
            }
            Kind::File => {}
            Kind::Dir => walk.diagnostics.push(Diagnostic::file(
                &rel,
                "nested folders are not read; put the *.cedar files directly in the tier's folder",
            )),
        }
    }
}

/// Reads a file that counts for the tree: hashed, and required to be UTF-8.
fn read_text(path: &Path, rel: &str, walk: &mut Walk) -> Option<String> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            walk.diagnostics
                .push(Diagnostic::file(rel, format!("cannot read: {e}")));
            return None;
        }
    };
    walk.hashed.push((rel.to_owned(), bytes.clone()));
    match String::from_utf8(bytes) {
        Ok(text) => Some(text),
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let prefix = String::from_utf8_lossy(e.as_bytes().get(..valid).unwrap_or_default());
            let (line, column) = line_column(&prefix, valid);
            walk.diagnostics.push(Diagnostic {
                file: Some(rel.to_owned()),
                line: Some(line),
                column: Some(column),
                message: "file is not valid UTF-8; save it as UTF-8".to_owned(),
            });
            None
        }
    }
}
