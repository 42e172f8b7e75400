//! The read endpoints, cancel, drain, and the daemon's common endpoints.

use schema::models::BuildRequest;
use schema::settings::JournalMode;
use schema::types::{RequestId, RequestState};
use serde_json::json;
use testkit::{get, post_json, send};

use crate::lock::CLASSES;
use crate::{assert_json_error, create, Web};

const CREATE: &str = "/api/build-requests";

fn ids_of(v: &serde_json::Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

#[test]
fn the_list_pages_by_key() {
    let web = Web::start(JournalMode::Delete, &[]);
    let mut all = create(&web, "a", 7);
    all.extend(create(&web, "b", 3));
    assert_eq!(all.len(), 10);

    // A first page, then the next one after its last id.
    let a = get(&web.url(&format!("{CREATE}?limit=3"))).unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.content_type.starts_with("application/json"), "{a:?}");
    let v = a.json();
    assert_eq!(ids_of(&v["items"]), all[..3]);
    assert_eq!(v["next_after"], all[2]);
    let a = get(&web.url(&format!("{CREATE}?limit=3&after={}", all[2]))).unwrap();
    assert_eq!(ids_of(&a.json()["items"]), all[3..6]);

    // Walking every page by next_after sees each row once, in id order.
    let mut seen = Vec::new();
    let mut after: Option<i64> = None;
    for _ in 0..10 {
        let url = match after {
            Some(id) => web.url(&format!("{CREATE}?limit=4&after={id}")),
            None => web.url(&format!("{CREATE}?limit=4")),
        };
        let v = get(&url).unwrap().json();
        seen.extend(ids_of(&v["items"]));
        match v["next_after"].as_i64() {
            Some(id) => after = Some(id),
            None => break,
        }
    }
    assert_eq!(seen, all);

    // 0 is before the first id.
    let v = get(&web.url(&format!("{CREATE}?after=0&limit=2")))
        .unwrap()
        .json();
    assert_eq!(ids_of(&v["items"]), all[..2]);

    // After the last id: an empty page. Without a limit: everything.
    let v = get(&web.url(&format!("{CREATE}?after={}", all[9])))
        .unwrap()
        .json();
    assert_eq!(ids_of(&v["items"]), Vec::<i64>::new());
    assert!(v["next_after"].is_null());
    let v = get(&web.url(CREATE)).unwrap().json();
    assert_eq!(ids_of(&v["items"]), all);
    let v = get(&web.url(&format!("{CREATE}?limit=500&state=queued")))
        .unwrap()
        .json();
    assert_eq!(ids_of(&v["items"]), all);

    // Bad paging parameters.
    for (query, status, field) in [
        ("limit=501", 422, "limit"),
        ("limit=0", 422, "limit"),
        ("limit=-1", 422, "limit"),
        ("limit=ten", 400, "limit"),
        ("after=x", 400, "after"),
        ("after=-1", 422, "after"),
        ("state=bogus", 422, "state"),
        // An empty value is no value: every query parameter is validated.
        ("state=", 422, "state"),
        ("limit=", 400, "limit"),
        ("after=", 400, "after"),
    ] {
        let a = get(&web.url(&format!("{CREATE}?{query}"))).unwrap();
        assert_json_error(&a, status, Some(field), query);
    }
}

#[test]
fn cancel_deletes_a_queued_request_once() {
    let web = Web::start(JournalMode::Delete, &[]);
    let ids = create(&web, "cancel", 3);
    let cancel = |id: i64| {
        send(
            "POST",
            &web.url(&format!("{CREATE}/{id}/cancel")),
            "application/json",
            b"",
            &[],
        )
        .unwrap()
    };

    let a = cancel(ids[0]);
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["state"], "deleted", "{a:?}");
    assert_eq!(a.json()["id"], ids[0]);
    let mut conn = web.conn();
    let row = BuildRequest::get(conn.diesel(), RequestId(ids[0]))
        .unwrap()
        .unwrap();
    assert_eq!(row.state, RequestState::Deleted);

    // A second cancel finds nothing to cancel.
    let a = cancel(ids[0]);
    assert_json_error(&a, 409, None, "cancelling twice");

    // The others are untouched; the state filter sees the change.
    let v = get(&web.url(&format!("{CREATE}?state=queued")))
        .unwrap()
        .json();
    assert_eq!(ids_of(&v["items"]), ids[1..]);
    let v = get(&web.url(&format!("{CREATE}?state=deleted")))
        .unwrap()
        .json();
    assert_eq!(ids_of(&v["items"]), ids[..1]);

    // An inprogress request goes to cancelling (its ingester stops it), once.
    let moved = BuildRequest::transition(
        conn.diesel(),
        RequestId(ids[1]),
        RequestState::Queued,
        RequestState::InProgress,
        None,
    )
    .unwrap();
    assert_eq!(moved, 1);
    let a = cancel(ids[1]);
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["state"], "cancelling", "{a:?}");
    let a = cancel(ids[1]);
    assert_json_error(&a, 409, None, "cancelling a cancelling request");

    // A finished request cannot be cancelled.
    BuildRequest::transition(
        conn.diesel(),
        RequestId(ids[2]),
        RequestState::Queued,
        RequestState::Completed,
        None,
    )
    .unwrap();
    let a = cancel(ids[2]);
    assert_json_error(&a, 409, None, "cancelling a completed request");
    let row = BuildRequest::get(conn.diesel(), RequestId(ids[2]))
        .unwrap()
        .unwrap();
    assert_eq!(row.state, RequestState::Completed);
}

#[test]
fn drain_refuses_creates_and_keeps_serving_reads() {
    let web = Web::start(JournalMode::Wal, &[]);
    let ids = create(&web, "before", 2);

    let a = send("POST", &web.url("/drain"), "application/json", b"", &[]).unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["draining"], true, "{a:?}");

    for _ in 0..2 {
        let a = post_json(&web.url(CREATE), &json!({"project": "after", "count": 1})).unwrap();
        assert_eq!(a.status, 503, "{a:?}");
        assert!(a.content_type.starts_with("application/json"), "{a:?}");
        assert_eq!(a.json(), json!({"error": "draining"}));
        assert!(a.retry_after.is_some(), "Retry-After: {a:?}");
    }
    assert_eq!(web.request_rows(), 2);
    assert!(!web.has_project("after"));

    // Reads still work, and everything says it is draining.
    let a = get(&web.url(CREATE)).unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(ids_of(&a.json()["items"]), ids);
    let a = get(&web.url(&format!("{CREATE}/{}", ids[0]))).unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(get(&web.url("/api/environments")).unwrap().status, 200);
    let page = get(&web.url("/")).unwrap();
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains("draining"));
    let health = get(&web.url("/healthz")).unwrap();
    assert_eq!(health.status, 200, "{health:?}");
    assert_eq!(health.json()["draining"], true);
    assert_eq!(web.stats()["draining"], true);
    // Draining twice is harmless.
    let a = send("POST", &web.url("/drain"), "application/json", b"", &[]).unwrap();
    assert_eq!(a.status, 200, "{a:?}");
}

#[test]
fn health_metrics_and_stats_are_served() {
    // A WAL file, while the flag asks for delete: the file's mode wins and is
    // what the stats report.
    let web = Web::start(
        JournalMode::Wal,
        &[
            "--journal-mode",
            "delete",
            "--atomic-requests",
            "true",
            "--txn-mode",
            "immediate",
        ],
    );
    create(&web, "observed", 4);
    assert_eq!(
        get(&web.url("/api/build-requests/999999")).unwrap().status,
        404
    );

    let health = get(&web.url("/healthz")).unwrap();
    assert_eq!(health.status, 200, "{health:?}");
    assert_eq!(health.json()["status"], "ok");
    assert_eq!(health.json()["name"], "webui");

    let metrics = get(&web.url("/metrics")).unwrap();
    assert_eq!(metrics.status, 200, "{metrics:?}");
    assert!(
        metrics.content_type.starts_with("text/plain"),
        "{metrics:?}"
    );
    for needle in [
        "locklab_ops_total{process=\"webui\"",
        "locklab_ops_total{process=\"webui\",op=\"create_request\",outcome=\"ok\"} 1",
        "locklab_failed_attempts_total",
        "locklab_op_duration_seconds_bucket",
        "locklab_op_duration_seconds_bucket{process=\"webui\",op=\"create_request\",le=\"+Inf\"} 1",
        // four requests and their project
        "locklab_rows_committed_total{process=\"webui\"} 5",
    ] {
        assert!(
            metrics.body.contains(needle),
            "{needle} in\n{}",
            metrics.body
        );
    }

    let stats = web.stats();
    assert_eq!(stats["name"], "webui");
    for c in CLASSES {
        assert_eq!(stats["failed"][c], 0, "failed.{c} in {stats}");
    }
    assert_eq!(
        stats["failed"].as_object().unwrap().len(),
        CLASSES.len(),
        "exactly the contract's classes: {stats}"
    );
    for key in [
        "ops",
        "ok",
        "retried",
        "gave_up",
        "rows_committed",
        "rows_per_s",
        "lock_wait_share",
        "latency_ms",
    ] {
        assert!(!stats[key].is_null(), "{key} in {stats}");
    }
    assert_eq!(
        stats["ops"].as_u64().unwrap(),
        stats["ok"].as_u64().unwrap()
            + stats["gave_up"].as_u64().unwrap()
            + stats["rolled_back"].as_u64().unwrap()
    );
    assert_eq!(stats["by_op"]["create_request"]["ops"], 1);
    assert_eq!(
        stats["rows_committed"], 5,
        "four requests and their project"
    );
    let settings = &stats["settings"];
    assert!(settings.is_object(), "{stats}");
    assert_eq!(settings["journal_mode"], "wal", "read back from the file");
    assert_eq!(settings["busy_timeout_ms"], 200);
    assert_eq!(settings["atomic_requests"], true);
    assert_eq!(settings["txn_mode"], "immediate");
    for key in ["synchronous", "retry", "claim", "commit", "txn_work_ms"] {
        assert!(!settings[key].is_null(), "settings.{key} in {stats}");
    }
    assert!(
        web.child
            .wait_log(std::time::Duration::from_secs(10), |l| l
                .contains("journal_mode=wal"))
            .is_some(),
        "the startup log names the file's mode"
    );
}

#[test]
fn environments_are_listed() {
    let web = Web::start(JournalMode::Delete, &[]);
    let a = get(&web.url("/api/environments")).unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    let items = a.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 5, "{a:?}");
    let kind = |k: &str| items.iter().filter(|e| e["kind"] == k).count();
    assert_eq!(kind("qemux86"), 3);
    assert_eq!(kind("qemuarm"), 2);
}
