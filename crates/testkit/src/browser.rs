//! A small W3C WebDriver client for browser tests: headless Chromium driven by
//! `chromedriver` over HTTP (ureq), without a WebDriver crate.
//!
//! [`Browser::start`] starts `chromedriver --port=0` (the driver picks a free
//! loopback port and prints it, so there is no race for a port between
//! parallel tests), waits until `GET /status` says ready, and opens a session
//! of headless Chromium. Dropping the [`Browser`] deletes the session (which
//! quits Chromium) and kills chromedriver's process group; if the thread is
//! panicking, a screenshot and the page source of the failure are saved first.
//!
//! Screenshots go to [`artifacts_dir`]: `$LOCKLAB_BROWSER_ARTIFACTS`, or
//! `browser-artifacts/` in the target directory of the running test
//! (`target/browser-artifacts/` in a plain checkout), named
//! `<label>-<name>.png` after the browser's label (the test) and the shot.
//!
//! A missing Chromium or chromedriver is an error that says how to install
//! them, never a skip. Environment:
//! - `CHROME_BIN`: the browser binary (default `/usr/bin/chromium`);
//! - `CHROMEDRIVER`: the driver binary (default `chromedriver` on the PATH);
//! - `LOCKLAB_BROWSER_ARTIFACTS`: where screenshots go.
//!
//! Waiting is always polling with a deadline ([`Browser::wait_until`]), never a
//! fixed sleep.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;
use serde_json::{json, Value};

/// The key under which W3C WebDriver names an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// What to say when a binary is missing.
const INSTALL: &str = "the browser tests need Chromium and its WebDriver: \
                       `sudo apt-get install chromium chromium-driver` (Debian/Ubuntu)";

/// How long the driver and the browser may take to start, and a page to load.
const STARTUP: Duration = Duration::from_secs(30);
const PAGE_LOAD: Duration = Duration::from_secs(30);

/// How often [`Browser::wait_until`] asks again.
const POLL: Duration = Duration::from_millis(100);

/// Where screenshots go: `$LOCKLAB_BROWSER_ARTIFACTS`, or `browser-artifacts`
/// beside the running test's profile directory (`target/browser-artifacts`).
pub fn artifacts_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("LOCKLAB_BROWSER_ARTIFACTS").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let profile = daemon::spawn::bin_dir()?;
    let target = profile
        .parent()
        .context("the profile directory has no parent")?;
    Ok(target.join("browser-artifacts"))
}

/// The browser binary: `$CHROME_BIN`, or `/usr/bin/chromium`.
fn chrome_bin() -> anyhow::Result<PathBuf> {
    let bin = std::env::var_os("CHROME_BIN")
        .filter(|b| !b.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !bin.is_file() {
        bail!("the browser {} is missing; {INSTALL}", bin.display());
    }
    Ok(bin)
}

/// The driver binary: `$CHROMEDRIVER`, or `chromedriver` on the PATH.
fn chromedriver_bin() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("CHROMEDRIVER").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("CHROMEDRIVER={} is missing; {INSTALL}", bin.display());
        }
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("chromedriver"))
        .find(|p| p.is_file())
        .with_context(|| format!("chromedriver is not on the PATH; {INSTALL}"))
}

/// The running chromedriver, in its own process group, killed on drop.
struct Driver {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    url: String,
    log: PathBuf,
    /// Holds the log; removed after the driver is killed (field order).
    _dir: tempfile::TempDir,
}

impl Driver {
    fn start() -> anyhow::Result<Driver> {
        let bin = chromedriver_bin()?;
        let dir = tempfile::tempdir().context("creating a temp dir for chromedriver")?;
        let log = dir.path().join("chromedriver.log");
        let out = std::fs::File::create(&log).context("creating chromedriver's log")?;
        let err = out.try_clone().context("sharing chromedriver's log")?;
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new(&bin)
                .arg("--port=0")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                // Its own group, so that drop also ends a Chromium it left.
                .process_group(0)
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?
        };
        let mut driver = Driver {
            child,
            url: String::new(),
            log,
            _dir: dir,
        };
        // chromedriver prints `ChromeDriver was started successfully on port N.`
        let deadline = Instant::now() + STARTUP;
        let port = loop {
            let text = driver.log_text();
            if let Some(port) = started_port(&text) {
                break port;
            }
            if let Ok(Some(status)) = driver.child.try_wait() {
                bail!("chromedriver exited ({status}) before it listened:\n{text}");
            }
            if Instant::now() >= deadline {
                bail!("chromedriver did not say its port within {STARTUP:?}:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        driver.url = format!("http://127.0.0.1:{port}");
        let agent = agent();
        loop {
            let ready = call(&agent, "GET", &format!("{}/status", driver.url), None)
                .ok()
                .is_some_and(|v| v["ready"] == Value::Bool(true));
            if ready {
                return Ok(driver);
            }
            if Instant::now() >= deadline {
                bail!(
                    "chromedriver at {} not ready within {STARTUP:?}:\n{}",
                    driver.url,
                    driver.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Ok(pid) = i32::try_from(self.child.id()) {
                // SAFETY: kill(2) on the process group of our own child, which
                // process_group(0) made its leader.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The port in chromedriver's start line.
fn started_port(log: &str) -> Option<u16> {
    let (_, rest) = log.split_once("started successfully on port ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(PAGE_LOAD + Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// One WebDriver command: its `value`, or an error carrying WebDriver's error
/// code and message.
fn call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    body: Option<&Value>,
) -> anyhow::Result<Value> {
    let resp = match (method, body) {
        ("GET", _) => agent.get(url).call(),
        ("DELETE", _) => agent.delete(url).call(),
        (_, body) => agent
            .post(url)
            .send_json(body.cloned().unwrap_or_else(|| json!({}))),
    };
    let mut resp = resp.with_context(|| format!("WebDriver {method} {url}"))?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_to_string()
        .with_context(|| format!("reading WebDriver's answer to {method} {url}"))?;
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("WebDriver {method} {url} answered {status}, not JSON: {text}"))?;
    let value = v.get("value").cloned().unwrap_or(Value::Null);
    if status >= 400 || value.get("error").is_some_and(Value::is_string) {
        bail!(
            "WebDriver {method} {url}: {} ({status}): {}",
            value["error"].as_str().unwrap_or("error"),
            value["message"].as_str().unwrap_or(&text)
        );
    }
    Ok(value)
}

/// A headless Chromium session. Screenshots are named after `label`.
pub struct Browser {
    label: String,
    session: String,
    agent: ureq::Agent,
    /// Dropped after the session is deleted (see Drop).
    driver: Driver,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium (1280×900). `label` names
    /// this browser's screenshots, usually the test's name.
    pub fn start(label: &str) -> anyhow::Result<Browser> {
        let chrome = chrome_bin()?;
        let driver = Driver::start()?;
        let agent = agent();
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "timeouts": {
                        "pageLoad": PAGE_LOAD.as_millis() as u64,
                        "script": 10_000,
                        "implicit": 0
                    },
                    "goog:chromeOptions": {
                        "binary": chrome,
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--window-size=1280,900",
                            "--no-first-run",
                            "--no-default-browser-check"
                        ]
                    }
                }
            }
        });
        let session = call(
            &agent,
            "POST",
            &format!("{}/session", driver.url),
            Some(&caps),
        )
        .with_context(|| {
            format!(
                "starting headless {} (chromedriver's log:\n{})",
                chrome.display(),
                driver.log_text()
            )
        })?;
        let session = session["sessionId"]
            .as_str()
            .context("no sessionId in WebDriver's new session")?
            .to_string();
        Ok(Browser {
            label: sanitize(label),
            session,
            agent,
            driver,
        })
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}/session/{}{path}", self.driver.url, self.session);
        call(&self.agent, method, &url, body.as_ref())
    }

    /// Opens `url` and waits until the page has loaded.
    pub fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.cmd("POST", "/url", Some(json!({ "url": url })))
            .map(drop)
    }

    /// The address of the current page.
    pub fn current_url(&self) -> anyhow::Result<String> {
        as_string(self.cmd("GET", "/url", None)?, "the current URL")
    }

    /// The path of the current page (`/new`, `/builds/3`).
    pub fn current_path(&self) -> anyhow::Result<String> {
        as_string(
            self.execute("return location.pathname", &[])?,
            "location.pathname",
        )
    }

    /// The page's `<title>`.
    pub fn title(&self) -> anyhow::Result<String> {
        as_string(self.cmd("GET", "/title", None)?, "the title")
    }

    /// The page's HTML as the browser now holds it.
    pub fn source(&self) -> anyhow::Result<String> {
        as_string(self.cmd("GET", "/source", None)?, "the page source")
    }

    /// The first element matching `css`, or an error naming the selector.
    pub fn find(&self, css: &str) -> anyhow::Result<Element<'_>> {
        let v = self
            .cmd("POST", "/element", Some(by_css(css)))
            .with_context(|| format!("finding {css:?}"))?;
        self.element(&v)
    }

    /// Every element matching `css` (none is not an error).
    pub fn find_all(&self, css: &str) -> anyhow::Result<Vec<Element<'_>>> {
        let v = self
            .cmd("POST", "/elements", Some(by_css(css)))
            .with_context(|| format!("finding every {css:?}"))?;
        v.as_array()
            .context("WebDriver's elements are not a list")?
            .iter()
            .map(|e| self.element(e))
            .collect()
    }

    fn element(&self, v: &Value) -> anyhow::Result<Element<'_>> {
        let id = v[ELEMENT_KEY]
            .as_str()
            .with_context(|| format!("not an element reference: {v}"))?;
        Ok(Element {
            browser: self,
            id: id.to_string(),
        })
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the page
    /// and returns what it returns. Pass elements with [`Element::as_arg`].
    pub fn execute(&self, script: &str, args: &[Value]) -> anyhow::Result<Value> {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .with_context(|| format!("executing {script:?}"))
    }

    /// Polls `f` every 100 ms until it returns `Ok(Some(_))`, or fails after
    /// `within` with the last error `f` returned (an element not there yet is
    /// an error while waiting, not a failure).
    pub fn wait_until<T>(
        &self,
        what: &str,
        within: Duration,
        mut f: impl FnMut(&Browser) -> anyhow::Result<Option<T>>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + within;
        loop {
            let last = match f(self) {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => None,
                Err(e) => Some(e),
            };
            if Instant::now() >= deadline {
                let timed_out = format!("timed out after {within:?} waiting for {what}");
                return Err(match last {
                    Some(e) => e.context(timed_out),
                    None => anyhow::anyhow!(timed_out),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Marks the current document, so that [`Browser::document_is_marked`]
    /// tells a reload or a navigation (a new document) from the same one.
    pub fn mark_document(&self) -> anyhow::Result<()> {
        self.execute("window.__locklabMark = true;", &[]).map(drop)
    }

    /// Whether the current document is the one [`Browser::mark_document`]
    /// marked.
    pub fn document_is_marked(&self) -> anyhow::Result<bool> {
        Ok(self.execute("return window.__locklabMark === true;", &[])? == Value::Bool(true))
    }

    /// Clicks `el` (a submit button, a link) and waits until a new document
    /// has replaced the current one and finished loading.
    pub fn click_and_wait_for_load(
        &self,
        el: &Element<'_>,
        within: Duration,
    ) -> anyhow::Result<()> {
        self.mark_document()?;
        el.click()?;
        self.wait_until("the next page to load", within, |b| {
            let loaded = b.execute(
                "return window.__locklabMark !== true && document.readyState === 'complete';",
                &[],
            )?;
            Ok((loaded == Value::Bool(true)).then_some(()))
        })
    }

    /// Saves a PNG of the whole page as `<artifacts>/<label>-<name>.png` and
    /// returns its path.
    pub fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let png = self.screenshot_png()?;
        let dir = artifacts_dir()?;
        let path = dir.join(format!("{}-{}.png", self.label, sanitize(name)));
        write(&path, &png)?;
        Ok(path)
    }

    /// The whole page, not only the viewport: W3C WebDriver's screenshot
    /// stops at the window, so this asks Chromium itself (DevTools'
    /// `Page.captureScreenshot` through chromedriver), at most 10,000 px tall.
    fn screenshot_png(&self) -> anyhow::Result<Vec<u8>> {
        let size = self.execute(
            "const e = document.documentElement;
             return [Math.max(e.scrollWidth, window.innerWidth),
                     Math.max(e.scrollHeight, window.innerHeight)];",
            &[],
        )?;
        let (width, height) = match (size[0].as_f64(), size[1].as_f64()) {
            (Some(w), Some(h)) => (w, h.min(10_000.0)),
            _ => bail!("the page's size is not two numbers: {size}"),
        };
        let shot = self
            .cmd(
                "POST",
                "/goog/cdp/execute",
                Some(json!({
                    "cmd": "Page.captureScreenshot",
                    "params": {
                        "format": "png",
                        "captureBeyondViewport": true,
                        "clip": { "x": 0, "y": 0, "width": width, "height": height, "scale": 1 }
                    }
                })),
            )
            .context("taking a screenshot of the whole page")?;
        let b64 = as_string(shot["data"].clone(), "the screenshot")?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .context("decoding the screenshot's base64")?;
        if !png.starts_with(b"\x89PNG\r\n\x1a\n") {
            bail!("the screenshot is not a PNG");
        }
        Ok(png)
    }

    /// What a failed test leaves: the screenshot and the page's HTML.
    fn save_failure(&self) -> anyhow::Result<()> {
        let dir = artifacts_dir()?;
        write(
            &dir.join(format!("{}-FAILED.png", self.label)),
            &self.screenshot_png()?,
        )?;
        write(
            &dir.join(format!("{}-FAILED.html", self.label)),
            self.source()?.as_bytes(),
        )
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if std::thread::panicking() {
            match self.save_failure() {
                Ok(()) => eprintln!(
                    "browser: the failed page of {} is saved in {}",
                    self.label,
                    artifacts_dir().unwrap_or_default().display()
                ),
                Err(e) => eprintln!("browser: could not save the failed page: {e:#}"),
            }
        }
        // Quits Chromium; the driver (and its process group) is killed next.
        let _ = self.cmd("DELETE", "", None);
    }
}

/// An element of the current page.
pub struct Element<'b> {
    browser: &'b Browser,
    id: String,
}

impl Element<'_> {
    fn cmd(&self, method: &str, what: &str, body: Option<Value>) -> anyhow::Result<Value> {
        self.browser
            .cmd(method, &format!("/element/{}{what}", self.id), body)
    }

    /// Its rendered text.
    pub fn text(&self) -> anyhow::Result<String> {
        as_string(self.cmd("GET", "/text", None)?, "the element's text")
    }

    /// An HTML attribute (None when absent).
    pub fn attr(&self, name: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .cmd("GET", &format!("/attribute/{name}"), None)?
            .as_str()
            .map(str::to_string))
    }

    /// A DOM property (`value`, `checked`, ...).
    pub fn property(&self, name: &str) -> anyhow::Result<Value> {
        self.cmd("GET", &format!("/property/{name}"), None)
    }

    /// The first descendant matching `css`.
    pub fn find(&self, css: &str) -> anyhow::Result<Element<'_>> {
        let v = self
            .cmd("POST", "/element", Some(by_css(css)))
            .with_context(|| format!("finding {css:?} inside an element"))?;
        self.browser.element(&v)
    }

    /// Types `text` into it.
    pub fn send_keys(&self, text: &str) -> anyhow::Result<()> {
        self.cmd("POST", "/value", Some(json!({ "text": text })))
            .map(drop)
    }

    /// Empties an input.
    pub fn clear(&self) -> anyhow::Result<()> {
        self.cmd("POST", "/clear", Some(json!({}))).map(drop)
    }

    /// Clicks it.
    pub fn click(&self) -> anyhow::Result<()> {
        self.cmd("POST", "/click", Some(json!({}))).map(drop)
    }

    /// The element as an argument of [`Browser::execute`].
    pub fn as_arg(&self) -> Value {
        json!({ ELEMENT_KEY: self.id })
    }
}

fn by_css(css: &str) -> Value {
    json!({ "using": "css selector", "value": css })
}

fn as_string(v: Value, what: &str) -> anyhow::Result<String> {
    v.as_str()
        .map(str::to_string)
        .with_context(|| format!("{what} is not a string: {v}"))
}

/// Keeps a file name to letters, digits, `-`, `_` and `.`.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_port_from_chromedriver_start_line() {
        let log = "Starting ChromeDriver 156.0 on port 0\nOnly local connections are allowed.\n\
                   ChromeDriver was started successfully on port 40553.\n";
        assert_eq!(started_port(log), Some(40553));
        assert_eq!(started_port("Starting ChromeDriver on port 0\n"), None);
    }

    #[test]
    fn screenshot_names_are_file_names() {
        assert_eq!(
            sanitize("browser::index /builds/1"),
            "browser__index__builds_1"
        );
    }
}
