//! The JSON API.

use std::collections::BTreeMap;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use rand::Rng;
use schema::error::OpError;
use schema::models::{BuildRequest, Environment, Needs};
use schema::strategy::create::CreateSpec;
use schema::types::{RequestId, RequestState};
use serde::{Deserialize, Serialize};

use crate::{ApiError, App};

/// The largest body a create accepts.
pub const BODY_LIMIT: usize = 256 * 1024;
/// The most requests one POST may create (NUM in the original load script).
pub const MAX_COUNT: i64 = 1000;
/// The largest page.
pub const MAX_LIMIT: i64 = 500;

/// A build request as the API shows it.
#[derive(Debug, Serialize)]
pub struct RequestJson {
    pub id: RequestId,
    pub project_id: i64,
    pub state: RequestState,
    pub needs: BTreeMap<String, u32>,
    pub priority: i32,
    pub submitted_by: String,
    pub client_request_id: Option<String>,
    pub reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<BuildRequest> for RequestJson {
    fn from(r: BuildRequest) -> Self {
        RequestJson {
            needs: r.needs().0,
            id: r.id,
            project_id: r.project_id.0,
            state: r.state,
            priority: r.priority,
            submitted_by: r.submitted_by,
            client_request_id: r.client_request_id,
            reason: r.reason,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// Maps an operation's final failure to the HTTP answer.
pub(crate) fn op_failed(op: &'static str, e: OpError) -> ApiError {
    match e {
        OpError::Db(error) => ApiError::Locked { op, error },
        OpError::Aborted(reason) => ApiError::Conflict(reason),
    }
}

/// Runs blocking database work off the async workers.
async fn blocking<T: Send + 'static>(
    app: &web::Data<App>,
    f: impl FnOnce(&App, &mut schema::db::PooledConn) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let app = app.clone();
    web::block(move || {
        let mut conn = app
            .daemon
            .pool
            .get()
            .map_err(|e| ApiError::Internal(format!("no database connection: {e}")))?;
        f(&app, &mut conn)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("blocking task failed: {e}")))?
}

/// The X-Request-Id of the client, or one made here.
pub(crate) fn request_id(req: &HttpRequest) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .map(str::to_string)
        .unwrap_or_else(|| format!("webui-{:016x}", rand::rng().random::<u64>()))
}

/// Reads the body, refusing more than [`BODY_LIMIT`] bytes and anything but
/// JSON, before any of it is parsed.
async fn read_json_body(
    req: &HttpRequest,
    mut payload: web::Payload,
) -> Result<serde_json::Value, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime != "application/json" && !(mime.starts_with("application/") && mime.ends_with("+json"))
    {
        return Err(ApiError::UnsupportedMediaType);
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT) {
        return Err(ApiError::PayloadTooLarge { limit: BODY_LIMIT });
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad(format!("reading the body: {e}"), "body"))?;
        if body.len() + chunk.len() > BODY_LIMIT {
            return Err(ApiError::PayloadTooLarge { limit: BODY_LIMIT });
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest {
        message: format!("malformed JSON: {e}"),
        field: None,
    })
}

/// The query string of an endpoint that takes none: any parameter is a 400.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

/// The first control character of `s` other than tab, with its position:
/// a NUL or an escape in a name is refused (PostgreSQL refuses NUL in text,
/// and most tools choke on them).
pub fn control_char(s: &str) -> Option<(usize, char)> {
    s.chars()
        .enumerate()
        .find(|(_, c)| c.is_control() && *c != '\t')
}

fn refuse_control(value: &str, what: &str, field: &'static str) -> Result<(), ApiError> {
    match control_char(value) {
        Some((at, c)) => Err(ApiError::invalid(
            format!(
                "{what} must not contain control characters (U+{:04X} at character {at})",
                u32::from(c)
            ),
            field,
        )),
        None => Ok(()),
    }
}

/// A validated create.
#[derive(Debug, Clone)]
pub(crate) struct Create {
    pub(crate) project: String,
    pub(crate) count: i64,
    pub(crate) needs: Needs,
    pub(crate) priority: i32,
}

pub(crate) fn validate(
    body: &serde_json::Value,
    capacity: &BTreeMap<String, u32>,
) -> Result<Create, ApiError> {
    let obj = body.as_object().ok_or_else(|| ApiError::BadRequest {
        message: "the body must be a JSON object".to_string(),
        field: None,
    })?;
    let project = match obj.get("project") {
        None | Some(serde_json::Value::Null) => {
            return Err(ApiError::invalid("project is required", "project"))
        }
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(_) => return Err(ApiError::bad("project must be a string", "project")),
    };
    if project.trim().is_empty() {
        return Err(ApiError::invalid("project must not be empty", "project"));
    }
    refuse_control(&project, "project", "project")?;
    if project.chars().count() > 200 {
        return Err(ApiError::invalid(
            "project must be at most 200 characters",
            "project",
        ));
    }
    let count = match obj.get("count") {
        None | Some(serde_json::Value::Null) => {
            return Err(ApiError::invalid("count is required", "count"))
        }
        Some(v) => v
            .as_i64()
            .ok_or_else(|| ApiError::bad("count must be an integer", "count"))?,
    };
    if !(1..=MAX_COUNT).contains(&count) {
        return Err(ApiError::invalid(
            format!("count must be between 1 and {MAX_COUNT}"),
            "count",
        ));
    }
    let priority = match obj.get("priority") {
        None | Some(serde_json::Value::Null) => 0,
        Some(v) => v
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| ApiError::bad("priority must be an integer", "priority"))?,
    };
    let needs = match obj.get("needs") {
        None | Some(serde_json::Value::Null) => Needs::default(),
        Some(serde_json::Value::Object(map)) => {
            let mut needs = BTreeMap::new();
            for (kind, n) in map {
                refuse_control(kind, "an environment kind in needs", "needs")?;
                let n = n
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| {
                        ApiError::bad(format!("needs.{kind} must be a whole number"), "needs")
                    })?;
                if n == 0 {
                    return Err(ApiError::invalid(
                        format!("needs.{kind} must be at least 1"),
                        "needs",
                    ));
                }
                needs.insert(kind.clone(), n);
            }
            if needs.is_empty() {
                return Err(ApiError::invalid(
                    "needs must name at least one environment kind",
                    "needs",
                ));
            }
            Needs(needs)
        }
        Some(_) => {
            return Err(ApiError::bad(
                "needs must be an object of kind to count",
                "needs",
            ))
        }
    };
    if let Some(reason) = needs.unsatisfiable_by(capacity) {
        let known = capacity.keys().cloned().collect::<Vec<_>>().join(", ");
        return Err(ApiError::invalid(
            format!("{reason} (registered: {known})"),
            "needs",
        ));
    }
    Ok(Create {
        project,
        count,
        needs,
        priority,
    })
}

#[derive(Serialize)]
struct Created {
    request_id: String,
    ids: Vec<RequestId>,
    queue_length: i64,
}

/// `POST /api/build-requests`: the Django-shaped create view.
pub async fn create(
    app: web::Data<App>,
    req: HttpRequest,
    payload: web::Payload,
    _q: web::Query<NoQuery>,
) -> Result<HttpResponse, ApiError> {
    if app.daemon.is_draining() {
        return Err(ApiError::Draining);
    }
    let rid = request_id(&req);
    let body = read_json_body(&req, payload).await?;
    let create = validate(&body, &app.capacity)?;
    let spec = CreateSpec {
        project: create.project,
        count: create.count,
        needs: create.needs,
        priority: create.priority,
        client_request_id: rid.clone(),
        submitted_by: app.daemon.name().to_string(),
    };
    let created = blocking(&app, move |app, conn| {
        let d = &app.daemon;
        let knobs = &d.settings.knobs;
        schema::strategy::create::create(
            &d.lab,
            conn,
            knobs.create_shape.value,
            knobs.atomic_requests.value,
            &spec,
            &|| d.notify_runbuilds(),
        )
        .map_err(|e| op_failed("create_request", e))
    })
    .await?;
    let (ids, queue_length) = (created.ids, created.queue_length);
    Ok(HttpResponse::Created()
        .insert_header(("X-Request-Id", rid.clone()))
        .json(Created {
            request_id: rid,
            ids,
            queue_length,
        }))
}

/// The query string of the list: an unknown parameter is a 400 that names
/// the known ones (serde's "expected one of").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
    limit: Option<String>,
    after: Option<String>,
}

/// `GET /api/build-requests?state=&limit=&after=`: a page by key.
pub async fn list(app: web::Data<App>, q: web::Query<ListQuery>) -> Result<HttpResponse, ApiError> {
    let state = match q.state.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(
            s.parse::<RequestState>()
                .map_err(|e| ApiError::invalid(e.to_string(), "state"))?,
        ),
        None => None,
    };
    let limit = match q.limit.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => s
            .parse::<i64>()
            .map_err(|_| ApiError::bad("limit must be an integer", "limit"))?,
        None => 100,
    };
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(
            format!("limit must be between 1 and {MAX_LIMIT}"),
            "limit",
        ));
    }
    let after = match q.after.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => {
            Some(RequestId(s.parse::<i64>().map_err(|_| {
                ApiError::bad("after must be an integer id", "after")
            })?))
        }
        None => None,
    };
    let rows = blocking(&app, move |app, conn| {
        app.daemon
            .lab
            .op("list_requests", |op| {
                op.read(conn, |c| BuildRequest::page(c, state, after, limit))
            })
            .map_err(|e| op_failed("list_requests", e))
    })
    .await?;
    let next_after = if rows.len() as i64 == limit {
        rows.last().map(|r| r.id)
    } else {
        None
    };
    let items: Vec<RequestJson> = rows.into_iter().map(RequestJson::from).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items, "next_after": next_after })))
}

fn parse_id(raw: &str) -> Result<RequestId, ApiError> {
    raw.parse::<i64>()
        .map(RequestId)
        .map_err(|_| ApiError::NotFound)
}

/// `GET /api/build-requests/{id}`.
pub async fn get(
    app: web::Data<App>,
    path: web::Path<String>,
    _q: web::Query<NoQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let row = blocking(&app, move |app, conn| {
        app.daemon
            .lab
            .op("get_request", |op| {
                op.read(conn, |c| BuildRequest::get(c, id))
            })
            .map_err(|e| op_failed("get_request", e))
    })
    .await?;
    match row {
        Some(r) => Ok(HttpResponse::Ok().json(RequestJson::from(r))),
        None => Err(ApiError::NotFound),
    }
}

/// `POST /api/build-requests/{id}/cancel`: a queued request is deleted at once;
/// an inprogress one goes to cancelling, and its ingester stops it.
pub async fn cancel(
    app: web::Data<App>,
    path: web::Path<String>,
    _q: web::Query<NoQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let result = blocking(&app, move |app, conn| {
        app.daemon
            .lab
            .op("cancel_request", |op| {
                op.write(conn, |tx| {
                    // Whether this call moved the request decides 200 or 409:
                    // its final state alone cannot (a second cancel of a
                    // deleted request would look like a success).
                    let mut moved = tx.counted(|c| {
                        BuildRequest::transition(
                            c,
                            id,
                            RequestState::Queued,
                            RequestState::Deleted,
                            Some("cancelled"),
                        )
                    })?;
                    if moved == 0 {
                        moved = tx.counted(|c| {
                            BuildRequest::transition(
                                c,
                                id,
                                RequestState::InProgress,
                                RequestState::Cancelling,
                                None,
                            )
                        })?;
                    }
                    Ok((moved > 0, BuildRequest::get(tx.conn(), id)?))
                })
            })
            .map_err(|e| op_failed("cancel_request", e))
    })
    .await?;
    match result {
        (_, None) => Err(ApiError::NotFound),
        (true, Some(r)) => Ok(HttpResponse::Ok().json(RequestJson::from(r))),
        (false, Some(r)) => Err(ApiError::Conflict(format!(
            "request {} is {}; nothing to cancel",
            r.id, r.state
        ))),
    }
}

/// `GET /api/environments`.
pub async fn environments(
    app: web::Data<App>,
    _q: web::Query<NoQuery>,
) -> Result<HttpResponse, ApiError> {
    let envs = blocking(&app, move |app, conn| {
        app.daemon
            .lab
            .op("list_environments", |op| op.read(conn, Environment::all))
            .map_err(|e| op_failed("list_environments", e))
    })
    .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": envs })))
}

pub async fn method_not_allowed() -> HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::MethodNotAllowed)
}

pub async fn not_found() -> HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap() -> BTreeMap<String, u32> {
        BTreeMap::from([("qemux86".to_string(), 3), ("qemuarm".to_string(), 2)])
    }

    #[test]
    fn validation() {
        let ok = validate(&serde_json::json!({"project": "p", "count": 5}), &cap()).expect("valid");
        assert_eq!(ok.needs, Needs::default());
        let status = |v: serde_json::Value| {
            actix_web::ResponseError::status_code(&validate(&v, &cap()).expect_err("invalid"))
                .as_u16()
        };
        assert_eq!(status(serde_json::json!({"project": "p", "count": 0})), 422);
        assert_eq!(
            status(serde_json::json!({"project": "p", "count": 1001})),
            422
        );
        assert_eq!(status(serde_json::json!({"project": "", "count": 1})), 422);
        assert_eq!(status(serde_json::json!({"project": 7, "count": 1})), 400);
        assert_eq!(
            status(serde_json::json!({"project": "p", "count": "1"})),
            400
        );
        assert_eq!(
            status(serde_json::json!({"project": "p", "count": 1, "needs": {}})),
            422
        );
        assert_eq!(
            status(serde_json::json!({"project": "p", "count": 1, "needs": {"riscv": 1}})),
            422
        );
        assert_eq!(
            status(serde_json::json!({"project": "p", "count": 1, "needs": {"qemux86": 4}})),
            422
        );
        assert_eq!(
            status(serde_json::json!({"project": "p", "count": 1, "needs": {"qemux86": "2"}})),
            400
        );
        assert_eq!(status(serde_json::json!([1, 2])), 400);
    }
}
