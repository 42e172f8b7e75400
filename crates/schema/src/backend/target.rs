//! Where the database is: `DATABASE_URL` for an SQLite file.

use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------
// Where the database is
// ---------------------------------------------------------------------------

/// A database location from `DATABASE_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbTarget {
    /// An SQLite file.
    Sqlite(PathBuf),
}

impl DbTarget {
    /// Parses `DATABASE_URL`: a path, or an `sqlite:` URL in dj-database-url's
    /// forms (`sqlite:////abs/path`, `sqlite:///rel/path`).
    /// `postgres://` and `mysql://` are recognised and refused with a clear message.
    pub fn parse(url: &str) -> Result<DbTarget, String> {
        let url = url.trim();
        if url.is_empty() {
            return Err("the database URL is empty".to_string());
        }
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("postgres://")
            || lower.starts_with("postgresql://")
            || lower.starts_with("mysql://")
            || lower.starts_with("mariadb://")
        {
            return Err(format!(
                "{url}: the server backends (PostgreSQL, MySQL/MariaDB) are not built into this \
                 version of locklab yet; use an SQLite file path"
            ));
        }
        // dj-database-url's forms: `sqlite:////abs/path` (absolute: the
        // fourth slash is the path's), `sqlite:///rel/path` (relative), and
        // the shorter `sqlite://path` and `sqlite:path`.
        let path = url
            .strip_prefix("sqlite:///")
            .or_else(|| url.strip_prefix("sqlite://"))
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        if path.is_empty() {
            return Err(format!("{url}: the URL names no file"));
        }
        if path == ":memory:" || path.starts_with("file:") {
            return Err(format!(
                "{url}: give a plain file path; the lab needs a real file that several processes share"
            ));
        }
        Ok(DbTarget::Sqlite(PathBuf::from(path)))
    }

    pub fn path(&self) -> &Path {
        match self {
            DbTarget::Sqlite(p) => p,
        }
    }

    /// The target for messages: the file's path.
    pub fn display(&self) -> String {
        self.path().display().to_string()
    }

    /// An SQLite URI for this file. `create` false opens with `mode=rw`, so a
    /// mistyped path is an error and never a new empty file.
    pub fn sqlite_uri(&self, create: bool) -> String {
        let mut encoded = String::from("file:");
        for b in self.path().to_string_lossy().bytes() {
            match b {
                b'?' | b'#' | b'%' => encoded.push_str(&format!("%{b:02X}")),
                _ => encoded.push(char::from(b)),
            }
        }
        format!("{encoded}?mode={}", if create { "rwc" } else { "rw" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_in_dj_database_url_forms() {
        let p = |u: &str| DbTarget::parse(u).map(|t| t.path().to_path_buf());
        assert_eq!(
            p("sqlite:////srv/app/db.sqlite3"),
            Ok(PathBuf::from("/srv/app/db.sqlite3"))
        );
        assert_eq!(p("sqlite:///db.sqlite3"), Ok(PathBuf::from("db.sqlite3")));
        assert_eq!(p("sqlite://db.sqlite3"), Ok(PathBuf::from("db.sqlite3")));
        assert_eq!(p("sqlite:db.sqlite3"), Ok(PathBuf::from("db.sqlite3")));
        assert_eq!(p("/tmp/x.sqlite3"), Ok(PathBuf::from("/tmp/x.sqlite3")));
        assert!(p("sqlite:///").is_err());
        assert!(p("sqlite://:memory:").is_err());
        let uri = DbTarget::parse("sqlite:////srv/app/db.sqlite3").map(|t| t.sqlite_uri(false));
        assert_eq!(uri.as_deref(), Ok("file:/srv/app/db.sqlite3?mode=rw"));
    }
}
