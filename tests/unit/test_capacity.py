"""The capacity search: which steps hold, and how the rate is doubled and bisected."""

from __future__ import annotations

from collections.abc import Callable

from bench import capacity, compare, procs, wrk
from bench.capacity import CLIENT, HELD, MISSED, Schedule, Step, judge, search

SECONDS = 5.0


def _step(
    rate: float,
    *,
    p99_ms: float = 10.0,
    errors: int = 0,
    late: int = 0,
    late_client: int = 0,
    client_cpu: float = 0.3,
    behind_ms: float = 0.0,
) -> Step:
    sent = round(rate * SECONDS)
    result = wrk.WrkResult(
        requests=sent,
        non_2xx=errors,
        socket_errors=0,
        seconds=SECONDS,
        p50_ms=p99_ms / 4,
        p90_ms=p99_ms / 2,
        p99_ms=p99_ms,
        p999_ms=p99_ms,
        max_ms=p99_ms,
        client_cpu=client_cpu,
    )
    lateness = (sent - late, *([0] * (len(capacity.LATENESS_EDGES_MS) - 1)), late)
    schedule = Schedule(sent, late, late_client, 0.0, behind_ms, lateness)
    return Step("server", rate, 16, result, schedule, procs.Usage(), None)


def test_judge() -> None:
    assert judge(_step(1000))[0] == HELD
    assert judge(_step(1000, p99_ms=100.0))[0] == MISSED
    assert judge(_step(1000, errors=1))[0] == MISSED
    # Sends late because no connection was free: the server held them all.
    assert judge(_step(1000, late=100))[0] == MISSED
    assert judge(_step(1000, late=4))[0] == HELD  # within 0.1% of 5,000 sends
    assert judge(_step(1000, behind_ms=500.0))[0] == MISSED  # arrivals no connection took
    # Sends late because the client's own timers ran late: no verdict on the server...
    outcome, reason = judge(_step(1000, late=100, late_client=100))
    assert outcome == CLIENT and "wrk fell behind" in reason
    # ... unless the server also held every connection.
    assert judge(_step(1000, late=200, late_client=100))[0] == MISSED
    # A miss while wrk used its whole core may be wrk's own.
    assert judge(_step(1000, p99_ms=150.0, client_cpu=0.95))[0] == CLIENT


def _server(capacity_rps: float, client_limit: float = float("inf")) -> Callable[[float], Step]:
    def measure(rate: float) -> Step:
        if rate > client_limit:
            return _step(rate, late=1000, late_client=1000)
        return _step(rate, p99_ms=20.0 if rate <= capacity_rps else 300.0)

    return measure


def _search(measure: Callable[[float], Step], **options: float) -> capacity.Search:
    settings = {"start": 250.0, "max_rate": 64_000.0, "precision": 0.1, "max_steps": 20}
    settings.update(options)
    return search(
        "server",
        measure,
        start=settings["start"],
        max_rate=settings["max_rate"],
        precision=settings["precision"],
        max_steps=int(settings["max_steps"]),
    )


def test_search_doubles_then_bisects() -> None:
    found = _search(_server(3000))
    rates = [s.rate for s in found.steps]
    assert rates == [250, 500, 1000, 2000, 4000, 3000, 3500, 3250]
    assert (found.held, found.missed, found.limited) == (3000, 3250, None)
    assert found.describe() == "3,000/s (missed at 3,250/s)"


def test_search_halves_when_the_first_step_misses() -> None:
    found = _search(_server(100), start=400)
    assert [s.rate for s in found.steps][:3] == [400, 200, 100]
    assert found.held is not None and found.held <= 100 < (found.missed or 0)


def test_search_stops_where_the_client_falls_behind() -> None:
    found = _search(_server(100_000, client_limit=5000))
    assert found.steps[-1].rate == 8000 and found.steps[-1].outcome == CLIENT
    assert (found.held, found.limited) == (4000, 8000)
    assert found.describe().startswith("at least 4,000/s: the load generator could not offer")


def test_search_stops_at_the_ceiling_and_after_max_steps() -> None:
    found = _search(_server(100_000), max_rate=2000)
    assert [s.rate for s in found.steps] == [250, 500, 1000, 2000]
    assert found.ceiling and found.describe().startswith("at least 2,000/s")
    assert len(_search(_server(3000), max_steps=3).steps) == 3


def test_ratio_says_when_a_capacity_is_only_a_bound() -> None:
    exact = _search(_server(3000))
    bounded = _search(_server(100_000, client_limit=5000))
    assert capacity.ratio(bounded, exact) == (4000 / 3000, "at least ")
    assert capacity.ratio(exact, bounded) == (3000 / 4000, "at most ")
    assert capacity.ratio(exact, exact) == (1.0, "")


def test_poisson_script_extends_the_wrk_script() -> None:
    script = capacity.poisson_script(compare.stream("mix"), 8000, "abcde", 2000.0, 1)
    assert script.startswith(wrk.lua_script(compare.stream("mix"), 8000, "abcde", 0.0))
    assert "local mean_gap_ms = 0.5\n" in script
    assert "function delay()" in script and "WRKSCHED" in script
