//! webui's pages in a real browser: headless Chromium driven over WebDriver
//! (testkit::browser), against the real webui binary on a migrated SQLite file.
//! Every page visited is saved as a screenshot in the artifacts folder
//! (`target/browser-artifacts/`, or `$LOCKLAB_BROWSER_ARTIFACTS`).
//!
//! Every test here is `#[ignore]`d: the README's `cargo test --workspace` needs
//! no browser. `scripts/test-browser` runs them (`-- --ignored browser`); a
//! missing Chromium or chromedriver fails them, never skips them.
//!
//! Adding a page is one small test: `Site::start`, `site.visit("/path", "shot")`
//! (which checks the page answers 200 with HTML, a `locklab` title and one
//! `<h1>`, and saves the screenshot), then what a user should see on it.
//!
//! # The DOM contract these tests assume
//!
//! The tests match on structure and attributes, never on styling or wording
//! beyond what is listed here. The pages from the pages branch follow it.
//!
//! Every page (`/`, `/builds`, `/builds/{id}`, `/environments`, `/new`, `/runs`):
//! - answers `GET` with 200 and `text/html`;
//! - has a `<title>` that names `locklab`, and exactly one `<h1>`, not empty.
//!
//! `/builds`: a link `a[href="/builds/{id}"]` for each build.
//! `/builds/{id}`: its `<h1>` contains the build's id.
//!
//! `/environments`: the name of every registered environment (`qemux86-1`, ...)
//! appears in the page's text.
//!
//! `/new`: a `<form method="post">` whose action is `/new` (or empty), with
//! - inputs (or selects) named `project`, `count` and `needs`, each with a
//!   `<label>` (`<label for=...>` or a wrapping label: `input.labels` is not
//!   empty), and a submit button (`button[type=submit]` or `input[type=submit]`);
//! - `needs` a text field in the `--environments` format, `kind:n[,kind:n]`
//!   (empty: no constraint);
//! - a valid post creates the requests (answering with a redirect or a page
//!   without any `aria-invalid="true"` field);
//! - an invalid post answers on `/new` again with the values entered kept; each
//!   invalid field has `aria-invalid="true"` and `aria-describedby` naming the
//!   element that holds its message (not empty), and that element shares a
//!   parent with the field (the message is next to it); nothing is stored.
//!
//! `/` (the live dashboard): each counter is an element with
//! `data-counter="PROCESS.FIELD"`, e.g. `data-counter="webui.ok"`, where
//! PROCESS is a daemon's `--name` and FIELD a field of its stats (`ops`, `ok`,
//! `retried`, `gave_up`, ...); its text is the integer, optionally with digit
//! separators. JavaScript polls and updates the counters in place at least
//! every 2 s, without reloading the page.

use std::collections::BTreeMap;
use std::time::Duration;

use schema::models::{Build, Environment};
use schema::settings::JournalMode;
use serde_json::{json, Value};
use testkit::browser::{artifacts_dir, Browser};
use testkit::{get, send};

use crate::Web;

/// How long a page may take to change after an action.
const WITHIN: Duration = Duration::from_secs(15);

/// A webui on a fresh lab and a headless Chromium looking at it. Field order
/// matters: the browser quits (saving the page if the test failed) before
/// webui is killed and its temp dir removed.
struct Site {
    browser: Browser,
    web: Web,
    /// One browser test at a time, and never beside a contention test: two
    /// Chromiums on two cores distort timings.
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Site {
    /// Starts webui and a browser whose screenshots are named after `label`.
    fn start(label: &str) -> Site {
        let serial = crate::serial();
        let web = Web::start(JournalMode::Delete, &["--busy-timeout", "2s"]);
        let browser = Browser::start(&format!("browser-{label}")).unwrap();
        Site {
            browser,
            web,
            _serial: serial,
        }
    }

    fn url(&self, path: &str) -> String {
        self.web.url(path)
    }

    /// Opens `path` and checks what every page promises: HTTP 200 with HTML (a
    /// browser cannot see the status, so it is asked first over HTTP), a
    /// `locklab` title and exactly one non-empty `<h1>`. Saves the screenshot
    /// `shot` and returns the `<h1>`'s text.
    fn visit(&self, path: &str, shot: &str) -> String {
        let url = self.url(path);
        let a = get(&url).unwrap();
        assert_eq!(a.status, 200, "GET {path}: {a:?}");
        assert!(a.content_type.starts_with("text/html"), "GET {path}: {a:?}");
        self.browser.goto(&url).unwrap();
        self.page_checks(path);
        self.shot(shot);
        self.browser.find("h1").unwrap().text().unwrap()
    }

    /// The checks of [`Site::visit`] on the page the browser shows now.
    fn page_checks(&self, what: &str) {
        let b = &self.browser;
        let title = b.title().unwrap();
        assert!(title.contains("locklab"), "{what}: title {title:?}");
        let h1 = b.find_all("h1").unwrap();
        assert_eq!(h1.len(), 1, "{what}: {} <h1>", h1.len());
        assert!(
            !h1[0].text().unwrap().trim().is_empty(),
            "{what}: empty <h1>"
        );
    }

    fn shot(&self, name: &str) {
        let path = self.browser.screenshot(name).unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len > 1000, "{} is only {len} bytes", path.display());
    }

    /// Creates `count` requests of `project` through the JSON API, with an
    /// X-Request-Id, and returns their ids.
    fn create(&self, project: &str, count: u32, request_id: &str) -> Vec<i64> {
        let body = json!({"project": project, "count": count}).to_string();
        let a = send(
            "POST",
            &self.url("/api/build-requests"),
            "application/json",
            body.as_bytes(),
            &[("X-Request-Id", request_id)],
        )
        .unwrap();
        crate::created_ids(&a)
    }

    /// The row of request `id` in the table whose header names the columns
    /// `id` and `project`, as column name to cell text (None when absent).
    fn request_row(&self, id: i64) -> Option<BTreeMap<String, String>> {
        let v = self
            .browser
            .execute(
                "for (const table of document.querySelectorAll('table')) {
                   const head = [...table.rows[0].cells].map(c => c.textContent.trim());
                   if (!head.includes('id') || !head.includes('project')) continue;
                   const at = head.indexOf('id');
                   for (const tr of [...table.rows].slice(1)) {
                     const cells = [...tr.cells].map(c => c.textContent.trim());
                     if (cells[at] === arguments[0])
                       return Object.fromEntries(head.map((h, i) => [h, cells[i]]));
                   }
                 }
                 return null;",
                &[Value::String(id.to_string())],
            )
            .unwrap();
        serde_json::from_value(v).unwrap()
    }

    /// The texts of the `<h2>` headings.
    fn headings(&self) -> Vec<String> {
        self.browser
            .find_all("h2")
            .unwrap()
            .iter()
            .map(|h| h.text().unwrap())
            .collect()
    }

    /// The names of the environments registered in the lab file.
    fn environment_names(&self) -> Vec<String> {
        let names: Vec<String> = Environment::all(self.web.conn().diesel())
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert!(!names.is_empty());
        names
    }
}

// The dashboard at `/`.

#[test]
#[ignore = "needs chromium and chromium-driver; run by scripts/test-browser"]
fn index_shows_the_process_its_settings_and_the_environments() {
    let site = Site::start("index");
    let h1 = site.visit("/", "index");
    assert!(h1.contains("webui"), "the <h1> names the process: {h1:?}");
    assert_eq!(site.browser.title().unwrap(), "Dashboard · locklab");

    let headings = site.headings();
    for h in [
        "Processes",
        "Failures over time",
        "Who holds the write lock",
        "Settings",
        "Requests by state",
        "Environments",
        "Recent requests",
    ] {
        assert!(headings.iter().any(|x| x == h), "no {h:?} in {headings:?}");
    }
    // The dashboard counts environments per kind (/environments lists each).
    let text = site.browser.find("body").unwrap().text().unwrap();
    for name in site.environment_names() {
        let kind = name.rsplit_once('-').map_or(name.as_str(), |(k, _)| k);
        assert!(text.contains(kind), "environment kind {kind} not shown");
    }
    assert!(
        site.browser
            .current_url()
            .unwrap()
            .starts_with(&site.web.child.url),
        "the browser is on webui"
    );
}

#[test]
#[ignore = "needs chromium and chromium-driver; run by scripts/test-browser"]
fn the_recent_requests_table_shows_a_request_made_through_the_api() {
    let site = Site::start("index-request");
    site.visit("/", "index-empty");
    let ids = site.create("p", 1, "browser-rid-1");
    assert_eq!(ids.len(), 1);
    let id = ids[0];

    site.visit("/", "index-with-request");
    let row = site
        .request_row(id)
        .unwrap_or_else(|| panic!("request {id} is not in the table"));
    assert_eq!(row["project"], "p", "{row:?}");
    assert_eq!(row["state"], "queued", "{row:?}");
    assert_eq!(row["X-Request-Id"], "browser-rid-1", "{row:?}");
}

// pages from the pages branch
/// The pages being written on the pages branch, after the DOM contract at the
/// top of this file; they pass once that branch is merged. Run the rest alone
/// with `scripts/test-browser --skip browser::pages`.
mod pages {
    use super::*;

    /// The build of one request made through the API, claimed by a real runbuilds
    /// and ingested (5 events) by a real buildinfohelper.
    fn one_build(site: &Site) -> (i64, Vec<daemon::spawn::Child>) {
        site.create("p", 1, "browser-build");
        let lab = &site.web.lab;
        let daemons = vec![
            lab.start("runbuilds", "runbuilds", &["--poll-interval", "100ms"])
                .unwrap(),
            lab.start(
                "buildinfohelper",
                "buildinfohelper",
                &["--events-per-build", "5"],
            )
            .unwrap(),
        ];
        let id = testkit::wait_for("a build", WITHIN, || {
            let builds = Build::all(site.web.conn().diesel()).ok()?;
            builds.first().map(|b| b.id.0)
        })
        .unwrap();
        (id, daemons)
    }

    #[test]
    #[ignore = "needs chromium and chromium-driver; run by scripts/test-browser"]
    fn the_builds_list_links_to_each_build() {
        // pages from the pages branch
        let site = Site::start("builds");
        let (id, _daemons) = one_build(&site);
        site.visit("/builds", "builds");
        let b = &site.browser;
        let link = b.find(&format!("a[href=\"/builds/{id}\"]")).unwrap();
        b.click_and_wait_for_load(&link, WITHIN).unwrap();
        assert_eq!(b.current_path().unwrap(), format!("/builds/{id}"));
        site.page_checks("the build page");
        site.shot("build");
        let h1 = b.find("h1").unwrap().text().unwrap();
        assert!(h1.contains(&id.to_string()), "{h1:?} names build {id}");
    }

    #[test]
    #[ignore = "needs chromium and chromium-driver; run by scripts/test-browser"]
    fn a_build_page_answers() {
        // pages from the pages branch
        let site = Site::start("build");
        let (id, _daemons) = one_build(&site);
        let h1 = site.visit(&format!("/builds/{id}"), "build");
        assert!(h1.contains(&id.to_string()), "{h1:?} names build {id}");
    }

    #[test]
    #[ignore = "needs chromium and chromium-driver; run by scripts/test-browser"]
    fn environments_lists_every_environment() {
        // pages from the pages branch
        let site = Site::start("environments");
        site.visit("/environments", "environments");
        let text = site.browser.find("body").unwrap().text().unwrap();
        for name in site.environment_names() {
            assert!(text.contains(&name), "environment {name} not shown");
        }
    }

    #[test]
    #[ignore = "needs chromium and chromium-driver; run by scripts/test-browser"]
    fn runs_answers() {
        // pages from the pages branch
        let site = Site::start("runs");
        site.visit("/runs", "runs");
    }

    /// What the form's fields say about themselves: for each name, whether it is
    /// labelled, its value, `aria-invalid`, and the text of the element its
    /// `aria-describedby` names and whether that element shares a parent with it.
    fn fields(site: &Site) -> Value {
        site.browser
            .execute(
                "const out = {};
                 for (const name of ['project', 'count', 'needs']) {
                   const f = document.querySelector(`form [name=\"${name}\"]`);
                   if (!f) { out[name] = null; continue; }
                   const ids = (f.getAttribute('aria-describedby') || '').split(' ').filter(Boolean);
                   const named = ids.map(i => document.getElementById(i)).filter(Boolean);
                   const msg = named.find(e => e.id.endsWith('-error')) || null;
                   out[name] = {
                     labelled: f.labels !== null && f.labels.length > 0,
                     value: f.value,
                     invalid: f.getAttribute('aria-invalid') === 'true',
                     message: msg ? msg.textContent.trim() : null,
                     beside: msg !== null && (msg.parentElement.contains(f)
                                              || f.parentElement.contains(msg)),
                   };
                 }
                 return out;",
                &[],
            )
            .unwrap()
    }

    /// Fills the form's fields and submits it with its button.
    fn submit_new(site: &Site, project: &str, count: &str, needs: &str) {
        let b = &site.browser;
        for (name, value) in [("project", project), ("count", count), ("needs", needs)] {
            let f = b.find(&format!("form [name=\"{name}\"]")).unwrap();
            f.clear().unwrap();
            f.send_keys(value).unwrap();
        }
        let button = b
            .find("form button[type=submit], form input[type=submit]")
            .unwrap();
        b.click_and_wait_for_load(&button, WITHIN).unwrap();
    }

    #[test]
    #[ignore = "needs chromium and chromium-driver; run by scripts/test-browser"]
    fn new_is_a_form_of_labelled_fields() {
        // pages from the pages branch
        let site = Site::start("new-form");
        site.visit("/new", "new");
        let b = &site.browser;
        let form = b.find("form").unwrap();
        assert_eq!(
            form.attr("method").unwrap().map(|m| m.to_lowercase()),
            Some("post".to_string())
        );
        let action = b
            .execute(
                "return new URL(arguments[0].action).pathname;",
                &[form.as_arg()],
            )
            .unwrap();
        assert_eq!(action, "/new", "the form posts back to /new");
        let fields = fields(&site);
        for name in ["project", "count", "needs"] {
            assert!(fields[name].is_object(), "no field {name}: {fields}");
            assert_eq!(fields[name]["labelled"], true, "{name} has no label");
            assert_eq!(fields[name]["invalid"], false, "{name} invalid at first");
        }
        b.find("form button[type=submit], form input[type=submit]")
            .unwrap();
    }

    #[test]
    #[ignore = "needs chromium and chromium-driver; run by scripts/test-browser"]
    fn new_creates_the_requests() {
        // pages from the pages branch
        let site = Site::start("new-valid");
        site.visit("/new", "new-before");
        submit_new(&site, "from-the-form", "2", "qemux86:1");
        site.page_checks("after a valid post");
        site.shot("new-after");
        let invalid = site.browser.find_all("[aria-invalid=\"true\"]").unwrap();
        assert!(invalid.is_empty(), "a valid post shows invalid fields");
        assert_eq!(site.web.request_rows(), 2);
        assert!(site.web.has_project("from-the-form"));
    }

    #[test]
    #[ignore = "needs chromium and chromium-driver; run by scripts/test-browser"]
    fn new_shows_each_error_next_to_its_field() {
        // pages from the pages branch
        let site = Site::start("new-invalid");
        site.visit("/new", "new-before");
        // The form checks as the API does, first error first: one bad field
        // per post, each answered next to its own field.
        for (bad, project, count, needs) in [
            ("project", "", "1", ""),
            ("count", "p", "0", ""),
            ("needs", "p", "1", "nosuchkind:1"),
        ] {
            submit_new(&site, project, count, needs);
            assert_eq!(site.browser.current_path().unwrap(), "/new");
            site.page_checks("after an invalid post");
            site.shot(&format!("new-error-{bad}"));
            let fields = fields(&site);
            let f = &fields[bad];
            assert_eq!(f["invalid"], true, "{bad} not marked invalid: {fields}");
            let message = f["message"].as_str().unwrap_or_default();
            assert!(!message.is_empty(), "{bad} has no message: {fields}");
            assert_eq!(f["beside"], true, "{bad}'s message is not beside it");
            for other in ["project", "count", "needs"].iter().filter(|o| **o != bad) {
                assert_eq!(fields[*other]["invalid"], false, "{other}: {fields}");
            }
            assert_eq!(
                fields["count"]["value"], count,
                "the values entered are kept"
            );
            assert_eq!(fields["needs"]["value"], needs);
        }
        assert_eq!(site.web.request_rows(), 0, "nothing is stored");
    }

    /// The integer a counter element shows (digit separators dropped).
    fn counter(site: &Site, name: &str) -> anyhow::Result<u64> {
        let text = site
            .browser
            .find(&format!("[data-counter=\"{name}\"]"))?
            .text()?;
        let digits: String = text.chars().filter(char::is_ascii_digit).collect();
        digits
            .parse()
            .map_err(|e| anyhow::anyhow!("counter {name} shows {text:?}: {e}"))
    }

    #[test]
    #[ignore = "needs chromium and chromium-driver; run by scripts/test-browser"]
    fn the_dashboard_counts_without_a_reload() {
        // pages from the pages branch
        let site = Site::start("dashboard");
        site.visit("/", "dashboard-before");
        let b = &site.browser;
        let before = counter(&site, "webui.ok").unwrap();
        b.mark_document().unwrap();

        const N: u64 = 3;
        for i in 0..N {
            site.create("p", 1, &format!("browser-dashboard-{i}"));
        }
        let after = b
            .wait_until("webui.ok to count the creates", WITHIN, |_| {
                let now = counter(&site, "webui.ok")?;
                Ok((now >= before + N).then_some(now))
            })
            .unwrap();
        assert!(
            b.document_is_marked().unwrap(),
            "the page reloaded: the counter must change in place"
        );
        site.shot("dashboard-after");
        eprintln!(
            "browser: webui.ok went from {before} to {after} in place; screenshots in {}",
            artifacts_dir().unwrap().display()
        );
    }
}
