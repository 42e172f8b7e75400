//! `/environments`: every environment, its lock state and the request that
//! holds it, and a summary per kind.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use askama::Template;
use schema::models::Environment;
use schema::types::LockState;

use super::{badge, html, read, when, PageError};
use crate::App;

pub struct EnvRow {
    pub id: i64,
    pub name: String,
    pub kind: String,
    pub state: String,
    pub badge: &'static str,
    pub request: Option<i64>,
    pub lease_until: String,
    pub updated: String,
}

/// Per kind: total, free, locked, running.
pub struct Kind {
    pub kind: String,
    pub total: u32,
    pub free: u32,
    pub locked: u32,
    pub running: u32,
}

#[derive(Template)]
#[template(path = "environments.html")]
struct Page {
    title: &'static str,
    active: &'static str,
    kinds: Vec<Kind>,
    rows: Vec<EnvRow>,
}

/// `GET /environments`.
pub async fn list(app: web::Data<App>) -> Result<HttpResponse, PageError> {
    let envs = read(&app, "page_environments", Environment::all).await?;
    let mut kinds: BTreeMap<String, Kind> = BTreeMap::new();
    for e in &envs {
        let k = kinds.entry(e.kind.clone()).or_insert_with(|| Kind {
            kind: e.kind.clone(),
            total: 0,
            free: 0,
            locked: 0,
            running: 0,
        });
        k.total += 1;
        match e.lock_state {
            LockState::Free => k.free += 1,
            LockState::Locked => k.locked += 1,
            LockState::Running => k.running += 1,
        }
    }
    html(&Page {
        title: "Environments",
        active: "environments",
        kinds: kinds.into_values().collect(),
        rows: envs
            .into_iter()
            .map(|e| EnvRow {
                id: e.id.0,
                badge: badge(e.lock_state.as_str()),
                state: e.lock_state.to_string(),
                name: e.name,
                kind: e.kind,
                request: e.request_id.map(|r| r.0),
                lease_until: e.lease_until.map(when).unwrap_or_default(),
                updated: when(e.updated_at),
            })
            .collect(),
    })
}
