-- The whole wabahook schema as the migrations leave it (tests keep the two equal).
-- Requests and events, partitioned by UTC day so retention drops whole partitions; the rare
-- dedup conflicts in one plain table.

CREATE TABLE wabahook_requests (
    id uuid NOT NULL,                     -- UUIDv7 made at arrival: time-ordered (lists sort by
                                          -- it, so no index on received_at), stable in the spool
    received_at timestamptz NOT NULL,     -- the partition key; kept when a spooled batch replays
    channel text NOT NULL,
    outcome text NOT NULL
        CHECK (outcome IN ('stored', 'unknown', 'quarantined', 'too_many_events')),
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
    kind text NOT NULL
        CHECK (kind IN ('message', 'status', 'error', 'other', 'echo', 'call')),
    type text,
    message_id text,
    wa_id text,
    user_id text,                         -- business-scoped user id (docs/protocol.md §6)
    group_id text,                        -- the group of a group message or status
    phone_number_id text,
    waba_id text,
    event_ts timestamptz,
    payload json NOT NULL,                -- the event's own JSON, as received
    -- The transaction that stored the event: the dispatcher reads in (xid, id) order up to the
    -- snapshot's xmin, below which every transaction has ended (README "Handing events on").
    -- Nullable: rows from before the dispatcher existed have none and are not handed on.
    xid xid8 DEFAULT pg_current_xact_id(),
    PRIMARY KEY (id, received_on)
) PARTITION BY RANGE (received_on);

ALTER SEQUENCE wabahook_events_id_seq OWNED BY wabahook_events.id;

CREATE TABLE wabahook_events_default PARTITION OF wabahook_events DEFAULT;

CREATE INDEX wabahook_events_xid_v1 ON wabahook_events (xid, id);

-- Dedup (docs/protocol.md §7): the key of every event stored within the redelivery window, in
-- one plain table, so that a flush finds a redelivery with one unique probe, concurrent flushes
-- included (store_batch in queries.sql).
CREATE TABLE wabahook_event_keys (
    dedup_key bytea PRIMARY KEY,
    received_on date NOT NULL,            -- the day its event arrived: a key older than the
                                          -- redelivery window is stale, replaced by a new
                                          -- arrival and pruned by retention
    event_id bigint NOT NULL              -- the stored event (wabahook_events.id), for conflicts
);

-- Retention prunes by day; keys arrive in day order, so this index only grows at its right.
CREATE INDEX wabahook_event_keys_received_on_v1 ON wabahook_event_keys (received_on);

-- An arriving event that dedup skipped because its key is stored within the redelivery window,
-- while its payload differs from the stored event's (docs/protocol.md §7). The stored event
-- stays as it is; the arrival is recorded here. Conflicts are rare: one plain table, whose
-- expired rows retention deletes.
CREATE TABLE wabahook_event_conflicts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- recording order: lists sort by it
    received_at timestamptz NOT NULL,     -- arrival of the conflicting copy
    request_id uuid NOT NULL,             -- the request that carried it
    seq integer NOT NULL,                 -- its position in that body
    dedup_key bytea NOT NULL,
    channel text NOT NULL,
    kind text NOT NULL,
    type text,
    message_id text,
    wa_id text,
    user_id text,
    group_id text,
    phone_number_id text,
    payload json NOT NULL,                -- the conflicting event's JSON, as received
    kept_event_id bigint NOT NULL,        -- the stored event (wabahook_events.id),
    kept_request_id uuid NOT NULL,        -- the request that carried it,
    kept_received_at timestamptz NOT NULL,  -- when it arrived,
    kept_payload json NOT NULL            -- and its JSON, copied: the conflict outlives the
                                          -- stored event's partition by up to the window
);

-- Retention deletes by arrival; `--since` lists by it.
CREATE INDEX wabahook_event_conflicts_received_at_v1
    ON wabahook_event_conflicts (received_at);

-- How far the dispatcher has read, and who leads it; one row, made by the first dispatcher.
CREATE TABLE wabahook_dispatch_cursor (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    xid xid8 NOT NULL,                    -- the last event read: its transaction,
    event_id bigint NOT NULL,             -- its id,
    request_id uuid,                      -- and its request (bodies mode hands a body on once)
    leader text NOT NULL,                 -- host:pid of the leading dispatcher
    heartbeat_at timestamptz NOT NULL     -- its last step; a stale one is taken over
);

CREATE SEQUENCE wabahook_deliveries_id_seq AS bigint;

-- One event handed on (or, in bodies mode, the body of its request). Partitioned like the events,
-- so retention drops a day of deliveries with the day of events they name.
CREATE TABLE wabahook_deliveries (
    id bigint NOT NULL DEFAULT nextval('wabahook_deliveries_id_seq'),  -- the order in a contact
    received_on date NOT NULL,            -- the event's partition key, and this table's
    event_id bigint NOT NULL,
    channel text NOT NULL,
    contact text,                         -- the group, else wa_id, else user id (contact_of in
                                          -- app/normalise.py): one contact's deliveries go out
                                          -- one at a time, in id order; NULL: in no order
    state text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'retrying', 'delivered', 'dead')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,          -- set on the head of a contact only: the others wait
    last_attempt_at timestamptz,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, received_on)
) PARTITION BY RANGE (received_on);

ALTER SEQUENCE wabahook_deliveries_id_seq OWNED BY wabahook_deliveries.id;

CREATE TABLE wabahook_deliveries_default PARTITION OF wabahook_deliveries DEFAULT;

-- The dispatcher claims due heads by time; a contact's next delivery is found among its undone
-- rows, its oldest undone one is a head (the lag), and the few dead ones are listed by id.
CREATE INDEX wabahook_deliveries_due_v1 ON wabahook_deliveries (next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
CREATE INDEX wabahook_deliveries_undone_v1 ON wabahook_deliveries (channel, contact, id)
    WHERE state IN ('pending', 'retrying');
CREATE INDEX wabahook_deliveries_dead_v1 ON wabahook_deliveries (id) WHERE state = 'dead';

-- Create the daily partitions from first_day to last_day that do not exist yet.
CREATE FUNCTION wabahook_create_partitions_v2(first_day date, last_day date)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    day date;
    parent text;
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
        FOREACH parent IN ARRAY ARRAY['wabahook_events', 'wabahook_deliveries'] LOOP
            IF to_regclass(parent || '_' || to_char(day, 'YYYYMMDD')) IS NULL THEN
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                    parent || '_' || to_char(day, 'YYYYMMDD'), parent, day, day + 1);
                created := created + 1;
            END IF;
        END LOOP;
    END LOOP;
    RETURN created;
END
$$;

-- Drop the daily partitions that end on or before `before`, and expired rows of the defaults.
-- `undelivered`: events among them the dispatcher had not handed on yet (pending or retrying
-- deliveries, and events past its cursor), counted first so the loss is never silent.
CREATE FUNCTION wabahook_drop_partitions_v2(before date, OUT dropped integer, OUT undelivered bigint)
LANGUAGE plpgsql AS $$
DECLARE
    partition regclass;
BEGIN
    dropped := 0;
    SELECT count(*) INTO undelivered FROM wabahook_deliveries
    WHERE received_on < before AND state IN ('pending', 'retrying');
    SELECT undelivered + count(*) INTO undelivered
    FROM wabahook_events e JOIN wabahook_dispatch_cursor c ON (e.xid, e.id) > (c.xid, c.event_id)
    WHERE e.received_on < before;
    FOR partition IN
        SELECT inhrelid::regclass FROM pg_inherits
        WHERE inhparent IN ('wabahook_requests'::regclass, 'wabahook_events'::regclass,
                            'wabahook_deliveries'::regclass)
          AND inhrelid::regclass::text ~ '_[0-9]{8}$'
          AND to_date(right(inhrelid::regclass::text, 8), 'YYYYMMDD') < before
    LOOP
        EXECUTE format('DROP TABLE %s', partition);
        dropped := dropped + 1;
    END LOOP;
    DELETE FROM wabahook_requests_default WHERE received_at < before::timestamp AT TIME ZONE 'UTC';
    DELETE FROM wabahook_events_default WHERE received_on < before;
    DELETE FROM wabahook_deliveries_default WHERE received_on < before;
END
$$;

SELECT wabahook_create_partitions_v2(
    (now() AT TIME ZONE 'UTC')::date, (now() AT TIME ZONE 'UTC')::date + 3);
