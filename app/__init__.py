"""wabahook: a durable, high-throughput receiver for WhatsApp Business webhooks."""

from __future__ import annotations

__version__ = "0.1.0"
