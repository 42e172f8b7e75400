//! A request's child rows, as Toaster's `Project.schedule_build` makes them:
//! one bitbake row (`BRBitbake`), one row per target (`BRTarget`), per layer
//! (`BRLayer`) and per variable (`BRVariable`), each deleted with its request
//! (ON DELETE CASCADE). The Build's own `Target` rows (`build_target`) hang off
//! the Build row and stay when a request is deleted part way.
//!
//! What a project holds is fixed here: the lab's project is a `poky` checkout
//! building `core-image-minimal`, so every request gets the same children.

use crate::backend::Conn;
use diesel::prelude::*;

use crate::schema::{br_bitbake, br_layer, br_target, br_variable, build_target};
use crate::types::{BuildId, RequestId};

/// The project's targets: (target, task). Toaster's empty task means "build".
pub const TARGETS: &[(&str, &str)] = &[("core-image-minimal", "")];
/// The project's layers: (name, git URL).
pub const LAYERS: &[(&str, &str)] = &[
    ("meta", "git://git.yoctoproject.org/poky"),
    ("meta-poky", "git://git.yoctoproject.org/poky"),
    ("meta-yocto-bsp", "git://git.yoctoproject.org/poky"),
];
/// The project's variables.
pub const VARIABLES: &[(&str, &str)] = &[
    ("MACHINE", "qemux86"),
    ("DISTRO", "poky"),
    ("IMAGE_FSTYPES", "ext4"),
    ("IMAGE_INSTALL:append", " htop"),
];

/// One child row of a request to create, in the order `schedule_build`
/// creates them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Child {
    Bitbake,
    Target(&'static str, &'static str),
    Layer(&'static str, &'static str),
    Variable(&'static str, &'static str),
}

/// Every child row of one request, in order: bitbake, targets, layers,
/// variables.
pub fn children() -> Vec<Child> {
    let mut out = vec![Child::Bitbake];
    out.extend(TARGETS.iter().map(|(t, k)| Child::Target(t, k)));
    out.extend(LAYERS.iter().map(|(n, u)| Child::Layer(n, u)));
    out.extend(VARIABLES.iter().map(|(n, v)| Child::Variable(n, v)));
    out
}

impl Child {
    /// Inserts this child row of `request`; 1 row.
    pub fn create(self, conn: &mut Conn, request: RequestId) -> QueryResult<usize> {
        match self {
            Child::Bitbake => diesel::insert_into(br_bitbake::table)
                .values((
                    br_bitbake::request_id.eq(request),
                    br_bitbake::giturl.eq("git://git.openembedded.org/bitbake"),
                    br_bitbake::commit_ref.eq("2.8"),
                    br_bitbake::dirpath.eq("bitbake"),
                ))
                .execute(conn),
            Child::Target(target, task) => diesel::insert_into(br_target::table)
                .values((
                    br_target::request_id.eq(request),
                    br_target::target.eq(target),
                    br_target::task.eq(task),
                ))
                .execute(conn),
            Child::Layer(name, giturl) => diesel::insert_into(br_layer::table)
                .values((
                    br_layer::request_id.eq(request),
                    br_layer::name.eq(name),
                    br_layer::giturl.eq(giturl),
                ))
                .execute(conn),
            Child::Variable(name, value) => diesel::insert_into(br_variable::table)
                .values((
                    br_variable::request_id.eq(request),
                    br_variable::name.eq(name),
                    br_variable::value.eq(value),
                ))
                .execute(conn),
        }
    }
}

/// A Build's `Target` row (Toaster's `Target.objects.create(build=...)`).
pub fn create_build_target(
    conn: &mut Conn,
    build: BuildId,
    target: &str,
    task: &str,
) -> QueryResult<usize> {
    diesel::insert_into(build_target::table)
        .values((
            build_target::build_id.eq(build),
            build_target::target.eq(target),
            build_target::task.eq(task),
        ))
        .execute(conn)
}

/// Child rows per request (`check` and tests): (request, rows).
pub fn child_counts(conn: &mut Conn) -> QueryResult<Vec<(RequestId, i64)>> {
    let mut out: std::collections::BTreeMap<RequestId, i64> = Default::default();
    for r in br_bitbake::table
        .select(br_bitbake::request_id)
        .load::<RequestId>(conn)?
        .into_iter()
        .chain(br_target::table.select(br_target::request_id).load(conn)?)
        .chain(br_layer::table.select(br_layer::request_id).load(conn)?)
        .chain(
            br_variable::table
                .select(br_variable::request_id)
                .load(conn)?,
        )
    {
        *out.entry(r).or_default() += 1;
    }
    Ok(out.into_iter().collect())
}
