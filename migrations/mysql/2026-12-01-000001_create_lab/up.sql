-- locklab's schema on MySQL/MariaDB: the same tables, columns and constraints as
-- the SQLite migrations end with (migrations/sqlite/), in one step, since a server
-- database starts fresh. Keys and indexed text are VARCHAR (an index on TEXT needs
-- a prefix length). No ENGINE is named: `locklab migrate` sets the session's
-- default_storage_engine (LAB_MYSQL_ENGINE), and on MyISAM the FOREIGN KEY and
-- transaction clauses are accepted and ignored, which is the trap it shows. Every
-- timestamp is integer microseconds since the Unix
-- epoch; ties break by id.

CREATE TABLE project (
    id          BIGINT AUTO_INCREMENT PRIMARY KEY,
    name        VARCHAR(191) NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE build_request (
    id                 BIGINT AUTO_INCREMENT PRIMARY KEY,
    project_id         BIGINT NOT NULL REFERENCES project (id),
    state              VARCHAR(16) NOT NULL CHECK (state IN ('created', 'queued', 'inprogress', 'failed',
                                                      'deleted', 'cancelling', 'completed', 'archive')),
    -- JSON map of environment kind to count, e.g. {"qemux86": 2}
    needs              TEXT NOT NULL,
    priority           INTEGER NOT NULL DEFAULT 0,
    submitted_by       TEXT NOT NULL,
    client_request_id  VARCHAR(191),
    reason             TEXT,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    -- REFERENCES build (id) and build_environment (id): added below, once both exist
    build_id           BIGINT,
    environment_id     BIGINT
);
CREATE INDEX build_request_queue ON build_request (state, priority DESC, created_at, id);
CREATE INDEX build_request_client ON build_request (client_request_id);

CREATE TABLE build_environment (
    id           BIGINT AUTO_INCREMENT PRIMARY KEY,
    name         VARCHAR(191) NOT NULL UNIQUE,
    kind         VARCHAR(64) NOT NULL,
    lock_state   VARCHAR(16) NOT NULL DEFAULT 'free' CHECK (lock_state IN ('free', 'locked', 'running')),
    request_id   BIGINT REFERENCES build_request (id),
    lease_until  BIGINT,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX build_environment_kind ON build_environment (kind, lock_state);

CREATE TABLE booking (
    id              BIGINT AUTO_INCREMENT PRIMARY KEY,
    environment_id  BIGINT NOT NULL REFERENCES build_environment (id),
    request_id      BIGINT NOT NULL REFERENCES build_request (id),
    booked_by       TEXT NOT NULL,
    booked_at       BIGINT NOT NULL,
    released_at     BIGINT,
    CHECK (released_at IS NULL OR released_at >= booked_at)
);
CREATE INDEX booking_environment ON booking (environment_id, booked_at);
CREATE INDEX booking_request ON booking (request_id);

-- Deliberately no UNIQUE on request_id: a double claim must stay visible to `check`.
CREATE TABLE build (
    id               BIGINT AUTO_INCREMENT PRIMARY KEY,
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
CREATE INDEX build_request_id ON build (request_id);
CREATE INDEX build_open ON build (completed_at, lease_until);

ALTER TABLE build_request ADD FOREIGN KEY (build_id) REFERENCES build (id);
ALTER TABLE build_request ADD FOREIGN KEY (environment_id) REFERENCES build_environment (id);

CREATE TABLE build_event (
    id         BIGINT AUTO_INCREMENT PRIMARY KEY,
    build_id   BIGINT NOT NULL REFERENCES build (id),
    seq        INTEGER NOT NULL,
    kind       VARCHAR(16) NOT NULL CHECK (kind IN ('task_started', 'task_succeeded', 'task_failed',
                                             'log', 'variable', 'package', 'note')),
    name       TEXT NOT NULL,
    payload    TEXT NOT NULL,
    timestamp  BIGINT NOT NULL,
    UNIQUE (build_id, seq)
);

CREATE TABLE br_bitbake (
    id          BIGINT AUTO_INCREMENT PRIMARY KEY,
    request_id  BIGINT NOT NULL REFERENCES build_request (id) ON DELETE CASCADE,
    giturl      TEXT NOT NULL,
    commit_ref  TEXT NOT NULL,
    dirpath     TEXT NOT NULL
);
CREATE INDEX br_bitbake_request ON br_bitbake (request_id);
CREATE TABLE br_target (
    id          BIGINT AUTO_INCREMENT PRIMARY KEY,
    request_id  BIGINT NOT NULL REFERENCES build_request (id) ON DELETE CASCADE,
    target      TEXT NOT NULL,
    task        TEXT NOT NULL
);
CREATE INDEX br_target_request ON br_target (request_id);
CREATE TABLE br_layer (
    id          BIGINT AUTO_INCREMENT PRIMARY KEY,
    request_id  BIGINT NOT NULL REFERENCES build_request (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    giturl      TEXT NOT NULL
);
CREATE INDEX br_layer_request ON br_layer (request_id);
CREATE TABLE br_variable (
    id          BIGINT AUTO_INCREMENT PRIMARY KEY,
    request_id  BIGINT NOT NULL REFERENCES build_request (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    value       TEXT NOT NULL
);
CREATE INDEX br_variable_request ON br_variable (request_id);
CREATE TABLE build_target (
    id        BIGINT AUTO_INCREMENT PRIMARY KEY,
    build_id  BIGINT NOT NULL REFERENCES build (id),
    target    TEXT NOT NULL,
    task      TEXT NOT NULL
);
CREATE INDEX build_target_build ON build_target (build_id);
