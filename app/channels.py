"""Per-channel settings: how each receiving number authenticates, and where it is registered.

360dialog sets the webhook URL and its headers per number, so a deployment serving many
numbers needs credentials per channel. They live in one TOML file (`WABAHOOK_CHANNELS_FILE`),
a table per channel, readable at 50 channels:

    [channels.acme-de]
    basic_auth = ["360dialog:first-secret", "360dialog:rotated-secret"]
    url = "https://hooks.example.com/webhook/acme-de"

    [channels.shop-at]
    auth_header = "X-Webhook-Token: 9f2c..."
    app_secret = "meta-app-secret"
    hosting = "onprem"
    forward_url = "https://crm.example.com/whatsapp"

Every field is optional. A channel's own field replaces the global setting of the same name
(`WABAHOOK_BASIC_AUTH`, ...); a field it leaves out, and every channel not in the file, uses
the global one. `forward_url` replaces `WABAHOOK_FORWARD_URL` (or the handler) for the
channel's events; an empty one hands none of them on.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import msgspec

from app import credentials
from app.config import Config
from app.errors import WabahookError

# A free label for the receiving number, in the URL and stored with every row: keep it tame.
CHANNEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,63}")


class ChannelsFileError(WabahookError):
    """The channels file cannot be read or is not valid."""


class ChannelSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    basic_auth: list[str] | None = None  # "user:password" pairs, any of which is accepted
    auth_header: str | None = None  # "Name: value", required on every request
    app_secret: list[str] | None = None  # Meta app secrets for X-Hub-Signature-256
    verify_token: str | None = None  # answers the hub.challenge GET
    url: str | None = None  # the public webhook URL, for `wabahook webhook set --channel`
    hosting: Literal["cloud", "onprem"] | None = None  # which 360dialog API registers it
    forward_url: str | None = None  # where its events are handed on; "" hands none on

    def __post_init__(self) -> None:
        for pair in self.basic_auth or []:
            credentials.basic_pair(pair)
        if self.auth_header is not None:
            credentials.header(self.auth_header)

    def over(self, config: Config) -> ChannelSettings:
        """These settings, with each credential the channel leaves out taken from `config`."""
        return msgspec.structs.replace(
            self,
            basic_auth=config.basic_auth if self.basic_auth is None else self.basic_auth,
            auth_header=config.auth_header if self.auth_header is None else self.auth_header,
            app_secret=config.app_secret if self.app_secret is None else self.app_secret,
            verify_token=config.verify_token if self.verify_token is None else self.verify_token,
        )


class _ChannelsFile(msgspec.Struct, forbid_unknown_fields=True):
    channels: dict[str, ChannelSettings] = {}


def load_channels(path: str | None) -> dict[str, ChannelSettings]:
    """The channels file's tables by channel name; none without a file."""
    if path is None:
        return {}
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise ChannelsFileError(f"cannot read the channels file {path}: {exc}") from exc
    try:
        channels = msgspec.toml.decode(text, type=_ChannelsFile).channels
    except msgspec.DecodeError as exc:
        # msgspec names the offending key path; values (secrets) never appear in its message.
        raise ChannelsFileError(f"invalid channels file {path}: {exc}") from exc
    for name in channels:
        if not CHANNEL.fullmatch(name):
            raise ChannelsFileError(f"invalid channels file {path}: {name!r} is not a channel")
    return channels
