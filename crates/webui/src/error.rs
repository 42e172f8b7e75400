//! The HTTP edge's one error type. Every error is JSON, `{"error": ...,
//! "field": ...?}`; a lock failure adds its class, waited_ms and op, and never
//! shows SQL text.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use schema::error::{DbError, LockClass};

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
    #[error("method not allowed")]
    MethodNotAllowed,
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
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Draining | ApiError::Locked { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut builder = HttpResponse::build(self.status_code());
        let body = match self {
            ApiError::BadRequest { message, field }
            | ApiError::Unprocessable { message, field } => {
                let mut v = serde_json::json!({ "error": message });
                if let Some(field) = field {
                    v["field"] = serde_json::Value::from(*field);
                }
                v
            }
            ApiError::Locked { op, error } => {
                builder.insert_header(("Retry-After", "1"));
                let message = match error.class {
                    LockClass::BusyUpgrade | LockClass::BusySnapshot | LockClass::BusyTimeout => {
                        "database is locked"
                    }
                    LockClass::Locked => "database table is locked",
                    _ => "database error",
                };
                serde_json::json!({
                    "error": message,
                    "class": error.class.as_str(),
                    "waited_ms": (error.waited_ms() * 10.0).round() / 10.0,
                    "op": op,
                })
            }
            ApiError::Draining => {
                builder.insert_header(("Retry-After", "5"));
                serde_json::json!({ "error": "draining" })
            }
            ApiError::Internal(detail) => {
                log::error!("webui: internal error: {detail}");
                serde_json::json!({ "error": "internal error" })
            }
            other => serde_json::json!({ "error": other.to_string() }),
        };
        builder.json(body)
    }
}
