//! Who a PID is: its name (`/proc/PID/comm`), its command line
//! (`/proc/PID/cmdline`) and its container, if any (`/proc/PID/cgroup`).

use serde::{Deserialize, Serialize};

/// The longest command line shown (characters); longer ones end in `…`.
pub const CMDLINE_MAX: usize = 160;

/// A process, as far as `/proc` tells.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcInfo {
    pub name: String,
    pub cmdline: String,
    /// `runtime:id12` (e.g. `docker:3f2a9c1b0d4e`) when the process runs in a
    /// container this machine's cgroups name.
    pub container: Option<String>,
}

/// The name shown for PID 0: a lock whose holder is outside this PID
/// namespace (F_GETLK answers 0; /proc/locks leaves it out).
pub const UNSEEN_NAME: &str = "(unseen: another PID namespace)";

/// Reads what `/proc` knows about `pid`. A PID that has exited (or is
/// unreadable) gets the name `(exited)`.
pub fn proc_info(pid: i32) -> ProcInfo {
    match pid {
        0 => {
            return ProcInfo {
                name: UNSEEN_NAME.to_string(),
                cmdline: String::new(),
                container: None,
            }
        }
        p if p < 0 => {
            return ProcInfo {
                name: "(OFD lock: no owner PID)".to_string(),
                cmdline: String::new(),
                container: None,
            }
        }
        _ => {}
    }
    let dir = format!("/proc/{pid}");
    let Ok(comm) = std::fs::read_to_string(format!("{dir}/comm")) else {
        return ProcInfo {
            name: "(exited)".to_string(),
            cmdline: String::new(),
            container: None,
        };
    };
    let name = comm.trim_end().to_string();
    let cmdline = std::fs::read(format!("{dir}/cmdline"))
        .map(|raw| cmdline_text(&raw))
        .unwrap_or_default();
    let container = std::fs::read_to_string(format!("{dir}/cgroup"))
        .ok()
        .and_then(|t| container_of(&t));
    ProcInfo {
        cmdline: if cmdline.is_empty() {
            format!("[{name}]")
        } else {
            cmdline
        },
        name,
        container,
    }
}

/// NULs between arguments, and control characters inside them (a
/// `python3 -c` script's newlines), to single spaces; cut to [`CMDLINE_MAX`]
/// characters.
pub fn cmdline_text(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let spaced: String = text
        .trim_end_matches('\0')
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    shorten(
        &spaced.split_whitespace().collect::<Vec<_>>().join(" "),
        CMDLINE_MAX,
    )
}

/// A process as people name it: its name and its arguments, without argv[0]
/// (often a long interpreter path): `python3 manage.py runserver`.
pub fn short_command(name: &str, cmdline: &str, width: usize) -> String {
    match cmdline.split_once(' ') {
        Some((_, args)) if !args.trim().is_empty() => {
            format!("{name} {}", shorten(args.trim(), width))
        }
        _ => name.to_string(),
    }
}

/// `s` cut to `max` characters, with `…` when it was longer.
pub fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn hex_run_of_64(s: &str) -> Option<&str> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i + 64 <= bytes.len() {
        let run = bytes[i..]
            .iter()
            .take_while(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            .count();
        if run >= 64 {
            return s.get(i..i + 64);
        }
        i += run.max(1);
    }
    None
}

/// The container a process runs in, from its `/proc/PID/cgroup`: docker,
/// containerd (CRI), cri-o, podman and kubernetes name their cgroups after the
/// 64-hex-digit container id. Shortened to 12 digits, as `docker ps` shows it.
pub fn container_of(cgroup: &str) -> Option<String> {
    for line in cgroup.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or(line);
        let Some(id) = hex_run_of_64(path) else {
            continue;
        };
        let runtime = if path.contains("cri-containerd") || path.contains("containerd") {
            "containerd"
        } else if path.contains("crio") {
            "cri-o"
        } else if path.contains("libpod") {
            "podman"
        } else if path.contains("docker") {
            "docker"
        } else if path.contains("kubepods") {
            "kubernetes"
        } else {
            "container"
        };
        return Some(format!("{runtime}:{}", &id[..12]));
    }
    None
}
