DROP TABLE build_target;
DROP TABLE br_variable;
DROP TABLE br_layer;
DROP TABLE br_target;
DROP TABLE br_bitbake;
ALTER TABLE build_request DROP COLUMN environment_id;
ALTER TABLE build_request DROP COLUMN build_id;
DELETE FROM build WHERE request_id IS NULL OR claimed_by IS NULL OR seed IS NULL;
CREATE TABLE build_old (
    id               INTEGER PRIMARY KEY,
    request_id       BIGINT NOT NULL REFERENCES build_request (id),
    claimed_by       TEXT NOT NULL,
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
INSERT INTO build_old SELECT id, request_id, claimed_by, owner, lease_until, seed, events_expected,
    events_ingested, events_given_up, outcome, started_at, completed_at FROM build;
DROP TABLE build;
ALTER TABLE build_old RENAME TO build;
CREATE INDEX build_request_id ON build (request_id);
CREATE INDEX build_open ON build (completed_at, lease_until);
