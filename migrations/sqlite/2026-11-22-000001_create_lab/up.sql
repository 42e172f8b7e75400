-- locklab's schema, shaped like Yocto Toaster's orm tables.
-- Every timestamp is integer microseconds since the Unix epoch; ties break by id.

CREATE TABLE project (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE build_request (
    id                 INTEGER PRIMARY KEY,
    project_id         BIGINT NOT NULL REFERENCES project (id),
    state              TEXT NOT NULL CHECK (state IN ('created', 'queued', 'inprogress', 'failed',
                                                      'deleted', 'cancelling', 'completed', 'archive')),
    -- JSON map of environment kind to count, e.g. {"qemux86": 2}
    needs              TEXT NOT NULL,
    priority           INTEGER NOT NULL DEFAULT 0,
    submitted_by       TEXT NOT NULL,
    -- the X-Request-Id of the HTTP request that created the row
    client_request_id  TEXT,
    -- why the request failed or was cancelled, for a human
    reason             TEXT,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL
);
-- The queue order: priority DESC, then created_at, then id.
CREATE INDEX build_request_queue ON build_request (state, priority DESC, created_at, id);
CREATE INDEX build_request_client ON build_request (client_request_id);

CREATE TABLE build_environment (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    kind         TEXT NOT NULL,
    lock_state   TEXT NOT NULL DEFAULT 'free' CHECK (lock_state IN ('free', 'locked', 'running')),
    request_id   BIGINT REFERENCES build_request (id),
    -- mirrors the lease of the build that holds the environment
    lease_until  BIGINT,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX build_environment_kind ON build_environment (kind, lock_state);

-- The booking history proves or refutes double booking: [booked_at, released_at).
CREATE TABLE booking (
    id              INTEGER PRIMARY KEY,
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
    id               INTEGER PRIMARY KEY,
    request_id       BIGINT NOT NULL REFERENCES build_request (id),
    claimed_by       TEXT NOT NULL,
    -- the ingester instance that holds the build, under a lease
    owner            TEXT,
    lease_until      BIGINT,
    seed             BIGINT NOT NULL,
    events_expected  INTEGER,
    events_ingested  INTEGER NOT NULL DEFAULT 0,
    events_given_up  INTEGER NOT NULL DEFAULT 0,
    outcome          TEXT CHECK (outcome IN ('succeeded', 'failed')),
    started_at       BIGINT NOT NULL,
    completed_at     BIGINT
);
CREATE INDEX build_request_id ON build (request_id);
CREATE INDEX build_open ON build (completed_at, lease_until);

CREATE TABLE build_event (
    id         INTEGER PRIMARY KEY,
    build_id   BIGINT NOT NULL REFERENCES build (id),
    seq        INTEGER NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('task_started', 'task_succeeded', 'task_failed',
                                             'log', 'variable', 'package', 'note')),
    name       TEXT NOT NULL,
    payload    TEXT NOT NULL,
    timestamp  BIGINT NOT NULL,
    -- a retried write cannot duplicate an event; also the index for events by build
    UNIQUE (build_id, seq)
);
