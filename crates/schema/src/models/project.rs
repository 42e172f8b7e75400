//! `project`: a request belongs to one, found or created by name.

use crate::backend::Conn;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error};
use serde::Serialize;

use crate::schema::project;
use crate::types::{now_micros, ProjectId};

/// A row of `project`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable, Serialize)]
#[diesel(table_name = project)]
pub struct Project {
    pub id: ProjectId,
    pub name: String,
    pub created_at: i64,
}

impl Project {
    /// Django's `get_or_create`: read first, create when missing. When another
    /// process created the same name in between, the UNIQUE constraint fires and
    /// the row is read again, as Django does. The name is stored verbatim (bound,
    /// never interpolated).
    pub fn get_or_create(conn: &mut Conn, name: &str) -> QueryResult<ProjectId> {
        if let Some(id) = Project::find(conn, name)? {
            return Ok(id);
        }
        match Project::create(conn, name) {
            Err(Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
                Project::find(conn, name)?.ok_or(Error::NotFound)
            }
            other => other,
        }
    }

    /// Inserts a project (a write with no read before it).
    pub fn create(conn: &mut Conn, name: &str) -> QueryResult<ProjectId> {
        diesel::insert_into(project::table)
            .values((project::name.eq(name), project::created_at.eq(now_micros())))
            .execute(conn)?;
        super::last_insert_rowid(conn).map(ProjectId)
    }

    pub fn find(conn: &mut Conn, name: &str) -> QueryResult<Option<ProjectId>> {
        project::table
            .filter(project::name.eq(name))
            .select(project::id)
            .first(conn)
            .optional()
    }

    pub fn count(conn: &mut Conn) -> QueryResult<i64> {
        project::table.count().get_result(conn)
    }

    pub fn by_id(conn: &mut Conn, id: ProjectId) -> QueryResult<Option<Project>> {
        project::table
            .find(id)
            .select(Project::as_select())
            .first(conn)
            .optional()
    }

    /// The names of these projects, by id (a page of requests shows them):
    /// one primary-key lookup each.
    pub fn names(
        conn: &mut Conn,
        ids: &[ProjectId],
    ) -> QueryResult<std::collections::BTreeMap<ProjectId, String>> {
        let rows: Vec<(ProjectId, String)> = project::table
            .filter(project::id.eq_any(ids))
            .select((project::id, project::name))
            .load(conn)?;
        Ok(rows.into_iter().collect())
    }
}
