//! Where the database is: `DATABASE_URL`, an SQLite file or a server URL. The
//! backend comes from the URL's scheme.

use std::path::{Path, PathBuf};

use super::engine::Kind;

// ---------------------------------------------------------------------------
// Where the database is
// ---------------------------------------------------------------------------

/// A database location from `DATABASE_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbTarget {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A database on a PostgreSQL or MySQL/MariaDB server.
    Server(ServerUrl),
}

/// A server database's URL, as diesel's connection takes it.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerUrl {
    kind: Kind,
    /// `postgres://…` or `mysql://…` (a `mariadb://` URL is given as `mysql://`).
    url: String,
}

impl std::fmt::Debug for ServerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

impl ServerUrl {
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The URL as given (`postgres://` or `mysql://`), password included.
    /// Never log it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL to hand the driver. For PostgreSQL, `gssencmode=disable` is
    /// added unless the URL sets it: libpq otherwise initialises Kerberos for
    /// GSSAPI encryption, whose thread-local destructors abort a
    /// multi-threaded process at exit (`krb5int_getspecific: Assertion ...`,
    /// seen here with Debian 12's libpq 15).
    pub fn connect_url(&self) -> String {
        if self.kind == Kind::Postgres && !self.url.contains("gssencmode=") {
            let sep = if self.url.contains('?') { '&' } else { '?' };
            format!("{}{sep}gssencmode=disable", self.url)
        } else {
            self.url.clone()
        }
    }

    /// The URL with its password masked, for messages and logs.
    pub fn display(&self) -> String {
        mask_password(&self.url)
    }

    /// The database name (the URL's path), if it names one.
    pub fn database(&self) -> Option<&str> {
        let rest = self.url.split_once("://")?.1;
        let path = rest.split_once('/')?.1;
        let name = path.split(['?', '#']).next().unwrap_or("");
        (!name.is_empty()).then_some(name)
    }

    /// The same server with another database name (for `run`'s fresh database
    /// per run, and for connecting to an administrative database).
    pub fn with_database(&self, name: &str) -> ServerUrl {
        let (scheme, rest) = self.url.split_once("://").unwrap_or(("", &self.url));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let query = path.find(['?', '#']).map(|i| &path[i..]).unwrap_or("");
        ServerUrl {
            kind: self.kind,
            url: format!("{scheme}://{authority}/{name}{query}"),
        }
    }
}

/// `scheme://user:secret@host/db` → `scheme://user:***@host/db`.
fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

impl DbTarget {
    /// Parses `DATABASE_URL`: a path, or an `sqlite:` URL in dj-database-url's
    /// forms (`sqlite:////abs/path`, `sqlite:///rel/path`); `postgres://` (or
    /// `postgresql://`) for PostgreSQL; `mysql://` (or `mariadb://`) for
    /// MySQL/MariaDB. Any other `scheme://` is refused with the list.
    pub fn parse(url: &str) -> Result<DbTarget, String> {
        let url = url.trim();
        if url.is_empty() {
            return Err("the database URL is empty".to_string());
        }
        if let Some((scheme, rest)) = url.split_once("://") {
            let kind = match scheme.to_ascii_lowercase().as_str() {
                "postgres" | "postgresql" => Some((Kind::Postgres, "postgres")),
                "mysql" | "mariadb" => Some((Kind::Mysql, "mysql")),
                "sqlite" => None,
                _ => {
                    return Err(format!(
                        "{}: unknown database URL scheme {scheme:?}; use a file path or \
                         sqlite:///path for SQLite, postgres://user:password@host/db for \
                         PostgreSQL, or mysql://user:password@host/db for MySQL/MariaDB",
                        mask_password(url)
                    ))
                }
            };
            if let Some((kind, scheme)) = kind {
                let host = rest.split('/').next().unwrap_or("");
                let host = host.rsplit_once('@').map(|(_, h)| h).unwrap_or(host);
                if host.is_empty() {
                    return Err(format!(
                        "{}: the URL names no host; e.g. {scheme}://locklab:locklab@127.0.0.1/locklab",
                        mask_password(url)
                    ));
                }
                let server = ServerUrl {
                    kind,
                    url: format!("{scheme}://{rest}"),
                };
                if server.database().is_none() {
                    return Err(format!(
                        "{}: the URL names no database; add it as the path, e.g. {scheme}://…/locklab",
                        server.display()
                    ));
                }
                return Ok(DbTarget::Server(server));
            }
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

    /// Which database the target is on.
    pub fn kind(&self) -> Kind {
        match self {
            DbTarget::Sqlite(_) => Kind::Sqlite,
            DbTarget::Server(s) => s.kind(),
        }
    }

    /// The SQLite file, for an SQLite target.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            DbTarget::Sqlite(p) => Some(p),
            DbTarget::Server(_) => None,
        }
    }

    /// The folder for the lab's files beside the database (pidfiles): the
    /// SQLite file's folder, or the current folder for a server.
    pub fn side_dir(&self) -> &Path {
        match self {
            DbTarget::Sqlite(p) => p
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
            DbTarget::Server(_) => Path::new("."),
        }
    }

    /// The target for messages: the file's path, or the URL with its password
    /// masked.
    pub fn display(&self) -> String {
        match self {
            DbTarget::Sqlite(p) => p.display().to_string(),
            DbTarget::Server(s) => s.display(),
        }
    }

    /// An SQLite URI for this file. `create` false opens with `mode=rw`, so a
    /// mistyped path is an error and never a new empty file.
    pub fn sqlite_uri(&self, create: bool) -> String {
        let mut encoded = String::from("file:");
        let path = self.sqlite_path().unwrap_or(Path::new(""));
        for b in path.to_string_lossy().bytes() {
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
        let p =
            |u: &str| DbTarget::parse(u).map(|t| t.sqlite_path().expect("a file").to_path_buf());
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

    #[test]
    fn server_urls_take_their_backend_from_the_scheme() {
        let t = DbTarget::parse("postgresql://lab:secret@db:5432/locklab").expect("must parse");
        assert_eq!(t.kind(), Kind::Postgres);
        assert_eq!(t.display(), "postgres://lab:***@db:5432/locklab");
        let DbTarget::Server(s) = &t else {
            panic!("not a server")
        };
        assert_eq!(s.url(), "postgres://lab:secret@db:5432/locklab");
        assert_eq!(s.database(), Some("locklab"));
        assert_eq!(
            s.with_database("run_1").url(),
            "postgres://lab:secret@db:5432/run_1"
        );
        let t =
            DbTarget::parse("mariadb://lab@127.0.0.1/lab?ssl_mode=DISABLED").expect("must parse");
        assert_eq!(t.kind(), Kind::Mysql);
        let DbTarget::Server(s) = &t else {
            panic!("not a server")
        };
        assert_eq!(
            s.with_database("x").url(),
            "mysql://lab@127.0.0.1/x?ssl_mode=DISABLED"
        );
        assert!(t.sqlite_path().is_none());
        let unknown = DbTarget::parse("oracle://u:pw@h/db").expect_err("must be refused");
        assert!(unknown.contains("unknown database URL scheme") && !unknown.contains("pw"));
        assert!(DbTarget::parse("postgres:///db").is_err());
        assert!(DbTarget::parse("mysql://u:p@h")
            .expect_err("must be refused")
            .contains("no database"));
    }
}
