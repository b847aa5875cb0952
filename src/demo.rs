//! `tollgate demo`: the whole consolidated-billing story on one machine, in a minute.
//!
//! It starts the gateway on the embedded default config with three small demo services on
//! loopback, and on first start creates a demo organization in `CONSOLIDATED_BILLING`: a payer
//! (management) account whose admin has MFA, one member account created inside the organization
//! (with a `developers` group allowed to use storage) and one invited member. An organization
//! guardrail forbids deleting objects: it is parsed but does not bind until all features are
//! enabled. Everything it creates is remembered in `<data>/demo.json`, so the next start
//! reuses it; `--fresh` starts over.
//!
//! The walkthrough it prints is also written to `<data>/walkthrough.sh`, which checks every
//! step's status code, so CI can run it against the demo.

pub mod tls;
pub mod upstreams;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::auth::{Secret, TotpSecret, totp};
use crate::authz::{FeatureSet, ReloadTrigger};
use crate::ids::{AccountId, GroupName, UserName};
use crate::store::accounts::{AccountStore, NewAccount};

/// What the demo created, kept in `<data>/demo.json` (0600: it holds demo passwords).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoWorld {
    pub org_id: String,
    pub payer: DemoAccount,
    pub created_member: DemoAccount,
    pub invited_member: DemoAccount,
    /// The payer admin's TOTP secret (Base32).
    pub payer_totp_secret: String,
    /// A user of the created member, in its `developers` group.
    pub developer: DemoUser,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoAccount {
    pub account_id: String,
    pub name: String,
    pub admin: DemoUser,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoUser {
    pub user: String,
    pub password: String,
}

/// Why the demo could not set itself up.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo setup failed: {0}")]
    Setup(String),
    #[error("cannot write `{path}`: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The shipped policy tree, embedded so the demo runs from any directory.
const EMBEDDED_POLICIES: &[(&str, &str)] = &[
    (
        "schema.cedarschema",
        include_str!("../policies/schema.cedarschema"),
    ),
    (
        "default-account/owner.cedar",
        include_str!("../policies/default-account/owner.cedar"),
    ),
    (
        "default-account/self-service.cedar",
        include_str!("../policies/default-account/self-service.cedar"),
    ),
];

const GUARDRAIL: &str = r#"// Demo guardrail of the organization: everything is allowed except deleting objects.
// It binds member accounts only once the organization has all features, and never the payer.
@id("full-access")
permit (principal, action, resource);

@id("no-object-deletes")
forbid (principal, action == Tollgate::Action::"storage:DeleteObject", resource);
"#;

const DEVELOPERS: &str = r#"// Demo account policy: the `developers` group may use storage.
@id("developers-use-storage")
permit (principal in Tollgate::Group::"{account}/developers", action in Tollgate::Action::"storage:*", resource);
"#;

// === impl DemoWorld ===

impl DemoWorld {
    pub fn load(data_dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(data_dir.join("demo.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn save(&self, data_dir: &Path) -> Result<(), DemoError> {
        let json =
            serde_json::to_string_pretty(self).map_err(|e| DemoError::Setup(e.to_string()))?;
        write_private(&data_dir.join("demo.json"), &json)
    }
}

/// Writes the embedded policy tree into `dir` if it has none yet.
pub fn install_policies(dir: &Path) -> Result<(), DemoError> {
    if dir.join("schema.cedarschema").exists() {
        return Ok(());
    }
    for (relative, text) in EMBEDDED_POLICIES {
        write_file(&dir.join(relative), text)?;
    }
    Ok(())
}

/// Creates the demo organization on first start (or returns the one from `demo.json`).
pub async fn ensure_world(app: &App) -> Result<DemoWorld, DemoError> {
    let data_dir = app.config.store.data_dir.clone();
    if let Some(world) = DemoWorld::load(&data_dir) {
        return Ok(world);
    }
    let now = app.clock.now();
    let fail = |what: &str, e: &dyn std::fmt::Display| DemoError::Setup(format!("{what}: {e}"));

    let payer_admin = DemoUser {
        user: "admin".into(),
        password: demo_password(),
    };
    let payer_id = create_account(app, "Example Payer", &payer_admin, now).await?;
    let secret = TotpSecret::generate();
    let encoded = secret.to_base32();
    let admin = UserName::parse("admin").map_err(|e| fail("user name", &e))?;
    app.store
        .begin_mfa(&payer_id, &admin, encoded.expose())
        .await
        .map_err(|e| fail("enroll MFA", &e))?;
    // The last accepted step lies in the past, so the current code works for the first login.
    let step = totp::step_at(now).map_err(|e| fail("time", &e))?;
    app.store
        .enable_mfa(&payer_id, &admin, step.saturating_sub(2))
        .await
        .map_err(|e| fail("enable MFA", &e))?;
    let org = app
        .orgs
        .create_organization(&payer_id, Some(FeatureSet::ConsolidatedBilling), true, now)
        .await
        .map_err(|e| fail("create the organization", &e))?;

    let member_admin = DemoUser {
        user: "admin".into(),
        password: demo_password(),
    };
    let hash = app
        .hasher
        .hash(
            &Secret::new(member_admin.password.clone()),
            crate::auth::Requester::operator(),
        )
        .await
        .map_err(|e| fail("hash", &e))?;
    let member = app
        .orgs
        .create_account(
            &payer_id,
            crate::store::accounts::NewAccount {
                name: "Example Apps".into(),
                email: "apps@example.com".into(),
                owner: admin.clone(),
                owner_password: hash,
            },
            now,
        )
        .await
        .map_err(|e| fail("create the member account", &e))?;
    let member_id = member.account_id.clone();

    let developer = DemoUser {
        user: "dev".into(),
        password: demo_password(),
    };
    let dev = UserName::parse(&developer.user).map_err(|e| fail("user name", &e))?;
    let hash = app
        .hasher
        .hash(
            &Secret::new(developer.password.clone()),
            crate::auth::Requester::operator(),
        )
        .await
        .map_err(|e| fail("hash", &e))?;
    app.store
        .create_user(&member_id, &dev, hash, now)
        .await
        .map_err(|e| fail("create the developer", &e))?;
    let group = GroupName::parse("developers").map_err(|e| fail("group name", &e))?;
    app.store
        .create_group(&member_id, &group, now)
        .await
        .map_err(|e| fail("create the group", &e))?;
    app.store
        .add_group_member(&member_id, &group, &dev, now)
        .await
        .map_err(|e| fail("add the developer to the group", &e))?;

    let partner_admin = DemoUser {
        user: "admin".into(),
        password: demo_password(),
    };
    let partner_id = create_account(app, "Example Partner", &partner_admin, now).await?;
    let invitation = app
        .orgs
        .invite(&payer_id, &partner_id, now)
        .await
        .map_err(|e| fail("invite the partner", &e))?;
    app.orgs
        .accept(&partner_id, &invitation.id, now)
        .await
        .map_err(|e| fail("accept the invitation", &e))?;

    let policies = &app.config.policies.dir;
    write_file(
        &policies.join(format!("orgs/{}/guardrails.cedar", org.id)),
        GUARDRAIL,
    )?;
    write_file(
        &policies.join(format!("accounts/{member_id}/developers.cedar")),
        &DEVELOPERS.replace("{account}", member_id.as_str()),
    )?;
    let store = app.policies.clone();
    tokio::task::spawn_blocking(move || store.reload(ReloadTrigger::Cli))
        .await
        .map_err(|e| fail("reload", &e))?
        .map_err(|e| fail("the demo policies are invalid", &e))?;
    app.sync_policy_metrics();

    let world = DemoWorld {
        org_id: org.id.to_string(),
        payer: DemoAccount {
            account_id: payer_id.to_string(),
            name: "Example Payer".into(),
            admin: payer_admin,
        },
        created_member: DemoAccount {
            account_id: member_id.to_string(),
            name: "Example Apps".into(),
            admin: member_admin,
        },
        invited_member: DemoAccount {
            account_id: partner_id.to_string(),
            name: "Example Partner".into(),
            admin: partner_admin,
        },
        payer_totp_secret: encoded.expose().to_owned(),
        developer,
    };
    world.save(&data_dir)?;
    Ok(world)
}

async fn create_account(
    app: &App,
    name: &str,
    admin: &DemoUser,
    now: DateTime<Utc>,
) -> Result<AccountId, DemoError> {
    let owner = UserName::parse(&admin.user).map_err(|e| DemoError::Setup(e.to_string()))?;
    let hash = app
        .hasher
        .hash(
            &Secret::new(admin.password.clone()),
            crate::auth::Requester::operator(),
        )
        .await
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    app.store
        .create_account(
            NewAccount {
                name: name.to_owned(),
                email: format!("{}@example.com", name.to_lowercase().replace(' ', ".")),
                owner,
                owner_password: hash,
            },
            now,
        )
        .await
        .map_err(|e| DemoError::Setup(format!("create `{name}`: {e}")))
}

/// A password that meets the default policy: 16 random letters and digits plus `A`, `a`, `1`, `!`.
fn demo_password() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    let random: String = (0..12)
        .map(|_| {
            char::from(
                CHARS
                    .get(rng.gen_range(0..CHARS.len()))
                    .copied()
                    .unwrap_or(b'x'),
            )
        })
        .collect();
    format!("{random}Aa1!")
}

/// The walkthrough as a bash script: each step prints what it shows and checks the status.
/// The walkthrough script against `gateway`; with `cacert` (`demo --tls`), curl trusts that CA.
pub fn walkthrough(
    world: &DemoWorld,
    gateway: &str,
    cacert: Option<&Path>,
    tollgate: &str,
    month: &str,
) -> String {
    let mut s = String::new();
    let p = &world.payer;
    let m = &world.created_member;
    let i = &world.invited_member;
    let d = &world.developer;
    let _ = write!(
        s,
        r#"#!/usr/bin/env bash
# tollgate demo walkthrough: run it whole (bash <data>/walkthrough.sh) or copy step by step.
set -euo pipefail
GW="${{GW:-{gateway}}}"
TOLLGATE="${{TOLLGATE:-{tollgate}}}"
# With `tollgate demo --tls`, curl trusts the demo's own CA.
CACERT="${{CACERT:-{cacert}}}"
curl() {{ if [ -n "$CACERT" ]; then command curl --cacert "$CACERT" "$@"; else command curl "$@"; fi; }}
step() {{ printf '\n\033[1m== %s\033[0m\n' "$*"; }}
# call EXPECTED-STATUS curl-args...: prints the body and fails if the status differs.
call() {{
  local want=$1; shift
  local out; out=$(curl -s -w '\n%{{http_code}}' "$@")
  local code=${{out##*$'\n'}}; local body=${{out%$'\n'*}}
  printf '%s\n' "$body"
  if [ "$code" != "$want" ]; then echo "!! expected HTTP $want, got $code" >&2; exit 1; fi
}}
token() {{ sed -E 's/.*"token":"([^"]+)".*/\1/'; }}
login() {{ # ACCOUNT USER PASSWORD [MFA-CODE]
  local mfa=""; [ $# -ge 4 ] && mfa=",\"mfa_code\":\"$4\""
  curl -s "$GW/auth/login" -H 'content-type: application/json' \
    -d "{{\"account_id\":\"$1\",\"user\":\"$2\",\"password\":\"$3\"$mfa}}" | token
}}

step "1. The payer ({p_name}, {p_id}) logs in: password and a TOTP code (payers must use MFA)"
PAYER=$(login {p_id} {p_user} '{p_pw}' "$("$TOLLGATE" totp {secret})")
call 200 "$GW/org" -H "authorization: Bearer $PAYER"

step "2. A developer of the member account {m_name} ({m_id}) stores and reads an object"
DEV=$(login {m_id} {d_user} '{d_pw}')
call 201 -X PUT "$GW/svc/storage/objects/hello.txt" -H "authorization: Bearer $DEV" --data-binary 'hello, consolidated world'
call 200 "$GW/svc/storage/objects/hello.txt" -H "authorization: Bearer $DEV"

step "3. The organization's guardrail forbids deleting objects, but consolidated billing cannot restrict members"
MEMBER=$(login {m_id} {m_user} '{m_pw}')
call 200 "$GW/policies" -H "authorization: Bearer $MEMBER"
call 403 -X POST "$GW/policies/reload" -H "authorization: Bearer $MEMBER"  # the tree is the operator's
call 200 -X POST "$GW/policies/reload" -H "authorization: Bearer $PAYER"   # the demo's operator is its payer
call 200 -X DELETE "$GW/svc/storage/objects/hello.txt" -H "authorization: Bearer $DEV"

step "4. The payer enables all features; the invited member {i_name} ({i_id}) approves; the payer finishes"
call 201 -X POST "$GW/org/enable-all-features" -H "authorization: Bearer $PAYER"
PARTNER=$(login {i_id} {i_user} '{i_pw}')
APPROVAL=$(curl -s "$GW/handshakes" -H "authorization: Bearer $PARTNER" | grep -o '"id":"h-[a-z0-9]*","kind":"APPROVE_ALL_FEATURES","state":"OPEN"' | cut -d'"' -f4)
call 200 -X POST "$GW/handshakes/$APPROVAL/accept" -H "authorization: Bearer $PARTNER"
PARENT=$(curl -s "$GW/handshakes" -H "authorization: Bearer $PAYER" | grep -o '"id":"h-[a-z0-9]*","kind":"ENABLE_ALL_FEATURES","state":"OPEN"' | cut -d'"' -f4)
call 200 -X POST "$GW/handshakes/$PARENT/accept" -H "authorization: Bearer $PAYER"

step "5. Now the guardrail binds the member: deleting is denied by the organization"
call 201 -X PUT "$GW/svc/storage/objects/keep.txt" -H "authorization: Bearer $DEV" --data-binary 'kept'
call 403 -X DELETE "$GW/svc/storage/objects/keep.txt" -H "authorization: Bearer $DEV"

step "6. The payer's own account is never bound by guardrails"
call 201 -X PUT "$GW/svc/storage/objects/payer.txt" -H "authorization: Bearer $PAYER" --data-binary 'mine'
call 200 -X DELETE "$GW/svc/storage/objects/payer.txt" -H "authorization: Bearer $PAYER"

step "7. The payer reads the consolidated bill of {month}: every account's usage on one bill"
call 200 "$GW/billing/bills/{month}" -H "authorization: Bearer $PAYER"

step "8. Security review: the payer reads the decision log (allow and deny, with the policies that decided)"
call 200 "$GW/decisions?limit=5" -H "authorization: Bearer $PAYER"

step "Done: every call above was authenticated, decided by Cedar, forwarded and metered."
"#,
        p_name = p.name,
        p_id = p.account_id,
        p_user = p.admin.user,
        p_pw = p.admin.password,
        secret = world.payer_totp_secret,
        m_name = m.name,
        m_id = m.account_id,
        m_user = m.admin.user,
        m_pw = m.admin.password,
        d_user = d.user,
        d_pw = d.password,
        i_name = i.name,
        i_id = i.account_id,
        i_user = i.admin.user,
        i_pw = i.admin.password,
        cacert = cacert.map(|p| p.display().to_string()).unwrap_or_default(),
    );
    s
}

fn write_file(path: &Path, text: &str) -> Result<(), DemoError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| DemoError::Write {
            path: parent.to_owned(),
            source,
        })?;
    }
    std::fs::write(path, text).map_err(|source| DemoError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Writes `text` to `path` readable by its owner only (0600), also when the file was there
/// before with a wider mode: the demo's files hold the payer's password and TOTP secret.
pub fn write_private(path: &Path, text: &str) -> Result<(), DemoError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| DemoError::Write {
            path: path.to_owned(),
            source,
        })?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|source| DemoError::Write {
            path: path.to_owned(),
            source,
        })?;
    file.write_all(text.as_bytes())
        .map_err(|source| DemoError::Write {
            path: path.to_owned(),
            source,
        })
}
