"""Who may post to a channel: 360dialog's static headers, and Meta's body signature.

360dialog authenticates a webhook with the headers registered together with its URL, so
`HeaderAuth` checks them before a byte of the body is read: Basic credentials (any of several
`user:password` pairs, so they rotate without downtime) and/or one required static header.
Meta's Cloud API signs each body with the app secret (`X-Hub-Signature-256`, HMAC-SHA256 of
the raw bytes), so `SignatureCheck` runs once the body is read, over exactly those bytes.
Both answer 401 with `WWW-Authenticate` and store nothing; comparisons take constant time.
Secrets are never logged; refusals are logged at DEBUG only, with the reason.

`verify_subscription` answers Meta's verification GET (`hub.challenge`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
from dataclasses import dataclass
from urllib.parse import parse_qs

from app import credentials
from app.asgi_types import ASGIApp, Receive, Scope, Send, respond
from app.body_limit import replay_body
from app.channels import ChannelSettings
from app.config import Config
from app.metrics import Metrics

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = b"x-hub-signature-256"


@dataclass(frozen=True, slots=True)
class Policy:
    """What one channel requires; empty tuples and None require nothing."""

    basic: tuple[bytes, ...] = ()  # accepted "user:password" pairs
    header: tuple[bytes, bytes] | None = None  # (lower-case name, value)
    app_secrets: tuple[bytes, ...] = ()
    verify_token: str | None = None

    @property
    def open(self) -> bool:
        return not (self.basic or self.header or self.app_secrets)


def _header_policy(text: str) -> tuple[bytes, bytes]:
    name, value = credentials.header(text)
    return name.lower().encode("latin-1"), value.encode("latin-1")


def policy_for(config: Config, channel: ChannelSettings | None) -> Policy:
    """The channel's own settings where it has them, else the global ones."""
    own = (channel or ChannelSettings()).over(config)
    return Policy(
        basic=tuple(credentials.basic_pair(pair).encode() for pair in own.basic_auth or []),
        header=_header_policy(own.auth_header) if own.auth_header else None,
        app_secrets=tuple(secret.encode() for secret in own.app_secret or []),
        verify_token=own.verify_token or None,
    )


class Policies:
    """The policy of every channel: those of the channels file, and the global one."""

    def __init__(self, config: Config, channels: dict[str, ChannelSettings]) -> None:
        self.default = policy_for(config, None)
        self._by_channel = {name: policy_for(config, own) for name, own in channels.items()}

    def __call__(self, channel: str) -> Policy:
        return self._by_channel.get(channel, self.default)

    @property
    def all_open(self) -> bool:
        return self.default.open and all(p.open for p in self._by_channel.values())

    @property
    def any_signed(self) -> bool:
        """Whether some channel requires Meta's body signature."""
        return any(p.app_secrets for p in (self.default, *self._by_channel.values()))


def _equal_to_any(given: bytes, accepted: tuple[bytes, ...]) -> bool:
    # Every candidate is compared, so the time taken says nothing about which one matched.
    matched = False
    for candidate in accepted:
        matched |= hmac.compare_digest(given, candidate)
    return matched


def basic_credentials(value: bytes) -> bytes | None:
    """`user:password` from an `Authorization: Basic ...` value; None when malformed."""
    scheme, _, token = value.strip().partition(b" ")
    if scheme.lower() != b"basic" or not token.strip():
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return decoded if b":" in decoded else None


def header_refusal(policy: Policy, headers: list[tuple[bytes, bytes]]) -> str | None:
    """Why the request's headers do not satisfy the policy, or None when they do."""
    if policy.basic:
        given = [value for name, value in headers if name == b"authorization"]
        if not given:
            return "missing credentials"
        credentials = basic_credentials(given[0])
        if credentials is None:
            return "malformed credentials"
        if not _equal_to_any(credentials, policy.basic):
            return "wrong credentials"
    if policy.header is not None:
        name, expected = policy.header
        given = [value for header, value in headers if header == name]
        if not given:
            return "missing auth header"
        if not hmac.compare_digest(given[0].strip(), expected):
            return "wrong auth header"
    return None


def signature_refusal(
    policy: Policy, headers: list[tuple[bytes, bytes]], body: bytes
) -> str | None:
    """Why the body's X-Hub-Signature-256 does not match; None when it does or none is due."""
    if not policy.app_secrets:
        return None
    given = [value for name, value in headers if name == SIGNATURE_HEADER]
    if not given:
        return "missing signature"
    scheme, _, digest = given[0].strip().partition(b"=")
    if scheme.lower() != b"sha256" or not digest:
        return "malformed signature"
    expected = tuple(
        hmac.new(secret, body, hashlib.sha256).hexdigest().encode() for secret in policy.app_secrets
    )
    return None if _equal_to_any(digest.lower(), expected) else "wrong signature"


def _challenge(policy: Policy) -> bytes:
    scheme = b"Basic" if policy.basic else b"Signature" if policy.app_secrets else b"Header"
    return scheme + b' realm="wabahook"'


async def _unauthorized(
    send: Send, policy: Policy, reason: str, channel: str, metrics: Metrics
) -> None:
    metrics.inc("auth_refusals_total", (reason,))
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "refused: %s",
            reason,
            extra={"action": "auth_refused", "reason": reason, "channel": channel},
        )
    headers = [(b"www-authenticate", _challenge(policy)), (b"connection", b"close")]
    await respond(send, 401, f"unauthorized: {reason}\n".encode(), headers)


class _ChannelCheck:
    """The shape both checks share: non-http scopes pass, the channel's policy is looked up."""

    def __init__(self, app: ASGIApp, policies: Policies, metrics: Metrics) -> None:
        self.app = app
        self.policies = policies
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        channel: str = scope["wabahook.channel"]
        await self.check(scope, receive, send, channel, self.policies(channel))

    async def check(
        self, scope: Scope, receive: Receive, send: Send, channel: str, policy: Policy
    ) -> None:
        raise NotImplementedError


class HeaderAuth(_ChannelCheck):
    """401 before the body is read, unless the channel's headers are right."""

    async def check(
        self, scope: Scope, receive: Receive, send: Send, channel: str, policy: Policy
    ) -> None:
        reason = header_refusal(policy, scope["headers"])
        if reason is not None:
            await _unauthorized(send, policy, reason, channel, self.metrics)
            return
        await self.app(scope, receive, send)


class SignatureCheck(_ChannelCheck):
    """401 unless the body carries the channel's Meta signature; runs inside `BodyLimit`."""

    async def check(
        self, scope: Scope, receive: Receive, send: Send, channel: str, policy: Policy
    ) -> None:
        if not policy.app_secrets:
            await self.app(scope, receive, send)
            return
        message = await receive()  # the whole body, as BodyLimit read it
        body = message.get("body", b"")
        reason = signature_refusal(policy, scope["headers"], body)
        if reason is not None:
            await _unauthorized(send, policy, reason, channel, self.metrics)
            return
        await self.app(scope, replay_body(body, receive), send)


def verify_subscription(policy: Policy, query_string: bytes) -> tuple[int, bytes] | None:
    """Meta's verification GET: (status, body), or None when no verify token is set (the GET
    is then not served)."""
    if policy.verify_token is None:
        return None
    query = parse_qs(query_string.decode("latin-1"))
    mode = query.get("hub.mode", [""])[0]
    token = query.get("hub.verify_token", [""])[0].encode()
    challenge = query.get("hub.challenge", [""])[0]
    if (
        mode == "subscribe"
        and challenge
        and hmac.compare_digest(token, policy.verify_token.encode())
    ):
        return 200, challenge.encode()
    return 403, b"forbidden\n"
