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

-- store_batch --
-- Store a batch in one statement, one round trip, committed on its own: the requests ($1-$7,
-- one array per column) and their events ($8-$22, in arrival order). Redelivered requests and
-- events add nothing. An event is new unless its key is in wabahook_event_keys from the last 8
-- days (config.REDELIVERY_WINDOW_DAYS; 360dialog retries for up to 7): the key's insert is the
-- probe, and a stale key is taken over. A skipped event whose payload text differs from the
-- stored event's is a dedup conflict (docs/protocol.md §7), recorded in
-- wabahook_event_conflicts. The result: events stored, conflicts recorded. New events wake the
-- dispatcher at COMMIT (one notification per transaction and name).
WITH requests AS (
    INSERT INTO wabahook_requests (id, received_at, channel, outcome, sha256, events, body)
    SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::bytea[],
                         $6::integer[], $7::bytea[])
    ON CONFLICT (id, received_at) DO NOTHING
),
arrived AS MATERIALIZED (
    -- Ids are drawn here, in arrival order, once: the key and its event carry the same one.
    SELECT a.*, (a.received_at AT TIME ZONE 'UTC')::date AS received_on,
           nextval('wabahook_events_id_seq') AS id
    FROM unnest($8::bytea[], $9::uuid[], $10::integer[], $11::timestamptz[], $12::text[],
                $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[],
                $19::text[], $20::text[], $21::timestamptz[], $22::text[])
        WITH ORDINALITY AS a(dedup_key, request_id, seq, received_at, channel, kind, type,
                             message_id, wa_id, user_id, group_id, phone_number_id, waba_id,
                             event_ts, payload, position)
),
fresh AS (
    -- One row per key (a key twice in one batch: the first arrival), as one command may not
    -- touch a key twice.
    INSERT INTO wabahook_event_keys AS k (dedup_key, received_on, event_id)
    SELECT dedup_key, received_on, id
    FROM (SELECT DISTINCT ON (dedup_key) * FROM arrived ORDER BY dedup_key, position) first
    ORDER BY position
    ON CONFLICT (dedup_key) DO UPDATE
        SET received_on = excluded.received_on, event_id = excluded.event_id
        WHERE k.received_on < (now() AT TIME ZONE 'UTC')::date - 8
    RETURNING event_id
),
inserted AS (
    INSERT INTO wabahook_events (id, dedup_key, received_on, request_id, seq, received_at,
                                 channel, kind, type, message_id, wa_id, user_id, group_id,
                                 phone_number_id, waba_id, event_ts, payload)
    SELECT a.id, a.dedup_key, a.received_on, a.request_id, a.seq, a.received_at, a.channel,
           a.kind, a.type, a.message_id, a.wa_id, a.user_id, a.group_id, a.phone_number_id,
           a.waba_id, a.event_ts, a.payload::json
    FROM arrived a JOIN fresh f ON f.event_id = a.id
    ORDER BY a.position
    RETURNING 1
),
conflicts AS (
    INSERT INTO wabahook_event_conflicts (received_at, request_id, seq, dedup_key, channel, kind,
                                          type, message_id, wa_id, user_id, group_id,
                                          phone_number_id, payload, kept_event_id,
                                          kept_request_id, kept_received_at, kept_payload)
    SELECT a.received_at, a.request_id, a.seq, a.dedup_key, a.channel, a.kind, a.type,
           a.message_id, a.wa_id, a.user_id, a.group_id, a.phone_number_id, a.payload::json,
           kept.id, kept.request_id, kept.received_at, kept.payload
    FROM arrived a
    -- The statement's snapshot holds the keys stored before it: a copy that lost to another
    -- of the same batch (or of a flush committing meanwhile) finds nothing here.
    JOIN wabahook_event_keys k ON k.dedup_key = a.dedup_key
    JOIN wabahook_events kept ON kept.id = k.event_id AND kept.received_on = k.received_on
    WHERE NOT EXISTS (SELECT FROM fresh f WHERE f.event_id = a.id)
      AND kept.payload::text <> a.payload  -- json keeps the text as received
    ORDER BY a.position
    RETURNING 1
)
SELECT (SELECT count(*) FROM inserted) AS stored, (SELECT count(*) FROM conflicts) AS conflicts,
       (SELECT pg_notify('wabahook_events', '') WHERE EXISTS (SELECT FROM inserted)) AS notified

-- limit_lock_wait --
-- Maintenance waits at most this long for a lock, inside its transaction.
SET LOCAL lock_timeout = '2s'

-- maintain_partitions --
-- Retention: create the daily partitions from $1 to $2, drop those before $3 and say how many
-- events they held that were never handed on; one runner at a time (no row: another runs).
-- OFFSET 0 keeps the subquery whole, so each function runs once, after the lock.
SELECT created, (dropping).dropped, (dropping).undelivered
FROM (
    SELECT wabahook_create_partitions_v2($1, $2) AS created,
           wabahook_drop_partitions_v2($3) AS dropping
    WHERE pg_try_advisory_xact_lock(7346092176)
    OFFSET 0
) maintained

-- prune_event_keys --
-- Retention: delete up to $2 dedup keys of events that arrived before the UTC day $1 (stale:
-- past the redelivery window); the result is how many.
WITH pruned AS (
    DELETE FROM wabahook_event_keys
    WHERE dedup_key IN (
        SELECT dedup_key FROM wabahook_event_keys WHERE received_on < $1 LIMIT $2
    )
    RETURNING 1
)
SELECT count(*) FROM pruned

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

-- lock_deliveries --
-- Every transaction that writes deliveries takes this first (the dispatcher's steps, redeliver,
-- replay): which delivery heads a contact holds is decided by one writer at a time.
SELECT pg_advisory_xact_lock(7346092177)

-- session_identity --
-- Who this session is to PostgreSQL, as its backend's process title names it: the client's
-- address and port (null over a Unix socket), user and database.
SELECT host(inet_client_addr()) AS client_addr, inet_client_port() AS client_port,
       session_user AS user, current_database() AS database

-- try_lead_dispatch --
-- Become the leading dispatcher; held by this session until it ends. True when taken.
SELECT pg_try_advisory_lock(7346092178)

-- dispatch_leader_pid --
-- The backend holding the dispatcher's lead, and the age of its last heartbeat in seconds.
SELECT l.pid, extract(epoch FROM now() - c.heartbeat_at)::float8 AS silent_s
FROM pg_locks l LEFT JOIN wabahook_dispatch_cursor c ON true
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND (l.classid::bigint << 32 | l.objid::bigint) = 7346092178

-- terminate_backend --
-- End a stalled dispatcher's session: its lead and everything it would still write go with it.
SELECT pg_terminate_backend($1)

-- open_dispatch_cursor --
-- The cursor, made at the start on the first run (every stored event is handed on); $1 leader.
INSERT INTO wabahook_dispatch_cursor AS c (xid, event_id, leader, heartbeat_at)
VALUES ('0', 0, $1, now())
ON CONFLICT (singleton) DO UPDATE SET leader = $1, heartbeat_at = now()
RETURNING c.xid, c.event_id, c.request_id

-- notify_deliveries --
-- Wake the leading dispatcher at COMMIT: deliveries were queued (redeliver, replay).
NOTIFY wabahook_deliveries

-- dispatch_heartbeat --
-- The leader is alive (in a step that moves nothing; move_events beats it otherwise).
UPDATE wabahook_dispatch_cursor SET heartbeat_at = now()

-- event_ids_drawn --
-- Event ids drawn so far (one per arriving event, redeliveries included): its growth is the rate
-- events arrive at. The function needs only USAGE on the sequence; null before the first id.
SELECT coalesce(pg_sequence_last_value('wabahook_events_id_seq'), 0)

-- move_events --
-- Hand on the events past the cursor: up to $4 of them, in (xid, id) order, only below the
-- horizon every earlier transaction has ended at; make a delivery for each of a channel with a
-- target ($6: every channel but those in $8; else those in $7), in bodies mode ($5) one per
-- request, skipping the request $3 at the cursor; advance the cursor ($1, $2) past them. A new
-- delivery is its contact's head (due now) unless the contact has one already. Every step runs
-- this, so it also beats the leader's heartbeat.
WITH batch AS (
    SELECT e.id, e.received_on, e.channel, e.xid, e.request_id,
           coalesce(e.group_id, e.wa_id, e.user_id) AS contact  -- normalise.contact_of
    FROM wabahook_events e
    WHERE (e.xid, e.id) > ($1::xid8, $2::bigint)
      AND e.xid < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY e.xid, e.id
    LIMIT $4
),
targeted AS (
    SELECT b.*, row_number() OVER (PARTITION BY b.request_id ORDER BY b.xid, b.id) AS in_request
    FROM batch b
    WHERE CASE WHEN b.channel = ANY($7::text[]) THEN true
               WHEN b.channel = ANY($8::text[]) THEN false
               ELSE $6::boolean END
),
chosen AS (
    SELECT t.*, row_number() OVER (PARTITION BY t.channel, t.contact ORDER BY t.xid, t.id) AS nth
    FROM targeted t
    WHERE NOT $5::boolean OR (t.in_request = 1 AND t.request_id IS DISTINCT FROM $3::uuid)
),
moved AS (
    INSERT INTO wabahook_deliveries (received_on, event_id, channel, contact, next_attempt_at)
    SELECT c.received_on, c.id, c.channel, c.contact,
           CASE WHEN c.contact IS NULL THEN now()
                -- A scalar subquery, run only for a contact's first event of the batch: never
                -- hashed over every undone delivery (a busy contact's are many), never rerun
                -- per row, whatever plan the table sizes gave.
                WHEN c.nth = 1 THEN CASE WHEN (
                    SELECT 1 FROM wabahook_deliveries u
                    WHERE u.channel = c.channel AND u.contact = c.contact
                      AND u.state IN ('pending', 'retrying')
                    LIMIT 1
                ) IS NULL THEN now() END
           END
    FROM chosen c
    ORDER BY c.xid, c.id
    RETURNING 1
),
last AS (
    SELECT xid, id, request_id FROM batch ORDER BY xid DESC, id DESC LIMIT 1
),
advanced AS (
    UPDATE wabahook_dispatch_cursor c
    SET xid = coalesce(last.xid, c.xid), event_id = coalesce(last.id, c.event_id),
        request_id = CASE WHEN last.id IS NULL THEN c.request_id ELSE last.request_id END,
        heartbeat_at = now()
    FROM (SELECT 1) one LEFT JOIN last ON true
    RETURNING c.xid, c.event_id, c.request_id
)
SELECT (SELECT count(*) FROM batch) AS read, (SELECT count(*) FROM moved) AS moved,
       a.xid, a.event_id, a.request_id
FROM advanced a

-- claim_deliveries --
-- Up to $2 due heads, soonest first, not among those in flight ($1), with their events and, when
-- $3, the bodies of the events' requests.
SELECT d.id, d.received_on, d.attempts, e.id AS event_id, e.channel, e.kind, e.type,
       e.message_id, e.wa_id, e.user_id, e.group_id, e.phone_number_id, e.waba_id,
       e.received_at, e.event_ts, e.request_id, e.seq, e.payload::text AS payload,
       CASE WHEN $3::boolean THEN (
           SELECT r.body FROM wabahook_requests r
           WHERE r.id = e.request_id AND r.received_at = e.received_at
       ) END AS body
FROM wabahook_deliveries d
JOIN wabahook_events e ON e.id = d.event_id AND e.received_on = d.received_on
WHERE d.next_attempt_at <= now() AND d.id <> ALL($1::bigint[])
ORDER BY d.next_attempt_at, d.id
LIMIT $2

-- finish_deliveries --
-- Record attempts ($1 ids, $2 their received_on, $3 new states, $4 next attempts, $5 errors)
-- and make the next delivery of each contact whose head is done its head, due now.
WITH finished AS (
    UPDATE wabahook_deliveries d
    SET state = r.state, attempts = d.attempts + 1, next_attempt_at = r.next_attempt_at,
        last_attempt_at = now(), last_error = r.error
    FROM unnest($1::bigint[], $2::date[], $3::text[], $4::timestamptz[], $5::text[])
        AS r(id, received_on, state, next_attempt_at, error)
    WHERE d.id = r.id AND d.received_on = r.received_on
    RETURNING d.id, d.channel, d.contact, d.state
)
UPDATE wabahook_deliveries d SET next_attempt_at = now()
FROM finished f
CROSS JOIN LATERAL (
    SELECT u.id, u.received_on FROM wabahook_deliveries u
    WHERE u.channel = f.channel AND u.contact = f.contact AND u.id > f.id
      AND u.state IN ('pending', 'retrying')
    ORDER BY u.id
    LIMIT 1
) following
WHERE f.state IN ('delivered', 'dead')
  AND d.id = following.id AND d.received_on = following.received_on

-- promote_heads --
-- Give every contact with undone deliveries but no head its first undone delivery as head, due
-- now; $1 channels and $2 contacts, pairwise (after redeliver and replay).
UPDATE wabahook_deliveries d SET next_attempt_at = now()
FROM (
    SELECT DISTINCT ON (u.channel, u.contact) u.id, u.received_on, u.next_attempt_at
    FROM wabahook_deliveries u
    JOIN unnest($1::text[], $2::text[]) AS k(channel, contact)
        ON u.channel = k.channel AND u.contact = k.contact
    WHERE u.state IN ('pending', 'retrying')
    ORDER BY u.channel, u.contact, u.id
) head
WHERE head.next_attempt_at IS NULL AND d.id = head.id AND d.received_on = head.received_on

-- dispatch_lag --
-- Seconds since the oldest event not handed on yet arrived: the oldest head (every contact's
-- undone deliveries are younger than its head), or the first event past the cursor; 0 when
-- there is none.
SELECT coalesce(extract(epoch FROM now() - least(
    (SELECT min(e.received_at) FROM wabahook_deliveries d
     JOIN wabahook_events e ON e.id = d.event_id AND e.received_on = d.received_on
     WHERE d.next_attempt_at IS NOT NULL),
    -- LATERAL: the cursor's values become the index condition, not a filter on every row.
    (SELECT first.received_at FROM wabahook_dispatch_cursor c CROSS JOIN LATERAL (
         SELECT e.received_at FROM wabahook_events e
         WHERE (e.xid, e.id) > (c.xid, c.event_id)
         ORDER BY e.xid, e.id LIMIT 1) first)
)), 0)::float8

-- select_deliveries --
-- Deliveries, oldest first, with their events; $1 state, $2 channel, $3 events received since,
-- $4 limit (all optional but $4).
SELECT d.id, d.state, d.attempts, d.next_attempt_at, d.last_attempt_at, d.last_error,
       d.event_id, d.channel, d.contact, e.kind, e.type, e.message_id, e.received_at
FROM wabahook_deliveries d
JOIN wabahook_events e ON e.id = d.event_id AND e.received_on = d.received_on
WHERE ($1::text IS NULL OR d.state = $1)
  AND ($2::text IS NULL OR d.channel = $2)
  AND ($3::timestamptz IS NULL OR (e.received_at >= $3
                                  AND d.received_on >= ($3 AT TIME ZONE 'UTC')::date))
ORDER BY d.id
LIMIT $4

-- redeliver_dead --
-- Dead deliveries back to pending with their attempts reset: those with ids in $1, or (when $1
-- is NULL) those of channel $2 whose events arrived in [$3, $4) (each optional); the result is
-- the channel and contact of each, for promote_heads.
UPDATE wabahook_deliveries d
SET state = 'pending', attempts = 0, next_attempt_at = CASE WHEN d.contact IS NULL THEN now() END
FROM wabahook_events e
WHERE d.state = 'dead'
  AND e.id = d.event_id AND e.received_on = d.received_on
  AND ($1::bigint[] IS NULL OR d.id = ANY($1))
  AND ($2::text IS NULL OR d.channel = $2)
  AND ($3::timestamptz IS NULL OR e.received_at >= $3)
  AND ($4::timestamptz IS NULL OR e.received_at < $4)
RETURNING d.channel, d.contact

-- replay_events --
-- New deliveries for the stored events that arrived in [$1, $2) ($2 optional) of channel $3 and
-- kind $4 (each optional), in arrival order; in bodies mode ($5) one per request; only of
-- channels with a target, as move_events routes them ($6 default, $7 on, $8 off). The result is
-- the channel and contact of each, for promote_heads.
INSERT INTO wabahook_deliveries (received_on, event_id, channel, contact, next_attempt_at)
SELECT m.received_on, m.id, m.channel, m.contact, CASE WHEN m.contact IS NULL THEN now() END
FROM (
    SELECT e.received_on, e.id, e.channel, coalesce(e.group_id, e.wa_id, e.user_id) AS contact,
           e.received_at, e.request_id, e.seq,
           row_number() OVER (PARTITION BY e.request_id ORDER BY e.seq) AS in_request
    FROM wabahook_events e
    WHERE e.received_at >= $1 AND e.received_on >= ($1 AT TIME ZONE 'UTC')::date
      AND ($2::timestamptz IS NULL OR e.received_at < $2)
      AND ($3::text IS NULL OR e.channel = $3)
      AND ($4::text IS NULL OR e.kind = $4)
      AND CASE WHEN e.channel = ANY($7::text[]) THEN true
               WHEN e.channel = ANY($8::text[]) THEN false
               ELSE $6::boolean END
) m
WHERE NOT $5::boolean OR m.in_request = 1
ORDER BY m.received_at, m.request_id, m.seq
RETURNING channel, contact
