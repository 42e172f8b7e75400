//! Every bad input of DESIGN.md gets its documented status and a JSON error
//! (`error`, and `field` where the input names one), and nothing is written:
//! no build_request row, no project row for the rejected name, and no
//! create_request operation counted (a rejected request is not an op).

use schema::settings::JournalMode;
use serde_json::json;
use testkit::{get, post_json, send};

use crate::{assert_json_error, raw, Web};

/// The create endpoint.
const CREATE: &str = "/api/build-requests";

/// Asserts that nothing at all was written or counted as a create.
fn assert_nothing_written(web: &Web, names: &[&str]) {
    assert_eq!(web.request_rows(), 0, "no build_request row");
    for name in names {
        assert!(!web.has_project(name), "no project row for {name:?}");
    }
    assert_eq!(web.project_rows(), 0, "no project row at all");
    assert_eq!(
        web.ops_of("create_request"),
        0,
        "a rejected request is not an op"
    );
}

/// A valid create afterwards still works: the daemon is fine and the empty
/// tables above are not an accident.
fn assert_create_still_works(web: &Web) {
    let a = post_json(&web.url(CREATE), &json!({"project": "control", "count": 2})).unwrap();
    assert_eq!(a.status, 201, "{a:?}");
    assert_eq!(web.request_rows(), 2);
    assert!(web.has_project("control"));
}

/// A create body of exactly `len` bytes: valid, padded with an ignored key.
fn padded_body(project: &str, len: usize) -> Vec<u8> {
    let prefix = format!(r#"{{"project":"{project}","count":1,"pad":""#);
    let suffix = r#""}"#;
    let pad = len - prefix.len() - suffix.len();
    let body = format!("{prefix}{}{suffix}", "x".repeat(pad));
    assert_eq!(body.len(), len);
    body.into_bytes()
}

#[test]
fn malformed_json_and_wrong_types_get_400() {
    let web = Web::start(JournalMode::Delete, &[]);
    let url = web.url(CREATE);
    let raw_cases: [(&str, &[u8]); 4] = [
        (
            "malformed JSON",
            br#"{"project": "bad-malformed", "count": 1"#,
        ),
        ("not JSON at all", b"project=bad-form&count=1"),
        ("a JSON array", br#"[{"project": "bad-array", "count": 1}]"#),
        ("a JSON string", br#""bad-string""#),
    ];
    for (case, body) in raw_cases {
        let a = send("POST", &url, "application/json", body, &[]).unwrap();
        assert_json_error(&a, 400, None, case);
    }
    let typed_cases = [
        ("project 7", json!({"project": 7, "count": 1}), "project"),
        (
            "count \"1\"",
            json!({"project": "bad-count-type", "count": "1"}),
            "count",
        ),
        (
            "count 1.5",
            json!({"project": "bad-count-float", "count": 1.5}),
            "count",
        ),
        (
            "needs {\"qemux86\": \"2\"}",
            json!({"project": "bad-needs-type", "count": 1, "needs": {"qemux86": "2"}}),
            "needs",
        ),
        (
            "needs a list",
            json!({"project": "bad-needs-list", "count": 1, "needs": ["qemux86"]}),
            "needs",
        ),
        (
            "priority \"high\"",
            json!({"project": "bad-priority", "count": 1, "priority": "high"}),
            "priority",
        ),
    ];
    for (case, body, field) in typed_cases {
        let a = post_json(&url, &body).unwrap();
        assert_json_error(&a, 400, Some(field), case);
    }
    assert_nothing_written(
        &web,
        &[
            "bad-malformed",
            "bad-form",
            "bad-array",
            "bad-string",
            "7",
            "bad-count-type",
            "bad-count-float",
            "bad-needs-type",
            "bad-needs-list",
            "bad-priority",
        ],
    );
    assert_create_still_works(&web);
}

/// JSON does not tell 28 from 28.0 (JSON Schema calls both integers, and
/// some clients write the second): a number without a fraction is an
/// integer wherever one is expected. schemathesis found the 400.
#[test]
fn integral_floats_are_integers() {
    let web = Web::start(JournalMode::Delete, &[]);
    let a = post_json(
        &web.url(CREATE),
        &json!({"project": "floats", "count": 2.0, "priority": -3.0, "needs": {"qemuarm": 2.0}}),
    )
    .unwrap();
    assert_eq!(a.status, 201, "{a:?}");
    let id = a.json()["ids"][0].as_i64().unwrap();
    let v = get(&web.url(&format!("{CREATE}/{id}"))).unwrap().json();
    assert_eq!(v["priority"], -3, "{v}");
    assert_eq!(v["needs"], json!({"qemuarm": 2}), "{v}");
    assert_eq!(web.request_rows(), 2);
    // Out of range is still out of range, and a fraction still no integer.
    for (case, body, status, field) in [
        (
            "count 1e3 + 1",
            json!({"project": "f", "count": 1001.0}),
            422,
            "count",
        ),
        (
            "count 2.5",
            json!({"project": "f", "count": 2.5}),
            400,
            "count",
        ),
        (
            "count 1e300",
            json!({"project": "f", "count": 1e300}),
            400,
            "count",
        ),
        (
            "needs 0.5",
            json!({"project": "f", "count": 1, "needs": {"qemuarm": 0.5}}),
            400,
            "needs",
        ),
    ] {
        let a = post_json(&web.url(CREATE), &body).unwrap();
        assert_json_error(&a, status, Some(field), case);
    }
    assert_eq!(web.request_rows(), 2);
}

#[test]
fn bodies_over_256_kib_get_413() {
    let web = Web::start(JournalMode::Delete, &[]);
    let url = web.url(CREATE);
    let limit = 256 * 1024;

    // One byte over, with a true Content-Length.
    let a = send(
        "POST",
        &url,
        "application/json",
        &padded_body("bad-big", limit + 1),
        &[],
    )
    .unwrap();
    assert_json_error(&a, 413, None, "256 KiB + 1 byte");

    // A Content-Length that claims more than the body holds: refused on the
    // header alone, before any of the body is read.
    let small = br#"{"project":"bad-claims-more","count":1}"#;
    let mut request = format!(
        "POST {CREATE} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        10 * 1024 * 1024
    )
    .into_bytes();
    request.extend_from_slice(small);
    let a = raw(&web.child.url, &request);
    assert_json_error(&a, 413, None, "Content-Length claims 10 MiB");

    // No Content-Length at all (chunked): counted while it streams in.
    let body = padded_body("bad-chunked", limit + 1);
    let mut request = format!(
        "POST {CREATE} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(16 * 1024) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let a = raw(&web.child.url, &request);
    assert_json_error(&a, 413, None, "chunked, 256 KiB + 1 byte");

    assert_nothing_written(&web, &["bad-big", "bad-claims-more", "bad-chunked"]);

    // Exactly at the limit is accepted.
    let a = send(
        "POST",
        &url,
        "application/json",
        &padded_body("at-limit", limit),
        &[],
    )
    .unwrap();
    assert_eq!(a.status, 201, "exactly 256 KiB: {a:?}");
    assert!(web.has_project("at-limit"));
    assert_eq!(web.request_rows(), 1);
}

#[test]
fn bodies_that_are_not_json_get_415() {
    let web = Web::start(JournalMode::Delete, &[]);
    let url = web.url(CREATE);
    let body = json!({"project": "bad-media", "count": 1}).to_string();
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "text/json-ish",
    ] {
        let a = send("POST", &url, content_type, body.as_bytes(), &[]).unwrap();
        assert_json_error(&a, 415, None, content_type);
    }
    // No Content-Type header at all (an HTTP client would add one).
    let request = format!(
        "POST {CREATE} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let a = raw(&web.child.url, request.as_bytes());
    assert_json_error(&a, 415, None, "no Content-Type");

    assert_nothing_written(&web, &["bad-media"]);

    // application/json with a charset, and a +json type, are JSON.
    for (content_type, project) in [
        ("application/json; charset=utf-8", "charset"),
        ("application/vnd.locklab+json", "vendor-json"),
    ] {
        let body = json!({"project": project, "count": 1}).to_string();
        let a = send("POST", &url, content_type, body.as_bytes(), &[]).unwrap();
        assert_eq!(a.status, 201, "{content_type}: {a:?}");
    }
}

#[test]
fn values_out_of_range_get_422() {
    let web = Web::start(JournalMode::Delete, &[]);
    let url = web.url(CREATE);
    let cases = [
        ("count 0", json!({"project": "bad-0", "count": 0}), "count"),
        (
            "count -1",
            json!({"project": "bad-neg", "count": -1}),
            "count",
        ),
        (
            "count 1001",
            json!({"project": "bad-1001", "count": 1001}),
            "count",
        ),
        ("missing count", json!({"project": "bad-nocount"}), "count"),
        (
            "null count",
            json!({"project": "bad-nullcount", "count": null}),
            "count",
        ),
        (
            "empty project",
            json!({"project": "", "count": 1}),
            "project",
        ),
        (
            "blank project",
            json!({"project": "   ", "count": 1}),
            "project",
        ),
        ("missing project", json!({"count": 1}), "project"),
        (
            "unknown kind",
            json!({"project": "bad-kind", "count": 1, "needs": {"riscv64": 1}}),
            "needs",
        ),
        (
            "needs over capacity",
            json!({"project": "bad-cap", "count": 1, "needs": {"qemux86": 4}}),
            "needs",
        ),
        (
            "one kind over capacity beside a good one",
            json!({"project": "bad-cap2", "count": 1, "needs": {"qemux86": 1, "qemuarm": 3}}),
            "needs",
        ),
        (
            "empty needs",
            json!({"project": "bad-empty-needs", "count": 1, "needs": {}}),
            "needs",
        ),
        (
            "needs of zero",
            json!({"project": "bad-zero-needs", "count": 1, "needs": {"qemux86": 0}}),
            "needs",
        ),
    ];
    for (case, body, field) in cases {
        let a = post_json(&url, &body).unwrap();
        assert_json_error(&a, 422, Some(field), case);
    }
    assert_nothing_written(
        &web,
        &[
            "bad-0",
            "bad-neg",
            "bad-1001",
            "bad-nocount",
            "bad-nullcount",
            "",
            "   ",
            "bad-kind",
            "bad-cap",
            "bad-cap2",
            "bad-empty-needs",
            "bad-zero-needs",
        ],
    );

    // The edges of the ranges are accepted: count 1000, every environment.
    let a = post_json(
        &url,
        &json!({"project": "edges", "count": 1000, "needs": {"qemux86": 3, "qemuarm": 2}}),
    )
    .unwrap();
    assert_eq!(a.status, 201, "{a:?}");
    assert_eq!(a.json()["ids"].as_array().unwrap().len(), 1000);
    assert_eq!(web.request_rows(), 1000);
}

#[test]
fn missing_ids_and_unknown_paths_get_404() {
    let web = Web::start(JournalMode::Delete, &[]);
    let cases = [
        ("GET", "/api/build-requests/999999"),
        ("GET", "/api/build-requests/abc"),
        ("GET", "/api/build-requests/1.5"),
        ("GET", "/no/such/path"),
        ("GET", "/api/build-request"),
        ("POST", "/api/build-requests/999999/cancel"),
        ("POST", "/api/build-requests/abc/cancel"),
    ];
    for (method, path) in cases {
        let a = send(method, &web.url(path), "application/json", b"", &[]).unwrap();
        assert_json_error(&a, 404, None, &format!("{method} {path}"));
    }
    assert_eq!(web.request_rows(), 0);
    assert_eq!(web.project_rows(), 0);
}

#[test]
fn wrong_methods_get_405() {
    let web = Web::start(JournalMode::Delete, &[]);
    let a = post_json(&web.url(CREATE), &json!({"project": "p", "count": 1})).unwrap();
    assert_eq!(a.status, 201, "{a:?}");
    let id = a.json()["ids"][0].as_i64().unwrap();
    let cases = [
        ("DELETE", CREATE.to_string()),
        ("PUT", CREATE.to_string()),
        ("GET", format!("{CREATE}/{id}/cancel")),
        ("DELETE", format!("{CREATE}/{id}")),
        ("PUT", format!("{CREATE}/{id}")),
        ("POST", "/api/environments".to_string()),
    ];
    for (method, path) in &cases {
        let a = send(method, &web.url(path), "application/json", b"{}", &[]).unwrap();
        assert_json_error(&a, 405, None, &format!("{method} {path}"));
    }
    // Nothing changed: the one request is still there and still queued.
    assert_eq!(web.request_rows(), 1);
    let a = get(&web.url(&format!("{CREATE}/{id}"))).unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["state"], "queued");
}

/// A NUL or any other control character except tab in a name is 422, and
/// nothing is written; a tab is accepted.
#[test]
fn control_characters_in_names_get_422() {
    let web = Web::start(JournalMode::Delete, &[]);
    for (case, body) in [
        ("NUL in project", json!({"project": "a\u{0}b", "count": 1})),
        (
            "escape in project",
            json!({"project": "a\u{1b}[31m", "count": 1}),
        ),
        ("newline in project", json!({"project": "a\nb", "count": 1})),
        (
            "NUL in a needs kind",
            json!({"project": "p", "count": 1, "needs": {"qemux86\u{0}": 1}}),
        ),
    ] {
        let field = if case.contains("needs") {
            "needs"
        } else {
            "project"
        };
        let a = post_json(&web.url(CREATE), &body).unwrap();
        assert_json_error(&a, 422, Some(field), case);
        assert!(
            a.json()["error"].as_str().unwrap().contains("control"),
            "{case}: {a:?}"
        );
    }
    assert_nothing_written(&web, &["a\u{0}b", "p"]);
    let a = post_json(
        &web.url(CREATE),
        &json!({"project": "tab\there", "count": 1}),
    )
    .unwrap();
    assert_eq!(a.status, 201, "a tab is text: {a:?}");
}

/// Unknown query parameters are 400 and name the known ones; endpoints that
/// take none refuse any; known parameters are still validated.
#[test]
fn unknown_query_parameters_get_400() {
    let web = Web::start(JournalMode::Delete, &[]);
    let a = get(&web.url("/api/build-requests?page=-4")).unwrap();
    assert_json_error(&a, 400, Some("query"), "page=-4");
    let error = a.json()["error"].as_str().unwrap().to_string();
    for known in ["state", "limit", "after"] {
        assert!(error.contains(known), "names {known}: {error}");
    }
    for path in [
        "/api/environments?x=1",
        "/api/build-requests/1?verbose=1",
        "/?debug=true",
    ] {
        let a = get(&web.url(path)).unwrap();
        assert_json_error(&a, 400, Some("query"), path);
    }
    let a = post_json(
        &web.url("/api/build-requests?dry_run=1"),
        &json!({"project": "q", "count": 1}),
    )
    .unwrap();
    assert_json_error(&a, 400, Some("query"), "a create with a query string");
    assert_nothing_written(&web, &["q"]);
    let a = get(&web.url("/api/build-requests?limit=-4")).unwrap();
    assert_json_error(&a, 422, Some("limit"), "limit=-4");
    let a = get(&web.url("/api/build-requests?limit=5&state=queued")).unwrap();
    assert_eq!(a.status, 200, "known parameters: {a:?}");
}

/// Limits: a client that sends its request head too slowly (slowloris) is
/// answered 408 and disconnected after daemon::CLIENT_REQUEST_TIMEOUT;
/// headers over daemon::MAX_HEADER_BYTES are 431; the daemon goes on
/// serving.
#[test]
fn slow_clients_and_huge_headers_are_cut_off() {
    use std::io::{Read, Write};
    let web = Web::start(JournalMode::Delete, &[]);
    let addr = web
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    slow.write_all(b"GET /api/environments HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // ...and never the blank line that ends the head.
    let t0 = std::time::Instant::now();
    let mut bytes = Vec::new();
    let _ = slow.read_to_end(&mut bytes);
    let waited = t0.elapsed();
    let head = String::from_utf8_lossy(&bytes);
    assert!(
        head.is_empty() || head.starts_with("HTTP/1.1 408"),
        "a slow head is cut off with 408 or a close: {head:?}"
    );
    assert!(
        waited < daemon::CLIENT_REQUEST_TIMEOUT * 4,
        "the server closed the slow connection itself ({waited:?})"
    );

    let huge = format!(
        "GET /api/environments HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let a = raw(&web.url(""), huge.as_bytes());
    assert_json_error(&a, 431, Some("headers"), "a 64 KiB header");
    let a = get(&web.url("/api/environments")).unwrap();
    assert_eq!(a.status, 200, "still serving: {a:?}");
}
