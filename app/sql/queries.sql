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
    kind text, type text, message_id text, wa_id text, user_id text, group_id text,
    phone_number_id text, waba_id text, event_ts timestamptz, payload json
) ON COMMIT DELETE ROWS

-- insert_staged --
-- Move the staged batch into the real tables; redelivered requests and events add nothing.
-- An event is new unless its key was stored in the last 8 days (config.REDELIVERY_WINDOW_DAYS;
-- 360dialog retries for up to 7), whichever daily partition holds it; ON CONFLICT catches the
-- same key in the same day. A skipped event whose payload text differs from the stored event's
-- is a dedup conflict (docs/protocol.md §7), recorded in wabahook_event_conflicts; the result is
-- how many events were stored and how many conflicts recorded. One statement without parameters: asyncpg prepares it once per connection and
-- PostgreSQL keeps its plan, rather than planning every partition probe again at every flush.
WITH requests AS (
    INSERT INTO wabahook_requests (id, received_at, channel, outcome, sha256, events, body)
    SELECT id, received_at, channel, outcome, sha256, events, body
    FROM wabahook_requests_staging
    ON CONFLICT (id, received_at) DO NOTHING
),
inserted AS (
    INSERT INTO wabahook_events (dedup_key, received_on, request_id, seq, received_at, channel,
                                 kind, type, message_id, wa_id, user_id, group_id,
                                 phone_number_id, waba_id, event_ts, payload)
    SELECT s.dedup_key, (s.received_at AT TIME ZONE 'UTC')::date, s.request_id, s.seq,
           s.received_at, s.channel, s.kind, s.type, s.message_id, s.wa_id, s.user_id,
           s.group_id, s.phone_number_id, s.waba_id, s.event_ts, s.payload
    FROM wabahook_events_staging s
    WHERE NOT EXISTS (
        -- OFFSET 0 keeps this a per-row index probe: flattened into an anti join, the planner
        -- (knowing nothing of the staged rows) would hash whole partitions instead.
        SELECT 1 FROM wabahook_events e
        WHERE e.dedup_key = s.dedup_key
          AND e.received_on >= (now() AT TIME ZONE 'UTC')::date - 8
        OFFSET 0
    )
    ON CONFLICT (dedup_key, received_on) DO NOTHING
    RETURNING request_id, seq
),
conflicts AS (
    INSERT INTO wabahook_event_conflicts (received_at, request_id, seq, dedup_key, channel, kind,
                                          type, message_id, wa_id, user_id, group_id,
                                          phone_number_id, payload, kept_event_id,
                                          kept_request_id, kept_received_at, kept_payload)
    SELECT s.received_at, s.request_id, s.seq, s.dedup_key, s.channel, s.kind, s.type,
           s.message_id, s.wa_id, s.user_id, s.group_id, s.phone_number_id, s.payload, kept.id,
           kept.request_id, kept.received_at, kept.payload
    FROM (
        -- The staged events dedup skipped (none, commonly). OFFSET 0 again: this anti join
        -- runs first, so the probe below is made for skipped events only, not for every one.
        SELECT * FROM wabahook_events_staging s
        WHERE NOT EXISTS (
            SELECT 1 FROM inserted i WHERE i.request_id = s.request_id AND i.seq = s.seq
        )
        OFFSET 0
    ) s
    JOIN LATERAL (
        -- The stored event with the key, by the same per-row probe. The statement's snapshot
        -- does not see the rows `inserted` wrote, so a copy that lost to another of the same
        -- batch (or of a flush running at the same time) finds nothing here.
        SELECT e.id, e.request_id, e.received_at, e.payload FROM wabahook_events e
        WHERE e.dedup_key = s.dedup_key
          AND e.received_on >= (now() AT TIME ZONE 'UTC')::date - 8
        LIMIT 1
    ) kept ON kept.payload::text <> s.payload::text  -- json keeps the text as received
    -- Conflicts are numbered in arrival order: the anti join above may hash the staged side,
    -- and then its rows come out in no particular order.
    ORDER BY s.received_at, s.request_id, s.seq
    RETURNING 1
)
SELECT (SELECT count(*) FROM inserted) AS stored, (SELECT count(*) FROM conflicts) AS conflicts

-- limit_lock_wait --
-- Maintenance waits at most this long for a lock, inside its transaction.
SET LOCAL lock_timeout = '2s'

-- maintain_partitions --
-- Retention: create the daily partitions from $1 to $2, drop those before $3; one runner at a time.
SELECT wabahook_create_partitions_v1($1, $2) AS created, wabahook_drop_partitions_v1($3) AS dropped
WHERE pg_try_advisory_xact_lock(7346092176)

-- delete_expired_conflicts --
-- Retention: delete the dedup conflicts that arrived before the UTC day $1; the result is how many.
WITH deleted AS (
    DELETE FROM wabahook_event_conflicts
    WHERE received_at < $1::date::timestamp AT TIME ZONE 'UTC'
    RETURNING 1
)
SELECT count(*) FROM deleted

-- select_events --
-- Stored events, oldest first; $1 channel, $2 kind, $3 received since, $4 limit, $5 contact: a
-- wa_id, user id or group id the event names (docs/protocol.md §6) (all optional but $4).
SELECT id, channel, kind, type, message_id, wa_id, user_id, group_id, phone_number_id, waba_id,
       event_ts, received_at, request_id, payload
FROM wabahook_events
WHERE ($1::text IS NULL OR channel = $1)
  AND ($2::text IS NULL OR kind = $2)
  AND ($3::timestamptz IS NULL OR (received_at >= $3
                                  AND received_on >= ($3 AT TIME ZONE 'UTC')::date))
  AND ($5::text IS NULL OR $5 IN (wa_id, user_id, group_id))
ORDER BY id
LIMIT $4

-- select_event_conflicts --
-- Recorded dedup conflicts, oldest first, each with the stored event's payload; $1 channel,
-- $2 kind, $3 received since, $4 limit, $5 contact as in select_events (all optional but $4).
SELECT id, received_at, channel, kind, type, message_id, wa_id, user_id, group_id,
       phone_number_id, request_id, seq, payload, kept_event_id, kept_request_id,
       kept_received_at, kept_payload
FROM wabahook_event_conflicts
WHERE ($1::text IS NULL OR channel = $1)
  AND ($2::text IS NULL OR kind = $2)
  AND ($3::timestamptz IS NULL OR received_at >= $3)
  AND ($5::text IS NULL OR $5 IN (wa_id, user_id, group_id))
ORDER BY id
LIMIT $4

-- select_requests --
-- Acknowledged bodies without the bytes, oldest first; $1 outcome (optional), $2 channel (optional), $3 limit.
SELECT id, channel, outcome, octet_length(body) AS bytes, sha256, events, received_at
FROM wabahook_requests
WHERE ($1::text IS NULL OR outcome = $1)
  AND ($2::text IS NULL OR channel = $2)
ORDER BY id  -- UUIDv7: arrival order
LIMIT $3

-- select_request_body --
-- The raw bytes of one acknowledged body; $1 request id.
SELECT body FROM wabahook_requests WHERE id = $1

-- ping --
-- Readiness check.
SELECT 1
