//! The organization API (SPEC A2–A7): `POST/GET/DELETE /org`, `POST /org/accounts`,
//! `POST /org/invitations`, `POST /org/enable-all-features`, `DELETE /org/accounts/{id}`,
//! `POST /org/leave`, `GET /handshakes` and `POST /handshakes/{id}/accept|decline|cancel`.
//!
//! Every call is authenticated, then decided by Cedar with the caller's own account as the
//! resource (`org:*` actions, P1), and only then handed to [`crate::org::OrgService`] with the
//! injected clock's `now`. The organization rules (who is the management account, which
//! handshake moves are legal) live in the domain; this file translates JSON to domain calls
//! and domain values to the SPEC shapes, and must not decide anything the domain decides.
//! Domain errors become HTTP in `server/rejection.rs`.
//!
//! What each account sees: `GET /org` shows the management account and members alike the
//! organization and its members (id, name, joined method, joined at), as AWS Organizations lets
//! member accounts list the organization's accounts. Open handshakes: the management account
//! sees all of them; a member only those it is a party to (its `APPROVE_ALL_FEATURES`), since
//! whom the organization invites is the management account's business (the domain's
//! `OrgService::describe` applies this). `GET /handshakes` shows the handshakes the caller's account sent or received, in
//! any state (accounts outside any organization see their invitations there). A handshake the
//! caller is no party to answers 404 `NoSuchHandshake`, so its existence does not leak.
//!
//! Status codes: creating calls (`POST /org`, `/org/accounts`, `/org/invitations`,
//! `/org/enable-all-features`, which creates the parent handshake) answer 201 with the created
//! object; handshake moves answer 200 with the handshake; `DELETE /org`,
//! `DELETE /org/accounts/{id}` and `POST /org/leave` answer 204.

use std::sync::Arc;

use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::api::accounts::NewAccountRequest;
use crate::api::auth::rfc3339;
use crate::api::{self, ApiRequest};
use crate::app::App;
use crate::body::Body;
use crate::ids::{AccountId, HandshakeId};
use crate::org::{FeatureSet, Handshake, HandshakeAction, Member, OrgView, Organization};
use crate::server::authn::{self, Allow, Caller};
use crate::server::rejection::Rejection;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateOrganizationRequest {
    #[serde(default)]
    feature_set: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InviteRequest {
    account_id: String,
}

/// An organization (A7).
#[derive(Serialize)]
struct OrganizationDto {
    id: String,
    management_account_id: String,
    feature_set: &'static str,
    members: Vec<MemberDto>,
    handshakes: Vec<HandshakeDto>,
}

#[derive(Serialize)]
struct MemberDto {
    account_id: String,
    name: String,
    joined_method: &'static str,
    joined_at: String,
}

/// `POST /org/accounts`: the new member, with its owner user's name.
#[derive(Serialize)]
struct CreatedAccountDto {
    account_id: String,
    name: String,
    owner_user: String,
    joined_method: &'static str,
    joined_at: String,
}

#[derive(Serialize)]
struct HandshakeDto {
    id: String,
    kind: &'static str,
    state: &'static str,
    organization_id: String,
    from_account_id: String,
    to_account_id: String,
    parent_id: Option<String>,
    created_at: String,
    expires_at: String,
}

#[derive(Serialize)]
struct HandshakeList {
    handshakes: Vec<HandshakeDto>,
}

/// `POST /org` (A2): a standalone account creates an organization with an MFA session.
pub async fn create(app: &Arc<App>, req: ApiRequest) -> Result<Response<Body>, Rejection> {
    let caller = authorized(app, &req, "org:CreateOrganization").await?;
    let body: CreateOrganizationRequest = req.json_or_default(app).await?;
    let feature_set = body
        .feature_set
        .map(|s| {
            FeatureSet::parse(&s).ok_or_else(|| {
                invalid_input(format!(
                    "`feature_set` must be `ALL_FEATURES` or `CONSOLIDATED_BILLING`, not `{}`",
                    s.chars().take(40).collect::<String>()
                ))
            })
        })
        .transpose()?;
    let org = app
        .orgs
        .create_organization(
            own(&caller),
            feature_set,
            caller.claims.mfa,
            app.clock.now(),
        )
        .await?;
    tracing::info!(organization = %org.id, account = %org.management_account_id, "organization created");
    api::json(StatusCode::CREATED, &OrganizationDto::created(&org))
}

/// `GET /org` (A7).
pub async fn describe(app: &Arc<App>, req: ApiRequest) -> Result<Response<Body>, Rejection> {
    let caller = authorized(app, &req, "org:Describe").await?;
    let view = app.orgs.describe(own(&caller), app.clock.now()).await?;
    api::json(StatusCode::OK, &OrganizationDto::from(&view))
}

/// `DELETE /org` (A6, management): only an organization without members.
pub async fn delete(app: &Arc<App>, req: ApiRequest) -> Result<Response<Body>, Rejection> {
    let caller = authorized(app, &req, "org:DeleteOrganization").await?;
    req.discard_body(app).await?;
    app.orgs
        .delete_organization(own(&caller), app.clock.now())
        .await?;
    tracing::info!(account = %own(&caller), "organization deleted");
    Ok(api::no_content())
}

/// `POST /org/accounts` (A3, management): a new account, joined at once (`CREATED`). The
/// owner's password meets the default policy, the new account's policy until it sets one.
pub async fn create_account(app: &Arc<App>, req: ApiRequest) -> Result<Response<Body>, Rejection> {
    let caller = authorized(app, &req, "org:CreateAccount").await?;
    let requester = crate::auth::Requester::account(req.client_ip(app));
    let body: NewAccountRequest = req.json(app).await?;
    let new = body.check(app, requester).await?;
    let owner = new.owner.clone();
    let member = app
        .orgs
        .create_account(own(&caller), new, app.clock.now())
        .await?;
    tracing::info!(account = %member.account_id, by = %own(&caller), "member account created");
    api::json(
        StatusCode::CREATED,
        &CreatedAccountDto {
            account_id: member.account_id.to_string(),
            name: member.name,
            owner_user: owner.to_string(),
            joined_method: member.joined_method.as_str(),
            joined_at: rfc3339(member.joined_at),
        },
    )
}

/// `POST /org/invitations` (A4, management): an `INVITE` handshake, expiring 15 days later.
pub async fn invite(app: &Arc<App>, req: ApiRequest) -> Result<Response<Body>, Rejection> {
    let caller = authorized(app, &req, "org:InviteAccount").await?;
    let body: InviteRequest = req.json(app).await?;
    let target = AccountId::parse(&body.account_id).map_err(|e| invalid_input(e.to_string()))?;
    let handshake = app
        .orgs
        .invite(own(&caller), &target, app.clock.now())
        .await?;
    api::json(StatusCode::CREATED, &HandshakeDto::from(&handshake))
}

/// `POST /org/enable-all-features` (A5, management): the parent handshake.
pub async fn enable_all_features(
    app: &Arc<App>,
    req: ApiRequest,
) -> Result<Response<Body>, Rejection> {
    let caller = authorized(app, &req, "org:EnableAllFeatures").await?;
    req.discard_body(app).await?;
    let parent = app
        .orgs
        .enable_all_features(own(&caller), app.clock.now())
        .await?;
    api::json(StatusCode::CREATED, &HandshakeDto::from(&parent))
}

/// `DELETE /org/accounts/{id}` (A6, management).
pub async fn remove_account(
    app: &Arc<App>,
    req: ApiRequest,
    account: &str,
) -> Result<Response<Body>, Rejection> {
    let caller = authorized(app, &req, "org:RemoveAccount").await?;
    req.discard_body(app).await?;
    let member = AccountId::parse(account).map_err(|_| {
        Rejection::not_found(
            "NoSuchAccount",
            format!(
                "no account `{}`; account ids are 12 digits",
                account.chars().take(40).collect::<String>()
            ),
        )
    })?;
    app.orgs
        .remove_account(own(&caller), &member, app.clock.now())
        .await?;
    tracing::info!(account = %member, by = %own(&caller), "member removed");
    Ok(api::no_content())
}

/// `POST /org/leave` (A6): a member leaves; its usage is billed to itself from now on.
pub async fn leave(app: &Arc<App>, req: ApiRequest) -> Result<Response<Body>, Rejection> {
    let caller = authorized(app, &req, "org:LeaveOrganization").await?;
    req.discard_body(app).await?;
    app.orgs.leave(own(&caller), app.clock.now()).await?;
    tracing::info!(account = %own(&caller), "member left its organization");
    Ok(api::no_content())
}

/// `GET /handshakes`: those the caller's account sent or received, newest first. Reading
/// them is part of describing one's organization standing (`org:Describe`).
pub async fn handshakes(app: &Arc<App>, req: ApiRequest) -> Result<Response<Body>, Rejection> {
    let caller = authorized(app, &req, "org:Describe").await?;
    let list = app
        .orgs
        .handshakes_for(own(&caller), app.clock.now())
        .await?;
    api::json(
        StatusCode::OK,
        &HandshakeList {
            handshakes: list.iter().map(HandshakeDto::from).collect(),
        },
    )
}

/// `POST /handshakes/{id}/accept|decline|cancel` (A4, A5).
pub async fn handshake_action(
    app: &Arc<App>,
    req: ApiRequest,
    id: &str,
    action: HandshakeAction,
) -> Result<Response<Body>, Rejection> {
    let cedar_action = match action {
        HandshakeAction::Accept => "org:AcceptHandshake",
        HandshakeAction::Decline => "org:DeclineHandshake",
        HandshakeAction::Cancel => "org:CancelHandshake",
    };
    let caller = authorized(app, &req, cedar_action).await?;
    req.discard_body(app).await?;
    let id = HandshakeId::parse(id).map_err(|_| {
        Rejection::not_found(
            "NoSuchHandshake",
            format!(
                "no handshake `{}`; handshake ids look like `h-` and lowercase letters or digits",
                id.chars().take(40).collect::<String>()
            ),
        )
    })?;
    let now = app.clock.now();
    let caller = own(&caller);
    let handshake = match action {
        HandshakeAction::Accept => app.orgs.accept(caller, &id, now).await?,
        HandshakeAction::Decline => app.orgs.decline(caller, &id, now).await?,
        HandshakeAction::Cancel => app.orgs.cancel(caller, &id, now).await?,
    };
    tracing::info!(handshake = %id, account = %caller, state = %handshake.state, "handshake moved");
    api::json(StatusCode::OK, &HandshakeDto::from(&handshake))
}

/// Authenticates the request and decides `action` on the caller's own account.
async fn authorized(app: &App, req: &ApiRequest, action: &str) -> Result<Caller, Rejection> {
    let caller = authn::authenticate(app, &req.headers, req.peer, Allow::default()).await?;
    api::authorize_on_own_account(app, &caller, action, req)?;
    Ok(caller)
}

fn own(caller: &Caller) -> &AccountId {
    &caller.principal.user.account_id
}

fn invalid_input(message: impl Into<String>) -> Rejection {
    Rejection::bad_request("InvalidInput", message)
}

// === impl OrganizationDto ===

impl OrganizationDto {
    /// A new organization: no members, no handshakes yet.
    fn created(org: &Organization) -> Self {
        Self {
            id: org.id.to_string(),
            management_account_id: org.management_account_id.to_string(),
            feature_set: org.feature_set.as_str(),
            members: Vec::new(),
            handshakes: Vec::new(),
        }
    }
}

impl From<&OrgView> for OrganizationDto {
    fn from(view: &OrgView) -> Self {
        Self {
            members: view.members.iter().map(MemberDto::from).collect(),
            handshakes: view.handshakes.iter().map(HandshakeDto::from).collect(),
            ..Self::created(&view.organization)
        }
    }
}

// === impl MemberDto ===

impl From<&Member> for MemberDto {
    fn from(m: &Member) -> Self {
        Self {
            account_id: m.account_id.to_string(),
            name: m.name.clone(),
            joined_method: m.joined_method.as_str(),
            joined_at: rfc3339(m.joined_at),
        }
    }
}

// === impl HandshakeDto ===

impl From<&Handshake> for HandshakeDto {
    fn from(h: &Handshake) -> Self {
        Self {
            id: h.id.to_string(),
            kind: h.kind.as_str(),
            state: h.state.as_str(),
            organization_id: h.organization_id.to_string(),
            from_account_id: h.from_account_id.to_string(),
            to_account_id: h.to_account_id.to_string(),
            parent_id: h.parent_id.as_ref().map(ToString::to_string),
            created_at: rfc3339(h.created_at),
            expires_at: rfc3339(h.expires_at),
        }
    }
}
