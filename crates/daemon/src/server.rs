//! The shared HTTP endpoints, the summary line, the stats file and shutdown.

use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context;
use schema::stats::ProcessReport;

use crate::Daemon;

/// How long the operation in flight may still wait for a lock after SIGTERM.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a client may take to send a request's head (slowloris): then
/// the server answers 408 and closes the connection.
pub const CLIENT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Open connections per HTTP worker; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 256;

/// The most bytes of request headers (names, values and separators) a
/// daemon reads: more is 431. actix itself accepts far larger heads.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

fn header_bytes(headers: &actix_web::http::header::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum()
}

/// The routes every daemon serves.
pub fn common_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/metrics", web::get().to(metrics))
        .route("/api/stats", web::get().to(stats))
        .route("/load-start", web::post().to(load_start))
        .route("/drain", web::post().to(drain));
}

async fn healthz(d: web::Data<Daemon>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "status": "ok",
        "name": d.name(),
        "draining": d.is_draining(),
    }))
}

async fn metrics(d: web::Data<Daemon>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(d.lab.stats.prometheus())
}

async fn stats(d: web::Data<Daemon>) -> HttpResponse {
    HttpResponse::Ok().json(d.stats_json())
}

/// `POST /load-start`: the load begins; rates are measured from here.
async fn load_start(d: web::Data<Daemon>) -> HttpResponse {
    d.lab.stats.mark_load_start();
    HttpResponse::Ok().json(serde_json::json!({ "name": d.name(), "load_started": true }))
}

async fn drain(d: web::Data<Daemon>) -> HttpResponse {
    // The load window ends with the drain's first request.
    d.lab.stats.mark_load_end();
    if !d.draining.swap(true, Ordering::SeqCst) {
        log::info!("{}: draining", d.name());
    }
    HttpResponse::Ok().json(serde_json::json!({ "name": d.name(), "draining": true }))
}

/// One line a person can scan in `docker compose logs`.
pub fn summary_line(r: &ProcessReport) -> String {
    let failed: Vec<String> = r
        .failed
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(c, n)| format!("{c}={n}"))
        .collect();
    format!(
        "{}: summary ops={} ok={} gave_up={} retried={} failed={}{} rows={} rows/s={:.1} p50={:.1}ms p95={:.1}ms lock_wait={}",
        r.name,
        r.ops,
        r.ok,
        r.gave_up,
        r.retried,
        r.failed_total(),
        if failed.is_empty() { String::new() } else { format!(" [{}]", failed.join(" ")) },
        r.rows_committed,
        r.rows_per_s,
        r.latency_ms.p50,
        r.latency_ms.p95,
        r.lock_wait_share
            .map(|s| format!("{:.1}%", s * 100.0))
            .unwrap_or_else(|| "n/a".to_string())
    )
}

/// Writes the stats JSON atomically (a crash never leaves half a file).
pub fn write_stats_file(path: &Path, body: &serde_json::Value) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(body).unwrap_or_default())?;
    std::fs::rename(&tmp, path)
}

/// A named background loop of a daemon (the scheduler, the ingester).
pub struct Worker {
    pub name: &'static str,
    pub run: Box<dyn FnOnce() -> anyhow::Result<()> + Send>,
}

/// Serves the daemon's routes beside the common ones, runs its workers, logs the
/// summary every interval, and on SIGTERM/SIGINT lets the workers finish their
/// operation in flight, writes the final stats and returns.
pub async fn serve(
    daemon: Arc<Daemon>,
    routes: impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
    http_workers: usize,
    workers: Vec<Worker>,
    on_stop: impl FnOnce() + Send + 'static,
) -> anyhow::Result<()> {
    let name = daemon.name().to_string();
    let listener = TcpListener::bind(&daemon.settings.listen.value)
        .with_context(|| format!("listening on {}", daemon.settings.listen.value))?;
    let addr = listener
        .local_addr()
        .context("reading the listening address")?;
    let data = web::Data::from(daemon.clone());
    let server = HttpServer::new(move || {
        App::new()
            .wrap_fn(|req, srv| {
                use actix_web::dev::Service;
                type Answer = std::pin::Pin<
                    Box<
                        dyn std::future::Future<
                            Output = Result<actix_web::dev::ServiceResponse, actix_web::Error>,
                        >,
                    >,
                >;
                let size = header_bytes(req.headers());
                if size > MAX_HEADER_BYTES {
                    let answer = HttpResponse::build(
                        actix_web::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    )
                    .json(serde_json::json!({
                        "error": format!(
                            "request headers of {size} bytes; at most {MAX_HEADER_BYTES}"
                        ),
                        "field": "headers",
                    }));
                    let fut: Answer = Box::pin(std::future::ready(Ok(req.into_response(answer))));
                    fut
                } else {
                    let fut: Answer = Box::pin(srv.call(req));
                    fut
                }
            })
            .app_data(data.clone())
            .configure(common_routes)
            .configure(routes.clone())
    })
    .workers(http_workers)
    .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
    .client_disconnect_timeout(std::time::Duration::from_secs(1))
    .max_connections(MAX_CONNECTIONS)
    .disable_signals()
    .shutdown_timeout(5)
    .listen(listener)?
    .run();
    let handle = server.handle();
    let server_task = tokio::spawn(server);
    if log::log_enabled!(log::Level::Info) {
        log::info!("{name}: listening on {addr}");
    } else {
        // `locklab run` and the tests read this line whatever RUST_LOG says.
        eprintln!("{name}: listening on {addr}");
    }
    daemon.lab.stats.restart_clock();

    let (done_tx, mut done_rx) =
        tokio::sync::mpsc::unbounded_channel::<(&'static str, anyhow::Result<()>)>();
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    for w in workers {
        let tx = done_tx.clone();
        let run = w.run;
        let wname = w.name;
        threads.push(
            std::thread::Builder::new()
                .name(wname.to_string())
                .spawn(move || {
                    let result = run();
                    let _ = tx.send((wname, result));
                })
                .context("starting a worker thread")?,
        );
    }
    drop(done_tx);

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("installing the SIGINT handler")?;
    let mut tick = tokio::time::interval(daemon.settings.stats_interval.value);
    tick.tick().await;
    let mut failure: Option<anyhow::Error> = None;
    let mut workers_left = threads.len();
    loop {
        tokio::select! {
            _ = sigterm.recv() => { log::info!("{name}: SIGTERM: finishing the operation in flight"); break; }
            _ = sigint.recv() => { log::info!("{name}: SIGINT: finishing the operation in flight"); break; }
            _ = tick.tick() => {
                log::info!("{}", summary_line(&daemon.lab.stats.snapshot()));
                if let Some(out) = &daemon.settings.stats_out {
                    if let Err(e) = write_stats_file(&out.value, &daemon.stats_json()) {
                        log::warn!("{name}: cannot write {}: {e}", out.value.display());
                    }
                }
                if let Some(trace) = &daemon.lab.trace {
                    let _ = trace.flush();
                }
            }
            Some((wname, result)) = done_rx.recv(), if workers_left > 0 => {
                workers_left -= 1;
                if let Err(e) = result {
                    log::error!("{name}: {wname} stopped: {e:#}");
                    failure = Some(e);
                    break;
                }
            }
        }
    }
    daemon.lab.stopping.store(true, Ordering::SeqCst);
    on_stop();
    // The operation in flight may finish (a lock wait that ends within the
    // grace period commits); after it, every wait is abandoned, so that a
    // standoff that no timeout ends cannot hold the shutdown.
    let abandon = daemon.lab.abandon.clone();
    let grace = tokio::spawn(async move {
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        abandon.store(true, Ordering::SeqCst);
    });
    let joined = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    });
    let _ = joined.await;
    grace.abort();
    // A manual-mode transaction whose commits kept failing was abandoned.
    daemon.lab.stats.abandon_open_txns();
    handle.stop(true).await;
    let _ = server_task.await;
    let mut final_stats = daemon.stats_json();
    if let Some(obj) = final_stats.as_object_mut() {
        // Written after every worker stopped: no operation is in flight.
        obj.insert("final".to_string(), serde_json::Value::Bool(true));
    }
    if let Some(out) = &daemon.settings.stats_out {
        write_stats_file(&out.value, &final_stats)
            .with_context(|| format!("writing the final stats to {}", out.value.display()))?;
    }
    if let Some(trace) = &daemon.lab.trace {
        trace.flush().context("flushing the trace")?;
    }
    log::info!("{}", summary_line(&daemon.lab.stats.snapshot()));
    log::info!("{name}: stopped");
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The exit of a daemon that could not start: its one line, and code 2.
pub fn cannot_start(name: &str, e: &anyhow::Error) -> std::process::ExitCode {
    let text = format!("{e:#}");
    let hint = if text.contains("readonly database") {
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        format!(
            "; check that uid {uid} can write the file and its directory (WAL creates -wal and -shm beside it)"
        )
    } else {
        String::new()
    };
    eprintln!("{name}: cannot start: {text}{hint}");
    std::process::ExitCode::from(2)
}

/// The exit of a daemon that ran: 0, or its error and 1.
pub fn exit_code(name: &str, result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
