//! Groups of an account's users (SPEC U10): create, list with members, delete, add and remove
//! members. Every call is `iam:ManageGroups` on the caller's own account; a path naming another
//! account is refused before any policy runs. Policies grant to `Tollgate::Group::"<acct>/<g>"`;
//! the caller's groups are read from the store on every request (`server::authn`), so a
//! membership change applies from the member's next request, with no cache to invalidate.

use std::sync::Arc;

use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::api::auth::rfc3339;
use crate::api::{self, ApiRequest};

use crate::app::App;
use crate::body::Body;
use crate::ids::{AccountId, GroupName, UserName};
use crate::server::authn::Caller;
use crate::server::rejection::Rejection;
use crate::store::StoreError;
use crate::store::accounts::{AccountStore, GroupMemberChange, GroupRecord};

const ACTION: &str = "iam:ManageGroups";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateGroupRequest {
    group: String,
}

#[derive(Serialize)]
struct GroupDto {
    account_id: String,
    group: String,
    created_at: String,
    members: Vec<String>,
}

/// `POST /accounts/{id}/groups` `{group}`: 201 with the group; a taken name (any case): 409.
pub async fn create(
    app: &Arc<App>,
    req: ApiRequest,
    account: &str,
) -> Result<Response<Body>, Rejection> {
    let (caller, account) = authorize_manage(app, &req, account).await?;
    let body: CreateGroupRequest = req.json(app).await?;
    let group = GroupName::parse(&body.group)
        .map_err(|e| Rejection::bad_request("InvalidInput", e.to_string()))?;
    match app
        .store
        .create_group(&account, &group, app.clock.now())
        .await
    {
        Ok(record) => {
            tracing::info!(account = %account, user = %caller.principal.user.name, group = %group, "group created");
            api::json(StatusCode::CREATED, &GroupDto::new(&account, record))
        }
        Err(StoreError::Conflict(_)) => Err(Rejection::new(
            StatusCode::CONFLICT,
            "GroupAlreadyExists",
            format!(
                "account {account} already has a group named `{group}` (names ignore case); pick another name"
            ),
        )),
        Err(e) => Err(e.into()),
    }
}

/// `GET /accounts/{id}/groups`: every group with its members.
pub async fn list(
    app: &Arc<App>,
    req: ApiRequest,
    account: &str,
) -> Result<Response<Body>, Rejection> {
    let (_, account) = authorize_manage(app, &req, account).await?;
    let groups: Vec<GroupDto> = app
        .store
        .groups(&account)
        .await?
        .into_iter()
        .map(|g| GroupDto::new(&account, g))
        .collect();
    api::json(
        StatusCode::OK,
        &serde_json::json!({ "account_id": account.as_str(), "groups": groups }),
    )
}

/// `DELETE /accounts/{id}/groups/{group}`: the group and its memberships; 204.
pub async fn delete(
    app: &Arc<App>,
    req: ApiRequest,
    account: &str,
    group: &str,
) -> Result<Response<Body>, Rejection> {
    let (_, account) = authorize_manage(app, &req, account).await?;
    req.discard_body(app).await?;
    let group = &decoded(group);
    let name = GroupName::parse(group).map_err(|_| no_such_group(&account, group))?;
    if app.store.delete_group(&account, &name).await? {
        Ok(api::no_content())
    } else {
        Err(no_such_group(&account, group))
    }
}

/// `PUT /accounts/{id}/groups/{group}/members/{user}`: 204, also when already a member.
pub async fn add_member(
    app: &Arc<App>,
    req: ApiRequest,
    account: &str,
    group: &str,
    user: &str,
) -> Result<Response<Body>, Rejection> {
    let (_, account) = authorize_manage(app, &req, account).await?;
    req.discard_body(app).await?;
    let (group_name, user_name) = names(&account, group, user)?;
    let change = app
        .store
        .add_group_member(&account, &group_name, &user_name, app.clock.now())
        .await?;
    membership_response(&account, group, user, change)
}

/// `DELETE /accounts/{id}/groups/{group}/members/{user}`: 204; not a member: 404.
pub async fn remove_member(
    app: &Arc<App>,
    req: ApiRequest,
    account: &str,
    group: &str,
    user: &str,
) -> Result<Response<Body>, Rejection> {
    let (_, account) = authorize_manage(app, &req, account).await?;
    req.discard_body(app).await?;
    let (group_name, user_name) = names(&account, group, user)?;
    match app
        .store
        .remove_group_member(&account, &group_name, &user_name)
        .await?
    {
        GroupMemberChange::Unchanged => Err(Rejection::not_found(
            "NoSuchGroupMember",
            format!("user `{user}` is not a member of group `{group}` in account {account}"),
        )),
        change => membership_response(&account, group, user, change),
    }
}

fn membership_response(
    account: &AccountId,
    group: &str,
    user: &str,
    change: GroupMemberChange,
) -> Result<Response<Body>, Rejection> {
    match change {
        GroupMemberChange::Changed | GroupMemberChange::Unchanged => Ok(api::no_content()),
        GroupMemberChange::NoSuchGroup => Err(no_such_group(account, group)),
        GroupMemberChange::NoSuchUser => Err(no_such_user(account, user)),
    }
}

/// A name from the path: clients percent-encode the `@`, `+`, `=` and `,` names may hold.
fn decoded(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

/// Names from the path; a name that cannot exist is simply not found.
fn names(account: &AccountId, group: &str, user: &str) -> Result<(GroupName, UserName), Rejection> {
    let (group, user) = (&decoded(group), &decoded(user));
    let group_name = GroupName::parse(group).map_err(|_| no_such_group(account, group))?;
    let user_name = UserName::parse(user).map_err(|_| no_such_user(account, user))?;
    Ok((group_name, user_name))
}

fn no_such_group(account: &AccountId, group: &str) -> Rejection {
    Rejection::not_found(
        "NoSuchGroup",
        format!(
            "account {account} has no group `{}`; list them with GET /accounts/{account}/groups",
            truncate(group)
        ),
    )
}

fn no_such_user(account: &AccountId, user: &str) -> Rejection {
    Rejection::not_found(
        "NoSuchUser",
        format!("account {account} has no user `{}`", truncate(user)),
    )
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Authenticates, keeps the call inside the caller's own account, and decides
/// `iam:ManageGroups` on it.
async fn authorize_manage(
    app: &App,
    req: &ApiRequest,
    account: &str,
) -> Result<(Caller, AccountId), Rejection> {
    api::caller_on_own_account(app, req, account, ACTION).await
}

// === impl GroupDto ===

impl GroupDto {
    fn new(account: &AccountId, record: GroupRecord) -> Self {
        Self {
            account_id: account.to_string(),
            group: record.name.to_string(),
            created_at: rfc3339(record.created_at),
            members: record.members.iter().map(ToString::to_string).collect(),
        }
    }
}
