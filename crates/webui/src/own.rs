//! webui's own settings, beside the ones every daemon takes
//! ([`daemon::CommonArgs`]), resolved the way runbuilds resolves its own:
//! flag > environment variable > default, an empty variable counting as unset.
//!
//! - `--stats-url URLS` / `LAB_STATS_URLS`: comma-separated base URLs of the
//!   peer daemons whose `/api/stats` the dashboard shows (webui's own URL may
//!   be among them; it is recognised by the stats' name and not shown twice);
//! - `--runs-dir DIR` / `LAB_RUNS_DIR`: where `locklab run --out DIR` wrote its
//!   reports (DIR/report.json, or DIR/*/report.json), for `/runs` and the
//!   dashboard's verdict.

use std::path::PathBuf;

use clap::Args;
use schema::settings::{def, Def, Resolver, Source, Sourced};

/// `LAB_RUNS_DIR`: webui's alone, so declared here rather than among the
/// settings every process shares (`schema::settings::def`).
pub const RUNS_DIR: Def = Def {
    key: "runs_dir",
    flag: "--runs-dir",
    env: "LAB_RUNS_DIR",
    alias: None,
};

/// The ids of [`OwnArgs`] in clap's matches, with their settings.
pub const OWN_IDS: &[(&str, Def)] = &[("stats_urls", def::STATS_URLS), ("runs_dir", RUNS_DIR)];

/// Settings of webui alone.
#[derive(Debug, Clone, Args)]
pub struct OwnArgs {
    /// Base URLs of the daemons the dashboard shows beside webui (comma-separated,
    /// e.g. http://127.0.0.1:8001,http://127.0.0.1:8002); each one's /api/stats is
    /// read with a short timeout.
    #[arg(long = "stats-url", env = "LAB_STATS_URLS", value_name = "URLS")]
    pub stats_urls: Option<String>,
    /// A directory of `locklab run --out DIR` reports (DIR/report.json and
    /// DIR/*/report.json), shown on /runs and, the newest verdict, on the dashboard.
    #[arg(long, env = "LAB_RUNS_DIR", value_name = "DIR")]
    pub runs_dir: Option<String>,
}

/// webui's own settings, resolved.
#[derive(Debug, Clone, Default)]
pub struct Own {
    /// Peer base URLs, without a trailing slash.
    pub stats_urls: Vec<String>,
    pub stats_urls_source: Option<Source>,
    pub runs_dir: Option<Sourced<PathBuf>>,
}

impl Own {
    /// Logs each setting that is set, as the common settings are logged.
    pub fn log(&self, name: &str) {
        if let Some(source) = &self.stats_urls_source {
            log::info!(
                "{name}: setting stats_urls={} source={source}",
                self.stats_urls.join(",")
            );
        }
        if let Some(dir) = &self.runs_dir {
            log::info!(
                "{name}: setting runs_dir={} source={}",
                dir.value.display(),
                dir.source
            );
        }
    }
}

/// Resolves webui's own settings from the command line and the environment.
pub fn own_settings(matches: &clap::ArgMatches) -> anyhow::Result<Own> {
    let flags = daemon::flags_from_matches(matches, OWN_IDS);
    resolve(&Resolver::new(&flags, &schema::settings::process_env))
}

/// Resolves them from a resolver (tests give their own environment).
pub fn resolve(r: &Resolver<'_>) -> anyhow::Result<Own> {
    let mut own = Own::default();
    if let Some(raw) = r.raw(def::STATS_URLS) {
        for url in raw
            .value
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
        {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                anyhow::bail!(
                    "{}: {url:?} is not a base URL like http://127.0.0.1:8001",
                    raw.source
                );
            }
            own.stats_urls.push(url.trim_end_matches('/').to_string());
        }
        own.stats_urls_source = Some(raw.source);
    }
    own.runs_dir = r
        .raw(RUNS_DIR)
        .map(|s| Sourced::new(PathBuf::from(s.value), s.source));
    Ok(own)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own(env: &[(&str, &str)]) -> anyhow::Result<Own> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let flags = schema::settings::Flags::new();
        resolve(&Resolver::new(&flags, &lookup))
    }

    #[test]
    fn stats_urls_and_runs_dir() {
        let o = own(&[
            ("LAB_STATS_URLS", " http://a:8001/ , ,http://b:8002"),
            ("LAB_RUNS_DIR", "/tmp/runs"),
        ])
        .expect("valid");
        assert_eq!(o.stats_urls, ["http://a:8001", "http://b:8002"]);
        assert_eq!(
            o.runs_dir.map(|d| d.value),
            Some(PathBuf::from("/tmp/runs"))
        );
        let unset = own(&[("LAB_STATS_URLS", " "), ("LAB_RUNS_DIR", "")]).expect("valid");
        assert!(unset.stats_urls.is_empty() && unset.runs_dir.is_none());
        let err = own(&[("LAB_STATS_URLS", "localhost:8001")]).expect_err("no scheme");
        assert!(err.to_string().contains("LAB_STATS_URLS"), "{err}");
    }
}
