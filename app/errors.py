"""One error base; each subclass's docstring is its default message."""

from __future__ import annotations


class WabahookError(Exception):
    """Something went wrong in wabahook."""

    def __init__(self, message: str | None = None) -> None:
        if not message:
            message = self.__doc__
        super().__init__(message)


class StorageUnavailable(WabahookError):
    """PostgreSQL could not be reached or dropped the connection."""


class Overloaded(WabahookError):
    """The buffer is full and did not drain before the backpressure deadline."""


class NotDurable(WabahookError):
    """The batch could not be made durable before the acknowledgement deadline."""
