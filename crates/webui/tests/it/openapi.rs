//! `GET /api/openapi.json`: the document is served and parses, it lists
//! exactly the operations the router serves (every other method on a
//! documented path is 405 with an `Allow` of the documented ones), and the
//! constraints it states are the server's: a value at a documented bound
//! is accepted and one past it is refused.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use schema::settings::JournalMode;
use serde_json::{json, Value};
use testkit::{get, post_json, send};

use crate::{assert_json_error, Web};

const DOC: &str = "/api/openapi.json";

/// The JSON API webui serves: path (as the document writes it) to methods.
const API: &[(&str, &[&str])] = &[
    ("/api/build-requests", &["get", "post"]),
    ("/api/build-requests/{id}", &["get"]),
    ("/api/build-requests/{id}/cancel", &["post"]),
    ("/api/environments", &["get"]),
    ("/api/openapi.json", &["get"]),
];

const METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];

fn document(web: &Web) -> Value {
    let a = get(&web.url(DOC)).unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.content_type, "application/json", "{a:?}");
    serde_json::from_str(&a.body).expect("the document is JSON")
}

/// `METHOD url` with an empty JSON body: (status, Allow header).
fn call(method: &str, url: &str) -> (u16, Option<String>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(60)))
        .http_status_as_error(false)
        .build()
        .into();
    let req = ureq::http::Request::builder()
        .method(method.to_ascii_uppercase().as_str())
        .uri(url)
        .header("content-type", "application/json")
        .body(Vec::new())
        .unwrap();
    let resp = agent.run(req).unwrap();
    let allow = resp
        .headers()
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (resp.status().as_u16(), allow)
}

/// The schema at a `$ref` of the document, or the schema itself.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

fn query_parameter<'a>(doc: &'a Value, path: &str, method: &str, name: &str) -> &'a Value {
    doc["paths"][path][method]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name && p["in"] == "query")
        .unwrap_or_else(|| panic!("{method} {path} documents no query parameter {name}"))
}

#[test]
fn the_document_lists_exactly_what_the_router_serves() {
    let web = Web::start(JournalMode::Delete, &[]);
    let doc = document(&web);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    let documented: BTreeMap<String, BTreeSet<String>> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(path, item)| {
            let methods = item
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| METHODS.contains(&k.as_str()))
                .cloned()
                .collect();
            (path.clone(), methods)
        })
        .collect();
    let expected: BTreeMap<String, BTreeSet<String>> = API
        .iter()
        .map(|(p, ms)| (p.to_string(), ms.iter().map(|m| m.to_string()).collect()))
        .collect();
    assert_eq!(documented, expected);

    // A request to cancel, and one to read (a cancel deletes its target).
    let a = post_json(
        &web.url("/api/build-requests"),
        &json!({"project": "doc", "count": 2}),
    )
    .unwrap();
    assert_eq!(a.status, 201, "{a:?}");
    let (read_id, cancel_id) = (a.json()["ids"][0].clone(), a.json()["ids"][1].clone());

    for (path, methods) in &documented {
        let id = if path.ends_with("/cancel") {
            &cancel_id
        } else {
            &read_id
        };
        let url = web.url(&path.replace("{id}", &id.to_string()));
        for method in METHODS {
            let (status, allow) = call(method, &url);
            if methods.contains(*method) {
                // Served: the one create has a body to refuse (an empty one).
                let ok = if *method == "post" && !path.ends_with("/cancel") {
                    400
                } else {
                    200
                };
                assert_eq!(status, ok, "{method} {path}");
            } else {
                assert_eq!(status, 405, "{method} {path} is not documented");
                let allow: BTreeSet<String> = allow
                    .unwrap_or_else(|| panic!("{method} {path}: 405 without Allow"))
                    .split(',')
                    .map(|m| m.trim().to_ascii_lowercase())
                    .collect();
                assert_eq!(&allow, methods, "Allow of {path}");
            }
        }
    }

    // Like every endpoint that takes no query string, the document refuses one.
    let a = get(&web.url(&format!("{DOC}?format=yaml"))).unwrap();
    assert_json_error(&a, 400, Some("query"), "a query string on the document");
}

#[test]
fn the_documented_bounds_are_the_servers() {
    let web = Web::start(JournalMode::Delete, &[]);
    let doc = document(&web);
    let list = web.url("/api/build-requests");

    // limit: its maximum is served, one more is refused; likewise its minimum.
    let limit = &query_parameter(&doc, "/api/build-requests", "get", "limit")["schema"];
    let (min, max) = (
        limit["minimum"].as_i64().unwrap(),
        limit["maximum"].as_i64().unwrap(),
    );
    assert_eq!((min, max), (1, 500), "{limit}");
    for (limit, status) in [(max, 200), (max + 1, 422), (min, 200), (min - 1, 422)] {
        let a = get(&format!("{list}?limit={limit}")).unwrap();
        assert_eq!(a.status, status, "limit={limit}: {a:?}");
    }

    // after: 0 is the first page, -1 is refused.
    let after = &query_parameter(&doc, "/api/build-requests", "get", "after")["schema"];
    let min = after["minimum"].as_i64().unwrap();
    assert_eq!(get(&format!("{list}?after={min}")).unwrap().status, 200);
    let a = get(&format!("{list}?after={}", min - 1)).unwrap();
    assert_json_error(&a, 422, Some("after"), "after below its minimum");

    // state: every documented state filters, and nothing else does.
    let state = resolve(
        &doc,
        &query_parameter(&doc, "/api/build-requests", "get", "state")["schema"],
    );
    let states = state["enum"].as_array().unwrap();
    assert_eq!(states.len(), schema::types::RequestState::ALL.len());
    for s in states {
        let a = get(&format!("{list}?state={}", s.as_str().unwrap())).unwrap();
        assert_eq!(a.status, 200, "state={s}: {a:?}");
    }
    let a = get(&format!("{list}?state=queue")).unwrap();
    assert_json_error(&a, 422, Some("state"), "an undocumented state");

    // The create body: count and needs past their documented maxima are
    // refused, the maxima accepted (needs come from the registered
    // environments: 3 qemux86 and 2 qemuarm).
    let body = resolve(
        &doc,
        &doc["paths"]["/api/build-requests"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"],
    );
    let props = &body["properties"];
    let count_max = props["count"]["maximum"].as_i64().unwrap();
    assert_eq!(count_max, 1000);
    let a = post_json(&list, &json!({"project": "p", "count": count_max + 1})).unwrap();
    assert_json_error(&a, 422, Some("count"), "count past its maximum");
    let needs = &props["needs"];
    assert_eq!(needs["additionalProperties"], false, "{needs}");
    let kinds = needs["properties"].as_object().unwrap();
    assert_eq!(
        kinds.keys().map(String::as_str).collect::<Vec<_>>(),
        ["qemuarm", "qemux86"]
    );
    for (kind, schema) in kinds {
        let max = schema["maximum"].as_i64().unwrap();
        let a = post_json(
            &list,
            &json!({"project": "p", "count": 1, "needs": {kind: max + 1}}),
        )
        .unwrap();
        assert_json_error(&a, 422, Some("needs"), &format!("{kind} past its maximum"));
        let a = post_json(
            &list,
            &json!({"project": "p", "count": 1, "needs": {kind: max}}),
        )
        .unwrap();
        assert_eq!(a.status, 201, "{kind}: {max}: {a:?}");
    }
    let a = post_json(
        &list,
        &json!({"project": "p", "count": 1, "needs": {"riscv": 1}}),
    )
    .unwrap();
    assert_json_error(&a, 422, Some("needs"), "a kind the document does not name");

    // project: at its maximum length accepted, one more refused.
    let max = props["project"]["maxLength"].as_u64().unwrap() as usize;
    let a = post_json(&list, &json!({"project": "é".repeat(max), "count": 1})).unwrap();
    assert_eq!(a.status, 201, "{a:?}");
    let a = post_json(&list, &json!({"project": "é".repeat(max + 1), "count": 1})).unwrap();
    assert_json_error(&a, 422, Some("project"), "project past its maxLength");
}

/// The error answers are the documented ErrorBody: no key it does not name.
#[test]
fn error_answers_have_the_documented_shape() {
    let web = Web::start(JournalMode::Delete, &[]);
    let doc = document(&web);
    let error = &doc["components"]["schemas"]["ErrorBody"];
    assert_eq!(error["additionalProperties"], false, "{error}");
    let keys: BTreeSet<&str> = error["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let answers = [
        send(
            "POST",
            &web.url("/api/build-requests"),
            "text/plain",
            b"x",
            &[],
        )
        .unwrap(),
        get(&web.url("/api/build-requests?limit=0")).unwrap(),
        get(&web.url("/api/build-requests/12345")).unwrap(),
        send("DELETE", &web.url(DOC), "application/json", b"", &[]).unwrap(),
    ];
    for a in answers {
        let v = a.json();
        for key in v.as_object().unwrap().keys() {
            assert!(keys.contains(key.as_str()), "{key} in {a:?}");
        }
        assert!(v["error"].is_string(), "{a:?}");
    }
}
