-- Toaster's create shape (issue 8): `Project.schedule_build` makes the Build row
-- first, then the request pointing at it, then the request's child rows, each in
-- its own transaction. runbuilds later fills the Build row in.
--
-- So `build.request_id`, `claimed_by` and `seed` become nullable: a Build row
-- made by webui has none of them until runbuilds claims its request. SQLite
-- cannot drop NOT NULL in place: the table is rebuilt (lang_altertable.html's
-- procedure; `locklab migrate` runs migrations with foreign_keys off and runs
-- PRAGMA foreign_key_check afterwards).

CREATE TABLE build_new (
    id               INTEGER PRIMARY KEY,
    request_id       BIGINT REFERENCES build_request (id),
    claimed_by       TEXT,
    owner            TEXT,
    lease_until      BIGINT,
    seed             BIGINT,
    events_expected  INTEGER,
    events_ingested  INTEGER NOT NULL DEFAULT 0,
    events_given_up  INTEGER NOT NULL DEFAULT 0,
    outcome          TEXT CHECK (outcome IN ('succeeded', 'failed')),
    started_at       BIGINT NOT NULL,
    completed_at     BIGINT
);
INSERT INTO build_new (id, request_id, claimed_by, owner, lease_until, seed, events_expected,
                       events_ingested, events_given_up, outcome, started_at, completed_at)
    SELECT id, request_id, claimed_by, owner, lease_until, seed, events_expected,
           events_ingested, events_given_up, outcome, started_at, completed_at
    FROM build;
DROP TABLE build;
ALTER TABLE build_new RENAME TO build;
CREATE INDEX build_request_id ON build (request_id);
CREATE INDEX build_open ON build (completed_at, lease_until);

-- The request points at the Build row webui made (Toaster's BuildRequest.build)
-- and at the environment runbuilds assigned (BuildRequest.environment).
ALTER TABLE build_request ADD COLUMN build_id BIGINT REFERENCES build (id);
ALTER TABLE build_request ADD COLUMN environment_id BIGINT REFERENCES build_environment (id);

-- The request's child rows (Toaster's BRBitbake, BRTarget, BRLayer, BRVariable):
-- deleting a request that failed part way cascades to them.
CREATE TABLE br_bitbake (
    id          INTEGER PRIMARY KEY,
    request_id  BIGINT NOT NULL REFERENCES build_request (id) ON DELETE CASCADE,
    giturl      TEXT NOT NULL,
    commit_ref  TEXT NOT NULL,
    dirpath     TEXT NOT NULL
);
CREATE INDEX br_bitbake_request ON br_bitbake (request_id);
CREATE TABLE br_target (
    id          INTEGER PRIMARY KEY,
    request_id  BIGINT NOT NULL REFERENCES build_request (id) ON DELETE CASCADE,
    target      TEXT NOT NULL,
    task        TEXT NOT NULL
);
CREATE INDEX br_target_request ON br_target (request_id);
CREATE TABLE br_layer (
    id          INTEGER PRIMARY KEY,
    request_id  BIGINT NOT NULL REFERENCES build_request (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    giturl      TEXT NOT NULL
);
CREATE INDEX br_layer_request ON br_layer (request_id);
CREATE TABLE br_variable (
    id          INTEGER PRIMARY KEY,
    request_id  BIGINT NOT NULL REFERENCES build_request (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    value       TEXT NOT NULL
);
CREATE INDEX br_variable_request ON br_variable (request_id);
-- Toaster's Target rows hang off the Build, so they stay when a request is
-- deleted part way.
CREATE TABLE build_target (
    id        INTEGER PRIMARY KEY,
    build_id  BIGINT NOT NULL REFERENCES build (id),
    target    TEXT NOT NULL,
    task      TEXT NOT NULL
);
CREATE INDEX build_target_build ON build_target (build_id);
