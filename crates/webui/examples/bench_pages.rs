//! How the list pages scale: p50/p99 of each page on a small lab (1k
//! requests, 10k events) and a big one (100k requests, 1M events), and the
//! ratio big/small. A benchmark, not a test: it asserts nothing and prints.
//!
//! ```text
//! cargo build --release -p webui            # the webui binary it starts
//! cargo run --release -p webui --example bench_pages [-- N]
//! ```
//!
//! Each lab is migrated with `schema::migrate` and seeded in one transaction
//! per table with `INSERT ... SELECT` over a recursive counter, through
//! diesel's SQLite connection: bulk rows no model function makes (the lab
//! never inserts a million events at once), so the SQL is here, in the
//! benchmark that needs it, not in `crates/schema`. Then the real webui binary
//! serves each lab, and each page is requested N times (default 300) on one
//! keep-alive connection after 20 warm-up requests.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;
use schema::db::DbTarget;
use schema::settings::JournalMode;

/// Events per build, as the small lab and the big one share it.
const EVENTS_PER_BUILD: i64 = 12;

struct Lab {
    _dir: tempfile::TempDir,
    db: PathBuf,
    requests: i64,
    events: i64,
}

fn seed(requests: i64, events: i64) -> anyhow::Result<Lab> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("bench.sqlite3");
    let envs = vec![("qemux86".to_string(), 3), ("qemuarm".to_string(), 2)];
    schema::migrate::migrate(&DbTarget::Sqlite(db.clone()), JournalMode::Wal, &envs)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut c = SqliteConnection::establish(&db.to_string_lossy())?;
    let builds = requests - requests / 10;
    if builds * EVENTS_PER_BUILD < events {
        bail!("{requests} requests have too few builds for {events} events");
    }
    let t0 = Instant::now();
    // Requests: 1 in 10 queued, 1 in 10 inprogress, 1 in 10 failed, the rest
    // completed; every one but the queued has a build (ids 1.., in request
    // order), and build k holds events 12(k-1) .. 12k-1: `events` in all.
    c.batch_execute(&format!(
        r#"
        PRAGMA synchronous = OFF;
        BEGIN;
        INSERT INTO project (id, name, created_at) VALUES (1, 'bench', 0), (2, 'bench-2', 0);
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {requests})
        INSERT INTO build_request (id, project_id, state, needs, priority, submitted_by,
                                   client_request_id, created_at, updated_at)
        SELECT i, 1 + i % 2,
               CASE i % 10 WHEN 0 THEN 'queued' WHEN 1 THEN 'inprogress' WHEN 2 THEN 'failed'
                           ELSE 'completed' END,
               '{{"qemux86":1}}', 0, 'webui', 'bench-' || i, 1700000000000000 + i * 1000,
               1700000000000000 + i * 1000
        FROM n;
        COMMIT;
        BEGIN;
        INSERT INTO build (id, request_id, claimed_by, owner, seed, events_expected,
                           events_ingested, outcome, started_at, completed_at)
        SELECT row_number() OVER (ORDER BY id), id, 'runbuilds', 'buildinfohelper', id,
               {EVENTS_PER_BUILD}, {EVENTS_PER_BUILD},
               CASE state WHEN 'failed' THEN 'failed' WHEN 'completed' THEN 'succeeded' END,
               created_at, CASE WHEN state IN ('failed', 'completed') THEN created_at + 5000000 END
        FROM build_request WHERE state != 'queued';
        INSERT INTO booking (environment_id, request_id, booked_by, booked_at, released_at)
        SELECT 1 + id % 3, id, 'runbuilds', created_at,
               CASE WHEN state IN ('failed', 'completed') THEN created_at + 5000000 END
        FROM build_request WHERE state != 'queued';
        COMMIT;
        BEGIN;
        WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {events} - 1)
        INSERT INTO build_event (build_id, seq, kind, name, payload, timestamp)
        SELECT 1 + n.i / {EVENTS_PER_BUILD}, n.i % {EVENTS_PER_BUILD},
               CASE n.i % 3 WHEN 0 THEN 'task_started' WHEN 1 THEN 'task_succeeded' ELSE 'log' END,
               'do_compile', '{{"recipe":"busybox","task":"do_compile","pad":"' || hex(randomblob(24)) || '"}}',
               1700000000000000 + n.i
        FROM n;
        COMMIT;
        PRAGMA synchronous = FULL;
        "#
    ))
    .context("seeding")?;
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let got: N = diesel::sql_query("SELECT count(*) AS n FROM build_event").get_result(&mut c)?;
    eprintln!(
        "seeded {requests} requests, {builds} builds, {} events in {:.1} s",
        got.n,
        t0.elapsed().as_secs_f64()
    );
    Ok(Lab {
        _dir: dir,
        db,
        requests,
        events: got.n,
    })
}

#[derive(QueryableByName)]
struct Plan {
    #[diesel(sql_type = Text)]
    detail: String,
}

/// EXPLAIN QUERY PLAN of the list pages' queries, as diesel writes them.
fn plans(db: &Path) -> anyhow::Result<()> {
    let mut c = SqliteConnection::establish(&db.to_string_lossy())?;
    for q in [
        "SELECT * FROM build_request WHERE state = 'queued' AND id > 500 ORDER BY id ASC LIMIT 51",
        "SELECT * FROM build_request WHERE id > 500 ORDER BY id ASC LIMIT 51",
        "SELECT * FROM build WHERE request_id IN (1, 2, 3) ORDER BY id",
        "SELECT * FROM booking INNER JOIN build_environment ON build_environment.id = booking.environment_id \
         WHERE booking.request_id = 7 ORDER BY booking.booked_at, booking.id",
        "SELECT id, name FROM project WHERE id IN (1, 2)",
    ] {
        let rows: Vec<Plan> = diesel::sql_query(format!("EXPLAIN QUERY PLAN {q}")).load(&mut c)?;
        println!("  {q}");
        for r in rows {
            println!("    -> {}", r.detail);
        }
    }
    Ok(())
}

fn webui_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/examples/bench_pages -> target/<profile>/webui
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .context("no target directory")?
        .join("webui");
    if !bin.is_file() {
        bail!(
            "{} is missing: run `cargo build --release -p webui` first",
            bin.display()
        );
    }
    Ok(bin)
}

fn start(lab: &Lab) -> anyhow::Result<daemon::spawn::Child> {
    let bin = webui_binary()?;
    let dir = lab.db.parent().context("no dir")?;
    daemon::spawn::spawn(daemon::spawn::Spec {
        bin: &bin,
        name: "webui",
        args: vec![
            OsString::from("--database-url"),
            lab.db.clone().into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ],
        env: vec![("RUST_LOG".to_string(), "warn".to_string())],
        env_remove: daemon::spawn::setting_variables(),
        log: dir.join("webui.log"),
        append_log: false,
        startup_timeout: Duration::from_secs(60),
    })
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// (p50, p99) in ms of `n` GETs of `path`.
fn measure(agent: &ureq::Agent, base: &str, path: &str, n: usize) -> anyhow::Result<(f64, f64)> {
    let url = format!("{base}{path}");
    let get = || -> anyhow::Result<Duration> {
        let t = Instant::now();
        let mut r = agent.get(&url).call()?;
        let status = r.status().as_u16();
        let body = r.body_mut().read_to_string()?;
        if status != 200 || body.is_empty() {
            bail!("{path}: HTTP {status}");
        }
        Ok(t.elapsed())
    };
    for _ in 0..20 {
        get()?;
    }
    let mut ms: Vec<f64> = (0..n)
        .map(|_| get().map(|d| d.as_secs_f64() * 1000.0))
        .collect::<anyhow::Result<_>>()?;
    ms.sort_by(f64::total_cmp);
    Ok((quantile(&ms, 0.5), quantile(&ms, 0.99)))
}

fn pages(lab: &Lab) -> Vec<(String, String)> {
    let mid = lab.requests / 2;
    vec![
        ("/builds".into(), "/builds".into()),
        (
            "/builds?state=completed".into(),
            "/builds?state=completed".into(),
        ),
        (
            "/builds?state=queued&after=MID".into(),
            format!("/builds?state=queued&after={mid}"),
        ),
        ("/builds?after=MID".into(), format!("/builds?after={mid}")),
        ("/builds/MID".into(), format!("/builds/{mid}")),
        ("/environments".into(), "/environments".into()),
        ("/api/build-requests".into(), "/api/build-requests".into()),
        (
            "/api/build-requests?state=queued&after=MID".into(),
            format!("/api/build-requests?state=queued&after={mid}"),
        ),
    ]
}

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()
        .context("N must be a number")?
        .unwrap_or(300);
    webui_binary()?;
    let small = seed(1_000, 10_000)?;
    let big = seed(100_000, 1_000_000)?;
    println!("query plans (big lab):");
    plans(&big.db)?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut results = Vec::new();
    for lab in [&small, &big] {
        let child = start(lab)?;
        let mut row = Vec::new();
        for (label, path) in pages(lab) {
            row.push((label, measure(&agent, &child.url, &path, n)?));
        }
        results.push(row);
        drop(child);
    }
    println!(
        "\n{n} requests per page; small: {} requests, {} events; big: {} requests, {} events",
        small.requests, small.events, big.requests, big.events
    );
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>9} {:>10}",
        "page", "small p50", "small p99", "big p50", "big p99", "p99 ratio"
    );
    for ((label, (s50, s99)), (_, (b50, b99))) in results[0].iter().zip(&results[1]) {
        println!(
            "{label:<44} {s50:>7.2}ms {s99:>7.2}ms {b50:>7.2}ms {b99:>7.2}ms {:>9.2}x",
            b99 / s99
        );
    }
    Ok(())
}
