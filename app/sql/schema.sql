-- The whole wabahook schema as the migrations leave it (tests keep the two equal).
-- Requests and events, partitioned by UTC day so retention drops whole partitions.

CREATE TABLE wabahook_requests (
    id uuid NOT NULL,                     -- UUIDv7 made at arrival: time-ordered (lists sort by
                                          -- it, so no index on received_at), stable in the spool
    received_at timestamptz NOT NULL,     -- the partition key; kept when a spooled batch replays
    channel text NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('stored', 'unknown', 'quarantined')),
    sha256 bytea NOT NULL,
    events integer NOT NULL,              -- events extracted from the body, before dedup
    body bytea NOT NULL,                  -- the bytes exactly as received
    PRIMARY KEY (id, received_at)
) PARTITION BY RANGE (received_at);

-- Rows outside every daily partition (a spool replayed long after) land here.
CREATE TABLE wabahook_requests_default PARTITION OF wabahook_requests DEFAULT;

CREATE SEQUENCE wabahook_events_id_seq AS bigint;

CREATE TABLE wabahook_events (
    id bigint NOT NULL DEFAULT nextval('wabahook_events_id_seq'),
    dedup_key bytea NOT NULL,             -- 16-byte digest of the key in docs/protocol.md §7
    received_on date NOT NULL,            -- UTC day of arrival: the partition key
    request_id uuid NOT NULL,             -- the request that first carried the event
    seq integer NOT NULL,                 -- position of the event in that body
    received_at timestamptz NOT NULL,
    channel text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('message', 'status', 'error', 'other')),
    type text,
    message_id text,
    wa_id text,
    phone_number_id text,
    waba_id text,
    event_ts timestamptz,
    payload json NOT NULL,                -- the event's own JSON, as received
    PRIMARY KEY (id, received_on)
) PARTITION BY RANGE (received_on);

ALTER SEQUENCE wabahook_events_id_seq OWNED BY wabahook_events.id;

-- A unique index of a partitioned table must hold the partition key, so this one catches
-- duplicates within a day (concurrent flushes included); the dedup insert looks across the
-- days of the redelivery window itself (queries.sql, insert_staged).
CREATE UNIQUE INDEX wabahook_events_dedup_key_v1 ON wabahook_events (dedup_key, received_on);

CREATE TABLE wabahook_events_default PARTITION OF wabahook_events DEFAULT;

-- Create the daily partitions from first_day to last_day that do not exist yet.
CREATE FUNCTION wabahook_create_partitions_v1(first_day date, last_day date)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    day date;
    created integer := 0;
BEGIN
    FOR day IN SELECT generate_series(first_day, last_day, interval '1 day')::date LOOP
        IF to_regclass('wabahook_requests_' || to_char(day, 'YYYYMMDD')) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF wabahook_requests FOR VALUES FROM (%L) TO (%L)',
                'wabahook_requests_' || to_char(day, 'YYYYMMDD'),
                day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
            created := created + 1;
        END IF;
        IF to_regclass('wabahook_events_' || to_char(day, 'YYYYMMDD')) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF wabahook_events FOR VALUES FROM (%L) TO (%L)',
                'wabahook_events_' || to_char(day, 'YYYYMMDD'), day, day + 1);
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END
$$;

-- Drop the daily partitions that end on or before `before`, and expired rows of the defaults.
CREATE FUNCTION wabahook_drop_partitions_v1(before date)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    partition regclass;
    dropped integer := 0;
BEGIN
    FOR partition IN
        SELECT inhrelid::regclass FROM pg_inherits
        WHERE inhparent IN ('wabahook_requests'::regclass, 'wabahook_events'::regclass)
          AND inhrelid::regclass::text ~ '_[0-9]{8}$'
          AND to_date(right(inhrelid::regclass::text, 8), 'YYYYMMDD') < before
    LOOP
        EXECUTE format('DROP TABLE %s', partition);
        dropped := dropped + 1;
    END LOOP;
    DELETE FROM wabahook_requests_default WHERE received_at < before::timestamp AT TIME ZONE 'UTC';
    DELETE FROM wabahook_events_default WHERE received_on < before;
    RETURN dropped;
END
$$;

SELECT wabahook_create_partitions_v1(
    (now() AT TIME ZONE 'UTC')::date, (now() AT TIME ZONE 'UTC')::date + 3);
