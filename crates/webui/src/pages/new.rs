//! `/new`: an HTML form that creates build requests.
//!
//! The form is turned into the JSON body the API takes and validated by the
//! API's own [`validate`], so the rules (and their messages) are the same.
//! The create is the API's call too (`schema::strategy::create::create` with
//! the process's create shape and ATOMIC_REQUESTS), counted as
//! `create_request`. An invalid form is answered **422** with the form again:
//! the values kept, each message next to its field (`aria-describedby`). A
//! valid one is answered 303 to the first created request's page.

use std::collections::HashMap;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde_json::{Map, Value};

use super::{html, html_status, PageError};
use crate::api::{request_id, validate};
use crate::{ApiError, App};

#[derive(Template)]
#[template(path = "new.html")]
struct Form {
    title: &'static str,
    active: &'static str,
    project: String,
    count: String,
    needs: String,
    /// The registered kinds with their counts, as a hint.
    kinds: String,
    project_error: String,
    count_error: String,
    needs_error: String,
    /// An error that belongs to no one field.
    general_error: String,
}

impl Form {
    fn new(app: &App, project: String, count: String, needs: String) -> Form {
        Form {
            title: "New build",
            active: "new",
            project,
            count,
            needs,
            kinds: app
                .capacity
                .iter()
                .map(|(k, n)| format!("{k} ({n})"))
                .collect::<Vec<_>>()
                .join(", "),
            project_error: String::new(),
            count_error: String::new(),
            needs_error: String::new(),
            general_error: String::new(),
        }
    }
}

/// `GET /new`.
pub async fn form(app: web::Data<App>) -> Result<HttpResponse, PageError> {
    if app.daemon.is_draining() {
        return Err(PageError::Draining);
    }
    html(&Form::new(
        &app,
        String::new(),
        "1".to_string(),
        String::new(),
    ))
}

/// A number as JSON if it is one, else the text (which the validation then
/// refuses as "must be an integer", as it would refuse it in JSON).
fn number_or_text(s: &str) -> Value {
    s.parse::<i64>()
        .map(Value::from)
        .unwrap_or_else(|_| Value::from(s))
}

/// The form's `needs`, `kind:count, kind:count` (a bare `kind` is one), as
/// the API's JSON object; empty is absent (the API's default).
fn needs_json(text: &str) -> Value {
    let mut map = Map::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (kind, n) = entry.split_once(':').unwrap_or((entry, "1"));
        map.insert(kind.trim().to_string(), number_or_text(n.trim()));
    }
    if map.is_empty() && text.trim().is_empty() {
        Value::Null
    } else {
        Value::Object(map)
    }
}

/// The form as the API's JSON body.
pub fn body_of(project: &str, count: &str, needs: &str) -> Value {
    let count = count.trim();
    serde_json::json!({
        "project": project,
        "count": if count.is_empty() { Value::Null } else { number_or_text(count) },
        "needs": needs_json(needs),
    })
}

/// `POST /new` (application/x-www-form-urlencoded: project, count, needs).
pub async fn submit(
    app: web::Data<App>,
    req: HttpRequest,
    fields: web::Form<HashMap<String, String>>,
) -> Result<HttpResponse, PageError> {
    if app.daemon.is_draining() {
        return Err(PageError::Draining);
    }
    let field = |k: &str| fields.get(k).cloned().unwrap_or_default();
    let (project, count, needs) = (field("project"), field("count"), field("needs"));
    let mut page = Form::new(&app, project.clone(), count.clone(), needs.clone());
    let create = match validate(&body_of(&project, &count, &needs), &app.capacity) {
        Ok(c) => c,
        Err(
            ApiError::BadRequest { message, field } | ApiError::Unprocessable { message, field },
        ) => {
            match field {
                Some("project") => page.project_error = message,
                Some("count") => page.count_error = message,
                Some("needs") => page.needs_error = message,
                _ => page.general_error = message,
            }
            return html_status(&page, StatusCode::UNPROCESSABLE_ENTITY);
        }
        Err(e) => return Err(e.into()),
    };
    let created = crate::api::create_requests(&app, create, request_id(&req)).await;
    match created {
        Ok(created) => {
            let to = created
                .ids
                .first()
                .map(|id| format!("/builds/{id}"))
                .unwrap_or_else(|| "/builds".to_string());
            Ok(HttpResponse::SeeOther()
                .insert_header((header::LOCATION, to))
                .finish())
        }
        Err(ApiError::Locked { error, .. }) => {
            page.general_error = format!(
                "The database was locked ({}) and the create gave up: try again. Without \
                 ATOMIC_REQUESTS, some of the requests may have been created before it failed.",
                error.class.as_str()
            );
            html_status(&page, StatusCode::SERVICE_UNAVAILABLE)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_becomes_the_api_body() {
        assert_eq!(
            body_of("p", " 3 ", "qemux86:2, qemuarm"),
            serde_json::json!({"project": "p", "count": 3, "needs": {"qemux86": 2, "qemuarm": 1}})
        );
        assert_eq!(
            body_of("p", "", " "),
            serde_json::json!({"project": "p", "count": null, "needs": null})
        );
        assert_eq!(
            body_of("p", "three", "qemux86:x")["needs"],
            serde_json::json!({"qemux86": "x"})
        );
        assert_eq!(body_of("p", "three", "")["count"], "three");
    }
}
