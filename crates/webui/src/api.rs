//! The JSON API. Each handler's `#[utoipa::path]` lists every status it
//! answers; the request and response types derive their schemas, which
//! carry the rules the handlers enforce ([`crate::openapi`] serves the
//! document).

use std::collections::BTreeMap;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use rand::Rng;
use schema::error::OpError;
use schema::models::{BuildRequest, Environment, Needs};
use schema::strategy::create::CreateSpec;
use schema::types::{LockState, RequestId, RequestState};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ErrorBody;
use crate::openapi::{self, LockStateSchema, RequestStateSchema};
use crate::{ApiError, App};

/// The largest body a create accepts.
pub const BODY_LIMIT: usize = 256 * 1024;
/// The most requests one POST may create (NUM in the original load script).
pub const MAX_COUNT: i64 = 1000;
/// The largest page.
pub const MAX_LIMIT: i64 = 500;
/// The page when the list names no limit.
pub const DEFAULT_LIMIT: i64 = 100;
/// The longest project name, in characters (Unicode scalar values).
pub const MAX_PROJECT_CHARS: usize = 200;

/// A build request as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = BuildRequest)]
// For the document only (nothing reads this type back): answers carry no
// other key, and the schema check holds them to it.
#[serde(deny_unknown_fields)]
pub struct RequestJson {
    #[schema(value_type = i64, minimum = 1)]
    pub id: RequestId,
    #[schema(minimum = 1)]
    pub project_id: i64,
    #[schema(value_type = RequestStateSchema)]
    pub state: RequestState,
    /// Environments the build needs, by kind.
    pub needs: BTreeMap<String, u32>,
    pub priority: i32,
    /// The daemon that created it (its `--name`).
    pub submitted_by: String,
    /// The X-Request-Id of the create.
    pub client_request_id: Option<String>,
    /// Why it ended as it did (`cancelled`, a failure), if it has ended.
    pub reason: Option<String>,
    /// Microseconds since the Unix epoch.
    pub created_at: i64,
    /// Microseconds since the Unix epoch.
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

/// A build environment as the API shows it (the columns of
/// `build_environment`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Environment)]
// For the document only, as on [`RequestJson`].
#[serde(deny_unknown_fields)]
pub struct EnvironmentJson {
    #[schema(minimum = 1)]
    pub id: i64,
    /// `kind-N`.
    pub name: String,
    pub kind: String,
    #[schema(value_type = LockStateSchema)]
    pub lock_state: LockState,
    /// The request that booked it, while booked.
    #[schema(value_type = Option<i64>, minimum = 1)]
    pub request_id: Option<RequestId>,
    /// Microseconds since the Unix epoch: when the booking lapses.
    pub lease_until: Option<i64>,
    /// Microseconds since the Unix epoch.
    pub updated_at: i64,
}

impl From<Environment> for EnvironmentJson {
    fn from(e: Environment) -> Self {
        EnvironmentJson {
            id: e.id.0,
            name: e.name,
            kind: e.kind,
            lock_state: e.lock_state,
            request_id: e.request_id,
            lease_until: e.lease_until,
            updated_at: e.updated_at,
        }
    }
}

/// Maps an operation's final failure to the HTTP answer.
fn op_failed(op: &'static str, e: OpError) -> ApiError {
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

/// Runs a write view as [`blocking`] does, once one of the `LAB_WRITERS`
/// permits is free: a waiting view queues here, in order.
async fn blocking_write<T: Send + 'static>(
    app: &web::Data<App>,
    f: impl FnOnce(&App, &mut schema::db::PooledConn) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let _permit = app
        .writers
        .acquire()
        .await
        .map_err(|e| ApiError::Internal(format!("the writers' queue is closed: {e}")))?;
    blocking(app, f).await
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
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

/// Whether a name may not contain `c`: a control character other than tab.
/// A NUL or an escape in a name is refused (PostgreSQL refuses NUL in text,
/// and most tools choke on them).
pub fn refused_in_names(c: char) -> bool {
    c.is_control() && c != '\t'
}

/// The first character of `s` a name may not contain, with its position.
pub fn control_char(s: &str) -> Option<(usize, char)> {
    s.chars().enumerate().find(|(_, c)| refused_in_names(*c))
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

/// A JSON number as an integer, when it is one. JSON does not tell 28 from
/// 28.0 (JSON Schema calls both integers, and some clients write the
/// second), so a float without a fraction counts, within i64; 1.5 does not.
fn json_integer(v: &serde_json::Value) -> Option<i64> {
    if let Some(i) = v.as_i64() {
        return Some(i);
    }
    // 2^63: every f64 below it (and at or above -2^63) fits in an i64.
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    v.as_f64()
        .filter(|f| f.fract() == 0.0 && (-TWO_63..TWO_63).contains(f))
        .map(|f| f as i64)
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
    if project.chars().count() > MAX_PROJECT_CHARS {
        return Err(ApiError::invalid(
            format!("project must be at most {MAX_PROJECT_CHARS} characters"),
            "project",
        ));
    }
    let count = match obj.get("count") {
        None | Some(serde_json::Value::Null) => {
            return Err(ApiError::invalid("count is required", "count"))
        }
        Some(v) => {
            json_integer(v).ok_or_else(|| ApiError::bad("count must be an integer", "count"))?
        }
    };
    if !(1..=MAX_COUNT).contains(&count) {
        return Err(ApiError::invalid(
            format!("count must be between 1 and {MAX_COUNT}"),
            "count",
        ));
    }
    let priority = match obj.get("priority") {
        None | Some(serde_json::Value::Null) => 0,
        Some(v) => json_integer(v)
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| ApiError::bad("priority must be an integer", "priority"))?,
    };
    let needs = match obj.get("needs") {
        None | Some(serde_json::Value::Null) => Needs::default(),
        Some(serde_json::Value::Object(map)) => {
            let mut needs = BTreeMap::new();
            for (kind, n) in map {
                refuse_control(kind, "an environment kind in needs", "needs")?;
                let n = json_integer(n)
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

/// The body of a create. Keys not named here are ignored.
// Only the document uses this type (so it is never built): `validate`
// reads the JSON itself, so that each wrong input gets its own status and
// field. `openapi::document` completes `needs` at startup with the
// registered kinds.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct CreateRequest {
    #[schema(schema_with = openapi::project_schema)]
    project: String,
    #[schema(schema_with = openapi::count_schema)]
    count: i64,
    /// Environments each request needs, by kind (completed at startup).
    needs: Option<BTreeMap<String, u32>>,
    /// Higher runs first; 0 when missing.
    priority: Option<i32>,
}

/// The answer to a create.
#[derive(Debug, Serialize, ToSchema)]
// For the document only, as on [`RequestJson`].
#[serde(deny_unknown_fields)]
pub struct Created {
    /// The X-Request-Id of the request, or one made here.
    request_id: String,
    /// The new requests, in creation order.
    #[schema(schema_with = openapi::ids_schema)]
    ids: Vec<RequestId>,
    /// Requests queued when the view read the queue (before this create),
    /// counted up to 1000: 1000 means 1000 or more.
    #[schema(minimum = 0, maximum = 1000)]
    queue_length: i64,
}

/// `POST /api/build-requests`: the Django-shaped create view.
#[utoipa::path(
    post,
    path = "/api/build-requests",
    tag = "build requests",
    summary = "Create build requests",
    description = "The shape of a Django view: gets or creates the project, reads the queue \
length, then writes `count` queued requests (one transaction with ATOMIC_REQUESTS, \
autocommit without: a 503 may leave a partial write). The body is read up to 256 KiB \
before it is parsed; keys not named in the schema are ignored.",
    params(
        NoQuery,
        ("X-Request-Id" = Option<String>, Header, nullable = false,
            description = "The client's id for this request, echoed back; one is made when it \
is missing, blank or over 200 bytes."),
    ),
    request_body(content = CreateRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = Created,
            headers(("X-Request-Id" = String, description = "The request's id"))),
        (status = 400, description = "Malformed JSON, a value of the wrong type, or a query \
parameter (this endpoint takes none)", body = ErrorBody),
        (status = 409, description = "The project was deleted while the view created it", body = ErrorBody),
        (status = 413, description = "The body is over 256 KiB", body = ErrorBody),
        (status = 415, description = "The body is not application/json (or application/*+json)", body = ErrorBody),
        (status = 422, description = "A value out of range: see `field`", body = ErrorBody),
        (status = 500, description = "No database connection", body = ErrorBody),
        (status = 503, description = "Draining, or the database stayed locked: see `class`",
            body = ErrorBody, headers(("Retry-After" = i64, description = "Seconds"))),
    )
)]
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
    let created = create_requests(&app, create, rid.clone()).await?;
    let (ids, queue_length) = (created.ids, created.queue_length);
    Ok(HttpResponse::Created()
        .insert_header(("X-Request-Id", rid.clone()))
        .json(Created {
            request_id: rid,
            ids,
            queue_length,
        }))
}

/// Creates a validated request the one way webui creates (the JSON API and
/// the `/new` form alike), as the operation `create_request`, with the
/// daemon's create shape and ATOMIC_REQUESTS.
pub(crate) async fn create_requests(
    app: &web::Data<App>,
    create: Create,
    client_request_id: String,
) -> Result<schema::strategy::create::Created, ApiError> {
    let spec = CreateSpec {
        project: create.project,
        count: create.count,
        needs: create.needs,
        priority: create.priority,
        client_request_id,
        submitted_by: app.daemon.name().to_string(),
    };
    blocking_write(app, move |app, conn| {
        let d = &app.daemon;
        let knobs = &d.settings.knobs;
        schema::strategy::create::create(
            &d.lab,
            conn,
            knobs.create_shape.value,
            knobs.atomic_requests.value,
            &spec,
            &|| d.notify_runbuilds(daemon::WakeWhy::Created),
        )
        .map_err(|e| op_failed("create_request", e))
    })
    .await
}

/// The query string of the list: an unknown parameter is a 400 that names
/// the known ones (serde's "expected one of"). The values are read as text
/// and parsed by [`list`], so that each wrong one names its field; an empty
/// value is wrong like any other (`state=` is no state).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only requests in this state.
    #[param(value_type = Option<RequestStateSchema>)]
    state: Option<String>,
    #[param(schema_with = openapi::limit_schema)]
    limit: Option<String>,
    #[param(schema_with = openapi::after_schema)]
    after: Option<String>,
}

/// A page of the list.
#[derive(Debug, Serialize, ToSchema)]
// For the document only, as on [`RequestJson`].
#[serde(deny_unknown_fields)]
pub struct Page {
    /// In id order.
    items: Vec<RequestJson>,
    /// The `after` of the next page; null on the last one.
    #[schema(value_type = Option<i64>, minimum = 1)]
    next_after: Option<RequestId>,
}

/// `GET /api/build-requests?state=&limit=&after=`: a page by key.
#[utoipa::path(
    get,
    path = "/api/build-requests",
    tag = "build requests",
    summary = "List build requests, a page at a time",
    params(ListQuery),
    responses(
        (status = 200, description = "A page, in id order", body = Page),
        (status = 400, description = "A value that is not a number, or an unknown parameter", body = ErrorBody),
        (status = 422, description = "A value out of range, or an unknown state", body = ErrorBody),
        (status = 500, description = "No database connection", body = ErrorBody),
        (status = 503, description = "The database stayed locked", body = ErrorBody,
            headers(("Retry-After" = i64, description = "Seconds"))),
    )
)]
pub async fn list(app: web::Data<App>, q: web::Query<ListQuery>) -> Result<HttpResponse, ApiError> {
    let state = match q.state.as_deref() {
        Some(s) => Some(
            s.parse::<RequestState>()
                .map_err(|e| ApiError::invalid(e.to_string(), "state"))?,
        ),
        None => None,
    };
    let limit = match q.limit.as_deref() {
        Some(s) => s
            .parse::<i64>()
            .map_err(|_| ApiError::bad("limit must be an integer", "limit"))?,
        None => DEFAULT_LIMIT,
    };
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(
            format!("limit must be between 1 and {MAX_LIMIT}"),
            "limit",
        ));
    }
    let after = match q.after.as_deref() {
        Some(s) => {
            let after = s
                .parse::<i64>()
                .map_err(|_| ApiError::bad("after must be an integer id", "after"))?;
            // Ids start at 1: 0 is before the first one, and a negative id
            // is a client's mistake, not a page.
            if after < 0 {
                return Err(ApiError::invalid("after must be 0 or more", "after"));
            }
            Some(RequestId(after))
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
    Ok(HttpResponse::Ok().json(Page { items, next_after }))
}

fn parse_id(raw: &str) -> Result<RequestId, ApiError> {
    raw.parse::<i64>()
        .map(RequestId)
        .map_err(|_| ApiError::NotFound)
}

/// `GET /api/build-requests/{id}`.
#[utoipa::path(
    get,
    path = "/api/build-requests/{id}",
    tag = "build requests",
    summary = "One build request",
    params(
        ("id" = i64, Path, minimum = 1, description = "The request's id"),
        NoQuery,
    ),
    responses(
        (status = 200, description = "The request", body = RequestJson),
        (status = 400, description = "A query parameter (this endpoint takes none)", body = ErrorBody),
        (status = 404, description = "No request has this id (or it is not a number)", body = ErrorBody),
        (status = 500, description = "No database connection", body = ErrorBody),
        (status = 503, description = "The database stayed locked", body = ErrorBody,
            headers(("Retry-After" = i64, description = "Seconds"))),
    )
)]
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
#[utoipa::path(
    post,
    path = "/api/build-requests/{id}/cancel",
    tag = "build requests",
    summary = "Cancel a build request",
    description = "A queued request is deleted at once; an inprogress one goes to cancelling, \
and its ingester stops it. Any body is ignored.",
    params(
        ("id" = i64, Path, minimum = 1, description = "The request's id"),
        NoQuery,
    ),
    responses(
        (status = 200, description = "This call moved it: the request as it is now", body = RequestJson),
        (status = 400, description = "A query parameter (this endpoint takes none)", body = ErrorBody),
        (status = 404, description = "No request has this id (or it is not a number)", body = ErrorBody),
        (status = 409, description = "Nothing to cancel: it is neither queued nor inprogress", body = ErrorBody),
        (status = 500, description = "No database connection", body = ErrorBody),
        (status = 503, description = "The database stayed locked", body = ErrorBody,
            headers(("Retry-After" = i64, description = "Seconds"))),
    )
)]
pub async fn cancel(
    app: web::Data<App>,
    path: web::Path<String>,
    _q: web::Query<NoQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let result = blocking_write(&app, move |app, conn| {
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

/// The registered environments.
#[derive(Debug, Serialize, ToSchema)]
// For the document only, as on [`RequestJson`].
#[serde(deny_unknown_fields)]
pub struct Environments {
    /// In id order.
    items: Vec<EnvironmentJson>,
}

/// `GET /api/environments`.
#[utoipa::path(
    get,
    path = "/api/environments",
    tag = "environments",
    summary = "The registered build environments and their lock state",
    params(NoQuery),
    responses(
        (status = 200, description = "Every environment", body = Environments),
        (status = 400, description = "A query parameter (this endpoint takes none)", body = ErrorBody),
        (status = 500, description = "No database connection", body = ErrorBody),
        (status = 503, description = "The database stayed locked", body = ErrorBody,
            headers(("Retry-After" = i64, description = "Seconds"))),
    )
)]
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
    Ok(HttpResponse::Ok().json(Environments {
        items: envs.into_iter().map(EnvironmentJson::from).collect(),
    }))
}

/// The default service of a resource that serves the methods `allow`
/// (`"GET, POST"`): 405, with them in `Allow` (RFC 9110 requires it).
pub fn method_not_allowed(allow: &'static str) -> actix_web::Route {
    web::to(move || async move {
        actix_web::ResponseError::error_response(&ApiError::MethodNotAllowed { allow })
    })
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
        // JSON does not tell 28 from 28.0; a fraction is still refused.
        let ok = validate(
            &serde_json::json!({"project": "p", "count": 28.0, "priority": -2.0,
                                "needs": {"qemux86": 2.0}}),
            &cap(),
        )
        .expect("integral floats");
        assert_eq!((ok.count, ok.priority), (28, -2));
        assert_eq!(ok.needs.0["qemux86"], 2);
        assert_eq!(
            status(serde_json::json!({"project": "p", "count": 1.5})),
            400
        );
        assert_eq!(
            status(serde_json::json!({"project": "p", "count": 1e300})),
            400
        );
        assert_eq!(
            status(serde_json::json!({"project": "p", "count": 1, "priority": 2.5})),
            400
        );
    }
}
