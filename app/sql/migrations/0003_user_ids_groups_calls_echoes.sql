-- Who an event is about beyond the phone number, and events of their own for calls and message
-- echoes (docs/protocol.md §6): the business-scoped user id (a user with a username may have no
-- wa_id) and the group of a group message or status, on events and on dedup conflicts; and the
-- kinds `echo` and `call`.

-- Nullable without a default: existing rows are not rewritten.
ALTER TABLE wabahook_events ADD COLUMN user_id text, ADD COLUMN group_id text;
ALTER TABLE wabahook_event_conflicts ADD COLUMN user_id text, ADD COLUMN group_id text;

-- The new set of kinds holds the old one, so the existing rows pass the check (PostgreSQL still
-- reads every partition once to prove it).
ALTER TABLE wabahook_events DROP CONSTRAINT wabahook_events_kind_check;
ALTER TABLE wabahook_events ADD CONSTRAINT wabahook_events_kind_check
    CHECK (kind IN ('message', 'status', 'error', 'other', 'echo', 'call'));
