//! `/runs`: the reports `locklab run --out DIR` wrote under `LAB_RUNS_DIR`
//! (DIR/report.json, and DIR/NAME/report.json for each immediate subfolder),
//! newest first, each with its per-process table, its timeline and its
//! verdict; and `/runs/files/...`, which serves a run's `timeline.svg` or
//! `matrix.svg` and nothing else.
//!
//! report.json is read with a small local view of it (webui does not depend
//! on the CLI's crate): a field the view does not know is ignored, one it
//! knows but the file lacks is its default.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::{html, PageError};
use crate::App;

/// The most runs the page shows (the newest).
pub const MAX_RUNS: usize = 30;
/// The only files `/runs/files/` serves.
pub const SERVED: &[&str] = &["timeline.svg", "matrix.svg"];

/// The part of report.json the pages show.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RunReport {
    pub preset: String,
    pub backend: String,
    pub duration_s: f64,
    pub processes: Vec<RunProcess>,
    pub verdict: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RunProcess {
    pub name: String,
    pub ops: u64,
    pub ok: u64,
    pub gave_up: u64,
    pub retried: u64,
    pub failed: BTreeMap<String, u64>,
    pub rows_per_s: f64,
}

/// One report found under the runs directory.
#[derive(Debug)]
pub struct Found {
    /// The subfolder's name; "" for the directory itself.
    pub rel: String,
    pub dir: PathBuf,
    pub modified: SystemTime,
    pub report: Result<RunReport, String>,
}

/// The reports under `root`, newest first (by report.json's mtime).
pub fn find_runs(root: &Path) -> std::io::Result<Vec<Found>> {
    let mut candidates = vec![(String::new(), root.to_path_buf())];
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            if let Some(name) = entry.file_name().to_str() {
                candidates.push((name.to_string(), entry.path()));
            }
        }
    }
    let mut found: Vec<Found> = candidates
        .into_iter()
        .filter_map(|(rel, dir)| {
            let file = dir.join("report.json");
            let modified = std::fs::metadata(&file).ok()?.modified().ok()?;
            let report = std::fs::read(&file)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<RunReport>(&b).map_err(|e| e.to_string()));
            Some(Found {
                rel,
                dir,
                modified,
                report,
            })
        })
        .collect();
    found.sort_by(|a, b| b.modified.cmp(&a.modified).then(a.rel.cmp(&b.rel)));
    Ok(found)
}

/// The newest report's verdict: (which run, its lines).
pub fn latest_verdict(root: &Path) -> Option<(String, Vec<String>)> {
    let newest = find_runs(root).ok()?.into_iter().next()?;
    let report = newest.report.ok()?;
    Some((run_label(&newest.rel), report.verdict))
}

fn run_label(rel: &str) -> String {
    if rel.is_empty() {
        "(the runs directory itself)".to_string()
    } else {
        rel.to_string()
    }
}

/// A path segment, percent-encoded for a URL.
pub fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub struct ProcRow {
    pub name: String,
    pub ops: u64,
    pub ok: u64,
    pub gave_up: u64,
    pub retried: u64,
    pub failed: Vec<u64>,
    pub rows_per_s: String,
}

pub struct RunView {
    pub label: String,
    pub anchor: String,
    pub modified: String,
    pub error: String,
    pub preset: String,
    pub backend: String,
    pub duration: String,
    pub classes: Vec<String>,
    pub processes: Vec<ProcRow>,
    pub verdict: Vec<String>,
    pub timeline: Option<String>,
    pub matrix: Option<String>,
}

#[derive(Template)]
#[template(path = "runs.html")]
struct Page {
    title: &'static str,
    active: &'static str,
    /// The directory as set, or "" when unset.
    dir: String,
    /// Why the directory could not be read, if it could not.
    problem: String,
    runs: Vec<RunView>,
    more: usize,
}

fn view(f: Found) -> RunView {
    let file_url = |name: &str| {
        f.dir.join(name).is_file().then(|| {
            if f.rel.is_empty() {
                format!("/runs/files/{name}")
            } else {
                format!("/runs/files/{}/{name}", encode_segment(&f.rel))
            }
        })
    };
    let (timeline, matrix) = (file_url("timeline.svg"), file_url("matrix.svg"));
    let modified = f
        .modified
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| super::when(d.as_micros() as i64))
        .unwrap_or_default();
    let anchor = format!("run-{}", encode_segment(&f.rel).replace('%', "_"));
    let label = run_label(&f.rel);
    match f.report {
        Err(e) => RunView {
            label,
            anchor,
            modified,
            error: format!("report.json could not be read: {e}"),
            preset: String::new(),
            backend: String::new(),
            duration: String::new(),
            classes: Vec::new(),
            processes: Vec::new(),
            verdict: Vec::new(),
            timeline,
            matrix,
        },
        Ok(r) => {
            // The classes any process failed with: one column each.
            let classes: Vec<String> = r
                .processes
                .iter()
                .flat_map(|p| {
                    p.failed
                        .iter()
                        .filter(|(_, n)| **n > 0)
                        .map(|(c, _)| c.clone())
                })
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            RunView {
                label,
                anchor,
                modified,
                error: String::new(),
                preset: r.preset,
                backend: r.backend,
                duration: format!("{:.1} s", r.duration_s),
                processes: r
                    .processes
                    .iter()
                    .map(|p| ProcRow {
                        name: p.name.clone(),
                        ops: p.ops,
                        ok: p.ok,
                        gave_up: p.gave_up,
                        retried: p.retried,
                        failed: classes
                            .iter()
                            .map(|c| p.failed.get(c).copied().unwrap_or(0))
                            .collect(),
                        rows_per_s: format!("{:.1}", p.rows_per_s),
                    })
                    .collect(),
                classes,
                verdict: r.verdict,
                timeline,
                matrix,
            }
        }
    }
}

/// `GET /runs`.
pub async fn list(app: web::Data<App>) -> Result<HttpResponse, PageError> {
    let dir = app.own.runs_dir.as_ref().map(|d| d.value.clone());
    let (runs, more, problem) = match dir.clone() {
        None => (Vec::new(), 0, String::new()),
        Some(dir) => web::block(move || match find_runs(&dir) {
            Ok(mut found) => {
                let more = found.len().saturating_sub(MAX_RUNS);
                found.truncate(MAX_RUNS);
                (found.into_iter().map(view).collect(), more, String::new())
            }
            Err(e) => (Vec::new(), 0, format!("it cannot be read: {e}")),
        })
        .await
        .map_err(|e| PageError::Internal(format!("blocking task failed: {e}")))?,
    };
    html(&Page {
        title: "Runs",
        active: "runs",
        dir: dir.map(|d| d.display().to_string()).unwrap_or_default(),
        problem,
        runs,
        more,
    })
}

/// The file under `root` that `tail` names, if it is a `timeline.svg` or
/// `matrix.svg` inside `root`: no `..`, no absolute path, at most one folder,
/// and no symlink that leads out.
pub fn servable(root: &Path, tail: &str) -> Option<PathBuf> {
    let rel = Path::new(tail);
    let parts: Vec<Component<'_>> = rel.components().collect();
    if parts.is_empty()
        || parts.len() > 2
        || tail.contains('\\')
        || !parts.iter().all(|c| matches!(c, Component::Normal(_)))
    {
        return None;
    }
    let name = rel.file_name()?.to_str()?;
    if !SERVED.contains(&name) {
        return None;
    }
    let root = root.canonicalize().ok()?;
    let file = root.join(rel).canonicalize().ok()?;
    (file.starts_with(&root) && file.is_file()).then_some(file)
}

/// `GET /runs/files/{tail}`: a run's timeline.svg or matrix.svg; anything
/// else is 404.
pub async fn file(app: web::Data<App>, tail: web::Path<String>) -> Result<HttpResponse, PageError> {
    let not_found =
        || PageError::NotFound("Only a run's timeline.svg and matrix.svg are served here.".into());
    let root = app
        .own
        .runs_dir
        .as_ref()
        .map(|d| d.value.clone())
        .ok_or_else(not_found)?;
    let tail = tail.into_inner();
    let body = web::block(move || servable(&root, &tail).and_then(|f| std::fs::read(f).ok()))
        .await
        .map_err(|e| PageError::Internal(format!("blocking task failed: {e}")))?
        .ok_or_else(not_found)?;
    Ok(HttpResponse::Ok()
        .content_type("image/svg+xml")
        // A report's SVG is a picture: no script in it may run, even when it
        // is opened on its own.
        .insert_header((
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'",
        ))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_two_svgs_inside_the_dir_are_servable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("runs");
        std::fs::create_dir_all(root.join("a")).expect("mkdir");
        for f in ["timeline.svg", "a/matrix.svg", "a/report.json"] {
            std::fs::write(root.join(f), "<svg/>").expect("write");
        }
        std::fs::write(dir.path().join("timeline.svg"), "<svg/>").expect("write");
        assert!(servable(&root, "timeline.svg").is_some());
        assert!(servable(&root, "a/matrix.svg").is_some());
        for bad in [
            "a/report.json",
            "../timeline.svg",
            "a/../../timeline.svg",
            "/etc/timeline.svg",
            "./timeline.svg",
            "a/b/timeline.svg",
            "",
            "a\\..\\timeline.svg",
        ] {
            assert!(servable(&root, bad).is_none(), "{bad}");
        }
        // A symlink inside that leads out is refused.
        std::os::unix::fs::symlink(dir.path(), root.join("out")).expect("symlink");
        assert!(servable(&root, "out/timeline.svg").is_none());
    }
}
