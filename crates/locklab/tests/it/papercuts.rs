//! What a new user trips on, one test each: output that fits 120 columns, rates
//! over the load window, the holder line, and the papercuts of issue 9.

use std::time::Duration;

use crate::{locklab, serial, text, SMALL_LOAD};

fn width(s: &str) -> usize {
    s.lines().map(|l| l.chars().count()).max().unwrap_or(0)
}

/// A short run with failures: django-atomic makes webui's views read, then
/// write, in one deferred transaction.
#[test]
fn run_output_fits_120_columns_and_names_the_holder() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "run",
        "--preset",
        "django-atomic",
        "--duration",
        "4s",
        "--out",
        "r",
        "--no-who",
    ];
    args.extend(SMALL_LOAD);
    let out = locklab(&args, dir.path());
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(width(&stdout) <= 120, "wider than 120 columns:\n{stdout}");
    // --wide shows every column.
    let wide = locklab(&["report", "r", "--wide"], dir.path());
    let (wide_out, _) = text(&wide);
    assert!(
        wide_out.contains("busy_upgrade") && wide_out.contains("p50 ms"),
        "{wide_out}"
    );

    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r/report.json")).unwrap())
            .unwrap();
    // Rates are over the load window.
    for p in r["processes"].as_array().unwrap() {
        let load_s = p["load_s"].as_f64().unwrap();
        let rows = p["rows_in_load"].as_f64().unwrap();
        assert!(load_s > 0.0, "{p}");
        assert!(rows <= p["rows_committed"].as_f64().unwrap());
        let rate = p["rows_per_s"].as_f64().unwrap();
        assert!((rate - rows / load_s).abs() <= 1e-6 * rate.max(1.0), "{p}");
    }
    // The verdict's holder line, in the form other tools read.
    let verdict: Vec<&str> = r["verdict"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let webui_failed = r["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "webui")
        .map(|p| p["failed"]["busy_upgrade"].as_u64().unwrap())
        .unwrap();
    assert!(
        webui_failed > 0,
        "django-atomic's webui gets busy_upgrade: {r}"
    );
    let holder_line = verdict
        .iter()
        .find(|l| l.starts_with("webui: ") && l.contains(" held it at "))
        .unwrap_or_else(|| panic!("no holder line: {verdict:#?}"));
    let re_ok = holder_line
        .trim_end_matches('.')
        .split(" held it at ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .map(|frac| {
            let parts: Vec<&str> = frac.split(" of ").collect();
            parts.len() == 2 && parts.iter().all(|n| n.trim().parse::<u64>().is_ok())
        })
        .unwrap_or(false);
    assert!(re_ok, "{holder_line}");
    assert!(
        verdict
            .iter()
            .any(|l| l.starts_with("advise: `locklab advise")),
        "the verdict ends with a pointer to advise: {verdict:#?}"
    );

    // The same run's traces alone, as the recorder's would be read.
    let out = locklab(&["report", "--traces", "r", "--json"], dir.path());
    let (json, err) = text(&out);
    assert!(out.status.success(), "{err}");
    let summaries: serde_json::Value = serde_json::from_str(&json).unwrap();
    let webui = summaries
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["process"] == "webui")
        .unwrap();
    assert_eq!(
        webui["failed"]["busy_upgrade"].as_u64(),
        Some(webui_failed),
        "every failed write attempt is traced: {webui}"
    );
    let out = locklab(&["timeline", "--traces", "r", "--out", "t.svg"], dir.path());
    assert!(out.status.success(), "{:?}", text(&out));
    let svg = std::fs::read_to_string(dir.path().join("t.svg")).unwrap();
    assert!(
        svg.contains("time (s)") && svg.contains("held by"),
        "axis and holders"
    );
}

#[test]
fn presets_table_fits_120_columns() {
    let dir = tempfile::tempdir().unwrap();
    let out = locklab(&["presets"], dir.path());
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    assert!(width(&stdout) <= 120, "{stdout}");
    assert!(
        stdout.contains("toaster") && stdout.contains("→ "),
        "{stdout}"
    );
    let long = locklab(&["presets", "--long"], dir.path());
    let (long_out, _) = text(&long);
    assert!(long_out.contains("asserted by tests"), "{long_out}");
}

#[test]
fn loadgen_says_it_cannot_connect_and_gives_up() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 9 of the loopback.
    let t0 = std::time::Instant::now();
    let out = locklab(
        &[
            "loadgen",
            "--target",
            "http://127.0.0.1:9",
            "--connect-timeout",
            "6s",
            "--duration",
            "1s",
        ],
        dir.path(),
    );
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("waiting for webui at http://127.0.0.1:9"),
        "{stderr}"
    );
    assert!(
        stderr.contains("did not answer within 6s") && stderr.contains("is it running"),
        "{stderr}"
    );
    assert!(t0.elapsed() < Duration::from_secs(60), "it gave up");
}

#[test]
fn report_defaults_to_locklab_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = locklab(&["report"], dir.path());
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("locklab-run"),
        "it looked in locklab-run: {stderr}"
    );
}

#[test]
fn sqlite_urls_in_dj_database_url_form_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let abs = dir.path().join("app").join("db.sqlite3");
    std::fs::create_dir_all(abs.parent().unwrap()).unwrap();
    let url = format!("sqlite:///{}", abs.display());
    assert!(url.starts_with("sqlite:////"));
    let out = locklab(&["migrate", "--database-url", &url], dir.path());
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(abs.is_file(), "the absolute path was created");
}

#[test]
fn check_says_what_it_could_not_check_and_strict_fails_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = locklab(&["migrate", "--database-url", "db.sqlite3"], dir.path());
    assert!(out.status.success());
    let out = locklab(&["check", "--database-url", "db.sqlite3"], dir.path());
    let (stdout, _) = text(&out);
    assert!(out.status.success(), "{stdout}");
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("not checked") && last.contains("partial_writes"),
        "{stdout}"
    );
    let out = locklab(
        &["check", "--database-url", "db.sqlite3", "--strict"],
        dir.path(),
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--strict"), "{stderr}");
}

#[test]
fn a_second_run_on_the_same_out_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("r");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::write(out_dir.join("report.json"), "{\"keep\": true}").unwrap();
    // Another run holds the folder.
    let held = locklab::run::OutLock::take(&out_dir).unwrap();
    let out = locklab(&["run", "--duration", "1s", "--out", "r"], dir.path());
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("another `locklab run`"), "{stderr}");
    assert!(
        stderr.contains(&std::process::id().to_string()),
        "names the pid: {stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join("report.json")).unwrap(),
        "{\"keep\": true}",
        "the first run's files are untouched"
    );
    drop(held);
}

/// `matrix --ablate FROM,TO`: FROM, FROM with each differing knob alone, TO.
#[test]
fn ablation_changes_one_knob_at_a_time() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "matrix",
        "--ablate",
        "django-default,immediate",
        "--duration",
        "2s",
        "--out",
        "a",
        "--drain-timeout",
        "5s",
    ];
    args.extend(SMALL_LOAD);
    let out = locklab(&args, dir.path());
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("a/ablation.json")).unwrap())
            .unwrap();
    let variants: Vec<&str> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["variant"].as_str().unwrap())
        .collect();
    // django-default → immediate differs in journal, synchronous, txn mode,
    // ATOMIC_REQUESTS and claim: seven runs.
    assert_eq!(
        variants,
        [
            "django-default",
            "django-default + journal_mode=wal",
            "django-default + synchronous=normal",
            "django-default + txn_mode=immediate",
            "django-default + atomic_requests=true",
            "django-default + claim=single",
            "immediate",
        ]
    );
    let rows = v["rows"].as_array().unwrap();
    assert!(rows[2]["cost"].as_str().unwrap().contains("durability"));
    assert!(rows[1]["cost"].is_null());
    // Each variant really ran with its knob: its report says so.
    let settings = |i: usize| -> serde_json::Value {
        let r: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join(format!("a/{i:02}/report.json"))).unwrap(),
        )
        .unwrap();
        r["settings"].clone()
    };
    assert_eq!(settings(1)["journal_mode"], "delete");
    assert_eq!(settings(2)["journal_mode"], "wal");
    assert_eq!(settings(3)["synchronous"], "normal");
    assert_eq!(settings(4)["txn_mode"], "immediate");
    assert_eq!(settings(4)["journal_mode"], "delete", "one knob at a time");
    assert_eq!(settings(5)["atomic_requests"], true);
    assert_eq!(settings(6)["claim"], "single");
    assert!(width(&stdout) <= 120, "{stdout}");
}

/// `locklab advise`: the snippets of the stack, for the classes asked.
#[test]
fn advise_prints_the_stacks_snippets() {
    let dir = tempfile::tempdir().unwrap();
    let out = locklab(&["advise", "--django", "4.2"], dir.path());
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    for needle in [
        "advice/django-4.2/backend/base.py",
        "advice/django/guarded_claim.py",
        "advice/django-4.2/wal.py",
        "busy_snapshot",
    ] {
        assert!(stdout.contains(needle), "{needle} in:\n{stdout}");
    }
    assert!(
        !stdout.contains("settings_immediate.py"),
        "no 5.1 settings for 4.2"
    );
    let out = locklab(&["advise", "--django", "5.2"], dir.path());
    let (stdout, _) = text(&out);
    assert!(stdout.contains("transaction_mode"), "{stdout}");
    let out = locklab(&["advise", "--django", "3.2"], dir.path());
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("4.2"), "{stderr}");
    let out = locklab(&["advise", "--rails", "8"], dir.path());
    assert!(text(&out).0.contains("database.yml"));
}
