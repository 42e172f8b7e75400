//! `LAB_ENVIRONMENTS`: the build environments `locklab migrate` registers.

/// `LAB_ENVIRONMENTS`: `kind:count,kind:count`.
pub fn parse_environments(s: &str) -> Result<Vec<(String, u32)>, String> {
    let mut out: Vec<(String, u32)> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (kind, count) = part
            .split_once(':')
            .ok_or_else(|| format!("{part:?} is not kind:count (e.g. qemux86:3)"))?;
        let kind = kind.trim();
        if kind.is_empty()
            || !kind
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!(
                "bad environment kind {kind:?}: use letters, digits, - _ ."
            ));
        }
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("bad count in {part:?}: a whole number is needed"))?;
        if count == 0 || count > 1000 {
            return Err(format!("bad count in {part:?}: between 1 and 1000"));
        }
        match out.iter_mut().find(|(k, _)| k == kind) {
            Some(existing) => existing.1 += count,
            None => out.push((kind.to_string(), count)),
        }
    }
    if out.is_empty() {
        return Err("no environments given; e.g. qemux86:3,qemuarm:2".to_string());
    }
    Ok(out)
}

pub const DEFAULT_ENVIRONMENTS: &str = "qemux86:3,qemuarm:2,qemux86-64:2";
