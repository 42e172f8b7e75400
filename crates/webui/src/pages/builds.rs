//! `/builds`: build requests by key, with a state filter; `/builds/{id}`: one
//! request, its builds' progress and its bookings.
//!
//! A page is `BuildRequest::page` (ids after `after`, oldest first) plus the
//! project names and builds of those ids only: its cost depends on the page
//! size, not on the table's (see the `build_request_state_id` migration and
//! `examples/bench_pages.rs`).

use std::collections::{BTreeMap, HashMap};

use actix_web::{web, HttpResponse};
use askama::Template;
use schema::models::{Booking, Build, BuildRequest, Needs, Project};
use schema::types::{RequestId, RequestState};

use super::{badge, html, read, when, PageError};
use crate::App;

/// Requests per page.
pub const PAGE_SIZE: i64 = 50;

/// One row of the list.
pub struct Row {
    pub id: i64,
    pub project: String,
    pub state: String,
    pub badge: &'static str,
    pub needs: String,
    pub priority: i32,
    pub progress: String,
    pub created: String,
    pub client_request_id: String,
}

#[derive(Template)]
#[template(path = "builds.html")]
struct List {
    title: &'static str,
    active: &'static str,
    /// The filter: "" for every state.
    state: String,
    states: Vec<&'static str>,
    rows: Vec<Row>,
    /// The link to the next page, if there is one.
    next: Option<String>,
    /// Whether this is a later page (a link back to the first).
    paged: bool,
}

/// `kind×n, kind×n`.
pub fn needs_text(needs: &Needs) -> String {
    needs
        .0
        .iter()
        .map(|(k, n)| format!("{k}×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `12 / 50 events`, or what is known of it.
fn progress_text(builds: &[&Build]) -> String {
    match builds.last() {
        None => "no build yet".to_string(),
        Some(b) => match b.events_expected {
            Some(n) => format!("{} / {n} events", b.events_ingested),
            None => format!("{} events", b.events_ingested),
        },
    }
}

/// The query of `/builds`: `state` and `after`; anything else is refused.
fn parse_list_query(
    q: &HashMap<String, String>,
) -> Result<(Option<RequestState>, Option<RequestId>), PageError> {
    if let Some(k) = q.keys().find(|k| *k != "state" && *k != "after") {
        return Err(PageError::BadRequest(format!(
            "unknown query parameter {k:?}: use state and after"
        )));
    }
    let state = match q.get("state").map(|s| s.trim()).filter(|s| !s.is_empty()) {
        Some(s) => Some(
            s.parse::<RequestState>()
                .map_err(|e| PageError::BadRequest(e.to_string()))?,
        ),
        None => None,
    };
    let after = match q.get("after").map(|s| s.trim()).filter(|s| !s.is_empty()) {
        Some(s) => Some(RequestId(s.parse::<i64>().map_err(|_| {
            PageError::BadRequest(format!("after must be a request id, not {s:?}"))
        })?)),
        None => None,
    };
    Ok((state, after))
}

/// `GET /builds?state=&after=`.
pub async fn list(
    app: web::Data<App>,
    q: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, PageError> {
    let (state, after) = parse_list_query(&q)?;
    let (requests, names, builds) = read(&app, "page_builds", move |c| {
        // One more than a page: whether a next page exists.
        let requests = BuildRequest::page(c, state, after, PAGE_SIZE + 1)?;
        let mut project_ids: Vec<_> = requests.iter().map(|r| r.project_id).collect();
        project_ids.sort();
        project_ids.dedup();
        let names = Project::names(c, &project_ids)?;
        let ids: Vec<RequestId> = requests.iter().map(|r| r.id).collect();
        let builds = Build::for_requests(c, &ids)?;
        Ok((requests, names, builds))
    })
    .await?;
    let mut by_request: BTreeMap<RequestId, Vec<&Build>> = BTreeMap::new();
    for b in &builds {
        if let Some(r) = b.request_id {
            by_request.entry(r).or_default().push(b);
        }
    }
    let more = requests.len() as i64 > PAGE_SIZE;
    let shown = &requests[..requests.len().min(PAGE_SIZE as usize)];
    let state_text = state.map(|s| s.as_str().to_string()).unwrap_or_default();
    let next = match (more, shown.last()) {
        (true, Some(last)) => Some(format!("/builds?state={}&after={}", state_text, last.id)),
        _ => None,
    };
    let rows = shown
        .iter()
        .map(|r| Row {
            id: r.id.0,
            project: names.get(&r.project_id).cloned().unwrap_or_default(),
            state: r.state.to_string(),
            badge: badge(r.state.as_str()),
            needs: needs_text(&r.needs()),
            priority: r.priority,
            progress: progress_text(by_request.get(&r.id).map(Vec::as_slice).unwrap_or(&[])),
            created: when(r.created_at),
            client_request_id: r.client_request_id.clone().unwrap_or_default(),
        })
        .collect();
    html(&List {
        title: "Builds",
        active: "builds",
        state: state_text,
        states: RequestState::ALL.iter().map(|s| s.as_str()).collect(),
        rows,
        next,
        paged: after.is_some(),
    })
}

/// One build of a request, as the detail page shows it.
pub struct BuildView {
    pub id: i64,
    pub claimed_by: String,
    pub owner: String,
    pub ingested: i32,
    pub expected: Option<i32>,
    pub given_up: i32,
    pub outcome: String,
    pub outcome_badge: &'static str,
    pub started: String,
    pub completed: String,
    pub lease_until: String,
}

pub struct BookingView {
    pub environment_id: i64,
    pub environment: String,
    pub kind: String,
    pub booked_by: String,
    pub booked_at: String,
    pub released_at: String,
}

#[derive(Template)]
#[template(path = "build.html")]
struct Detail {
    title: String,
    active: &'static str,
    id: i64,
    project: String,
    state: String,
    badge: &'static str,
    reason: String,
    needs: String,
    priority: i32,
    submitted_by: String,
    client_request_id: String,
    created: String,
    updated: String,
    builds: Vec<BuildView>,
    bookings: Vec<BookingView>,
}

/// `GET /builds/{id}`: `id` is the build request's id.
pub async fn detail(
    app: web::Data<App>,
    path: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let missing = || PageError::NotFound(format!("There is no build request {:?}.", path.as_str()));
    let id = RequestId(path.parse::<i64>().map_err(|_| missing())?);
    let found = read(&app, "page_build", move |c| {
        let Some(r) = BuildRequest::get(c, id)? else {
            return Ok(None);
        };
        let project = Project::by_id(c, r.project_id)?
            .map(|p| p.name)
            .unwrap_or_default();
        Ok(Some((
            r,
            project,
            Build::for_request(c, id)?,
            Booking::for_request(c, id)?,
        )))
    })
    .await?;
    let Some((r, project, builds, bookings)) = found else {
        return Err(missing());
    };
    html(&Detail {
        title: format!("Build request {}", r.id),
        active: "builds",
        id: r.id.0,
        project,
        state: r.state.to_string(),
        badge: badge(r.state.as_str()),
        reason: r.reason.clone().unwrap_or_default(),
        needs: needs_text(&r.needs()),
        priority: r.priority,
        submitted_by: r.submitted_by.clone(),
        client_request_id: r.client_request_id.clone().unwrap_or_default(),
        created: when(r.created_at),
        updated: when(r.updated_at),
        builds: builds
            .into_iter()
            .map(|b| {
                let outcome = b.outcome.map(|o| o.to_string()).unwrap_or_default();
                BuildView {
                    id: b.id.0,
                    claimed_by: b.claimed_by.unwrap_or_default(),
                    owner: b.owner.unwrap_or_default(),
                    ingested: b.events_ingested,
                    expected: b.events_expected,
                    given_up: b.events_given_up,
                    outcome_badge: badge(&outcome),
                    outcome,
                    started: when(b.started_at),
                    completed: b.completed_at.map(when).unwrap_or_default(),
                    lease_until: b.lease_until.map(when).unwrap_or_default(),
                }
            })
            .collect(),
        bookings: bookings
            .into_iter()
            .map(|(b, environment, kind)| BookingView {
                environment_id: b.environment_id.0,
                environment,
                kind,
                booked_by: b.booked_by,
                booked_at: when(b.booked_at),
                released_at: b.released_at.map(when).unwrap_or_default(),
            })
            .collect(),
    })
}
