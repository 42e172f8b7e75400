//! `GET /`: recent requests, environments, and this process's own counters.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use askama::Template;
use schema::models::{BuildRequest, Environment};
use schema::stats::ProcessReport;

use crate::{ApiError, App};

struct Row {
    id: i64,
    project: String,
    state: String,
    needs: String,
    priority: i32,
    client_request_id: String,
    reason: String,
}

#[derive(Template)]
#[template(path = "index.html")]
struct Index {
    name: String,
    draining: bool,
    states: BTreeMap<String, i64>,
    environments: Vec<Environment>,
    rows: Vec<Row>,
    stats: ProcessReport,
    /// The lock wait share as shown: `12.3%`, or `n/a` on a server.
    lock_wait: String,
    failed: Vec<(String, u64)>,
    settings: Vec<(&'static str, String, String)>,
}

pub async fn index(
    app: web::Data<App>,
    _q: web::Query<crate::api::NoQuery>,
) -> Result<HttpResponse, ApiError> {
    let app2 = app.clone();
    let (states, environments, recent) = web::block(move || {
        let mut conn = app2
            .daemon
            .pool
            .get()
            .map_err(|e| ApiError::Internal(format!("no database connection: {e}")))?;
        app2.daemon
            .lab
            .op("page", |op| {
                op.read(&mut conn, |c| {
                    Ok((
                        BuildRequest::count_by_state(c)?,
                        Environment::all(c)?,
                        BuildRequest::recent(c, 50)?,
                    ))
                })
            })
            .map_err(|e| match e {
                schema::OpError::Db(error) => ApiError::Locked { op: "page", error },
                schema::OpError::Aborted(r) => ApiError::Internal(r),
            })
    })
    .await
    .map_err(|e| ApiError::Internal(format!("blocking task failed: {e}")))??;
    let d = &app.daemon;
    let stats = d.lab.stats.snapshot();
    let failed = stats
        .failed
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(c, n)| (c.clone(), *n))
        .collect();
    let page = Index {
        name: d.name().to_string(),
        draining: d.is_draining(),
        states,
        environments,
        rows: recent
            .into_iter()
            .map(|(r, project)| Row {
                id: r.id.0,
                needs: r.needs.clone(),
                project,
                state: r.state.to_string(),
                priority: r.priority,
                client_request_id: r.client_request_id.unwrap_or_default(),
                reason: r.reason.unwrap_or_default(),
            })
            .collect(),
        lock_wait: stats
            .lock_wait_share
            .map(|s| format!("{:.1}%", s * 100.0))
            .unwrap_or_else(|| "n/a".to_string()),
        stats,
        failed,
        settings: d
            .settings
            .knobs
            .describe()
            .into_iter()
            .map(|(k, v, s)| (k, v, s.to_string()))
            .collect(),
    };
    let html = page
        .render()
        .map_err(|e| ApiError::Internal(format!("rendering the page: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(html))
}
