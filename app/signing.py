"""Signatures on forwarded requests: Standard Webhooks, and Meta's X-Hub-Signature-256.

Standard Webhooks (standardwebhooks.com): the secret is `whsec_` and base64 key bytes; the
signature is base64 HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}`, sent as `v1,<sig>`.
Meta signs the raw body with the app secret, hex, as `sha256=<hex>`; receivers written for Meta
(pywa and others) check that header, so a body forwarded with it passes unchanged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

SECRET_PREFIX = "whsec_"


def secret_key(secret: str) -> bytes:
    """The key bytes of a `whsec_...` secret; ValueError says what is wrong."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("forward_secret must start with whsec_ (Standard Webhooks)")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error as exc:
        raise ValueError("forward_secret must be whsec_ and base64") from exc
    if len(key) < 24:
        raise ValueError("forward_secret must hold 24 to 64 key bytes")
    return key


def standard_webhooks(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value."""
    signed = b"%s.%d.%s" % (message_id.encode(), timestamp, body)
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def hub_signature(app_secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` header value Meta would send with `body`."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
