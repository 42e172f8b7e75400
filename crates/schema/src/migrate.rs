//! Migrations and the daemons' read-only startup check, per backend.
//!
//! `locklab migrate` ([`migrate`]) is the only code that applies migrations. On
//! SQLite it creates the file, sets the journal mode (which belongs to the file)
//! and registers the environments; on a server it creates the database if the
//! server has none of that name. Each backend has its own migrations
//! (`migrations/sqlite`, `migrations/postgres`, `migrations/mysql`): the SQL
//! differs (ids, text keys, the table rebuild SQLite needs).
//!
//! The daemons call [`startup_check`]: it opens the database (an SQLite file
//! with `mode=rw`, never creating it) and queries the catalogue (`sqlite_master`
//! or `information_schema`) and diesel's migrations table directly. It never
//! calls diesel_migrations' `MigrationHarness`, whose pending check creates its
//! table and so writes.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use diesel::connection::SimpleConnection;
use diesel::migration::MigrationSource;
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::backend::{Conn, Kind, ServerUrl};
use crate::db::{pragma_text, DbTarget, LabConn, Policy};
use crate::models::Environment;
use crate::schema::LAB_TABLES;
use crate::settings::{JournalMode, MysqlEngine};

/// The SQLite migrations in `migrations/sqlite`, compiled in.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
/// PostgreSQL's, from `migrations/postgres`.
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");
/// MySQL/MariaDB's, from `migrations/mysql`.
pub const MYSQL_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/mysql");

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

/// The versions of the embedded SQLite migrations, oldest first.
pub fn embedded_versions() -> Result<Vec<String>, String> {
    embedded_versions_for(Kind::Sqlite)
}

/// The versions of a backend's embedded migrations, oldest first.
pub fn embedded_versions_for(kind: Kind) -> Result<Vec<String>, String> {
    fn names<DB: diesel::backend::Backend>(m: &EmbeddedMigrations) -> Result<Vec<String>, String>
    where
        EmbeddedMigrations: MigrationSource<DB>,
    {
        let migrations = MigrationSource::<DB>::migrations(m)
            .map_err(|e| format!("reading the embedded migrations: {e}"))?;
        Ok(migrations
            .iter()
            .map(|m| m.name().version().to_string())
            .collect())
    }
    match kind {
        Kind::Sqlite => names::<diesel::sqlite::Sqlite>(&MIGRATIONS),
        Kind::Postgres => names::<diesel::pg::Pg>(&POSTGRES_MIGRATIONS),
        Kind::Mysql => names::<diesel::mysql::Mysql>(&MYSQL_MIGRATIONS),
    }
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
    let catalogue = match conn {
        Conn::Sqlite(_) => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        }
        Conn::Postgres(_) => {
            "SELECT CAST(table_name AS TEXT) AS name FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        }
        Conn::Mysql(_) => {
            "SELECT CAST(table_name AS CHAR) AS name FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE'"
        }
    };
    let tables: BTreeSet<String> = diesel::sql_query(catalogue)
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

/// The daemons' startup check: the database exists, holds locklab's schema
/// and nothing else, and has no pending migration. Read-only.
pub fn startup_check(target: &DbTarget) -> Result<SchemaStatus, SchemaError> {
    let path = target.display();
    if let Some(file) = target.sqlite_path() {
        if !file.exists() {
            return Err(SchemaError::Missing { path });
        }
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
    let embedded = embedded_versions_for(target.kind()).map_err(|message| SchemaError::Other {
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
    migrate_with(target, journal_mode, MysqlEngine::Innodb, environments)
}

/// [`migrate`], with the MySQL tables' storage engine (`LAB_MYSQL_ENGINE`;
/// other backends ignore it, as SQLite's journal mode is ignored on a server).
pub fn migrate_with(
    target: &DbTarget,
    journal_mode: JournalMode,
    mysql_engine: MysqlEngine,
    environments: &[(String, u32)],
) -> Result<MigrateReport, SchemaError> {
    let path = target.display();
    if let DbTarget::Server(server) = target {
        return migrate_server(target, server, mysql_engine, environments);
    }
    let file = target.sqlite_path().unwrap_or(Path::new(""));
    let created_file = !file.exists();
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
    } else if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
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
    let applied = run_migrations(conn.diesel()).map_err(other)?;
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

/// Runs the backend's pending migrations on its own diesel connection.
fn run_migrations(conn: &mut Conn) -> Result<Vec<String>, String> {
    let applied = match conn {
        Conn::Sqlite(c) => c.run_pending_migrations(MIGRATIONS),
        Conn::Postgres(c) => c.run_pending_migrations(POSTGRES_MIGRATIONS),
        Conn::Mysql(c) => c.run_pending_migrations(MYSQL_MIGRATIONS),
    }
    .map_err(|e| format!("running migrations: {e}"))?;
    Ok(applied.iter().map(|v| v.to_string()).collect())
}

/// `migrate` on a server: creates the database if the server has none of that
/// name, refuses one that holds other tables, runs the pending migrations and
/// registers the environments.
fn migrate_server(
    target: &DbTarget,
    server: &ServerUrl,
    mysql_engine: MysqlEngine,
    environments: &[(String, u32)],
) -> Result<MigrateReport, SchemaError> {
    let path = target.display();
    let other = |message: String| SchemaError::Other {
        path: path.clone(),
        message,
    };
    let created_file = create_server_database(server, false).map_err(&other)?;
    let mut conn = LabConn::open(target, Arc::new(Policy::default()), false)
        .map_err(|e| classify_open_error(&path, e.to_string()))?;
    let status = read_status(conn.diesel(), &path)?;
    let foreign = foreign_tables(&status);
    if !foreign.is_empty() {
        return Err(SchemaError::Foreign {
            path,
            tables: foreign.join(", "),
        });
    }
    let engine = match server.kind() {
        Kind::Mysql => {
            let name = mysql_engine_name(mysql_engine);
            // New tables take the session's default engine (the migration
            // names none); existing ones are converted below.
            conn.diesel()
                .batch_execute(&format!("SET SESSION default_storage_engine = {name}"))
                .map_err(|e| other(format!("setting default_storage_engine: {e}")))?;
            Some(name)
        }
        _ => None,
    };
    let applied = run_migrations(conn.diesel()).map_err(&other)?;
    if let Some(name) = engine {
        set_mysql_engine(conn.diesel(), name).map_err(&other)?;
    }
    let (environments_added, environments_total) =
        Environment::register(conn.diesel(), environments)
            .map_err(|e| other(format!("registering environments: {e}")))?;
    Ok(MigrateReport {
        created_file,
        applied,
        journal_mode: match engine {
            Some(name) => format!("none (server; tables {name})"),
            None => "none (server)".to_string(),
        },
        environments_added,
        environments_total,
    })
}

/// MySQL's name of an engine.
fn mysql_engine_name(engine: MysqlEngine) -> &'static str {
    match engine {
        MysqlEngine::Innodb => "InnoDB",
        MysqlEngine::Myisam => "MyISAM",
    }
}

#[derive(QueryableByName)]
struct TableEngine {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    engine: Option<String>,
}

/// The storage engine of each of the lab's tables in the current MySQL
/// database, by table name.
pub fn mysql_table_engines(conn: &mut Conn) -> QueryResult<Vec<(String, String)>> {
    let rows: Vec<TableEngine> = diesel::sql_query(
        "SELECT CAST(table_name AS CHAR) AS table_name, CAST(engine AS CHAR) AS engine \
         FROM information_schema.tables WHERE table_schema = DATABASE() ORDER BY table_name",
    )
    .load(conn)?;
    Ok(rows
        .into_iter()
        .filter(|r| LAB_TABLES.contains(&r.table_name.as_str()))
        .map(|r| (r.table_name, r.engine.unwrap_or_default()))
        .collect())
}

/// Gives every lab table the wanted engine (`ALTER TABLE … ENGINE`), for a
/// database made with another one. Foreign keys keep InnoDB tables from
/// becoming MyISAM: that fails with MySQL's own message.
fn set_mysql_engine(conn: &mut Conn, name: &str) -> Result<(), String> {
    let tables = mysql_table_engines(conn).map_err(|e| format!("reading table engines: {e}"))?;
    for (table, engine) in tables {
        if !engine.eq_ignore_ascii_case(name) {
            conn.batch_execute(&format!("ALTER TABLE `{table}` ENGINE = {name}"))
                .map_err(|e| {
                    format!(
                        "table {table} is {engine}; converting it to {name} failed: {e} \
                         (drop the database, or let `locklab run` make a fresh one)"
                    )
                })?;
            log::info!("migrate: table {table} converted from {engine} to {name}");
        }
    }
    Ok(())
}

/// The server's administrative database, to create or drop others from.
fn admin_url(server: &ServerUrl) -> ServerUrl {
    match server.kind() {
        Kind::Postgres => server.with_database("postgres"),
        _ => server.with_database(""),
    }
}

/// A database name the lab creates: letters, digits and `_` only, so it never
/// needs quoting.
fn check_db_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 63
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(format!(
            "database name {name:?}: use letters, digits and _ only (at most 63)"
        ));
    }
    Ok(())
}

/// Creates the URL's database on its server if it does not exist; with
/// `fresh`, drops it first. Returns whether it was created.
pub fn create_server_database(server: &ServerUrl, fresh: bool) -> Result<bool, String> {
    use diesel::Connection;
    let name = server.database().unwrap_or_default().to_string();
    check_db_name(&name)?;
    let admin = admin_url(server);
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        format!(
            "{what} on {}: {}",
            admin.display(),
            e.to_string().lines().next().unwrap_or("")
        )
    };
    match server.kind() {
        Kind::Postgres => {
            let mut c = diesel::pg::PgConnection::establish(&admin.connect_url())
                .map_err(|e| fail("connecting", &e))?;
            #[derive(QueryableByName)]
            struct Exists {
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                n: i64,
            }
            if fresh {
                c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .map_err(|e| fail("dropping the old database", &e))?;
            }
            let n = diesel::sql_query(format!(
                "SELECT COUNT(*) AS n FROM pg_database WHERE datname = '{name}'"
            ))
            .get_result::<Exists>(&mut c)
            .map_err(|e| fail("listing databases", &e))?
            .n;
            if n == 0 {
                c.batch_execute(&format!("CREATE DATABASE {name}"))
                    .map_err(|e| fail("creating the database", &e))?;
            }
            Ok(n == 0)
        }
        Kind::Mysql => {
            let mut c = diesel::mysql::MysqlConnection::establish(&admin.connect_url())
                .map_err(|e| fail("connecting", &e))?;
            if fresh {
                c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
                    .map_err(|e| fail("dropping the old database", &e))?;
            }
            let created = diesel::sql_query(format!("CREATE DATABASE IF NOT EXISTS {name}"))
                .execute(&mut c)
                .map_err(|e| fail("creating the database", &e))?;
            // MySQL reports 1 row for a database it created, 0 if it existed.
            Ok(created > 0)
        }
        Kind::Sqlite => Err("not a server".to_string()),
    }
}

/// The server's name and version (`PostgreSQL 15.18`, `MariaDB 10.11.19-…`);
/// `None` for SQLite or a server that cannot be reached.
pub fn server_version(target: &DbTarget) -> Option<String> {
    #[derive(QueryableByName)]
    struct V {
        #[diesel(sql_type = Text)]
        v: String,
    }
    let sql = match target.kind() {
        Kind::Sqlite => return None,
        Kind::Postgres => "SELECT 'PostgreSQL ' || current_setting('server_version') AS v",
        Kind::Mysql => {
            "SELECT CAST(CONCAT(IF(VERSION() LIKE '%MariaDB%', 'MariaDB ', 'MySQL '), VERSION()) \
             AS CHAR) AS v"
        }
    };
    let mut conn = LabConn::open(target, Arc::new(Policy::default()), false).ok()?;
    diesel::sql_query(sql)
        .get_result::<V>(conn.diesel())
        .ok()
        .map(|r| r.v)
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
/// A server has no journal mode (`server`); its durability setting stands for
/// `synchronous` (PostgreSQL's `synchronous_commit`, InnoDB's
/// `innodb_flush_log_at_trx_commit`).
pub fn read_file_modes(conn: &mut LabConn) -> QueryResult<(String, String)> {
    #[derive(QueryableByName)]
    struct Setting {
        #[diesel(sql_type = Text)]
        value: String,
    }
    let durability = match conn.diesel() {
        Conn::Sqlite(_) => return Ok((conn.journal_mode()?, conn.synchronous()?)),
        Conn::Postgres(c) => format!(
            "synchronous_commit={}",
            diesel::sql_query("SELECT current_setting('synchronous_commit') AS value")
                .get_result::<Setting>(c)?
                .value
        ),
        Conn::Mysql(c) => format!(
            "innodb_flush_log_at_trx_commit={}",
            diesel::sql_query("SELECT CAST(@@innodb_flush_log_at_trx_commit AS CHAR) AS value")
                .get_result::<Setting>(c)?
                .value
        ),
    };
    Ok(("server".to_string(), durability))
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
