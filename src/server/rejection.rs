//! The one place where errors become HTTP responses.
//!
//! Every module error that can reach a client is converted here into a status, a public
//! PascalCase code and a message a person can act on, in SPEC's body shape:
//! `{"error":{"code","message"},"request_id"}`. Internal details go to the log, never to the
//! client; the class tells client faults (4xx), upstream faults (502/504) and our own (5xx) apart.

use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;

use crate::body::{self, Body};
use crate::ids::RequestId;
use crate::server::message::MessageError;
use crate::server::path::PathError;
use crate::server::route::RouteError;
use crate::store::StoreError;
use crate::upstream::UpstreamError;

/// Who caused a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Client,
    Upstream,
    Internal,
}

/// An error response on its way to the client.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// For 403s from authorization: `"account"` or `"organization"`.
    pub denied_by: Option<&'static str>,
    pub retry_after_secs: Option<u64>,
    /// For 405s: the methods the path does answer, for the `Allow` header (RFC 9110 §10.2.1).
    pub allow: Option<String>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorObject<'a>,
    request_id: &'a str,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    denied_by: Option<&'a str>,
}

// === impl Rejection ===

impl Rejection {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            denied_by: None,
            retry_after_secs: None,
            allow: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 405 for a known path asked with a method it does not answer; `allow` lists the ones it
    /// does (RFC 9110 §15.5.6).
    pub fn method_not_allowed(method: &http::Method, path: &str, allow: &[&str]) -> Self {
        let list = allow.join(", ");
        let mut rejection = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!(
                "`{}` does not answer {method}; it answers {list}",
                path.chars().take(200).collect::<String>()
            ),
        );
        rejection.allow = Some(list);
        rejection
    }

    /// A failure on our side; the cause is logged, the client gets a neutral message.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "the gateway failed to handle the request; retry, and report the request id if it persists",
        )
    }

    pub fn class(&self) -> Class {
        match self.status {
            StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => Class::Upstream,
            s if s.is_server_error() => Class::Internal,
            _ => Class::Client,
        }
    }

    pub fn into_response(self, request_id: &RequestId) -> Response<Body> {
        let body = ErrorBody {
            error: ErrorObject {
                code: self.code,
                message: &self.message,
                denied_by: self.denied_by,
            },
            request_id: request_id.as_str(),
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = Response::new(body::full(json));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(allow) = self
            .allow
            .as_deref()
            .and_then(|a| HeaderValue::from_str(a).ok())
        {
            headers.insert(header::ALLOW, allow);
        }
        response
    }
}

impl From<PathError> for Rejection {
    fn from(e: PathError) -> Self {
        Rejection::bad_request("InvalidPath", format!("{e}; send the canonical path"))
    }
}

impl From<MessageError> for Rejection {
    fn from(e: MessageError) -> Self {
        match e {
            MessageError::NotOriginForm => Rejection::bad_request(
                "InvalidTarget",
                format!("{e}; send `METHOD /path HTTP/1.1`"),
            ),
            MessageError::HostCount | MessageError::HostMalformed => Rejection::bad_request(
                "InvalidHost",
                format!("{e}, like `Host: gateway.example:8080`"),
            ),
            MessageError::AmbiguousLength => {
                Rejection::bad_request("AmbiguousLength", format!("{e}; send one of them"))
            }
            MessageError::HeadTooLarge { .. } => Rejection::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "HeadersTooLarge",
                format!("{e}; send fewer or shorter headers"),
            ),
        }
    }
}

impl From<RouteError> for Rejection {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::NoSuchService { .. } => Rejection::not_found(
                "NoSuchService",
                format!("{e}; the configured services are listed in the operator's config"),
            ),
            RouteError::NoSuchRoute { .. } => Rejection::not_found(
                "NoSuchRoute",
                format!("{e}; check the method and path against the service's routes"),
            ),
        }
    }
}

impl From<UpstreamError> for Rejection {
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::Unavailable { .. } => Rejection::new(
                StatusCode::BAD_GATEWAY,
                "UpstreamUnavailable",
                format!("{e}; the call was not charged, retry later"),
            ),
            UpstreamError::Timeout { .. } => Rejection::new(
                StatusCode::GATEWAY_TIMEOUT,
                "UpstreamTimeout",
                format!("{e}; the call was not charged, retry later"),
            ),
            UpstreamError::BodyTooLarge { limit } => payload_too_large(limit),
        }
    }
}

impl From<StoreError> for Rejection {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failure");
        Rejection::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "StoreUnavailable",
            "the gateway cannot reach its store right now; retry later",
        )
    }
}

/// The client stopped sending its request body for `server.body_read_timeout`.
pub fn body_read_timeout(timeout: std::time::Duration) -> Rejection {
    Rejection::new(
        StatusCode::REQUEST_TIMEOUT,
        "RequestTimeout",
        format!(
            "no request body bytes arrived for {} s; send the body without pausing that long",
            timeout.as_secs_f64()
        ),
    )
}

pub fn payload_too_large(limit: u64) -> Rejection {
    Rejection::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PayloadTooLarge",
        format!(
            "the request body exceeds this route's limit of {limit} bytes; send a smaller body"
        ),
    )
}

impl From<crate::auth::TokenError> for Rejection {
    fn from(e: crate::auth::TokenError) -> Self {
        use crate::auth::TokenError;
        match e {
            TokenError::NoActiveKey | TokenError::Signing(_) => Rejection::internal(&e),
            _ => Rejection::new(
                StatusCode::UNAUTHORIZED,
                "InvalidToken",
                format!("{e}; log in again with POST /auth/login"),
            ),
        }
    }
}

impl From<crate::auth::PasswordPolicyViolation> for Rejection {
    fn from(e: crate::auth::PasswordPolicyViolation) -> Self {
        Rejection::bad_request(
            "PasswordPolicyViolation",
            format!("{e}, as the account's password policy requires"),
        )
    }
}

impl From<crate::auth::PasswordPolicyError> for Rejection {
    fn from(e: crate::auth::PasswordPolicyError) -> Self {
        Rejection::bad_request("InvalidInput", e.to_string())
    }
}

impl From<crate::auth::PasswordError> for Rejection {
    fn from(e: crate::auth::PasswordError) -> Self {
        use crate::auth::PasswordError;
        match e {
            PasswordError::TooLong => Rejection::bad_request("InvalidInput", format!("{e}")),
            PasswordError::Busy { retry_after_secs } => {
                let mut r = Rejection::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "SlowDown",
                    format!(
                        "too many password checks are waiting, from your address or overall; retry in {retry_after_secs} s"
                    ),
                );
                r.retry_after_secs = Some(retry_after_secs);
                r
            }
            _ => Rejection::internal(&e),
        }
    }
}

impl From<crate::journal::JournalError> for Rejection {
    fn from(e: crate::journal::JournalError) -> Self {
        tracing::error!(error = %e, "journal unavailable: refusing the call");
        let mut rejection = Rejection::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "MeteringUnavailable",
            "the gateway cannot record this call in its ledger and decision log right now, so it was not served; retry later",
        );
        rejection.retry_after_secs = Some(1);
        rejection
    }
}

impl From<crate::org::OrgError> for Rejection {
    fn from(e: crate::org::OrgError) -> Self {
        use crate::org::OrgError;
        // Where the domain's message does not already say what to do, a hint follows it.
        let (status, code, hint) = match &e {
            // Answered by the store's own mapping below.
            OrgError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "StoreUnavailable", None),
            OrgError::MfaRequired => (StatusCode::FORBIDDEN, "MfaRequired", None),
            OrgError::NotManagementAccount { .. } | OrgError::AccessDenied { .. } => {
                (StatusCode::FORBIDDEN, "AccessDenied", None)
            }
            OrgError::NotInOrganization { .. } => (
                StatusCode::NOT_FOUND,
                "NotInOrganization",
                Some(
                    "create one with POST /org, or accept an invitation listed at GET /handshakes",
                ),
            ),
            OrgError::NoSuchHandshake { .. } => (
                StatusCode::NOT_FOUND,
                "NoSuchHandshake",
                Some("GET /handshakes lists the handshakes of this account"),
            ),
            OrgError::NoSuchAccount { .. } => (
                StatusCode::NOT_FOUND,
                "NoSuchAccount",
                Some("check the 12-digit account id"),
            ),
            OrgError::NotAMember { .. } => (
                StatusCode::NOT_FOUND,
                "NoSuchAccount",
                Some("GET /org lists the members"),
            ),
            OrgError::AlreadyInOrganization { .. } => {
                (StatusCode::CONFLICT, "AlreadyInOrganization", None)
            }
            OrgError::AccountAlreadyInOrganization { .. } => {
                (StatusCode::CONFLICT, "AccountAlreadyInOrganization", None)
            }
            OrgError::DuplicateHandshake { .. } => {
                (StatusCode::CONFLICT, "DuplicateHandshake", None)
            }
            OrgError::HandshakeAlreadyInState { .. } => (
                StatusCode::CONFLICT,
                "HandshakeAlreadyInState",
                Some("there is nothing more to do"),
            ),
            OrgError::InvalidHandshakeTransition { .. } => (
                StatusCode::CONFLICT,
                "InvalidHandshakeTransition",
                Some("only an open handshake can be answered or canceled"),
            ),
            OrgError::InviteDisabledDuringEnableAllFeatures { .. } => (
                StatusCode::CONFLICT,
                "InviteDisabledDuringEnableAllFeatures",
                None,
            ),
            OrgError::HandshakeNotComplete { .. } => (
                StatusCode::CONFLICT,
                "HandshakeNotComplete",
                Some("GET /org shows which approvals are still open"),
            ),
            OrgError::AlreadyAllFeatures { .. } => {
                (StatusCode::CONFLICT, "AlreadyAllFeatures", None)
            }
            OrgError::AllFeaturesMigrationPending { .. } => {
                (StatusCode::CONFLICT, "AllFeaturesMigrationPending", None)
            }
            OrgError::ManagementAccountCannotLeave { .. } => {
                (StatusCode::CONFLICT, "ManagementAccountCannotLeave", None)
            }
            OrgError::OrganizationNotEmpty { .. } => {
                (StatusCode::CONFLICT, "OrganizationNotEmpty", None)
            }
        };
        match (e, hint) {
            (OrgError::Store(e), _) => e.into(),
            (e, Some(hint)) => Rejection::new(status, code, format!("{e}; {hint}")),
            (e, None) => Rejection::new(status, code, e.to_string()),
        }
    }
}

impl From<crate::services::ServicesError> for Rejection {
    fn from(e: crate::services::ServicesError) -> Self {
        use crate::services::ServicesError;
        match e {
            ServicesError::Store(e) => e.into(),
            // The config and the stored plans disagree: the operator's to fix, not the caller's.
            ServicesError::InvalidPlan { .. } | ServicesError::PlanNotConfigured { .. } => {
                Rejection::internal(&e)
            }
        }
    }
}

impl From<crate::bills::BillsError> for Rejection {
    fn from(e: crate::bills::BillsError) -> Self {
        use crate::bills::BillsError;
        match e {
            BillsError::FutureMonth { .. } => Rejection::not_found(
                "NoSuchBill",
                format!("{e}; bills exist from the first day of their month"),
            ),
            BillsError::NoSuchBill { .. } => Rejection::not_found(
                "NoSuchBill",
                format!("{e}; `also_billed_to` of GET /billing/bills/{{month}} lists the payers"),
            ),
            BillsError::TooEarly { wait_secs, .. } => {
                let mut r = Rejection::new(
                    StatusCode::CONFLICT,
                    "FinalizeTooEarly",
                    format!("{e}; retry then"),
                );
                r.retry_after_secs = Some(wait_secs);
                r
            }
            BillsError::NotPayer { .. } => {
                Rejection::new(StatusCode::FORBIDDEN, "AccessDenied", e.to_string())
            }
            BillsError::AlreadyFinal { .. } => Rejection::new(
                StatusCode::CONFLICT,
                "BillAlreadyFinal",
                format!("{e}; a FINAL bill never changes, late records go to the next open month"),
            ),
            BillsError::LedgerBusy { .. } => {
                let mut r = Rejection::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "LedgerBusy",
                    format!("{e}; retry"),
                );
                r.retry_after_secs = Some(1);
                r
            }
            BillsError::Journal(e) => {
                tracing::error!(error = %e, "ledger read failed for a bill");
                let mut r = Rejection::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "LedgerUnavailable",
                    "the gateway cannot read its ledger right now; retry later",
                );
                r.retry_after_secs = Some(1);
                r
            }
            BillsError::Org(e) => e.into(),
            BillsError::Services(e) => e.into(),
            BillsError::SealMismatch { .. } | BillsError::Prices(_) | BillsError::Bill(_) => {
                Rejection::internal(&e)
            }
        }
    }
}

impl From<crate::journal::QueryError> for Rejection {
    fn from(e: crate::journal::QueryError) -> Self {
        use crate::journal::QueryError;
        match e {
            QueryError::InvalidLimit { .. } | QueryError::InvalidCursor => {
                Rejection::bad_request("InvalidInput", e.to_string())
            }
            QueryError::Journal(j) => j.into(),
        }
    }
}
