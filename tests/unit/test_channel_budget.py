"""The per-channel byte budget: a token bucket per channel, bounded in channels kept."""

from __future__ import annotations

import pytest

from app import channel_budget
from app.channel_budget import ChannelBudget, retry_after


def test_a_burst_up_to_the_limit_passes_and_one_byte_more_waits() -> None:
    budget = ChannelBudget(rate=100.0, burst=1000)
    assert budget.take("a", 1000, now=0.0) == 0.0
    assert budget.take("a", 1, now=0.0) == pytest.approx(0.01)  # one byte at 100 bytes/s


def test_the_budget_refills_at_the_rate_and_no_further_than_the_burst() -> None:
    budget = ChannelBudget(rate=100.0, burst=1000)
    budget.take("a", 1000, now=0.0)
    assert budget.take("a", 500, now=5.0) == 0.0  # 5 s refilled exactly 500 bytes
    assert budget.take("a", 1, now=5.0) > 0
    budget.take("a", 0, now=1000.0)  # a long idle time refills only up to the burst
    assert budget.take("a", 1000, now=1000.0) == 0.0
    assert budget.take("a", 1, now=1000.0) > 0


def test_a_refused_body_is_not_charged() -> None:
    budget = ChannelBudget(rate=100.0, burst=1000)
    budget.take("a", 900, now=0.0)
    assert budget.take("a", 200, now=0.0) == pytest.approx(1.0)  # 100 short at 100 bytes/s
    assert budget.take("a", 100, now=0.0) == 0.0  # the 200 was not taken


def test_channels_have_budgets_of_their_own() -> None:
    budget = ChannelBudget(rate=100.0, burst=1000)
    budget.take("a", 1000, now=0.0)
    assert budget.take("b", 1000, now=0.0) == 0.0


def test_the_table_of_channels_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channel_budget, "MAX_CHANNELS", 4)
    budget = ChannelBudget(rate=100.0, burst=1000)
    for name in "abcd":
        budget.take(name, 1000, now=0.0)  # all four busy: nothing idle to forget
    budget.take("e", 1000, now=0.0)
    assert len(budget._buckets) == 4
    assert "a" not in budget._buckets  # the oldest went
    budget.take("f", 10, now=100.0)  # by now every bucket has refilled: all are forgotten
    assert list(budget._buckets) == ["f"]


def test_retry_after_is_whole_seconds_and_never_below_the_minimum() -> None:
    assert retry_after(0.01, 10) == 10
    assert retry_after(10.2, 10) == 11
