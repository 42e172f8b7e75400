//! The presets under the same load, through `locklab matrix`: each preset's
//! "asserted by tests" column (docs/design-updates.md), as classes present or
//! absent and where they happen, never as counts. What the faithful toaster
//! model measures varies from run to run (a stall, or no collision at all), so
//! the assertions are the structural ones: which operations can fail with
//! busy_upgrade or busy_snapshot at all. The matrix's own outputs too.

use crate::{locklab, serial, text, SMALL_LOAD};

fn failed(p: &serde_json::Value, class: &str) -> u64 {
    p["failed"][class].as_u64().unwrap()
}

fn process<'a>(r: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    r["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap()
}

#[test]
fn presets_show_their_classes() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let presets = "django-default,django-atomic,django-wal,django-all,immediate,robust,toaster";
    let mut args = vec![
        "matrix",
        "--presets",
        presets,
        "--duration",
        "15s",
        "--out",
        "m",
        "--drain-timeout",
        "10s",
    ];
    args.extend(SMALL_LOAD);
    let out = locklab(&args, dir.path());
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("│ preset"),
        "the matrix table is printed:\n{stdout}"
    );
    for f in ["matrix.md", "matrix.json", "matrix.svg"] {
        assert!(dir.path().join("m").join(f).exists(), "{f}");
    }
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("m/matrix.json")).unwrap())
            .unwrap();
    let run = |preset: &str| m["runs"][preset][0].clone();
    let show = |preset: &str| {
        format!(
            "{preset}: {}",
            serde_json::to_string(&run(preset)["processes"]).unwrap()
        )
    };
    for preset in presets.split(',') {
        crate::flow::assert_contract(&run(preset));
        assert_eq!(run(preset)["check"]["integrity_ok"], true, "{preset}");
        // The drain is bounded: whatever stalled, it ended by its timeout
        // (10 s here; the margin is the loop's last poll of the database).
        let drain = run(preset)["drain_s"].as_f64().unwrap();
        assert!(drain <= 12.0, "{preset}: drain took {drain} s");
    }

    // Without ATOMIC_REQUESTS no webui write follows a read in its
    // transaction, and per-event ingest never reads first: the only
    // read-then-write left is runbuilds' select_environment.
    for preset in ["django-default", "django-wal", "toaster"] {
        let r = run(preset);
        for p in r["processes"].as_array().unwrap() {
            let name = p["name"].as_str().unwrap();
            let upgrade_ops: Vec<&String> = p["by_op"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(_, o)| {
                    o["failed"].get("busy_upgrade").is_some()
                        || o["failed"].get("busy_snapshot").is_some()
                })
                .map(|(op, _)| op)
                .collect();
            let allowed: &[&str] = match name {
                "runbuilds" => &["select_environment"],
                // get_or_create's block reads, then inserts (toaster only)
                "buildinfohelper" if preset == "toaster" => &["save_task"],
                _ => &[],
            };
            assert!(
                upgrade_ops.iter().all(|op| allowed.contains(&op.as_str())),
                "{preset}: {name} upgraded in {upgrade_ops:?}; {}",
                show(preset)
            );
        }
    }

    let r = run("django-atomic");
    assert!(
        failed(process(&r, "webui"), "busy_upgrade") > 0,
        "{}",
        show("django-atomic")
    );

    let r = run("django-all");
    let w = process(&r, "webui");
    assert!(
        failed(w, "busy_upgrade") + failed(w, "busy_snapshot") > 0,
        "{}",
        show("django-all")
    );

    for preset in ["immediate", "robust"] {
        let r = run(preset);
        for p in r["processes"].as_array().unwrap() {
            assert_eq!(failed(p, "busy_upgrade"), 0, "{}", show(preset));
            assert_eq!(failed(p, "busy_snapshot"), 0, "{}", show(preset));
        }
    }
    let r = run("robust");
    for p in r["processes"].as_array().unwrap() {
        assert_eq!(p["gave_up"], 0, "{}", show("robust"));
    }
    for (key, v) in r["check"].as_object().unwrap() {
        if key != "integrity_ok" {
            assert!(v.as_u64() == Some(0), "robust check {key} = {v}");
        }
    }

    // Toaster's patched save retries forever: a save gives up only when the
    // shutdown abandons it, and then it is a stall.
    let r = run("toaster");
    for p in r["processes"].as_array().unwrap() {
        for (op, o) in p["by_op"].as_object().unwrap() {
            let saves = [
                "mark_inprogress",
                "postpone",
                "assign_environment",
                "save_event",
            ];
            if !saves.contains(&op.as_str()) {
                continue;
            }
            let abandoned = p["stalls"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["op"] == op.as_str() && s["abandoned"] == true)
                .count() as u64;
            assert!(
                o["gave_up"].as_u64().unwrap() <= abandoned,
                "{op} gave up without being abandoned: {}",
                show("toaster")
            );
        }
    }
    assert_eq!(r["settings"]["wake"], "notify");
    assert_eq!(r["settings"]["create_shape"], "toaster");
}
