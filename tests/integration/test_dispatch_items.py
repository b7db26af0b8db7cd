"""`forward_mode=items` against a real first-item-only receiver: a pywa app, as its users run
it (FastAPI under uvicorn, checking Meta's signature), fed by a real dispatcher."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import fastapi
import httpx
import pytest
import uvicorn
from pywa_async import WhatsApp, types

from app.config import Config
from app.normalise import normalise
from tests.corpus import DE, ES, MX
from tests.support.dispatchers import running_dispatcher
from tests.support.servers import loopback_socket, running_server
from tests.support.waiting import wait_until
from tests.unit.test_items import BATCH

pytestmark = pytest.mark.anyio

APP_SECRET = "pywa-app-secret"


class PywaApp:
    """What the app saw: message ids of messages and of statuses, in the order handled."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.url = ""


@pytest.fixture
async def pywa_app() -> AsyncIterator[PywaApp]:
    app = PywaApp()
    server = fastapi.FastAPI()
    whatsapp = WhatsApp(
        phone_id="190011223344556",
        token="unused-token",
        server=server,
        verify_token="unused",
        app_secret=APP_SECRET,
        webhook_endpoint="/whatsapp",
        filter_updates=False,  # the batch names several receiving numbers
    )

    @whatsapp.on_message()
    async def on_message(_: WhatsApp, message: types.Message) -> None:
        app.seen.append(message.id)

    @whatsapp.on_message_status()
    async def on_status(_: WhatsApp, status: types.MessageStatus) -> None:
        app.seen.append(status.id)

    sock = loopback_socket()
    config = uvicorn.Config(server, log_level="warning", lifespan="off")
    uvicorn_server = uvicorn.Server(config)
    serving = asyncio.get_running_loop().create_task(uvicorn_server.serve(sockets=[sock]))
    app.url = f"http://127.0.0.1:{sock.getsockname()[1]}/whatsapp"
    try:
        yield app
    finally:
        uvicorn_server.should_exit = True
        await serving
        sock.close()


def _forwarding_to(app: PywaApp, mode: str, database_url: str, tmp_path: Path) -> Config:
    return Config(
        database_url=database_url,
        data_dir=str(tmp_path),
        metrics_listen="main",
        forward_url=app.url,
        forward_mode=mode,  # type: ignore[arg-type]
        forward_app_secret=APP_SECRET,
        forward_retries=(0.05,),
    )


def _items(body: bytes) -> list[str]:
    return [event.message_id or "" for event in normalise(body).events if event.message_id]


async def _post(url: str, body: bytes) -> None:
    async with httpx.AsyncClient(base_url=url) as client:
        assert (await client.post("/webhook/main", content=body)).status_code == 200


async def test_a_first_item_only_receiver_gets_every_item_of_a_batch_once(
    database_url: str, tmp_path: Path, pywa_app: PywaApp, db: asyncpg.Connection
) -> None:
    body = json.dumps(BATCH).encode()
    expected = _items(body)  # every message and status, in body order
    config = _forwarding_to(pywa_app, "items", database_url, tmp_path)
    with running_server(config) as url, running_dispatcher(config):
        await _post(url, body)

        async def all_delivered() -> bool:
            count = await db.fetchval(
                "SELECT count(*) FROM wabahook_deliveries WHERE state = 'delivered'"
            )
            return bool(count == len(normalise(body).events))

        await wait_until(all_delivered, what="every item to be handed on")

    assert sorted(pywa_app.seen) == sorted(expected)
    assert len(pywa_app.seen) == len(set(pywa_app.seen))  # each once
    for contact in (DE, ES, MX):  # and each contact's in body order
        mine = [i for i in expected if contact in i]
        assert [i for i in pywa_app.seen if i in mine] == mine


async def test_the_same_batch_as_one_body_loses_items_at_such_a_receiver(
    database_url: str, tmp_path: Path, pywa_app: PywaApp, db: asyncpg.Connection
) -> None:
    """Why items mode exists: forwarded whole, the batch reaches pywa as its first item only."""
    body = json.dumps(BATCH).encode()
    config = _forwarding_to(pywa_app, "bodies", database_url, tmp_path)
    with running_server(config) as url, running_dispatcher(config):
        await _post(url, body)

        async def delivered() -> Any:
            return await db.fetchval(
                "SELECT count(*) FROM wabahook_deliveries WHERE state = 'delivered'"
            )

        await wait_until(delivered, what="the body to be handed on")

    assert pywa_app.seen == _items(body)[:1]
