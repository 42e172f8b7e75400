//! The HTML pages and the dashboard, on the real binary: every page answers
//! with its content; the builds filter and key pagination; an unknown build
//! is a 404 page; the form creates (303) or says why not (422, the message
//! beside its field, the values kept); /runs shows fixture reports and its
//! file route refuses anything but a run's SVGs; the dashboard's counters are
//! /api/stats when idle, it names the lock holder, and it answers 200 with
//! its peers unreachable.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, SystemTime};

use schema::models::{Booking, Build, BuildRequest, Environment, Needs, Project};
use schema::settings::JournalMode;
use schema::types::{now_micros, RequestId, RequestState};
use serde_json::{json, Value};
use testkit::{get, post_json, send, Answer};

use crate::lock::hold_write_lock;
use crate::{create, Web};

/// GETs a page and checks it is a whole HTML page of the layout.
fn page(web: &Web, path: &str) -> Answer {
    let a = get(&web.url(path)).unwrap();
    assert_eq!(a.status, 200, "{path}: {a:?}");
    assert!(a.content_type.starts_with("text/html"), "{path}: {a:?}");
    assert_layout(&a, path);
    a
}

fn assert_layout(a: &Answer, path: &str) {
    assert!(a.body.contains(r#"<html lang="en">"#), "{path}: lang");
    assert!(a.body.contains(r#"<nav aria-label="Main">"#), "{path}: nav");
    for link in ["/", "/builds", "/environments", "/new", "/runs"] {
        assert!(
            a.body.contains(&format!(r#"<a href="{link}""#)),
            "{path}: nav link {link}"
        );
    }
    assert!(a.body.contains("/static/locklab.css"), "{path}: stylesheet");
}

/// The ids of the build links in a list page's rows, in order.
fn listed_ids(body: &str) -> Vec<i64> {
    body.split(r#"<tr><td class="num"><a href="/builds/"#)
        .skip(1)
        .map(|s| s.split('"').next().unwrap().parse().unwrap())
        .collect()
}

/// Sends a raw request and returns the whole answer as text (status line,
/// headers, body): for what an HTTP client would change (redirects it
/// follows, paths it normalises).
fn raw_text(web: &Web, request: &str) -> String {
    let addr = web.url("").trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).to_string()
}

fn post_form(web: &Web, body: &str) -> String {
    raw_text(
        web,
        &format!(
            "POST /new HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

fn status_of(raw: &str) -> u16 {
    raw.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn every_page_answers_with_its_content() {
    let web = Web::start(JournalMode::Delete, &[]);
    let ids = create(&web, "alpha", 3);
    let (claimed, waiting) = (RequestId(ids[0]), RequestId(ids[1]));
    // Claim the first as runbuilds would: a build with progress, a booking.
    let mut c = web.conn();
    let env = Environment::all(c.diesel()).unwrap()[0].clone();
    let build = Build::create(
        c.diesel(),
        claimed,
        "runbuilds",
        7,
        now_micros() + 60_000_000,
    )
    .unwrap();
    Build::set_events_expected(c.diesel(), build, 50).unwrap();
    Build::add_progress(c.diesel(), build, 12, 0).unwrap();
    Environment::lock_for(c.diesel(), &[env.id], claimed, now_micros() + 60_000_000).unwrap();
    Booking::book_all(c.diesel(), &[env.id], claimed, "runbuilds").unwrap();
    BuildRequest::set_state(c.diesel(), claimed, RequestState::InProgress).unwrap();
    let client_id = BuildRequest::get(c.diesel(), claimed)
        .unwrap()
        .unwrap()
        .client_request_id
        .unwrap();

    let a = page(&web, "/");
    for text in [
        "Dashboard",
        "Processes",
        "Failures over time",
        "Who holds the write lock",
        "alpha",
    ] {
        assert!(a.body.contains(text), "/: {text}");
    }
    assert!(
        a.body.contains("/static/dashboard.js"),
        "/: the live script"
    );

    let a = page(&web, "/builds");
    assert_eq!(listed_ids(&a.body), ids);
    assert!(a.body.contains("alpha"));
    assert!(a
        .body
        .contains(r#"<span class="badge badge-active">inprogress</span>"#));
    assert!(a
        .body
        .contains(r#"<span class="badge badge-queued">queued</span>"#));
    assert!(a.body.contains("12 / 50 events"), "progress in the list");
    assert!(
        a.body.contains(r#"<label for="state">"#)
            && a.body.contains(r#"<select id="state" name="state">"#)
    );

    let a = page(&web, &format!("/builds/{claimed}"));
    for text in [
        format!("Build request {claimed}"),
        "12 of 50".to_string(),
        r#"max="50" value="12""#.to_string(),
        env.name.clone(),
        "runbuilds".to_string(),
        client_id.clone(),
        "alpha".to_string(),
        "held".to_string(),
    ] {
        assert!(a.body.contains(&text), "/builds/{claimed}: {text}");
    }

    let a = page(&web, &format!("/builds/{waiting}"));
    assert!(a.body.contains("No build yet"), "{}", a.body);
    assert!(a.body.contains("None booked"));

    let a = page(&web, "/environments");
    assert!(a.body.contains(&env.name));
    assert!(a.body.contains(&format!(
        r#"<a href="/builds/{claimed}">request {claimed}</a>"#
    )));
    assert!(a
        .body
        .contains(r#"<span class="badge badge-active">locked</span>"#));
    assert!(a.body.contains("qemuarm"));

    let a = page(&web, "/new");
    for field in ["project", "count", "needs"] {
        assert!(
            a.body.contains(&format!(r#"<label for="{field}">"#)),
            "label {field}"
        );
        assert!(
            a.body.contains(&format!(r#"id="{field}" name="{field}""#)),
            "input {field}"
        );
    }
    assert!(a.body.contains("qemux86 (3)"), "registered kinds as a hint");

    let a = page(&web, "/runs");
    assert!(a.body.contains("locklab run --out DIR"));

    let css = get(&web.url("/static/locklab.css")).unwrap();
    assert_eq!(css.status, 200);
    assert!(css.content_type.starts_with("text/css"), "{css:?}");
    assert!(css.body.contains(".badge"));
    let js = get(&web.url("/static/dashboard.js")).unwrap();
    assert_eq!(js.status, 200);
    assert!(js.body.contains("/api/dashboard"));
}

#[test]
fn builds_filter_and_key_pagination() {
    let web = Web::start(JournalMode::Wal, &[]);
    let ids = create(&web, "many", 120);
    let mut c = web.conn();
    for id in &ids[10..15] {
        BuildRequest::set_state(c.diesel(), RequestId(*id), RequestState::InProgress).unwrap();
    }
    // Every state: pages of 50 by key, each "next page" link followed.
    let mut seen = Vec::new();
    let mut path = "/builds".to_string();
    let mut pages = 0;
    loop {
        let a = page(&web, &path);
        let rows = listed_ids(&a.body);
        assert!(rows.len() <= 50, "{path}: {} rows", rows.len());
        seen.extend(rows);
        pages += 1;
        let Some(next) = a
            .body
            .split(r#"rel="next""#)
            .next()
            .filter(|_| a.body.contains(r#"rel="next""#))
            .and_then(|head| head.rsplit(r#"<a href=""#).next())
            .map(|s| {
                s.split('"')
                    .next()
                    .unwrap()
                    .replace("&#38;", "&")
                    .replace("&amp;", "&")
            })
        else {
            break;
        };
        assert!(next.starts_with("/builds?state=&after="), "{next}");
        path = next;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids, "every request once, in id order");

    // The filter: only the five inprogress, and the select shows it.
    let a = page(&web, "/builds?state=inprogress");
    assert_eq!(listed_ids(&a.body), ids[10..15].to_vec());
    assert!(a.body.contains(r#"<option value="inprogress" selected>"#));
    assert!(!a.body.contains(r#"rel="next""#), "one page only");
    let a = page(&web, &format!("/builds?state=queued&after={}", ids[100]));
    assert_eq!(listed_ids(&a.body), ids[101..].to_vec());
    assert!(a.body.contains("First page"));
    let a = page(&web, "/builds?state=failed");
    assert!(listed_ids(&a.body).is_empty());
    assert!(a.body.contains("No build requests in state failed"));

    // Bad parameters are an HTML 400 that says what is wrong.
    for (path, says) in [
        ("/builds?state=bogus", "bogus"),
        ("/builds?after=x", "after must be a request id"),
        ("/builds?page=2", "unknown query parameter"),
    ] {
        let a = get(&web.url(path)).unwrap();
        assert_eq!(a.status, 400, "{path}: {a:?}");
        assert!(a.content_type.starts_with("text/html"), "{path}");
        assert!(a.body.contains(says), "{path}: {}", a.body);
    }
}

#[test]
fn an_unknown_build_is_a_404_page() {
    let web = Web::start(JournalMode::Delete, &[]);
    for path in ["/builds/4242", "/builds/abc", "/builds/-1", "/no/such/page"] {
        let a = get(&web.url(path)).unwrap();
        assert_eq!(a.status, 404, "{path}: {a:?}");
        if path.starts_with("/builds") {
            assert!(a.content_type.starts_with("text/html"), "{path}: {a:?}");
            assert_layout(&a, path);
            assert!(a.body.contains("Not found"), "{path}");
        }
    }
}

#[test]
fn the_form_creates_and_redirects_to_the_first_request() {
    let web = Web::start(JournalMode::Delete, &[]);
    let before = web.ops_of("create_request");
    let raw = post_form(
        &web,
        "project=form+proj&count=3&needs=qemux86%3A2%2C+qemuarm",
    );
    assert_eq!(status_of(&raw), 303, "{raw}");
    let location = raw
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("location:")
                .then(|| l[9..].trim().to_string())
        })
        .unwrap_or_else(|| panic!("no Location: {raw}"));
    let mut c = web.conn();
    let rows = BuildRequest::page(c.diesel(), None, None, 10).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(location, format!("/builds/{}", rows[0].id));
    let project = Project::find(c.diesel(), "form proj").unwrap().unwrap();
    for r in &rows {
        assert_eq!(r.project_id, project);
        assert_eq!(
            r.needs(),
            Needs([("qemux86".to_string(), 2), ("qemuarm".to_string(), 1)].into())
        );
        assert!(r
            .client_request_id
            .as_deref()
            .is_some_and(|c| !c.is_empty()));
        assert_eq!(r.submitted_by, "webui");
    }
    // Counted as the API's create is: one create_request operation.
    assert_eq!(web.ops_of("create_request"), before + 1);
    let a = page(&web, &location);
    assert!(a.body.contains("form proj"));
}

#[test]
fn an_invalid_form_is_422_with_the_message_beside_its_field() {
    let web = Web::start(JournalMode::Delete, &[]);
    for (body, field, message, kept) in [
        (
            "project=&count=5",
            "project",
            "project must not be empty",
            r#"id="count" name="count" type="text" inputmode="numeric" size="6" value="5""#,
        ),
        (
            "project=p&count=abc",
            "count",
            "count must be an integer",
            r#"value="abc""#,
        ),
        (
            "project=p&count=2000",
            "count",
            "count must be between 1 and 1000",
            r#"value="2000""#,
        ),
        (
            "project=p&count=1&needs=riscv%3A1",
            "needs",
            "unknown environment kind",
            r#"value="riscv:1""#,
        ),
        (
            "project=p&count=1&needs=qemux86%3A9",
            "needs",
            "needs 9 qemux86 but only 3 exist",
            r#"value="qemux86:9""#,
        ),
        (
            "project=%3Cb%3Ex%3C%2Fb%3E&count=0",
            "count",
            "count must be between 1 and 1000",
            r#"value="&#60;b&#62;x&#60;/b&#62;""#,
        ),
    ] {
        let raw = post_form(&web, body);
        assert_eq!(status_of(&raw), 422, "{body}: {raw}");
        let html = raw.split("\r\n\r\n").nth(1).unwrap_or("");
        let error = format!(r#"<span class="error" id="{field}-error">"#);
        let at = html
            .find(&error)
            .unwrap_or_else(|| panic!("{body}: no {error} in {html}"));
        assert!(
            html[at..].starts_with(&format!("{error}{message}"))
                || html[at..]
                    .split("</span>")
                    .next()
                    .unwrap()
                    .contains(message),
            "{body}: message"
        );
        // The message sits with its field: before the field's input, which
        // points at it and is marked invalid.
        let input = html.find(&format!(r#"<input id="{field}""#)).unwrap();
        assert!(at < input, "{body}: the message precedes its input");
        let tag = &html[input..input + html[input..].find('>').unwrap()];
        assert!(
            tag.contains(&format!("{field}-error")) && tag.contains(r#"aria-invalid="true""#),
            "{body}: {tag}"
        );
        assert!(html.contains(kept), "{body}: the values kept ({kept})");
        assert!(!html.contains("<b>x</b>"), "markup shown as text");
    }
    assert_eq!(web.request_rows(), 0, "nothing created");
}

#[test]
fn a_draining_webui_refuses_the_form_with_a_503_page() {
    let web = Web::start(JournalMode::Delete, &[]);
    let a = send("POST", &web.url("/drain"), "application/json", b"", &[]).unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    let a = get(&web.url("/new")).unwrap();
    assert_eq!(a.status, 503, "{a:?}");
    assert!(a.content_type.starts_with("text/html") && a.body.contains("draining"));
    let raw = post_form(&web, "project=p&count=1");
    assert_eq!(status_of(&raw), 503, "{raw}");
    assert_eq!(web.request_rows(), 0);
    page(&web, "/builds");
}

/// A report.json as `locklab run` writes it (the fields the page reads, and
/// one it does not).
fn write_report(dir: &Path, preset: &str, verdict: &[&str], mtime_s: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let report = json!({
        "schema_version": 2,
        "preset": preset,
        "backend": "sqlite",
        "duration_s": 12.5,
        "unknown_field": {"ignored": true},
        "processes": [
            {"name": "webui", "ops": 374, "ok": 371, "retried": 0, "gave_up": 3,
             "failed": {"busy_upgrade": 0, "busy_timeout": 3}, "rows_per_s": 839.25},
            {"name": "runbuilds", "ops": 90, "ok": 88, "retried": 7, "gave_up": 2,
             "failed": {"busy_upgrade": 9, "busy_timeout": 0}, "rows_per_s": 12.0}
        ],
        "verdict": verdict,
    });
    let file = dir.join("report.json");
    std::fs::write(&file, report.to_string()).unwrap();
    let f = std::fs::File::options().write(true).open(&file).unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime_s))
        .unwrap();
}

#[test]
fn runs_show_each_report_and_serve_only_their_svgs() {
    let outside = tempfile::tempdir().unwrap();
    let runs = outside.path().join("runs");
    write_report(
        &runs,
        "django-default",
        &["webui: 3 busy_timeout <b>x</b>"],
        1_800_000_000,
    );
    write_report(
        &runs.join("wal run"),
        "django-wal",
        &["runbuilds: 9 busy_upgrade"],
        1_900_000_000,
    );
    std::fs::write(runs.join("wal run/timeline.svg"), "<svg>the timeline</svg>").unwrap();
    std::fs::create_dir_all(runs.join("no-report")).unwrap();
    std::fs::write(outside.path().join("timeline.svg"), "<svg>secret</svg>").unwrap();
    std::os::unix::fs::symlink(outside.path(), runs.join("link")).unwrap();

    let web = Web::start(JournalMode::Delete, &["--runs-dir", runs.to_str().unwrap()]);
    let a = page(&web, "/runs");
    for text in [
        "django-default",
        "django-wal",
        "webui: 3 busy_timeout &#60;b&#62;x&#60;/b&#62;",
        "runbuilds: 9 busy_upgrade",
        "failed: busy_timeout",
        "failed: busy_upgrade",
        "839.2",
        r#"<img src="/runs/files/wal%20run/timeline.svg""#,
        "wal run",
    ] {
        assert!(a.body.contains(text), "/runs: {text}\n{}", a.body);
    }
    // Newest first.
    assert!(a.body.find("django-wal").unwrap() < a.body.find("django-default").unwrap());
    assert!(
        !a.body.contains("no-report"),
        "a folder without report.json is no run"
    );

    let svg = get(&web.url("/runs/files/wal%20run/timeline.svg")).unwrap();
    assert_eq!(svg.status, 200, "{svg:?}");
    assert!(svg.content_type.starts_with("image/svg+xml"));
    assert_eq!(svg.body, "<svg>the timeline</svg>");

    for path in [
        "/runs/files/../timeline.svg",
        "/runs/files/%2e%2e/timeline.svg",
        "/runs/files/wal%20run/../../timeline.svg",
        "/runs/files/link/timeline.svg",
        "/runs/files/wal%20run/report.json",
        "/runs/files/%2Fetc%2Fpasswd",
        "/runs/files/",
    ] {
        let raw = raw_text(
            &web,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        assert!(matches!(status_of(&raw), 404 | 400), "{path}: {raw}");
        assert!(!raw.contains("secret"), "{path}: {raw}");
    }

    // The dashboard shows the newest run's verdict.
    let d = get(&web.url("/api/dashboard")).unwrap().json();
    assert_eq!(d["verdict"]["run"], "wal run");
    assert_eq!(d["verdict"]["lines"], json!(["runbuilds: 9 busy_upgrade"]));
    assert!(page(&web, "/").body.contains("runbuilds: 9 busy_upgrade"));

    // An empty runs directory says how to get runs.
    let empty = tempfile::tempdir().unwrap();
    let web2 = Web::start(
        JournalMode::Delete,
        &["--runs-dir", empty.path().to_str().unwrap()],
    );
    let a = page(&web2, "/runs");
    assert!(a.body.contains("No report.json"), "{}", a.body);
    assert!(a.body.contains("locklab run --out"));
}

fn counters(v: &Value) -> Value {
    json!({
        "name": v["name"], "ops": v["ops"], "ok": v["ok"], "gave_up": v["gave_up"],
        "retried": v["retried"], "rolled_back": v["rolled_back"], "failed": v["failed"],
    })
}

#[test]
fn idle_dashboard_counters_equal_api_stats() {
    let web = Web::start(JournalMode::Wal, &[]);
    create(&web, "counted", 2);
    // A refused create and a few reads, so that the counters are not all 0.
    let _ = post_json(
        &web.url("/api/build-requests"),
        &json!({"project": "", "count": 1}),
    );
    page(&web, "/builds");
    page(&web, "/environments");
    let d = get(&web.url("/api/dashboard")).unwrap().json();
    let stats = web.stats();
    assert!(stats["ops"].as_u64().unwrap() >= 3, "{stats}");
    let mine = &d["processes"][0];
    assert_eq!(mine["this"], true);
    assert_eq!(counters(mine), counters(&stats));
    assert_eq!(
        mine["failed_total"].as_u64().unwrap(),
        stats["failed"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>()
    );
    // Polling the dashboard costs the lab nothing.
    let again = get(&web.url("/api/dashboard")).unwrap().json();
    assert_eq!(counters(&again["processes"][0]), counters(&web.stats()));
    // Its settings are the stats' settings.
    let settings = mine["settings"].as_array().unwrap();
    let journal = settings.iter().find(|kv| kv[0] == "journal_mode").unwrap();
    assert_eq!(journal[1], stats["settings"]["journal_mode"]);
    assert_eq!(d["lock"]["applies"], true);
    assert_eq!(d["peers_configured"], false);
}

#[test]
fn peers_are_shown_once_and_unreachable_ones_are_said() {
    let web = Web::start(JournalMode::Wal, &[]);
    create(&web, "peer", 1);
    let dead = "http://127.0.0.1:1";
    // A second webui, named webui-2, whose peers are the first (twice) and a
    // dead address.
    let urls = format!("{},{}/,{dead}", web.child.url, web.child.url);
    let peer = web
        .lab
        .start("webui", "webui-2", &["--stats-url", &urls])
        .unwrap();
    let d = get(&format!("{}/api/dashboard", peer.url)).unwrap().json();
    let names: Vec<&str> = d["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["webui-2", "webui"], "each process once");
    assert_eq!(counters(&d["processes"][1]), counters(&web.stats()));
    assert_eq!(d["unreachable"][0]["url"], dead);
    let a = get(&format!("{}/", peer.url)).unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    assert!(
        a.body.contains("unreachable") && a.body.contains(dead),
        "{}",
        a.body
    );

    // The first webui, given its own URL: itself once, by name.
    drop(peer);
    let me = web
        .lab
        .start("webui", "webui", &["--stats-url", &web.child.url])
        .unwrap();
    let d = get(&format!("{}/api/dashboard", me.url)).unwrap().json();
    assert_eq!(d["processes"].as_array().unwrap().len(), 1, "{d}");
    assert!(d["unreachable"].as_array().unwrap().is_empty());

    // No peers at all: 200, and the page says so.
    let a = page(&web, "/");
    assert!(a.body.contains("No peers are configured"));
}

#[test]
fn the_dashboard_names_the_write_lock_holder() {
    let _serial = crate::serial();
    let web = Web::start(JournalMode::Delete, &[]);
    let d = get(&web.url("/api/dashboard")).unwrap().json();
    assert_eq!(d["lock"]["holders"], json!([]), "{d}");
    let mut holder = hold_write_lock(&web);
    let d = get(&web.url("/api/dashboard")).unwrap().json();
    holder.rollback();
    let holders = d["lock"]["holders"].as_array().unwrap();
    assert_eq!(holders.len(), 1, "{d}");
    assert_eq!(holders[0]["pid"], std::process::id());
    assert_eq!(holders[0]["mode"], "RESERVED");
    // And webui still works: sampling in a child released none of its locks.
    create(&web, "after", 1);
}
