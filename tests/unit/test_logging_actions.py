"""The README's table of log actions lists exactly the actions the code logs."""

from __future__ import annotations

import re
from pathlib import Path

import app

ROOT = Path(app.__file__).parent.parent
# `"action": "name"` in a log record's `extra`.
LOGGED = re.compile(r"""["']action["']\s*:\s*["']([a-z_]+)["']""")
# A row of the README's table: | `name` | LEVEL | meaning |
DOCUMENTED = re.compile(r"^\| `([a-z_]+)` \| (?:DEBUG|INFO|WARNING|ERROR|CRITICAL) \|", re.M)


def _logged() -> set[str]:
    actions: set[str] = set()
    for path in (ROOT / "app").rglob("*.py"):
        actions.update(LOGGED.findall(path.read_text(encoding="utf-8")))
    return actions


def _documented() -> set[str]:
    return set(DOCUMENTED.findall((ROOT / "README.md").read_text(encoding="utf-8")))


def test_the_patterns_find_both_sides() -> None:
    # Guards the test below against a pattern that silently matches nothing.
    assert "batch_flushed" in _logged()
    assert "batch_flushed" in _documented()


def test_every_logged_action_is_in_the_readme_table() -> None:
    missing = _logged() - _documented()

    assert not missing, f"logged but not in README's table of actions: {sorted(missing)}"


def test_every_documented_action_is_logged() -> None:
    stale = _documented() - _logged()

    assert not stale, f"in README's table but logged nowhere: {sorted(stale)}"
