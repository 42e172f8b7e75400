//! A small blocking HTTP client (ureq): no async runtime in the CLI, and no TLS
//! since every daemon is local or on a compose network.

use std::time::{Duration, Instant};

use anyhow::Context;
use ureq::Agent;

pub fn agent(timeout: Duration) -> Agent {
    Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into()
}

/// GET a JSON body; a non-2xx status is an error.
pub fn get_json(agent: &Agent, url: &str) -> anyhow::Result<serde_json::Value> {
    let mut resp = agent
        .get(url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        anyhow::bail!("GET {url}: HTTP {status}");
    }
    resp.body_mut()
        .read_json::<serde_json::Value>()
        .with_context(|| format!("GET {url}: the body is not JSON"))
}

/// POST with an empty JSON body; returns the status.
pub fn post_empty(agent: &Agent, url: &str) -> anyhow::Result<u16> {
    let resp = agent
        .post(url)
        .content_type("application/json")
        .send("{}")
        .with_context(|| format!("POST {url}"))?;
    Ok(resp.status().as_u16())
}

/// Waits until `url` answers 200, or the deadline passes.
pub fn wait_healthy(agent: &Agent, url: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        match agent.get(url).call() {
            Ok(r) if r.status().as_u16() == 200 => return Ok(()),
            Ok(r) if Instant::now() >= deadline => {
                anyhow::bail!("{url} answered HTTP {}", r.status().as_u16())
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(e).with_context(|| format!("{url} did not answer"))
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Waits until `url` answers 200, saying every 5 s what it waits for and why
/// (`what` names the service), and failing with a line that says what to do.
pub fn wait_healthy_verbose(
    agent: &Agent,
    url: &str,
    within: Duration,
    what: &str,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let deadline = started + within;
    let mut last_said = started;
    loop {
        let why = match agent.get(url).call() {
            Ok(r) if r.status().as_u16() == 200 => return Ok(()),
            Ok(r) => format!("it answers HTTP {}", r.status().as_u16()),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            anyhow::bail!(
                "{what} at {url} did not answer within {}: {why}; is it running, and is this \
                 its address (--target / LAB_TARGET)?",
                schema::settings::fmt_duration(within)
            );
        }
        if last_said.elapsed() >= Duration::from_secs(5) {
            last_said = Instant::now();
            eprintln!(
                "loadgen: waiting for {what} at {url} ({:.0}s of {}): {why}",
                started.elapsed().as_secs_f64(),
                schema::settings::fmt_duration(within)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Joins a base URL and a path.
pub fn join(base: &str, path: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), path)
}
