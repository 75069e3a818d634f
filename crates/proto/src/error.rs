//! The API's error envelope: `{"error": {"code", "message", "request_id"}}`.
//!
//! Codes are stable strings; clients switch on them, humans read `message`.
//! Authentication failures are deliberately coarse on the wire
//! (`authentication_failed`): the precise reason (wrong TOTP, replayed code,
//! locked account, …) goes to the audit trail and the operator's log only.

use serde::{Deserialize, Serialize};

/// Every error code the API returns. `as_str` is the wire form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not JSON, or not the JSON this endpoint expects.
    MalformedJson,
    /// The body exceeds the endpoint's size limit.
    PayloadTooLarge,
    /// A field failed validation; the message names it.
    InvalidRequest,
    /// No credential, or a credential that does not verify. Deliberately generic.
    AuthenticationFailed,
    /// Login and other calls bound to a device need a client certificate.
    ClientCertificateRequired,
    /// Authenticated, but not allowed to do this.
    Forbidden,
    /// Allowed once the user passes MFA again (`umbra agent step-up`): the
    /// policy asks for a fresher MFA than the session has.
    StepUpRequired,
    /// The resource does not exist (or the caller may not know it does).
    NotFound,
    /// The resource already exists or is in a state that forbids the change.
    Conflict,
    /// Enrollment token unknown, used or expired. Generic to the peer.
    EnrollmentRefused,
    /// The CSR could not be parsed, or its signature does not verify.
    InvalidCsr,
    /// Too many attempts from this source; retry after `Retry-After`.
    RateLimited,
    /// The store or another dependency is unavailable.
    Unavailable,
    /// The gateway could not reach the service behind it.
    UpstreamUnavailable,
    /// A bug or an unexpected failure; the request id finds it in the log.
    Internal,
}

impl ErrorCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed_json",
            Self::PayloadTooLarge => "payload_too_large",
            Self::InvalidRequest => "invalid_request",
            Self::AuthenticationFailed => "authentication_failed",
            Self::ClientCertificateRequired => "client_certificate_required",
            Self::Forbidden => "forbidden",
            Self::StepUpRequired => "step_up_required",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::EnrollmentRefused => "enrollment_refused",
            Self::InvalidCsr => "invalid_csr",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status that goes with the code.
    pub const fn http_status(self) -> u16 {
        match self {
            Self::MalformedJson | Self::InvalidRequest | Self::InvalidCsr => 400,
            Self::AuthenticationFailed | Self::ClientCertificateRequired | Self::StepUpRequired => {
                401
            }
            Self::Forbidden | Self::EnrollmentRefused => 403,
            Self::NotFound => 404,
            Self::Conflict => 409,
            Self::PayloadTooLarge => 413,
            Self::RateLimited => 429,
            Self::Unavailable => 503,
            Self::UpstreamUnavailable => 502,
            Self::Internal => 500,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error object inside the envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// `{"error": ApiError}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ApiError,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(id) = &self.request_id {
            write!(f, " (request {id})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ErrorCode; 15] = [
        ErrorCode::MalformedJson,
        ErrorCode::PayloadTooLarge,
        ErrorCode::InvalidRequest,
        ErrorCode::AuthenticationFailed,
        ErrorCode::ClientCertificateRequired,
        ErrorCode::Forbidden,
        ErrorCode::StepUpRequired,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::EnrollmentRefused,
        ErrorCode::InvalidCsr,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
        ErrorCode::UpstreamUnavailable,
        ErrorCode::Internal,
    ];

    #[test]
    fn wire_names_match_as_str_and_round_trip() {
        for code in ALL {
            let json = serde_json::to_string(&code).expect("serialize");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(
                serde_json::from_str::<ErrorCode>(&json).expect("parse"),
                code
            );
            assert!((400..600).contains(&code.http_status()));
        }
    }
}
