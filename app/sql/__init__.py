"""The schema, the migrations and every named query, loaded once from the .sql files here."""

from __future__ import annotations

import re
from importlib import resources
from typing import LiteralString

_QUERY_HEADER = re.compile(r"^-- ([a-z_]+) --$", re.MULTILINE)


def parse_query_file(text: str) -> dict[str, LiteralString]:
    """Split `-- name --` / `-- description` / statement blocks into {name: statement}."""
    parts = _QUERY_HEADER.split(text)
    queries: dict[str, LiteralString] = {}
    # parts = [preamble, name1, block1, name2, block2, ...]
    for name, block in zip(parts[1::2], parts[2::2], strict=True):
        lines = [line for line in block.strip().splitlines() if not line.startswith("-- ")]
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        # The file ships with the package: these are literals, not user input.
        queries[name] = "\n".join(lines).strip()
    return queries


def _read(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def migrations() -> list[tuple[str, str]]:
    """(name, sql) of every migration, in the order they apply."""
    folder = resources.files(__package__).joinpath("migrations")
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))
    return [(name, folder.joinpath(name).read_text(encoding="utf-8")) for name in names]


def schema() -> str:
    return _read("schema.sql")


queries = parse_query_file(_read("queries.sql"))
