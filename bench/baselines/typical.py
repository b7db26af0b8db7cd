"""A typical receiver, written the way tutorials and most projects write one: FastAPI, a
pydantic model of the webhook, and one awaited INSERT per event (one per request for the
single-event bodies `compare` sends) before answering 200.

    DATABASE_URL=postgresql://... uvicorn bench.baselines.typical:app --loop uvloop \
        --http httptools --no-access-log
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_events (
    id bigserial PRIMARY KEY,
    channel text NOT NULL,
    kind text NOT NULL,
    event_id text NOT NULL,
    type text NOT NULL,
    wa_id text,
    scope text NOT NULL,
    payload jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, event_id, type, scope)
)
"""
INSERT = """
INSERT INTO webhook_events (channel, kind, event_id, type, wa_id, scope, payload)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
ON CONFLICT DO NOTHING
"""


class Profile(BaseModel):
    name: str | None = None


class Contact(BaseModel):
    wa_id: str | None = None
    profile: Profile | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    id: str
    from_: str | None = Field(default=None, alias="from")
    timestamp: str
    type: str


class Status(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    status: str
    timestamp: str
    recipient_id: str | None = None


class Metadata(BaseModel):
    display_phone_number: str
    phone_number_id: str


class Value(BaseModel):
    model_config = ConfigDict(extra="allow")
    messaging_product: str | None = None
    metadata: Metadata | None = None
    contacts: list[Contact] = []
    messages: list[Message] = []
    statuses: list[Status] = []


class Change(BaseModel):
    field: str
    value: Value


class Entry(BaseModel):
    id: str
    changes: list[Change] = []


class Webhook(Value):
    """The Cloud envelope, or an On-Premise body's top-level arrays."""

    object: str | None = None
    entry: list[Entry] = []


pool: asyncpg.Pool | None = None


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    global pool
    pool = await asyncpg.create_pool(os.environ["DATABASE_URL"])
    await pool.execute(SCHEMA)
    yield
    await pool.close()


app = FastAPI(lifespan=lifespan)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/webhook/{channel}")
async def webhook(channel: str, payload: Webhook) -> dict[str, str]:
    assert pool is not None
    values = [change.value for entry in payload.entry for change in entry.changes] or [payload]
    for value in values:
        scope = value.metadata.phone_number_id if value.metadata else channel
        for message in value.messages:
            await pool.execute(
                INSERT,
                channel,
                "message",
                message.id,
                message.type,
                message.from_,
                scope,
                message.model_dump_json(by_alias=True),
            )
        for status in value.statuses:
            await pool.execute(
                INSERT,
                channel,
                "status",
                status.id,
                status.status,
                status.recipient_id,
                scope,
                status.model_dump_json(),
            )
    return {"status": "ok"}
