//! The HTTP load of the original demo's script: `clients` threads, each POSTing
//! `num` build requests per HTTP request, pausing `sleep` between requests,
//! for `duration`. It never retries. Every request is logged as one JSON line
//! (request_id, status, latency_ms, ids), which `check` reads.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::Rng;

use crate::check::LogLine;
use crate::http;
use crate::report::LoadgenSummary;

/// What `--needs-mix` requests need: more than one environment, of two
/// kinds, so that a booking can run out part way.
pub fn needs_mix() -> serde_json::Value {
    serde_json::json!({ "qemux86": 2, "qemuarm": 1 })
}

/// A client's pause after a request that got no response.
const NO_RESPONSE_PAUSE: Duration = Duration::from_millis(100);

/// What load to send.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// webui's base URL.
    pub target: String,
    pub clients: u32,
    pub num: u32,
    pub sleep: Duration,
    pub duration: Duration,
    pub request_timeout: Duration,
    /// Every Nth HTTP request of each client needs [`needs_mix`]; 0 is off.
    pub needs_mix: u32,
    /// The project every request names (created on first use, as Django's
    /// get_or_create does).
    pub project: String,
    pub log: Option<PathBuf>,
}

/// Live counters, readable while the load runs.
#[derive(Debug)]
pub struct LoadState {
    pub requests: AtomicU64,
    pub ok: AtomicU64,
    pub no_response: AtomicU64,
    pub status: Mutex<BTreeMap<u16, u64>>,
    per_client_ok: Vec<AtomicU64>,
    pub stop: AtomicBool,
    log: Option<Mutex<BufWriter<File>>>,
    /// CPU time of the client threads, in µs, added by each as it ends: the
    /// load's own cost, apart from locklab's supervision and report.
    cpu_us: AtomicU64,
}

impl LoadState {
    /// CPU seconds the client threads used (complete once they all ended).
    pub fn clients_cpu_s(&self) -> f64 {
        self.cpu_us.load(Ordering::Relaxed) as f64 / 1e6
    }

    pub fn summary(&self) -> LoadgenSummary {
        let per: Vec<f64> = self
            .per_client_ok
            .iter()
            .map(|c| c.load(Ordering::Relaxed) as f64)
            .collect();
        let n = per.len().max(1) as f64;
        let mean = per.iter().sum::<f64>() / n;
        let var = per.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        LoadgenSummary {
            requests: self.requests.load(Ordering::Relaxed),
            status: self
                .status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(s, n)| (s.to_string(), *n))
                .collect(),
            no_response: self.no_response.load(Ordering::Relaxed),
            clients_mean: mean,
            clients_stddev: var.sqrt(),
            cpu_s: Some(self.clients_cpu_s()),
        }
    }
}

/// Starts the load on `clients` threads and returns at once; `finish` waits for
/// the in-flight replies.
pub struct Load {
    pub state: Arc<LoadState>,
    threads: Vec<std::thread::JoinHandle<()>>,
    pub started: Instant,
}

impl Load {
    pub fn start(spec: &LoadSpec) -> anyhow::Result<Load> {
        let log = match &spec.log {
            Some(path) => Some(Mutex::new(BufWriter::new(
                File::create(path)
                    .with_context(|| format!("creating the loadgen log {}", path.display()))?,
            ))),
            None => None,
        };
        let state = Arc::new(LoadState {
            requests: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            no_response: AtomicU64::new(0),
            status: Mutex::new(BTreeMap::new()),
            per_client_ok: (0..spec.clients).map(|_| AtomicU64::new(0)).collect(),
            stop: AtomicBool::new(false),
            log,
            cpu_us: AtomicU64::new(0),
        });
        let token: u32 = rand::rng().random();
        let started = Instant::now();
        let deadline = started + spec.duration;
        let mut threads = Vec::new();
        for client in 0..spec.clients {
            let state = state.clone();
            let spec = spec.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("client-{client}"))
                    .spawn(move || client_loop(&spec, &state, client, token, deadline))
                    .context("starting a client thread")?,
            );
        }
        Ok(Load {
            state,
            threads,
            started,
        })
    }

    /// Waits for every client's in-flight request, then flushes the log.
    pub fn finish(self) -> anyhow::Result<(LoadgenSummary, Duration)> {
        for t in self.threads {
            let _ = t.join();
        }
        let elapsed = self.started.elapsed();
        if let Some(log) = &self.state.log {
            log.lock()
                .unwrap_or_else(|p| p.into_inner())
                .flush()
                .context("writing the loadgen log")?;
        }
        Ok((self.state.summary(), elapsed))
    }
}

fn client_loop(spec: &LoadSpec, state: &LoadState, client: u32, token: u32, deadline: Instant) {
    client_requests(spec, state, client, token, deadline);
    let used = u64::try_from(schema::stats::thread_cpu().as_micros()).unwrap_or(u64::MAX);
    state.cpu_us.fetch_add(used, Ordering::Relaxed);
}

fn client_requests(spec: &LoadSpec, state: &LoadState, client: u32, token: u32, deadline: Instant) {
    let agent = http::agent(spec.request_timeout);
    let url = http::join(&spec.target, "/api/build-requests");
    let body = serde_json::json!({ "project": spec.project, "count": spec.num }).to_string();
    let mixed =
        serde_json::json!({ "project": spec.project, "count": spec.num, "needs": needs_mix() })
            .to_string();
    let mut seq = 0u64;
    while Instant::now() < deadline && !state.stop.load(Ordering::SeqCst) {
        seq += 1;
        let body = if spec.needs_mix > 0 && seq % u64::from(spec.needs_mix) == 0 {
            &mixed
        } else {
            &body
        };
        let request_id = format!("lg-{token:08x}-{client}-{seq}");
        let t0 = Instant::now();
        let result = agent
            .post(&url)
            .header("X-Request-Id", &request_id)
            .content_type("application/json")
            .send(body);
        let latency_ms = t0.elapsed().as_secs_f64() * 1000.0;
        let (status, ids, unreadable) = match result {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                if (200..300).contains(&status) {
                    // A 2xx whose body cannot be read promises rows we cannot
                    // name: `check` counts them as unconfirmed.
                    match resp
                        .body_mut()
                        .read_json::<serde_json::Value>()
                        .ok()
                        .and_then(|v| v.get("ids").cloned())
                        .and_then(|v| serde_json::from_value::<Vec<i64>>(v).ok())
                    {
                        Some(ids) => (Some(status), ids, false),
                        None => (Some(status), Vec::new(), true),
                    }
                } else {
                    let _ = resp.body_mut().read_to_string();
                    (Some(status), Vec::new(), false)
                }
            }
            Err(_) => (None, Vec::new(), false),
        };
        state.requests.fetch_add(1, Ordering::Relaxed);
        match status {
            Some(s) => {
                *state
                    .status
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(s)
                    .or_insert(0) += 1;
                if (200..300).contains(&s) {
                    state.ok.fetch_add(1, Ordering::Relaxed);
                    state.per_client_ok[client as usize].fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                state.no_response.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(log) = &state.log {
            let line = LogLine {
                request_id,
                status,
                latency_ms: (latency_ms * 100.0).round() / 100.0,
                ids,
                client,
                unreadable,
            };
            let mut w = log.lock().unwrap_or_else(|p| p.into_inner());
            if serde_json::to_writer(&mut *w, &line).is_ok() {
                let _ = w.write_all(b"\n");
            }
        }
        // A client whose server is gone (connection refused while a killed
        // webui restarts) waits a little before trying again, as a browser's
        // user would, instead of spinning through thousands of refusals.
        let pause = if status.is_none() {
            spec.sleep.max(NO_RESPONSE_PAUSE)
        } else {
            spec.sleep
        };
        if !pause.is_zero() {
            let until = (Instant::now() + pause).min(deadline);
            while Instant::now() < until && !state.stop.load(Ordering::SeqCst) {
                std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
            }
        }
    }
}
