//! The HTTP edge's one error type. Every error is JSON, `{"error": ...,
//! "field": ...?}`; a lock failure adds its class, waited_ms and op, and never
//! shows SQL text. [`ErrorBody`] is that body: the answers are serialized from
//! it and the OpenAPI document describes it, so the two cannot drift.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use schema::error::{DbError, LockClass};
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
// Nothing reads this type back: the attribute is there for the document,
// which then says `additionalProperties: false`, so that a key added to an
// answer without being added here fails the schema check.
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// What went wrong, for a person to read.
    #[schema(min_length = 1)]
    pub error: String,
    /// The input the error is about: a body field (`project`, `count`,
    /// `priority`, `needs`), a query parameter, or `query`, `body`, `headers`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, value_type = Option<String>)]
    pub field: Option<&'static str>,
    /// A lock failure only: the class of SQLite's (or the server's) error.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, schema_with = crate::openapi::lock_class_schema)]
    pub class: Option<&'static str>,
    /// A lock failure only: how long the failing call waited, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 0)]
    pub waited_ms: Option<f64>,
    /// A lock failure only: the operation that failed (`create_request`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, value_type = Option<String>)]
    pub op: Option<&'static str>,
}

impl ErrorBody {
    fn new(error: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: error.into(),
            field: None,
            class: None,
            waited_ms: None,
            op: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest {
        message: String,
        field: Option<&'static str>,
    },
    #[error("the body is over {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("send the body as application/json")]
    UnsupportedMediaType,
    #[error("{message}")]
    Unprocessable {
        message: String,
        field: Option<&'static str>,
    },
    #[error("not found")]
    NotFound,
    /// The resource serves only the methods `allow` (`"GET, POST"`).
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("{0}")]
    Conflict(String),
    #[error("draining")]
    Draining,
    #[error("database is locked")]
    Locked { op: &'static str, error: DbError },
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn bad(message: impl Into<String>, field: &'static str) -> ApiError {
        ApiError::BadRequest {
            message: message.into(),
            field: Some(field),
        }
    }

    pub fn invalid(message: impl Into<String>, field: &'static str) -> ApiError {
        ApiError::Unprocessable {
            message: message.into(),
            field: Some(field),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Draining | ApiError::Locked { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut builder = HttpResponse::build(self.status_code());
        let body = match self {
            ApiError::BadRequest { message, field }
            | ApiError::Unprocessable { message, field } => ErrorBody {
                field: *field,
                ..ErrorBody::new(message.clone())
            },
            ApiError::Locked { op, error } => {
                builder.insert_header(("Retry-After", "1"));
                let message = match error.class {
                    LockClass::BusyUpgrade | LockClass::BusySnapshot | LockClass::BusyTimeout => {
                        "database is locked"
                    }
                    LockClass::Locked => "database table is locked",
                    _ => "database error",
                };
                ErrorBody {
                    class: Some(error.class.as_str()),
                    waited_ms: Some((error.waited_ms() * 10.0).round() / 10.0),
                    op: Some(op),
                    ..ErrorBody::new(message)
                }
            }
            ApiError::Draining => {
                builder.insert_header(("Retry-After", "5"));
                ErrorBody::new("draining")
            }
            ApiError::MethodNotAllowed { allow } => {
                builder.insert_header((actix_web::http::header::ALLOW, *allow));
                ErrorBody::new(self.to_string())
            }
            ApiError::Internal(detail) => {
                log::error!("webui: internal error: {detail}");
                ErrorBody::new("internal error")
            }
            other => ErrorBody::new(other.to_string()),
        };
        builder.json(body)
    }
}
