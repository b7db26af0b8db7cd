-- A body with more events than the per-body limit is kept raw as `too_many_events`; and dedup
-- records a conflict when a key it skips arrives with a payload other than the stored one.

-- The new set of outcomes holds the old one, so the existing rows pass the check.
ALTER TABLE wabahook_requests DROP CONSTRAINT wabahook_requests_outcome_check;
ALTER TABLE wabahook_requests ADD CONSTRAINT wabahook_requests_outcome_check
    CHECK (outcome IN ('stored', 'unknown', 'quarantined', 'too_many_events'));

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
