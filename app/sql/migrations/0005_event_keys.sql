-- Dedup by a narrow table of keys (docs/protocol.md §7): one unique probe per event instead of
-- a probe into each of the redelivery window's daily partitions, and a flush that is one
-- statement: no staging tables, no index of its own on the events for dedup.

CREATE TABLE wabahook_event_keys (
    dedup_key bytea PRIMARY KEY,
    received_on date NOT NULL,            -- the day its event arrived: a key older than the
                                          -- redelivery window is stale, replaced by a new
                                          -- arrival and pruned by retention
    event_id bigint NOT NULL              -- the stored event (wabahook_events.id), for conflicts
);

-- Retention prunes by day; keys arrive in day order, so this index only grows at its right.
CREATE INDEX wabahook_event_keys_received_on_v1 ON wabahook_event_keys (received_on);

-- The keys of the events stored within the window (the oldest one of a key wins).
INSERT INTO wabahook_event_keys (dedup_key, received_on, event_id)
SELECT DISTINCT ON (dedup_key) dedup_key, received_on, id
FROM wabahook_events
WHERE received_on >= (now() AT TIME ZONE 'UTC')::date - 8
ORDER BY dedup_key, received_on, id;

-- The keys table enforces uniqueness now; this index only cost every insert.
DROP INDEX wabahook_events_dedup_key_v1;
