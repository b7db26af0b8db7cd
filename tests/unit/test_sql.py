"""The query file format, and that the code and queries.sql name the same queries
(procrastinate's tests/unit/test_sql.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import app
from app import sql
from app.config import REDELIVERY_WINDOW_DAYS
from app.records import EVENT_COLUMNS, REQUEST_COLUMNS

APP_DIR = Path(app.__file__).parent
# `queries["name"]` or `queries['name']`, possibly split over lines inside the brackets.
QUERY_USE = re.compile(r"""\bqueries\[\s*["']([A-Za-z0-9_]+)["']\s*\]""")

TINY_FILE = """\
-- A preamble before the first query is ignored.

-- select_one --
-- The first query; no placeholders.
SELECT 1

-- insert_thing --
-- The second query; $1 name, $2 size.
-- Several description lines are allowed.
INSERT INTO things (name, size)
VALUES ($1, $2)
"""


def _names_used_in_app() -> set[str]:
    used: set[str] = set()
    for path in APP_DIR.rglob("*.py"):
        used.update(QUERY_USE.findall(path.read_text(encoding="utf-8")))
    return used


def test_parse_query_file() -> None:
    queries = sql.parse_query_file(TINY_FILE)

    assert queries == {
        "select_one": "SELECT 1",
        "insert_thing": "INSERT INTO things (name, size)\nVALUES ($1, $2)",
    }


def test_parse_query_file_rejects_a_name_defined_twice() -> None:
    text = TINY_FILE + "\n-- select_one --\n-- Again.\nSELECT 2\n"

    with pytest.raises(ValueError, match="select_one"):
        sql.parse_query_file(text)


def test_the_usage_regex_finds_the_call_sites() -> None:
    # Guards the two tests below against a regex that silently matches nothing.
    assert "store_batch" in _names_used_in_app()


def test_every_query_the_code_uses_exists() -> None:
    missing = _names_used_in_app() - set(sql.queries)

    assert not missing, f"used in app/ but not in queries.sql: {sorted(missing)}"


def test_every_query_is_used() -> None:
    dead = set(sql.queries) - _names_used_in_app()

    assert not dead, f"in queries.sql but used nowhere in app/: {sorted(dead)}"


def test_every_query_has_a_description_and_a_statement() -> None:
    text = (APP_DIR / "sql" / "queries.sql").read_text(encoding="utf-8")
    blocks = re.split(r"^-- [a-z_]+ --$", text, flags=re.MULTILINE)[1:]

    assert len(blocks) == len(sql.queries)
    for name, block in zip(sql.queries, blocks, strict=True):
        assert block.strip().startswith("-- "), f"{name} has no description line"
        assert sql.queries[name], f"{name} has no statement"


def test_the_dedup_insert_looks_back_over_the_redelivery_window() -> None:
    # The window is written in SQL, where a flush takes over a stale key. This ties it to the
    # constant retention prunes keys by.
    lookback = re.findall(r"::date - (\d+)\b", sql.queries["store_batch"])

    assert lookback == [str(REDELIVERY_WINDOW_DAYS)]


def test_the_batch_statement_takes_the_columns_in_the_order_the_rows_have() -> None:
    # Each row tuple becomes one array parameter per column: the names in the unnest must be
    # the row builders' columns, in order.
    statement = sql.queries["store_batch"]
    events = re.search(r"AS a\(([^)]*)\)", statement)
    assert events is not None
    names = [name.strip() for name in events.group(1).split(",")]
    assert names == [*EVENT_COLUMNS, "position"]
    requests = re.search(r"INSERT INTO wabahook_requests \(([^)]*)\)", statement)
    assert requests is not None
    assert [name.strip() for name in requests.group(1).split(",")] == list(REQUEST_COLUMNS)
