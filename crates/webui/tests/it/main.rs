//! End-to-end tests of webui: the real `target/<profile>/webui` binary on a
//! real, migrated SQLite file in a temp dir, driven over HTTP. Row counts come
//! from the schema crate's models, never from SQL written here.
//!
//! Run `cargo build --workspace` first: the tests spawn the built binary.
#![allow(clippy::unwrap_used)]

mod bad_input;
mod browser;
mod create;
mod endpoints;
mod lock;
mod openapi;
mod pages;
mod shutdown;
mod startup;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use daemon::spawn::Child;
use schema::db::{LabConn, Policy};
use schema::models::{BuildRequest, Project};
use schema::settings::JournalMode;
use testkit::{get, Answer, TestLab};

/// The environments every test registers: 3 qemux86 and 2 qemuarm.
pub const ENVIRONMENTS: &str = "qemux86:3,qemuarm:2";

/// Contention tests run one at a time: two of them at once on two cores distort
/// each other.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A migrated lab file and a webui running on it. Field order matters: the
/// daemon is killed (dropped) before its temp dir is removed.
pub struct Web {
    pub child: Child,
    pub lab: TestLab,
}

impl Web {
    /// Migrates a fresh file and starts webui on it with the caller's extra
    /// flags, and a 200 ms busy timeout unless they set one.
    pub fn start(journal: JournalMode, extra: &[&str]) -> Web {
        let lab = TestLab::new(journal, ENVIRONMENTS).unwrap();
        let mut args = extra.to_vec();
        if !args.contains(&"--busy-timeout") {
            args.extend(["--busy-timeout", "200ms"]);
        }
        let child = lab.start("webui", "webui", &args).unwrap();
        Web { child, lab }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.child.url)
    }

    /// A connection of the test's own, with the default policy.
    pub fn conn(&self) -> LabConn {
        self.lab.conn(Policy::default()).unwrap()
    }

    /// Rows in build_request.
    pub fn request_rows(&self) -> i64 {
        BuildRequest::count(self.conn().diesel()).unwrap()
    }

    /// Rows in project.
    pub fn project_rows(&self) -> i64 {
        Project::count(self.conn().diesel()).unwrap()
    }

    /// Whether a project of exactly this name is stored.
    pub fn has_project(&self, name: &str) -> bool {
        Project::find(self.conn().diesel(), name).unwrap().is_some()
    }

    /// The body of GET /api/stats.
    pub fn stats(&self) -> serde_json::Value {
        let a = get(&self.url("/api/stats")).unwrap();
        assert_eq!(a.status, 200, "{a:?}");
        a.json()
    }

    /// Operations of one kind counted so far (0 when none started).
    pub fn ops_of(&self, op: &str) -> u64 {
        self.stats()["by_op"][op]["ops"].as_u64().unwrap_or(0)
    }
}

/// Creates `count` requests of `project` through the JSON API; their ids.
pub fn create(web: &Web, project: &str, count: i64) -> Vec<i64> {
    let a = testkit::post_json(
        &web.url("/api/build-requests"),
        &serde_json::json!({"project": project, "count": count}),
    )
    .unwrap();
    created_ids(&a)
}

/// The ids of a create's 201 answer (which it asserts).
pub fn created_ids(a: &Answer) -> Vec<i64> {
    assert_eq!(a.status, 201, "{a:?}");
    a.json()["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect()
}

/// Asserts a JSON error answer: the status, `Content-Type: application/json`,
/// a non-empty `error`, and `field` exactly as given (absent when None).
pub fn assert_json_error(a: &Answer, status: u16, field: Option<&str>, case: &str) {
    assert_eq!(a.status, status, "{case}: {a:?}");
    assert!(
        a.content_type.starts_with("application/json"),
        "{case}: content type {:?}",
        a.content_type
    );
    let v = a.json();
    let error = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{case}: no error in {a:?}"));
    assert!(!error.is_empty(), "{case}: empty error");
    assert_eq!(v["field"].as_str(), field, "{case}: field in {a:?}");
}

/// Sends raw bytes to the daemon at `url` (`http://ADDR`) and reads the answer
/// until the server closes the connection: for requests an HTTP client will not
/// make (no Content-Type, a Content-Length that lies). Send `Connection: close`.
pub fn raw(url: &str, request: &[u8]) -> Answer {
    let addr = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // The server may answer (and close) before it has read everything.
    let _ = stream.write_all(request);
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if bytes.is_empty() => panic!("no answer from {url}: {e}"),
            Err(_) => break,
        }
    }
    parse_answer(&bytes)
}

fn parse_answer(bytes: &[u8]) -> Answer {
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP answer: {:?}", String::from_utf8_lossy(bytes)));
    let head = String::from_utf8_lossy(&bytes[..split]).to_string();
    let body = &bytes[split + 4..];
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let mut content_type = String::new();
    let mut retry_after = None;
    let mut length = None;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let v = v.trim().to_string();
            match k.trim().to_ascii_lowercase().as_str() {
                "content-type" => content_type = v,
                "retry-after" => retry_after = Some(v),
                "content-length" => length = v.parse::<usize>().ok(),
                _ => {}
            }
        }
    }
    let body = match length {
        Some(n) if n <= body.len() => &body[..n],
        _ => body,
    };
    Answer {
        status,
        content_type,
        retry_after,
        body: String::from_utf8_lossy(body).to_string(),
    }
}
