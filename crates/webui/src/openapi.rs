//! The OpenAPI document of the JSON API, `GET /api/openapi.json`.
//!
//! The operations come from the handlers' `#[utoipa::path]` annotations and
//! the schemas from the request and response types (utoipa derives both).
//! What the types cannot say is built here from the same code the handlers
//! run: the ranges from `api`'s constants, the enums from the state enums'
//! `ALL`, the pattern of a project name from the predicates that
//! `api::validate` applies to every character. What only the database
//! knows, the registered environment kinds and how many of each exist, is
//! filled in at startup from the capacity webui validates `needs` against,
//! so that a body the schema calls valid is a body webui accepts.
//!
//! The common daemon routes (`/healthz`, `/metrics`, `/api/stats`,
//! `/load-start`, `/drain`) live in the daemon crate and are not described.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use schema::error::LockClass;
use schema::models::Needs;
use schema::types::{LockState, RequestState};
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, KnownFormat, Object, ObjectBuilder, Schema, SchemaFormat,
    SchemaType, Type,
};
use utoipa::openapi::RefOr;
use utoipa::{OpenApi, PartialSchema, ToSchema};

use crate::api::{self, NoQuery, DEFAULT_LIMIT, MAX_COUNT, MAX_LIMIT, MAX_PROJECT_CHARS};
use crate::error::ErrorBody;
use crate::{ApiError, App};

/// Where the document is served.
pub const PATH: &str = "/api/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "locklab webui",
        description = "The JSON API of locklab's webui daemon: a Toaster-like API that creates \
build requests on a shared SQLite file. Every error is JSON (`ErrorBody`). Besides the statuses \
listed per operation, any request may get 405 (a method the path does not serve), 408 (a request \
head slower than 5 s) or 431 (over 16 KiB of headers). The daemon's common routes (/healthz, \
/metrics, /api/stats, /load-start, /drain) are not described here."
    ),
    paths(
        api::list,
        api::create,
        api::get,
        api::cancel,
        api::environments,
        openapi_json
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "build requests", description = "What runbuilds schedules and buildinfohelper builds"),
        (name = "environments", description = "The machines runbuilds books"),
        (name = "meta", description = "This document")
    )
)]
struct ApiDoc;

/// The document for a webui whose registered environments are `capacity`
/// (kind to count).
pub fn document(capacity: &BTreeMap<String, u32>) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    let create = doc.components.as_mut().and_then(|c| {
        c.schemas
            .get_mut(<api::CreateRequest as ToSchema>::name().as_ref())
    });
    if let Some(RefOr::T(Schema::Object(create))) = create {
        // A missing or null `needs` means the default, which is valid only
        // when the registered environments can satisfy it.
        let default_ok = Needs::default().unsatisfiable_by(capacity).is_none();
        create.properties.insert(
            "needs".to_string(),
            needs_schema(capacity, default_ok).into(),
        );
        if !default_ok {
            create.required.push("needs".to_string());
        }
    }
    doc
}

/// `needs` as [`api::validate`] accepts it against `capacity`: at least
/// one registered kind, each at least 1 and at most as many as exist; null
/// or missing for the default when `nullable`.
fn needs_schema(capacity: &BTreeMap<String, u32>, nullable: bool) -> Object {
    let schema_type: SchemaType = if nullable {
        [Type::Object, Type::Null].into_iter().collect()
    } else {
        Type::Object.into()
    };
    let mut needs = ObjectBuilder::new()
        .schema_type(schema_type)
        .description(Some(format!(
            "Environments each request needs, by kind: at least one registered kind, each at \
             least 1 and at most as many as are registered. Missing or null: {}.",
            describe(&Needs::default())
        )))
        .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)))
        .min_properties(Some(1));
    for (kind, have) in capacity {
        needs = needs.property(
            kind.clone(),
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
                .minimum(Some(1))
                .maximum(Some(*have)),
        );
    }
    needs.build()
}

fn describe(needs: &Needs) -> String {
    needs
        .0
        .iter()
        .map(|(kind, n)| format!("{n} {kind}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn int64(minimum: i64, maximum: i64) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(minimum))
        .maximum(Some(maximum))
}

/// `count` of a create: 1 to [`MAX_COUNT`].
pub fn count_schema() -> Object {
    int64(1, MAX_COUNT)
        .description(Some("How many requests to create."))
        .build()
}

/// The ids a create answers: one per request created.
pub fn ids_schema() -> utoipa::openapi::schema::Array {
    ArrayBuilder::new()
        .items(int64(1, i64::MAX))
        .min_items(Some(1))
        .max_items(usize::try_from(MAX_COUNT).ok())
        .build()
}

/// `limit` of the list: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when missing.
pub fn limit_schema() -> Object {
    int64(1, MAX_LIMIT)
        .description(Some("The most requests to return."))
        .default(Some(DEFAULT_LIMIT.into()))
        .build()
}

/// `after` of the list: an id, or 0 for the first page.
pub fn after_schema() -> Object {
    int64(0, i64::MAX)
        .description(Some(
            "Only requests with a larger id: the `next_after` of the page before; 0 or \
             missing for the first page.",
        ))
        .build()
}

/// A project name as [`api::validate`] accepts it: 1 to
/// [`MAX_PROJECT_CHARS`] characters, at least one of them not white space
/// (Rust's `trim`), none of them a control character other than tab.
pub fn project_schema() -> Object {
    let refused = class(api::refused_in_names);
    let blank = class(|c| c.is_whitespace() && !api::refused_in_names(c));
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "The project, created on first use: not blank, and no control character but tab.",
        ))
        .min_length(Some(1))
        .max_length(Some(MAX_PROJECT_CHARS))
        .pattern(Some(format!(
            "^[^{refused}]*[^{refused}{blank}][^{refused}]*$"
        )))
        .build()
}

/// The characters of the Basic Multilingual Plane for which `pred` holds,
/// as the body of a regex character class in `\uXXXX` ranges, which
/// ECMA-262, Python's `re` and Rust's `regex` read alike. Neither predicate
/// used here holds beyond U+FFFF (a test checks it).
fn class(pred: impl Fn(char) -> bool) -> String {
    let mut out = String::new();
    let mut run: Option<(u32, u32)> = None;
    let flush = |run: Option<(u32, u32)>, out: &mut String| {
        if let Some((first, last)) = run {
            out.push_str(&format!("\\u{first:04X}"));
            if last > first {
                out.push_str(&format!("-\\u{last:04X}"));
            }
        }
    };
    for code in 0..=0xFFFFu32 {
        let holds = char::from_u32(code).is_some_and(&pred);
        run = match (run, holds) {
            (Some((first, last)), true) if last + 1 == code => Some((first, code)),
            (run, true) => {
                flush(run, &mut out);
                Some((code, code))
            }
            (run, false) => {
                flush(run, &mut out);
                None
            }
        };
    }
    flush(run, &mut out);
    out
}

fn string_enum<'a>(values: impl IntoIterator<Item = &'a str>) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
        .build()
}

/// `class` of a lock failure: every [`LockClass`].
pub fn lock_class_schema() -> Object {
    let mut class = string_enum(LockClass::ALL.iter().map(|c| c.as_str()));
    class.description =
        Some("A lock failure only: the class of SQLite's (or the server's) error.".to_string());
    class
}

/// [`RequestState`] in the document: every state, as the database stores it.
pub struct RequestStateSchema;

impl PartialSchema for RequestStateSchema {
    fn schema() -> RefOr<Schema> {
        string_enum(RequestState::ALL.iter().map(|s| s.as_str())).into()
    }
}

impl ToSchema for RequestStateSchema {
    fn name() -> std::borrow::Cow<'static, str> {
        "RequestState".into()
    }
}

/// [`LockState`] in the document.
pub struct LockStateSchema;

impl PartialSchema for LockStateSchema {
    fn schema() -> RefOr<Schema> {
        string_enum(LockState::ALL.iter().map(|s| s.as_str())).into()
    }
}

impl ToSchema for LockStateSchema {
    fn name() -> std::borrow::Cow<'static, str> {
        "LockState".into()
    }
}

/// `GET /api/openapi.json`: this document, made once at startup.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "meta",
    summary = "This OpenAPI document",
    params(NoQuery),
    responses(
        (status = 200, description = "The document", content_type = "application/json",
            body = Object),
        (status = 400, description = "A query parameter (this endpoint takes none)", body = ErrorBody),
    )
)]
pub async fn openapi_json(
    app: web::Data<App>,
    _q: web::Query<NoQuery>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(app.openapi.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap() -> BTreeMap<String, u32> {
        BTreeMap::from([("qemux86".to_string(), 3), ("qemuarm".to_string(), 2)])
    }

    #[test]
    fn the_classes_are_the_predicates() {
        // Nothing beyond the BMP is refused or white space, so the \uXXXX
        // classes are complete.
        for code in 0x10000..=0x10FFFFu32 {
            if let Some(c) = char::from_u32(code) {
                assert!(!api::refused_in_names(c) && !c.is_whitespace(), "{c:?}");
            }
        }
        assert_eq!(
            class(api::refused_in_names),
            r"\u0000-\u0008\u000A-\u001F\u007F-\u009F"
        );
    }

    #[test]
    fn the_document_encodes_the_rules() {
        let doc = serde_json::to_value(document(&cap())).expect("serializes");
        let schemas = &doc["components"]["schemas"];
        let create = &schemas["CreateRequest"];
        assert_eq!(create["properties"]["count"]["maximum"], MAX_COUNT);
        assert_eq!(
            create["properties"]["project"]["maxLength"],
            MAX_PROJECT_CHARS
        );
        let needs = &create["properties"]["needs"];
        assert_eq!(needs["properties"]["qemux86"]["maximum"], 3);
        assert_eq!(needs["properties"]["qemuarm"]["maximum"], 2);
        assert_eq!(needs["additionalProperties"], false);
        let required = create["required"].as_array().expect("required");
        assert!(!required.contains(&"needs".into()), "{create}");

        // Without qemux86 the default cannot be met: needs is required.
        let doc = serde_json::to_value(document(&BTreeMap::from([("qemuarm".to_string(), 2)])))
            .expect("serializes");
        let create = &doc["components"]["schemas"]["CreateRequest"];
        assert!(create["required"]
            .as_array()
            .expect("required")
            .contains(&"needs".into()));

        let list = &doc["paths"]["/api/build-requests"]["get"]["parameters"];
        let limit = list
            .as_array()
            .expect("parameters")
            .iter()
            .find(|p| p["name"] == "limit")
            .expect("limit");
        assert_eq!(limit["schema"]["maximum"], MAX_LIMIT);
        assert_eq!(schemas["ErrorBody"]["additionalProperties"], false);
    }
}
