//! Migrations and the daemons' read-only startup check.
//!
//! `locklab migrate` ([`migrate`]) is the only code that applies migrations. It
//! creates the file, sets the journal mode (which belongs to the file) and
//! registers the environments.
//!
//! The daemons call [`startup_check`]: it opens the file with `mode=rw` (never
//! creating it) and queries `sqlite_master` and diesel's migrations table
//! directly. It never calls diesel_migrations' `MigrationHarness`, whose pending
//! check creates its table and so writes.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel::sqlite::Sqlite;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::backend::Conn;
use crate::db::{pragma_text, DbTarget, LabConn, Policy};
use crate::models::Environment;
use crate::schema::LAB_TABLES;
use crate::settings::JournalMode;

/// The migrations in `migrations/`, compiled in.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// diesel's bookkeeping table.
pub const MIGRATIONS_TABLE: &str = "__diesel_schema_migrations";

/// Why a database cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "{path}: no such database file; create it with `locklab migrate --database-url {path}`"
    )]
    Missing { path: String },
    #[error("{path}: cannot open: {message}")]
    Open { path: String, message: String },
    #[error("{path}: not an SQLite database ({message}); check --database-url / DATABASE_URL")]
    NotADatabase { path: String, message: String },
    #[error(
        "{path}: the database is empty (not migrated); run `locklab migrate --database-url {path}`"
    )]
    Empty { path: String },
    #[error("{path}: not locklab's schema: it holds tables locklab does not own ({tables}); use another file")]
    Foreign { path: String, tables: String },
    #[error("{path}: {count} migration(s) pending ({versions}); run `locklab migrate --database-url {path}`")]
    Pending {
        path: String,
        count: usize,
        versions: String,
    },
    #[error("{path}: migrated by a newer locklab (unknown migrations {versions}); use a matching locklab")]
    Newer { path: String, versions: String },
    #[error("{path}: {message}")]
    Other { path: String, message: String },
}

#[derive(QueryableByName)]
struct NameRow {
    #[diesel(sql_type = Text)]
    name: String,
}

#[derive(QueryableByName)]
struct VersionRow {
    #[diesel(sql_type = Text)]
    version: String,
}

/// The versions of the embedded migrations, oldest first.
pub fn embedded_versions() -> Result<Vec<String>, String> {
    use diesel::migration::MigrationSource;
    let migrations = <EmbeddedMigrations as MigrationSource<Sqlite>>::migrations(&MIGRATIONS)
        .map_err(|e| format!("reading the embedded migrations: {e}"))?;
    Ok(migrations
        .iter()
        .map(|m| m.name().version().to_string())
        .collect())
}

fn classify_open_error(path: &str, message: String) -> SchemaError {
    if message.contains("not a database") || message.contains("file is encrypted") {
        SchemaError::NotADatabase {
            path: path.to_string(),
            message,
        }
    } else {
        SchemaError::Open {
            path: path.to_string(),
            message,
        }
    }
}

/// Opens an existing file (`mode=rw`, never creating it) with the lab's busy
/// handler, so that reading the schema waits politely while running daemons
/// write, instead of failing at once with SQLITE_BUSY.
fn open_for_reading(target: &DbTarget, path: &str) -> Result<LabConn, SchemaError> {
    let policy = Policy {
        busy_timeout: std::time::Duration::from_secs(10),
        ..Policy::default()
    };
    LabConn::open(target, Arc::new(policy), false)
        .map_err(|e| classify_open_error(path, e.to_string()))
}

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    pub tables: BTreeSet<String>,
    pub applied: BTreeSet<String>,
}

/// Reads the tables and applied migrations of an open connection, without
/// writing anything.
fn read_status(conn: &mut Conn, path: &str) -> Result<SchemaStatus, SchemaError> {
    let tables: BTreeSet<String> = diesel::sql_query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    )
    .load::<NameRow>(conn)
    .map_err(|e| classify_open_error(path, e.to_string()))?
    .into_iter()
    .map(|r| r.name)
    .collect();
    let applied = if tables.contains(MIGRATIONS_TABLE) {
        diesel::sql_query(format!("SELECT version FROM {MIGRATIONS_TABLE}"))
            .load::<VersionRow>(conn)
            .map_err(|e| SchemaError::Other {
                path: path.to_string(),
                message: format!("reading {MIGRATIONS_TABLE}: {e}"),
            })?
            .into_iter()
            .map(|r| r.version)
            .collect()
    } else {
        BTreeSet::new()
    };
    Ok(SchemaStatus { tables, applied })
}

fn foreign_tables(status: &SchemaStatus) -> Vec<String> {
    status
        .tables
        .iter()
        .filter(|t| t.as_str() != MIGRATIONS_TABLE && !LAB_TABLES.contains(&t.as_str()))
        .cloned()
        .collect()
}

/// The daemons' startup check: the file exists, is an SQLite database, holds
/// locklab's schema and nothing else, and has no pending migration. Read-only.
pub fn startup_check(target: &DbTarget) -> Result<SchemaStatus, SchemaError> {
    let path = target.path().display().to_string();
    if !target.path().exists() {
        return Err(SchemaError::Missing { path });
    }
    let mut conn = open_for_reading(target, &path)?;
    let status = read_status(conn.diesel(), &path)?;
    if status.tables.is_empty() {
        return Err(SchemaError::Empty { path });
    }
    let foreign = foreign_tables(&status);
    if !foreign.is_empty() || !status.tables.contains(MIGRATIONS_TABLE) {
        let tables = if foreign.is_empty() {
            format!("no {MIGRATIONS_TABLE}")
        } else {
            foreign.join(", ")
        };
        return Err(SchemaError::Foreign { path, tables });
    }
    let embedded = embedded_versions().map_err(|message| SchemaError::Other {
        path: path.clone(),
        message,
    })?;
    let pending: Vec<&String> = embedded
        .iter()
        .filter(|v| !status.applied.contains(*v))
        .collect();
    if !pending.is_empty() {
        return Err(SchemaError::Pending {
            path,
            count: pending.len(),
            versions: pending
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let unknown: Vec<&String> = status
        .applied
        .iter()
        .filter(|v| !embedded.contains(v))
        .collect();
    if !unknown.is_empty() {
        return Err(SchemaError::Newer {
            path,
            versions: unknown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(status)
}

/// What `locklab migrate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateReport {
    pub created_file: bool,
    pub applied: Vec<String>,
    pub journal_mode: String,
    pub environments_added: usize,
    pub environments_total: usize,
}

/// Creates or upgrades the database, sets its journal mode and registers the
/// environments (an idempotent upsert: existing names are left alone).
pub fn migrate(
    target: &DbTarget,
    journal_mode: JournalMode,
    environments: &[(String, u32)],
) -> Result<MigrateReport, SchemaError> {
    let path = target.path().display().to_string();
    let created_file = !target.path().exists();
    if !created_file {
        // Refuse a file that is not a database or holds other tables, before
        // touching it.
        let mut conn = open_for_reading(target, &path)?;
        let status = read_status(conn.diesel(), &path)?;
        drop(conn);
        let foreign = foreign_tables(&status);
        if !foreign.is_empty() {
            return Err(SchemaError::Foreign {
                path,
                tables: foreign.join(", "),
            });
        }
    } else if let Some(parent) = target.path().parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            return Err(SchemaError::Open {
                path,
                message: format!("the directory {} does not exist", parent.display()),
            });
        }
    }
    let other = |message: String| SchemaError::Other {
        path: path.clone(),
        message,
    };
    let mut conn = LabConn::open(target, Arc::new(Policy::default()), true)
        .map_err(|e| classify_open_error(&path, e.to_string()))?;
    let wanted = journal_mode.as_str().to_ascii_uppercase();
    conn.diesel()
        .batch_execute(&format!("PRAGMA journal_mode = {wanted}"))
        .map_err(|e| other(format!("setting journal_mode={wanted}: {e}")))?;
    let journal = pragma_text(conn.diesel(), "PRAGMA journal_mode")
        .map_err(|e| other(format!("reading journal_mode: {e}")))?;
    if journal != journal_mode.as_str() {
        return Err(other(format!(
            "asked for journal_mode={} but the file stays in {journal} (is another process using it?)",
            journal_mode.as_str()
        )));
    }
    // A migration that rebuilds a table (SQLite cannot drop NOT NULL in place)
    // runs with foreign keys off, as lang_altertable.html's procedure says;
    // PRAGMA foreign_key_check then proves nothing was left dangling.
    conn.diesel()
        .batch_execute("PRAGMA foreign_keys = OFF")
        .map_err(|e| other(format!("turning foreign keys off for the migrations: {e}")))?;
    let applied: Vec<String> = conn
        .diesel()
        .run_pending_migrations(MIGRATIONS)
        .map_err(|e| other(format!("running migrations: {e}")))?
        .iter()
        .map(|v| v.to_string())
        .collect();
    let dangling = foreign_key_violations(conn.diesel())
        .map_err(|e| other(format!("PRAGMA foreign_key_check: {e}")))?;
    if dangling > 0 {
        return Err(other(format!(
            "after the migrations, {dangling} rows point at rows that do not exist (PRAGMA foreign_key_check)"
        )));
    }
    conn.diesel()
        .batch_execute("PRAGMA foreign_keys = ON")
        .map_err(|e| other(format!("turning foreign keys back on: {e}")))?;
    let (environments_added, environments_total) =
        Environment::register(conn.diesel(), environments)
            .map_err(|e| other(format!("registering environments: {e}")))?;
    Ok(MigrateReport {
        created_file,
        applied,
        journal_mode: journal,
        environments_added,
        environments_total,
    })
}

#[derive(QueryableByName)]
struct FkViolation {
    #[diesel(sql_type = Text)]
    #[allow(dead_code)]
    table: String,
}

/// How many rows `PRAGMA foreign_key_check` reports.
fn foreign_key_violations(conn: &mut Conn) -> QueryResult<usize> {
    Ok(diesel::sql_query("PRAGMA foreign_key_check")
        .load::<FkViolation>(conn)?
        .len())
}

/// Reads the file's journal mode and synchronous setting without changing them.
pub fn read_file_modes(conn: &mut LabConn) -> QueryResult<(String, String)> {
    Ok((conn.journal_mode()?, conn.synchronous()?))
}

/// Whether `path` looks like an SQLite database (by its header), for the CLI's
/// refusals.
pub fn has_sqlite_header(path: &Path) -> bool {
    use std::io::Read;
    let mut header = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .map(|_| &header == b"SQLite format 3\0")
        .unwrap_or(false)
}

#[derive(QueryableByName)]
struct IntegrityRow {
    #[diesel(sql_type = Text)]
    integrity_check: String,
}

/// `PRAGMA integrity_check`: `["ok"]` for a sound file, else the problems.
pub fn integrity_check(conn: &mut Conn) -> QueryResult<Vec<String>> {
    Ok(diesel::sql_query("PRAGMA integrity_check")
        .load::<IntegrityRow>(conn)?
        .into_iter()
        .map(|r| r.integrity_check)
        .collect())
}
