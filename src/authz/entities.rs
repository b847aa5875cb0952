//! Turns a [`Request`] into Cedar's request and entity slice, built directly with `Entity::new`
//! (no JSON round-trip: it would double the cost of a decision).
//!
//! Cedar computes `in` only over the entities it is given, so the slice always holds the whole
//! chain: user -> groups -> account -> organization, plus the resource.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::entities_errors::EntitiesError;
use cedar_policy::{
    Context, ContextCreationError, Entities, Entity, EntityAttrEvaluationError, EntityId,
    EntityTypeName, EntityUid, RequestValidationError, RestrictedExpression, Schema,
};
use rust_decimal::{Decimal, RoundingStrategy};

use super::names;
use super::request::{Request, Resource};

/// Why a request could not be put to Cedar. The decision is then Deny, with this as its error.
/// Cedar's errors are large; they are boxed so the decision path moves a pointer.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("bad entity attribute: {0}")]
    Entity(Box<EntityAttrEvaluationError>),
    #[error("bad entity set: {0}")]
    Entities(Box<EntitiesError>),
    #[error("bad context: {0}")]
    Context(Box<ContextCreationError>),
    #[error("request does not match the schema: {0}")]
    Request(Box<RequestValidationError>),
    #[error("month-to-date spend `{0}` is outside Cedar's decimal range")]
    SpendOutOfRange(Decimal),
}

/// Why the schema's names could not be prepared (a bug or a schema outside the contract).
#[derive(Debug, thiserror::Error)]
pub(crate) enum NamesError {
    #[error("bad entity type name: {0}")]
    TypeName(Box<cedar_policy::ParseErrors>),
    #[error("cannot build the schema's action entities: {0}")]
    Actions(Box<EntitiesError>),
}

macro_rules! boxed_from {
    ($target:ident :: $variant:ident, $source:ty) => {
        impl From<$source> for $target {
            fn from(e: $source) -> Self {
                Self::$variant(Box::new(e))
            }
        }
    };
}

boxed_from!(BuildError::Entity, EntityAttrEvaluationError);
boxed_from!(BuildError::Entities, EntitiesError);
boxed_from!(BuildError::Context, ContextCreationError);
boxed_from!(BuildError::Request, RequestValidationError);
boxed_from!(NamesError::TypeName, cedar_policy::ParseErrors);
boxed_from!(NamesError::Actions, EntitiesError);

/// The entity type names and the schema's action entities, prepared once per snapshot rather
/// than once per request.
#[derive(Debug, Clone)]
pub(crate) struct TypeNames {
    organization: EntityTypeName,
    account: EntityTypeName,
    group: EntityTypeName,
    user: EntityTypeName,
    service: EntityTypeName,
    action: EntityTypeName,
    /// Each declared action with its action groups: `action in Action::"storage:*"` only works
    /// when the request's slice holds them.
    actions: HashMap<String, Vec<Entity>>,
}

/// What Cedar needs for one request.
pub(crate) struct CedarInput {
    pub(crate) request: cedar_policy::Request,
    pub(crate) entities: Entities,
}

// === impl TypeNames ===

impl TypeNames {
    pub(crate) fn new(schema: &Schema) -> Result<Self, NamesError> {
        let action = EntityTypeName::from_str(names::ACTION_TYPE)?;
        let declared = schema.action_entities()?;
        let mut actions = HashMap::new();
        for uid in schema.actions() {
            if uid.type_name() != &action {
                continue;
            }
            let mut chain = vec![entity_with_ancestors(&declared, uid)];
            for ancestor in declared.ancestors(uid).into_iter().flatten() {
                chain.push(entity_with_ancestors(&declared, ancestor));
            }
            actions.insert(uid.id().unescaped().to_owned(), chain);
        }
        Ok(Self {
            organization: EntityTypeName::from_str(names::ORGANIZATION_TYPE)?,
            account: EntityTypeName::from_str(names::ACCOUNT_TYPE)?,
            group: EntityTypeName::from_str(names::GROUP_TYPE)?,
            user: EntityTypeName::from_str(names::USER_TYPE)?,
            service: EntityTypeName::from_str(names::SERVICE_TYPE)?,
            action,
            actions,
        })
    }

    pub(crate) fn action(&self, action: &str) -> EntityUid {
        uid(&self.action, action)
    }
}

fn entity_with_ancestors(declared: &Entities, uid: &EntityUid) -> Entity {
    let ancestors = declared
        .ancestors(uid)
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    Entity::new_no_attrs(uid.clone(), ancestors)
}

fn uid(ty: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
}

fn string(s: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(s.to_owned())
}

/// Cedar decimals are i64 fixed-point with four places, always written with a dot.
pub(crate) fn cedar_decimal(d: Decimal) -> Result<String, BuildError> {
    // i64::MAX / 10^4 = 922337203685477.5807
    let max = Decimal::from_i128_with_scale(i128::from(i64::MAX), 4);
    let min = Decimal::from_i128_with_scale(i128::from(i64::MIN), 4);
    let rounded = d.round_dp_with_strategy(4, RoundingStrategy::MidpointAwayFromZero);
    if rounded > max || rounded < min {
        return Err(BuildError::SpendOutOfRange(d));
    }
    let mut s = rounded.normalize().to_string();
    if !s.contains('.') {
        s.push_str(".0");
    }
    Ok(s)
}

/// Builds the Cedar request and the entity slice for `req`. The request is checked against the
/// schema (action declared, principal and resource types allowed, context shape).
pub(crate) fn build(
    req: &Request,
    names: &TypeNames,
    schema: &Schema,
) -> Result<CedarInput, BuildError> {
    let p = &req.principal;
    let account_uid = uid(&names.account, p.account.as_str());
    let mut entities = Vec::with_capacity(4 + p.groups.len());

    let org_uid = req
        .organization
        .as_ref()
        .map(|org| -> Result<EntityUid, BuildError> {
            let org_uid = uid(&names.organization, org.id.as_str());
            let attrs = HashMap::from([
                ("feature_set".to_owned(), string(org.feature_set.as_str())),
                (
                    "management_account".to_owned(),
                    RestrictedExpression::new_entity_uid(uid(
                        &names.account,
                        org.management_account.as_str(),
                    )),
                ),
            ]);
            entities.push(Entity::new(org_uid.clone(), attrs, HashSet::new())?);
            Ok(org_uid)
        })
        .transpose()?;

    let account_attrs = HashMap::from([("name".to_owned(), string(&p.account_name))]);
    entities.push(Entity::new(
        account_uid.clone(),
        account_attrs,
        org_uid.iter().cloned().collect(),
    )?);

    let mut user_parents = HashSet::from([account_uid.clone()]);
    for group in &p.groups {
        let group_uid = uid(&names.group, &format!("{}/{}", p.account, group));
        let attrs = HashMap::from([
            (
                "account".to_owned(),
                RestrictedExpression::new_entity_uid(account_uid.clone()),
            ),
            ("name".to_owned(), string(group.as_str())),
        ]);
        entities.push(Entity::new(
            group_uid.clone(),
            attrs,
            HashSet::from([account_uid.clone()]),
        )?);
        user_parents.insert(group_uid);
    }

    let user_uid = uid(&names.user, &format!("{}/{}", p.account, p.user));
    let user_attrs = HashMap::from([
        (
            "account".to_owned(),
            RestrictedExpression::new_entity_uid(account_uid.clone()),
        ),
        ("name".to_owned(), string(p.user.as_str())),
        (
            "is_owner".to_owned(),
            RestrictedExpression::new_bool(p.is_owner),
        ),
    ]);
    entities.push(Entity::new(user_uid.clone(), user_attrs, user_parents)?);
    let user_parents_of_target = HashSet::from([account_uid.clone()]);

    let resource_uid = match &req.resource {
        Resource::Service { name } => {
            let service_uid = uid(&names.service, &format!("{}/{}", p.account, name));
            let attrs = HashMap::from([("name".to_owned(), string(name))]);
            entities.push(Entity::new(
                service_uid.clone(),
                attrs,
                HashSet::from([account_uid.clone()]),
            )?);
            service_uid
        }
        // The caller's own account is already in the slice, with the caller's view of it.
        Resource::Account(target) if target.id == p.account => account_uid.clone(),
        Resource::Account(target) => {
            let target_uid = uid(&names.account, target.id.as_str());
            let attrs = HashMap::from([("name".to_owned(), string(&target.name))]);
            let parents = target
                .organization
                .iter()
                .map(|o| uid(&names.organization, o.as_str()))
                .collect();
            entities.push(Entity::new(target_uid.clone(), attrs, parents)?);
            target_uid
        }
        Resource::User(target) if target.user.key() == p.user.key() => user_uid.clone(),
        Resource::User(target) => {
            // Another user of the caller's own account; its groups do not matter as a resource.
            let target_uid = uid(&names.user, &format!("{}/{}", p.account, target.user));
            let attrs = HashMap::from([
                (
                    "account".to_owned(),
                    RestrictedExpression::new_entity_uid(account_uid.clone()),
                ),
                ("name".to_owned(), string(target.user.as_str())),
                (
                    "is_owner".to_owned(),
                    RestrictedExpression::new_bool(target.is_owner),
                ),
            ]);
            entities.push(Entity::new(
                target_uid.clone(),
                attrs,
                user_parents_of_target,
            )?);
            target_uid
        }
    };

    let c = &req.context;
    let feature_set = req
        .organization
        .as_ref()
        .map_or(names::FEATURE_SET_NONE, |o| o.feature_set.as_str());
    let context = Context::from_pairs([
        (
            names::context::MFA.to_owned(),
            RestrictedExpression::new_bool(c.mfa),
        ),
        (
            names::context::SOURCE_IP.to_owned(),
            RestrictedExpression::new_ip(c.source_ip.to_string()),
        ),
        (
            names::context::TIME.to_owned(),
            RestrictedExpression::new_long(c.time),
        ),
        (names::context::FEATURE_SET.to_owned(), string(feature_set)),
        (names::context::METHOD.to_owned(), string(&c.method)),
        (names::context::PATH.to_owned(), string(&c.path)),
        (
            names::context::SERVICE.to_owned(),
            string(req.resource.service_name()),
        ),
        (
            names::context::MONTH_TO_DATE_SPEND.to_owned(),
            RestrictedExpression::new_decimal(cedar_decimal(c.month_to_date_spend)?),
        ),
    ])?;

    let request = cedar_policy::Request::new(
        user_uid,
        names.action(&req.action),
        resource_uid,
        context,
        Some(schema),
    )?;
    if let Some(chain) = names.actions.get(&req.action) {
        entities.extend(chain.iter().cloned());
    }
    let entities = Entities::from_entities(entities, None)?;
    Ok(CedarInput { request, entities })
}
