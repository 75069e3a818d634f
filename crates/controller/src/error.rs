//! HTTP errors: a stable code and a message for the peer, the request id for
//! correlation. Precise reasons for refusals go to the audit trail and the
//! log, never into this body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use umbra_proto::{ApiError, ErrorBody, ErrorCode};

tokio::task_local! {
    /// The current request's id, set by the request-id middleware.
    pub static REQUEST_ID: String;
}

pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

#[derive(Debug)]
pub struct Failure {
    pub code: ErrorCode,
    pub message: String,
    pub retry_after: Option<u64>,
    /// For the rare status that has no code of its own (405).
    pub status_override: Option<StatusCode>,
}

impl Failure {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
            status_override: None,
        }
    }

    /// The one refusal every authentication failure gets on the wire.
    pub fn auth() -> Self {
        Self::new(ErrorCode::AuthenticationFailed, "authentication failed")
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn internal() -> Self {
        Self::new(ErrorCode::Internal, "internal error")
    }

    pub fn unavailable() -> Self {
        Self::new(ErrorCode::Unavailable, "service unavailable, retry later")
    }
}

impl From<umbra_store::StoreError> for Failure {
    fn from(e: umbra_store::StoreError) -> Self {
        match e {
            umbra_store::StoreError::Conflict(what) => {
                Self::new(ErrorCode::Conflict, format!("{what} already exists"))
            }
            other => {
                tracing::error!(error = %other, "store failure");
                Self::unavailable()
            }
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = self.status_override.unwrap_or_else(|| {
            StatusCode::from_u16(self.code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        });
        let body = ErrorBody {
            error: ApiError {
                code: self.code,
                message: self.message,
                request_id: current_request_id(),
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

pub type ApiResult<T> = Result<T, Failure>;
