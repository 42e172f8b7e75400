//! The create view's answer and what it stores.

use schema::models::{BuildRequest, Needs, Project};
use schema::settings::JournalMode;
use schema::types::{RequestId, RequestState};
use serde_json::json;
use testkit::{get, post_json, send};

use crate::Web;

const CREATE: &str = "/api/build-requests";

/// SQL metacharacters, quotes, unicode and markup in one project name.
const HOSTILE: &str = "Robert'); DROP TABLE build_request;-- \"☃\" 東京 <script>x</script> & %_\\";

/// Decodes the entities an HTML escaper writes for `<>&"'`, named or numeric.
fn html_unescape(html: &str) -> String {
    let mut out = html.to_string();
    for (entities, c) in [
        (["&lt;", "&#60;", "&#x3c;"], "<"),
        (["&gt;", "&#62;", "&#x3e;"], ">"),
        (["&quot;", "&#34;", "&#x22;"], "\""),
        (["&apos;", "&#39;", "&#x27;"], "'"),
        (["&amp;", "&#38;", "&#x26;"], "&"),
    ] {
        for e in entities {
            out = out.replace(e, c);
        }
    }
    out
}

#[test]
fn a_hostile_project_name_is_stored_verbatim_and_shown_escaped() {
    let web = Web::start(JournalMode::Delete, &[]);
    let body = json!({"project": HOSTILE, "count": 2}).to_string();
    let a = send(
        "POST",
        &web.url(CREATE),
        "application/json",
        body.as_bytes(),
        &[("X-Request-Id", "<i>rid</i>")],
    )
    .unwrap();
    assert_eq!(a.status, 201, "{a:?}");
    assert_eq!(a.json()["request_id"], "<i>rid</i>");
    let ids: Vec<i64> = a.json()["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);

    // Stored byte for byte, and the table the name tried to drop is intact.
    let mut conn = web.conn();
    let project_id = Project::find(conn.diesel(), HOSTILE)
        .unwrap()
        .expect("the project is found by its exact name");
    let project = Project::by_id(conn.diesel(), project_id).unwrap().unwrap();
    assert_eq!(project.name.as_bytes(), HOSTILE.as_bytes());
    assert_eq!(Project::count(conn.diesel()).unwrap(), 1);
    assert_eq!(BuildRequest::count(conn.diesel()).unwrap(), 2);
    for id in &ids {
        let row = BuildRequest::get(conn.diesel(), RequestId(*id))
            .unwrap()
            .unwrap();
        assert_eq!(row.project_id, project_id);
    }

    // The same name again finds the same project (get_or_create).
    let a = post_json(&web.url(CREATE), &json!({"project": HOSTILE, "count": 1})).unwrap();
    assert_eq!(a.status, 201, "{a:?}");
    assert_eq!(Project::count(conn.diesel()).unwrap(), 1);

    // The page shows it as text, never as markup.
    let page = get(&web.url("/")).unwrap();
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.content_type.starts_with("text/html"), "{page:?}");
    assert!(
        !page.body.contains("<script>x</script>"),
        "raw markup on the page"
    );
    assert!(!page.body.contains("<i>rid</i>"), "raw markup on the page");
    let text = html_unescape(&page.body);
    assert!(
        text.contains(HOSTILE),
        "the whole name is on the page as text"
    );
    assert!(
        text.contains("<i>rid</i>"),
        "the request id is on the page as text"
    );
    assert!(page.body.contains("☃"), "unicode is shown as is");
    assert!(page.body.contains("東京"), "unicode is shown as is");
}

#[test]
fn the_answer_carries_the_request_id_and_the_ids_it_stored() {
    let web = Web::start(JournalMode::Delete, &[]);
    let url = web.url(CREATE);
    let body =
        json!({"project": "ids", "count": 5, "needs": {"qemux86": 2, "qemuarm": 1}, "priority": 7});
    let a = send(
        "POST",
        &url,
        "application/json",
        body.to_string().as_bytes(),
        &[("X-Request-Id", "client-42")],
    )
    .unwrap();
    assert_eq!(a.status, 201, "{a:?}");
    assert!(a.content_type.starts_with("application/json"), "{a:?}");
    let v = a.json();
    assert_eq!(v["request_id"], "client-42");
    let ids: Vec<i64> = v["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 5);
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 5, "distinct ids: {ids:?}");

    let mut conn = web.conn();
    assert_eq!(BuildRequest::count(conn.diesel()).unwrap(), 5);
    for id in &ids {
        let row = BuildRequest::get(conn.diesel(), RequestId(*id))
            .unwrap()
            .unwrap_or_else(|| panic!("row {id} promised by the 201 exists"));
        assert_eq!(row.client_request_id.as_deref(), Some("client-42"));
        assert_eq!(row.state, RequestState::Queued);
        assert_eq!(row.priority, 7);
        assert_eq!(row.submitted_by, "webui");
        assert_eq!(
            row.needs(),
            Needs([("qemux86".to_string(), 2), ("qemuarm".to_string(), 1)].into())
        );
    }
    // The API shows the same row.
    let one = get(&web.url(&format!("{CREATE}/{}", ids[0]))).unwrap();
    assert_eq!(one.status, 200, "{one:?}");
    let one = one.json();
    assert_eq!(one["id"], ids[0]);
    assert_eq!(one["state"], "queued");
    assert_eq!(one["client_request_id"], "client-42");
    assert_eq!(one["needs"], json!({"qemux86": 2, "qemuarm": 1}));

    // Without the header webui makes an id, answers it, and stores it.
    let a = post_json(&url, &json!({"project": "ids", "count": 2})).unwrap();
    assert_eq!(a.status, 201, "{a:?}");
    let v = a.json();
    let made = v["request_id"].as_str().unwrap().to_string();
    assert!(!made.is_empty());
    assert_ne!(made, "client-42");
    let ids: Vec<i64> = v["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    for id in &ids {
        let row = BuildRequest::get(conn.diesel(), RequestId(*id))
            .unwrap()
            .unwrap();
        assert_eq!(row.client_request_id.as_deref(), Some(made.as_str()));
        // Missing needs mean {"qemux86": 1}.
        assert_eq!(row.needs(), Needs::default());
        assert_eq!(
            row.needs(),
            Needs([("qemux86".to_string(), 1)].into()),
            "the default needs"
        );
    }
    // Two calls without the header get two different ids.
    let again = post_json(&url, &json!({"project": "ids", "count": 1})).unwrap();
    assert_eq!(again.status, 201, "{again:?}");
    assert_ne!(again.json()["request_id"].as_str().unwrap(), made);
}

#[test]
fn creates_count_as_ops_with_their_rows() {
    let web = Web::start(JournalMode::Wal, &["--atomic-requests", "true"]);
    for count in [1, 3, 10] {
        let a = post_json(&web.url(CREATE), &json!({"project": "ops", "count": count})).unwrap();
        assert_eq!(a.status, 201, "{a:?}");
    }
    let stats = web.stats();
    let create = &stats["by_op"]["create_request"];
    assert_eq!(create["ops"], 3);
    assert_eq!(create["ok"], 3);
    assert_eq!(create["gave_up"], 0);
    // 14 requests and the project the first create made
    assert_eq!(create["rows_committed"], 15);
    assert_eq!(web.request_rows(), 14);
}

/// The answer's queue_length is the queue before the create, counted up to
/// 1000: the view still reads before it writes, but a long queue costs it at
/// most 1000 index entries (a full COUNT made webui CPU-bound under load).
#[test]
fn queue_length_counts_the_queue_before_the_create_up_to_1000() {
    let web = Web::start(JournalMode::Wal, &[]);
    let url = web.url(CREATE);
    let create = |count: u32| {
        let a = post_json(&url, &json!({"project": "q", "count": count})).unwrap();
        assert_eq!(a.status, 201, "{a:?}");
        a.json()["queue_length"].as_i64().unwrap()
    };
    assert_eq!(create(3), 0);
    assert_eq!(create(1000), 3);
    assert_eq!(create(1), 1000, "1003 queued read as 1000");
    let mut conn = web.conn();
    assert_eq!(BuildRequest::count(conn.diesel()).unwrap(), 1004);
}
