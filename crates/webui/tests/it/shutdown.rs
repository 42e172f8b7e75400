//! SIGTERM: webui finishes what is in flight, writes its final stats to
//! `--stats-out`, and exits 0.

use std::time::Duration;

use daemon::spawn::SIGTERM;
use schema::settings::JournalMode;
use serde_json::json;
use testkit::{get, post_json, send, wait_for};

use crate::lock::{hold_write_lock, CLASSES};
use crate::{serial, Web};

const CREATE: &str = "/api/build-requests";

fn final_stats(web: &Web) -> serde_json::Value {
    let path = web.lab.path().join("stats-webui.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn sigterm_exits_0_and_writes_the_final_stats() {
    let mut web = Web::start(JournalMode::Delete, &[]);
    let mut rows = 0;
    for count in [1, 2, 3] {
        let a = post_json(
            &web.url(CREATE),
            &json!({"project": "final", "count": count}),
        )
        .unwrap();
        assert_eq!(a.status, 201, "{a:?}");
        rows += count;
    }
    // The project row, made by the first create, is a committed row too.
    rows += 1;
    // Bad input is not an op; reads are ops of their own.
    let a = post_json(&web.url(CREATE), &json!({"project": "final", "count": 0})).unwrap();
    assert_eq!(a.status, 422, "{a:?}");
    let a = send("POST", &web.url(CREATE), "text/plain", b"x", &[]).unwrap();
    assert_eq!(a.status, 415, "{a:?}");
    assert_eq!(get(&web.url(CREATE)).unwrap().status, 200);
    let live = web.stats();

    let status = web.child.terminate(Duration::from_secs(15)).unwrap();
    assert!(status.success(), "exit status {status}");
    assert_eq!(status.code(), Some(0));

    let stats = final_stats(&web);
    assert_eq!(stats["name"], "webui");
    let create = &stats["by_op"]["create_request"];
    assert_eq!(create["ops"], 3, "{stats}");
    assert_eq!(create["ok"], 3, "{stats}");
    assert_eq!(create["gave_up"], 0, "{stats}");
    assert_eq!(create["rows_committed"], rows, "{stats}");
    assert_eq!(stats["by_op"]["list_requests"]["ops"], 1, "{stats}");
    assert_eq!(stats["rows_committed"], rows, "{stats}");
    assert_eq!(
        stats["ops"].as_u64().unwrap(),
        stats["ok"].as_u64().unwrap() + stats["gave_up"].as_u64().unwrap(),
        "{stats}"
    );
    for c in CLASSES {
        assert_eq!(stats["failed"][c], 0, "failed.{c} in {stats}");
    }
    assert!(stats["settings"].is_object(), "{stats}");
    assert_eq!(stats["settings"]["journal_mode"], "delete");
    // The file holds what /api/stats showed, with the same counts.
    for key in [
        "ops",
        "ok",
        "gave_up",
        "rows_committed",
        "failed",
        "settings",
    ] {
        assert_eq!(stats[key], live[key], "{key}: file {stats} vs live {live}");
    }
    assert_eq!(web.request_rows(), i64::from(rows - 1));
    assert!(
        web.child
            .wait_log(Duration::from_secs(10), |l| l.contains("webui: stopped"))
            .is_some(),
        "{}",
        web.child.log_text()
    );
}

/// A create waiting for the write lock when SIGTERM arrives is finished, not
/// cut off: it commits once the lock is free, its client gets the 201, and the
/// final stats count it.
#[test]
fn sigterm_finishes_the_create_in_flight() {
    let _serial = serial();
    let mut web = Web::start(
        JournalMode::Wal,
        &[
            "--busy-timeout",
            "20s",
            "--atomic-requests",
            "true",
            "--txn-mode",
            "immediate",
        ],
    );
    let mut holder = hold_write_lock(&web);
    let url = web.url(CREATE);
    let client = std::thread::spawn(move || {
        post_json(&url, &json!({"project": "in-flight", "count": 2})).unwrap()
    });
    wait_for("the create to start", Duration::from_secs(10), || {
        (web.ops_of("create_request") >= 1).then_some(())
    })
    .unwrap();
    web.child.signal(SIGTERM);
    wait_for("webui to take the SIGTERM", Duration::from_secs(10), || {
        web.child.log_text().contains("SIGTERM").then_some(())
    })
    .unwrap();
    holder.rollback();

    let a = client.join().unwrap();
    assert_eq!(a.status, 201, "{a:?}");
    let status = web.child.terminate(Duration::from_secs(15)).unwrap();
    assert_eq!(status.code(), Some(0), "exit status {status}");

    assert_eq!(web.request_rows(), 2);
    let stats = final_stats(&web);
    let create = &stats["by_op"]["create_request"];
    assert_eq!(create["ops"], 1, "{stats}");
    assert_eq!(create["ok"], 1, "{stats}");
    assert_eq!(
        create["rows_committed"], 3,
        "two requests and their project: {stats}"
    );
    assert_eq!(stats["gave_up"], 0, "{stats}");
}
