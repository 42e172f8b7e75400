//! diesel's view of the tables created by `migrations/`. Written by hand so that
//! ids are `BigInt` (SQLite's `INTEGER PRIMARY KEY` is a 64-bit rowid).

diesel::table! {
    project (id) {
        id -> BigInt,
        name -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    build_request (id) {
        id -> BigInt,
        project_id -> BigInt,
        state -> Text,
        needs -> Text,
        priority -> Integer,
        submitted_by -> Text,
        client_request_id -> Nullable<Text>,
        reason -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
        build_id -> Nullable<BigInt>,
        environment_id -> Nullable<BigInt>,
    }
}

diesel::table! {
    build_environment (id) {
        id -> BigInt,
        name -> Text,
        kind -> Text,
        lock_state -> Text,
        request_id -> Nullable<BigInt>,
        lease_until -> Nullable<BigInt>,
        updated_at -> BigInt,
    }
}

diesel::table! {
    booking (id) {
        id -> BigInt,
        environment_id -> BigInt,
        request_id -> BigInt,
        booked_by -> Text,
        booked_at -> BigInt,
        released_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    build (id) {
        id -> BigInt,
        request_id -> Nullable<BigInt>,
        claimed_by -> Nullable<Text>,
        owner -> Nullable<Text>,
        lease_until -> Nullable<BigInt>,
        seed -> Nullable<BigInt>,
        events_expected -> Nullable<Integer>,
        events_ingested -> Integer,
        events_given_up -> Integer,
        outcome -> Nullable<Text>,
        started_at -> BigInt,
        completed_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    build_event (id) {
        id -> BigInt,
        build_id -> BigInt,
        seq -> Integer,
        kind -> Text,
        name -> Text,
        payload -> Text,
        timestamp -> BigInt,
    }
}

diesel::table! {
    br_bitbake (id) {
        id -> BigInt,
        request_id -> BigInt,
        giturl -> Text,
        commit_ref -> Text,
        dirpath -> Text,
    }
}

diesel::table! {
    br_target (id) {
        id -> BigInt,
        request_id -> BigInt,
        target -> Text,
        task -> Text,
    }
}

diesel::table! {
    br_layer (id) {
        id -> BigInt,
        request_id -> BigInt,
        name -> Text,
        giturl -> Text,
    }
}

diesel::table! {
    br_variable (id) {
        id -> BigInt,
        request_id -> BigInt,
        name -> Text,
        value -> Text,
    }
}

diesel::table! {
    build_target (id) {
        id -> BigInt,
        build_id -> BigInt,
        target -> Text,
        task -> Text,
    }
}

diesel::joinable!(build_request -> project (project_id));
diesel::joinable!(booking -> build_environment (environment_id));
diesel::joinable!(booking -> build_request (request_id));
diesel::joinable!(build -> build_request (request_id));
diesel::joinable!(build_event -> build (build_id));

diesel::allow_tables_to_appear_in_same_query!(
    project,
    build_request,
    build_environment,
    booking,
    build,
    build_event,
    br_bitbake,
    br_target,
    br_layer,
    br_variable,
    build_target,
);

/// The tables that belong to locklab. `migrate` refuses a file holding any other.
pub const LAB_TABLES: &[&str] = &[
    "project",
    "build_request",
    "build_environment",
    "booking",
    "build",
    "build_event",
    "br_bitbake",
    "br_target",
    "br_layer",
    "br_variable",
    "build_target",
];
