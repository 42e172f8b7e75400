//! The HTML pages: askama templates (compiled, type-checked, escaped) under
//! one layout with a nav bar, served with webui's own stylesheet. No CDN and
//! no build step: everything a page needs is in this binary.
//!
//! Errors of a page are HTML too ([`PageError`]): a missing build is a 404
//! page, a lock failure a 503 page that names its class. Every database read
//! is a lab operation (`op.read`), counted in `/api/stats` like the API's.

pub mod builds;
pub mod environments;
pub mod new;
pub mod runs;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError};
use askama::Template;
use schema::backend::Conn;
use schema::OpError;

use crate::{ApiError, App};

/// The stylesheet every page links to.
pub const CSS: &str = include_str!("../../static/locklab.css");

/// `GET /static/locklab.css`.
pub async fn css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(("Cache-Control", "max-age=300"))
        .body(CSS)
}

/// Why a page could not be shown, as an HTML page.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("not found")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("draining")]
    Draining,
    #[error("database is locked")]
    Locked { op: &'static str, class: String },
    #[error("internal error")]
    Internal(String),
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::NotFound => PageError::NotFound("There is nothing at this address.".into()),
            ApiError::Draining => PageError::Draining,
            ApiError::Locked { op, error } => PageError::Locked {
                op,
                class: error.class.as_str().to_string(),
            },
            ApiError::Internal(detail) => PageError::Internal(detail),
            other => PageError::BadRequest(other.to_string()),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    active: &'a str,
    status: u16,
    message: String,
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        match self {
            PageError::NotFound(_) => StatusCode::NOT_FOUND,
            PageError::BadRequest(_) => StatusCode::BAD_REQUEST,
            PageError::Draining | PageError::Locked { .. } => StatusCode::SERVICE_UNAVAILABLE,
            PageError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let (title, message) = match self {
            PageError::NotFound(m) => ("Not found", m.clone()),
            PageError::BadRequest(m) => ("Bad request", m.clone()),
            PageError::Draining => (
                "Draining",
                "webui is draining: it creates nothing more until it restarts. Pages that only \
                 read still work."
                    .to_string(),
            ),
            PageError::Locked { op, class } => (
                "Database is locked",
                format!("{op} failed: {class}. Try again in a moment."),
            ),
            PageError::Internal(detail) => {
                log::error!("webui: page failed: {detail}");
                (
                    "Internal error",
                    "Something went wrong; see webui's log.".to_string(),
                )
            }
        };
        let page = ErrorPage {
            title,
            active: "",
            status: status.as_u16(),
            message,
        };
        let mut b = HttpResponse::build(status);
        if matches!(self, PageError::Draining | PageError::Locked { .. }) {
            b.insert_header(("Retry-After", "1"));
        }
        match page.render() {
            Ok(html) => b.content_type("text/html; charset=utf-8").body(html),
            Err(_) => b.content_type("text/plain; charset=utf-8").body(title),
        }
    }
}

/// Renders a page as a 200 answer.
pub fn html(page: &impl Template) -> Result<HttpResponse, PageError> {
    html_status(page, StatusCode::OK)
}

/// Renders a page with the given status.
pub fn html_status(page: &impl Template, status: StatusCode) -> Result<HttpResponse, PageError> {
    let body = page
        .render()
        .map_err(|e| PageError::Internal(format!("rendering a page: {e}")))?;
    Ok(HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(body))
}

/// Runs a read as one lab operation named `op`, off the async workers.
pub async fn read<T: Send + 'static>(
    app: &web::Data<App>,
    op: &'static str,
    mut f: impl FnMut(&mut Conn) -> diesel::QueryResult<T> + Send + 'static,
) -> Result<T, PageError> {
    let app = app.clone();
    web::block(move || {
        let mut conn = app
            .daemon
            .pool
            .get()
            .map_err(|e| PageError::Internal(format!("no database connection: {e}")))?;
        app.daemon
            .lab
            .op(op, |o| o.read(&mut conn, &mut f))
            .map_err(|e| match e {
                OpError::Db(error) => PageError::Locked {
                    op,
                    class: error.class.as_str().to_string(),
                },
                OpError::Aborted(reason) => PageError::Internal(reason),
            })
    })
    .await
    .map_err(|e| PageError::Internal(format!("blocking task failed: {e}")))?
}

/// A time in µs since the epoch, as UTC to the second: `2026-12-01 12:34:56`.
pub fn when(us: i64) -> String {
    let Ok(us) = u64::try_from(us) else {
        return "—".to_string();
    };
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(us);
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_string()
}

/// The CSS class of a state's badge.
pub fn badge(state: &str) -> &'static str {
    match state {
        "queued" | "created" => "badge badge-queued",
        "inprogress" | "cancelling" | "locked" | "running" => "badge badge-active",
        "completed" | "free" | "succeeded" => "badge badge-ok",
        "failed" => "badge badge-failed",
        _ => "badge badge-other",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn when_is_utc_to_the_second() {
        assert_eq!(super::when(0), "1970-01-01 00:00:00");
        assert_eq!(super::when(1_700_000_000_123_456), "2023-11-14 22:13:20");
        assert_eq!(super::when(-1), "—");
    }
}
