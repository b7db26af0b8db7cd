-- create_migrations_table --
-- Bookkeeping of applied migrations; created before the first one runs.
CREATE TABLE IF NOT EXISTS wabahook_migrations (
    name text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- lock_migrations --
-- Serialise concurrent `migrate` runs (several workers starting at once); held to COMMIT.
SELECT pg_advisory_xact_lock(7346092175)

-- select_applied_migrations --
-- Names of the migrations already applied.
SELECT name FROM wabahook_migrations

-- insert_applied_migration --
-- Record a migration as applied; $1 name.
INSERT INTO wabahook_migrations (name) VALUES ($1)

-- create_staging_tables --
-- Per-connection tables that COPY writes into; their rows vanish at COMMIT.
CREATE TEMP TABLE IF NOT EXISTS wabahook_requests_staging (
    id uuid, received_at timestamptz, channel text, outcome text, sha256 bytea,
    events integer, body bytea
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS wabahook_events_staging (
    dedup_key bytea, request_id uuid, seq integer, received_at timestamptz, channel text,
    kind text, type text, message_id text, wa_id text, phone_number_id text, waba_id text,
    event_ts timestamptz, payload json
) ON COMMIT DELETE ROWS

-- insert_staged --
-- Move the staged batch into the real tables; redelivered requests and events add nothing.
INSERT INTO wabahook_requests (id, received_at, channel, outcome, sha256, events, body)
SELECT id, received_at, channel, outcome, sha256, events, body FROM wabahook_requests_staging
ON CONFLICT (id) DO NOTHING;
INSERT INTO wabahook_events (dedup_key, request_id, seq, received_at, channel, kind, type,
                             message_id, wa_id, phone_number_id, waba_id, event_ts, payload)
SELECT dedup_key, request_id, seq, received_at, channel, kind, type,
       message_id, wa_id, phone_number_id, waba_id, event_ts, payload
FROM wabahook_events_staging
ON CONFLICT (dedup_key) DO NOTHING

-- select_events --
-- Stored events, oldest first; $1 channel, $2 kind, $3 received since, $4 limit (all optional but $4).
SELECT id, channel, kind, type, message_id, wa_id, phone_number_id, waba_id, event_ts,
       received_at, request_id, payload
FROM wabahook_events
WHERE ($1::text IS NULL OR channel = $1)
  AND ($2::text IS NULL OR kind = $2)
  AND ($3::timestamptz IS NULL OR received_at >= $3)
ORDER BY id
LIMIT $4

-- select_requests --
-- Acknowledged bodies without the bytes, oldest first; $1 outcome (optional), $2 channel (optional), $3 limit.
SELECT id, channel, outcome, octet_length(body) AS bytes, sha256, events, received_at
FROM wabahook_requests
WHERE ($1::text IS NULL OR outcome = $1)
  AND ($2::text IS NULL OR channel = $2)
ORDER BY received_at, id
LIMIT $3

-- select_request_body --
-- The raw bytes of one acknowledged body; $1 request id.
SELECT body FROM wabahook_requests WHERE id = $1

-- ping --
-- Readiness check.
SELECT 1
