//! The presets under the same load, through `locklab matrix`: each preset's
//! "asserted by tests" column of DESIGN.md, as classes present or absent,
//! never as counts. Also the matrix's own outputs.

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
    }

    let r = run("django-default");
    assert!(
        failed(process(&r, "runbuilds"), "busy_upgrade") > 0,
        "{}",
        show("django-default")
    );

    let r = run("django-atomic");
    assert!(
        failed(process(&r, "webui"), "busy_upgrade") > 0,
        "{}",
        show("django-atomic")
    );

    let r = run("django-wal");
    let rb = process(&r, "runbuilds");
    assert!(
        failed(rb, "busy_upgrade") + failed(rb, "busy_snapshot") > 0,
        "{}",
        show("django-wal")
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

    let r = run("toaster");
    let retried: u64 = r["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["retried"].as_u64().unwrap())
        .sum();
    let gave_up: u64 = r["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["gave_up"].as_u64().unwrap())
        .sum();
    assert!(retried > 0, "{}", show("toaster"));
    assert_eq!(gave_up, 0, "{}", show("toaster"));
}
