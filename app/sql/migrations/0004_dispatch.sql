-- The dispatcher (README "Handing events on"): where each event was committed, how far the
-- dispatcher has read, and one delivery row per event it hands on.

-- The transaction that stored the event. Every transaction below the snapshot's xmin has ended,
-- so the dispatcher reads past its cursor in (xid, id) order up to that horizon and never skips
-- a row whose transaction committed late. Nullable, the default set apart: existing rows are not
-- rewritten, keep NULL and are not handed on (`wabahook replay` hands them on).
ALTER TABLE wabahook_events ADD COLUMN xid xid8;
ALTER TABLE wabahook_events ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
CREATE INDEX wabahook_events_xid_v1 ON wabahook_events (xid, id);

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

-- Partition maintenance learns the deliveries table, and counts what expires undelivered.
DROP FUNCTION wabahook_create_partitions_v1(date, date);
DROP FUNCTION wabahook_drop_partitions_v1(date);

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
