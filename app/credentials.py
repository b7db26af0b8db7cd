"""The two credentials 360dialog sends with every delivery, parsed in one place: a Basic
`user:password` pair and a static `Name: value` header. Settings, the channels file, the
receiver's checks and `wabahook webhook set` all read them through here."""

from __future__ import annotations

import re

# An HTTP header name (RFC 9110 token).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def basic_pair(text: str) -> str:
    """`user:password` as given; ValueError unless it has a user and a colon (the password
    may hold further colons, or be empty)."""
    user, sep, _ = text.partition(":")
    if not sep or not user:
        raise ValueError("basic auth credentials are 'user:password'")
    return text


def header(text: str) -> tuple[str, str]:
    """`Name: value` as (name, value), both stripped; ValueError unless the name is a plain
    HTTP token and the value is present and free of control characters."""
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not _TOKEN.fullmatch(name) or not value:
        raise ValueError("a header is 'Name: value', the name a plain HTTP token")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        raise ValueError("a header value may not contain control characters")
    return name, value
