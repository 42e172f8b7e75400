//! Settings, their sources, and the preset table: resolved in one place.
//!
//! Precedence, highest first: a command-line flag, the `LAB_*` variable, the short
//! name of the original Django demo (`WAL`, `TIMEOUT`, `ATOMIC_REQUESTS`, and the
//! load script's `CLIENTS`, `NUM`, `SLEEP`, `DURATION`), the preset (`LAB_PRESET`),
//! then the default. An empty variable counts as unset. Booleans accept
//! true/false, True/False, 1/0 and yes/no. Durations are humantime (`500ms`,
//! `5s`, `2m`); a bare number means seconds, so `TIMEOUT=10` works as in Django.
//!
//! Every resolved value remembers where it came from ([`Source`]) so that each
//! daemon can log its effective settings at startup.
//!
//! The environment is read through an [`Env`] function rather than
//! `std::env::var` directly, so tests resolve against a map of their own.

mod environments;
mod knobs;
mod presets;
mod resolve;
mod source;
mod values;

pub use environments::*;
pub use knobs::*;
pub use presets::*;
pub use resolve::*;
pub use source::*;
pub use values::*;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name: &str| map.get(name).cloned()
    }

    #[test]
    fn precedence_flag_env_alias_preset_default() {
        let mut flags = Flags::new();
        // preset only: django-all has a 10 s timeout
        let env = env_of(&[("LAB_PRESET", "django-all")]);
        let k = Resolver::new(&flags, &env).knobs().expect("knobs");
        assert_eq!(k.busy_timeout.value, Duration::from_secs(10));
        assert_eq!(k.busy_timeout.source, Source::Preset("django-all"));
        // default: retry_deadline is not in presets
        assert_eq!(k.retry_deadline.source, Source::Default);
        assert_eq!(k.retry_deadline.value, Duration::from_secs(30));

        // alias beats preset
        let env = env_of(&[("LAB_PRESET", "django-all"), ("TIMEOUT", "7")]);
        let k = Resolver::new(&flags, &env).knobs().expect("knobs");
        assert_eq!(k.busy_timeout.value, Duration::from_secs(7));
        assert_eq!(k.busy_timeout.source, Source::Alias("TIMEOUT"));

        // LAB_* beats alias
        let env = env_of(&[
            ("LAB_PRESET", "django-all"),
            ("TIMEOUT", "7"),
            ("LAB_BUSY_TIMEOUT", "250ms"),
        ]);
        let k = Resolver::new(&flags, &env).knobs().expect("knobs");
        assert_eq!(k.busy_timeout.value, Duration::from_millis(250));
        assert_eq!(k.busy_timeout.source, Source::Env("LAB_BUSY_TIMEOUT"));

        // flag beats everything
        flags.insert("busy_timeout", "2s".to_string());
        let k = Resolver::new(&flags, &env).knobs().expect("knobs");
        assert_eq!(k.busy_timeout.value, Duration::from_secs(2));
        assert_eq!(k.busy_timeout.source, Source::Flag("--busy-timeout"));

        // and the preset itself: flag > env > default
        let none = Flags::new();
        let k = Resolver::new(&none, &env_of(&[])).knobs().expect("knobs");
        assert_eq!(k.preset.value.name, "django-default");
        assert_eq!(k.preset.source, Source::Default);
        let mut pflags = Flags::new();
        pflags.insert("preset", "robust".to_string());
        let k = Resolver::new(&pflags, &env_of(&[("LAB_PRESET", "django-all")]))
            .knobs()
            .expect("knobs");
        assert_eq!(k.preset.value.name, "robust");
        assert_eq!(k.commit.value, CommitPolicy::Batch(500));
    }

    #[test]
    fn demo_aliases_parse_like_django() {
        let flags = Flags::new();
        let env = env_of(&[
            ("WAL", "True"),
            ("TIMEOUT", "10"),
            ("ATOMIC_REQUESTS", "yes"),
        ]);
        let k = Resolver::new(&flags, &env).knobs().expect("knobs");
        assert_eq!(k.journal_mode.value, JournalMode::Wal);
        assert_eq!(k.journal_mode.source, Source::Alias("WAL"));
        assert_eq!(k.busy_timeout.value, Duration::from_secs(10));
        assert!(k.atomic_requests.value);

        let env = env_of(&[("WAL", "False"), ("LAB_PRESET", "django-wal")]);
        let k = Resolver::new(&flags, &env).knobs().expect("knobs");
        assert_eq!(k.journal_mode.value, JournalMode::Delete);

        // LAB_JOURNAL_MODE takes the mode's name, not a boolean
        let env = env_of(&[("LAB_JOURNAL_MODE", "WAL")]);
        let k = Resolver::new(&flags, &env).knobs().expect("knobs");
        assert_eq!(k.journal_mode.value, JournalMode::Wal);
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let flags = Flags::new();
        let env = env_of(&[
            ("TIMEOUT", ""),
            ("LAB_BUSY_TIMEOUT", "  "),
            ("WAL", ""),
            ("LAB_PRESET", ""),
        ]);
        let k = Resolver::new(&flags, &env).knobs().expect("knobs");
        assert_eq!(k.busy_timeout.value, Duration::from_secs(5));
        assert_eq!(k.busy_timeout.source, Source::Preset("django-default"));
        assert_eq!(k.journal_mode.value, JournalMode::Delete);
        assert_eq!(k.preset.source, Source::Default);
    }

    #[test]
    fn bad_values_name_their_source() {
        let flags = Flags::new();
        let env = env_of(&[("TIMEOUT", "soon")]);
        let err = Resolver::new(&flags, &env)
            .knobs()
            .expect_err("bad timeout");
        assert_eq!(err.source_name, "TIMEOUT");
        assert!(err.message.contains("not a duration"), "{}", err.message);
        let env = env_of(&[("LAB_PRESET", "nope")]);
        let err = Resolver::new(&flags, &env).knobs().expect_err("bad preset");
        assert!(err.message.contains("locklab presets"), "{}", err.message);
        let env = env_of(&[("ATOMIC_REQUESTS", "maybe")]);
        assert!(Resolver::new(&flags, &env).knobs().is_err());
    }

    #[test]
    fn parsers() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("fast").is_err());
        for t in ["true", "True", "1", "yes"] {
            assert_eq!(parse_bool(t), Ok(true));
        }
        for f in ["false", "False", "0", "no"] {
            assert_eq!(parse_bool(f), Ok(false));
        }
        assert_eq!(
            "batch:500".parse::<CommitPolicy>(),
            Ok(CommitPolicy::Batch(500))
        );
        assert!("batch:0".parse::<CommitPolicy>().is_err());
        assert_eq!(
            "fair".parse::<BusyWait>(),
            Ok(BusyWait::Fair(Duration::from_micros(100)))
        );
        assert_eq!(
            "fair:1ms".parse::<BusyWait>(),
            Ok(BusyWait::Fair(Duration::from_millis(1)))
        );
        assert_eq!("SQLite".parse::<BusyWait>(), Ok(BusyWait::Sqlite));
        for bad in ["fair:0s", "fair:1s", "fair:", "fast"] {
            assert!(bad.parse::<BusyWait>().is_err(), "{bad}");
        }
        for w in [BusyWait::Sqlite, BusyWait::Fair(Duration::from_micros(250))] {
            assert_eq!(w.to_string().parse::<BusyWait>(), Ok(w), "{w}");
        }
        assert_eq!(
            parse_environments(DEFAULT_ENVIRONMENTS).expect("envs"),
            vec![
                ("qemux86".to_string(), 3),
                ("qemuarm".to_string(), 2),
                ("qemux86-64".to_string(), 2)
            ]
        );
        assert!(parse_environments("qemux86").is_err());
        assert!(parse_environments("").is_err());
        for p in PRESETS {
            assert_eq!(Preset::by_name(p.name).map(|x| x.name), Ok(p.name));
        }
    }
}
