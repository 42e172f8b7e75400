//! webui: a Toaster-like JSON API and page over the lab's SQLite file.
//!
//! The create view has the shape of a Django view: it reads first (gets or
//! creates the project by name, as `get_or_create` does, and reads the queue
//! length), then writes `count` requests. With ATOMIC_REQUESTS the whole view
//! is one transaction, begun as `LAB_TXN_MODE` says; without it every statement
//! autocommits, so a failure can leave a partial write, which `locklab check`
//! counts. All diesel work runs on actix's blocking pool (`web::block`).
//!
//! The HTML pages ([`pages`], [`dashboard`]) are askama templates: compiled,
//! type-checked and escaped, so a project name full of markup is shown as
//! text. `/` is a live contention dashboard; `/builds`, `/builds/{id}`,
//! `/environments`, `/new` and `/runs` are Toaster-like pages.
//!
//! Settings of webui alone ([`own`]): `LAB_STATS_URLS` (`--stats-url`), the
//! peers the dashboard shows, and `LAB_RUNS_DIR` (`--runs-dir`), the reports
//! `/runs` shows.
//!
//! `GET /api/openapi.json` describes the JSON API (the `openapi` module).

mod api;
pub mod dashboard;
mod error;
mod openapi;
pub mod own;
pub mod pages;

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::web;
use anyhow::Context;
use clap::Parser;
use schema::models::Environment;

pub use error::ApiError;

/// webui: the JSON API and page.
#[derive(Debug, Parser)]
#[command(
    name = "webui",
    version,
    about = "locklab's web UI daemon: a Toaster-like JSON API that creates build requests",
    long_about = "locklab's web UI daemon, modelled on Yocto Toaster's Django UI. \
POST /api/build-requests creates build requests the way a Django view does (read, then write; \
one transaction with ATOMIC_REQUESTS, autocommit without); a lock failure is answered 503 with \
its class. GET / shows recent requests and this process's counters. Every flag can also be given \
as the environment variable shown; an empty variable counts as unset. Precedence: flag > LAB_* > \
WAL/TIMEOUT/ATOMIC_REQUESTS > preset > default."
)]
pub struct Config {
    #[command(flatten)]
    pub common: daemon::CommonArgs,
    #[command(flatten)]
    pub own: own::OwnArgs,
    /// Internal: print one lock sample of FILE as JSON and exit (the
    /// dashboard's child process; see `dashboard`).
    #[arg(long, hide = true, value_name = "FILE")]
    pub who_snapshot: Option<std::path::PathBuf>,
}

pub const DEFAULTS: daemon::Defaults = daemon::Defaults {
    name: "webui",
    listen: "127.0.0.1:8000",
};

/// Connections in webui's pool: one per concurrent view, with room to spare.
pub const POOL_SIZE: u32 = schema::settings::WEBUI_POOL_SIZE;

/// What the handlers share.
pub struct App {
    pub daemon: Arc<daemon::Daemon>,
    /// Environments per kind, read at startup: what any request could ever get.
    pub capacity: BTreeMap<String, u32>,
    /// The OpenAPI document, serialized once at startup (it depends on
    /// `capacity`).
    pub openapi: web::Bytes,
    /// webui's own settings (peers, runs directory).
    pub own: own::Own,
    /// The write views that may run at once (`LAB_WRITERS`): the others wait
    /// here, first come first served (tokio's semaphore is fair), not in
    /// SQLite's busy handler, whose sleeps grow to 100 ms and let the lock
    /// sit free while every waiter sleeps.
    pub writers: Arc<tokio::sync::Semaphore>,
}

/// Every route of webui, beside the daemon's common ones.
pub fn routes(app: web::Data<App>) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(app.clone())
            .app_data(web::PathConfig::default().error_handler(|_, _| ApiError::NotFound.into()))
            .app_data(web::QueryConfig::default().error_handler(|e, _| {
                ApiError::bad(format!("bad query string: {e}"), "query").into()
            }))
            .service(
                web::resource("/api/build-requests")
                    .route(web::get().to(api::list))
                    .route(web::post().to(api::create))
                    .default_service(api::method_not_allowed("GET, POST")),
            )
            .service(
                web::resource("/api/build-requests/{id}")
                    .route(web::get().to(api::get))
                    .default_service(api::method_not_allowed("GET")),
            )
            .service(
                web::resource("/api/build-requests/{id}/cancel")
                    .route(web::post().to(api::cancel))
                    .default_service(api::method_not_allowed("POST")),
            )
            .service(
                web::resource("/api/environments")
                    .route(web::get().to(api::environments))
                    .default_service(api::method_not_allowed("GET")),
            )
            .service(
                web::resource(openapi::PATH)
                    .route(web::get().to(openapi::openapi_json))
                    .default_service(api::method_not_allowed("GET")),
            )
            .service(
                web::resource("/")
                    .route(web::get().to(page_index))
                    .default_service(api::method_not_allowed("GET")),
            )
            .service(
                web::resource("/api/dashboard")
                    .route(web::get().to(dashboard_json))
                    .default_service(api::method_not_allowed("GET")),
            )
            .route("/static/locklab.css", web::get().to(pages::css))
            .route("/static/dashboard.js", web::get().to(dashboard::script))
            .route("/builds", web::get().to(pages::builds::list))
            .route("/builds/{id}", web::get().to(pages::builds::detail))
            .route(
                "/environments",
                web::get().to(|app: web::Data<App>, _q: web::Query<api::NoQuery>| {
                    pages::environments::list(app)
                }),
            )
            .service(
                web::resource("/new")
                    .route(
                        web::get().to(|app: web::Data<App>, _q: web::Query<api::NoQuery>| {
                            pages::new::form(app)
                        }),
                    )
                    .route(web::post().to(pages::new::submit))
                    .default_service(api::method_not_allowed("GET, POST")),
            )
            .route(
                "/runs",
                web::get()
                    .to(|app: web::Data<App>, _q: web::Query<api::NoQuery>| pages::runs::list(app)),
            )
            .route("/runs/files/{tail:.*}", web::get().to(pages::runs::file))
            .default_service(web::to(api::not_found));
    }
}

async fn page_index(
    app: web::Data<App>,
    _q: web::Query<api::NoQuery>,
) -> Result<actix_web::HttpResponse, pages::PageError> {
    dashboard::index(app).await
}

async fn dashboard_json(
    app: web::Data<App>,
    _q: web::Query<api::NoQuery>,
) -> Result<actix_web::HttpResponse, pages::PageError> {
    dashboard::json(app).await
}

/// Runs webui until SIGTERM/SIGINT.
pub async fn run(d: daemon::Daemon, own: own::Own) -> anyhow::Result<()> {
    own.log(d.name());
    let mut conn = d.pool.get().context("opening a connection")?;
    let capacity =
        Environment::capacity(conn.diesel()).context("reading the registered environments")?;
    drop(conn);
    if capacity.is_empty() {
        log::warn!(
            "{}: no environments are registered; every create will get 422 (run `locklab migrate`)",
            d.name()
        );
    }
    let doc = openapi::document(&capacity)
        .to_json()
        .context("serializing the OpenAPI document")?;
    let d = Arc::new(d);
    let app = web::Data::new(App {
        daemon: d.clone(),
        capacity,
        openapi: web::Bytes::from(doc),
        own,
        writers: Arc::new(tokio::sync::Semaphore::new(
            usize::try_from(d.settings.knobs.writers.value).unwrap_or(1),
        )),
    });
    daemon::serve(d, routes(app), 2, Vec::new(), || {}).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn verify_cli() {
        use clap::CommandFactory;
        super::Config::command().debug_assert();
    }
}
