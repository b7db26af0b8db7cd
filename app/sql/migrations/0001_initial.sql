-- Requests and events: every acknowledged body, and one row per distinct event in it.

CREATE TABLE wabahook_requests (
    id uuid PRIMARY KEY,                  -- UUIDv7 made at arrival: time-ordered, stable in the spool
    received_at timestamptz NOT NULL,
    channel text NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('stored', 'unknown', 'quarantined')),
    sha256 bytea NOT NULL,
    events integer NOT NULL,              -- events extracted from the body, before dedup
    body bytea NOT NULL                   -- the bytes exactly as received
);

CREATE INDEX wabahook_requests_received_at_v1 ON wabahook_requests (received_at);

CREATE TABLE wabahook_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dedup_key bytea NOT NULL,             -- 16-byte digest of spec section 8's key
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
    payload json NOT NULL                 -- the event's own JSON, as received
);

CREATE UNIQUE INDEX wabahook_events_dedup_key_v1 ON wabahook_events (dedup_key);
CREATE INDEX wabahook_events_received_at_v1 ON wabahook_events (received_at);
