"""What a child process inherits: this environment without any wabahook setting.

No `WABAHOOK_*` variable and no `DATABASE_URL` of the shell may reach a test or a process a
test or a benchmark starts; what a child is meant to get is passed explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from app.config import ENV_PREFIX, env_name, field_names

DATABASE_VARIABLE = env_name("database_url")


def is_setting(name: str) -> bool:
    """A variable wabahook reads: `WABAHOOK_*` or `DATABASE_URL`."""
    return name == DATABASE_VARIABLE or name.startswith(ENV_PREFIX)


def scrubbed_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any wabahook setting, then `extra` on top.

    /metrics is served on the webhook port unless `extra` says otherwise: the default separate
    listener has one fixed port, which servers started side by side would contend for.
    """
    environment = {name: value for name, value in os.environ.items() if not is_setting(name)}
    environment["WABAHOOK_METRICS_LISTEN"] = "main"
    environment.update(extra or {})
    return environment


def scrub_process_environment() -> str | None:
    """Remove every wabahook setting from this process's own environment; return the
    `DATABASE_URL` that was set, if any."""
    database_url = os.environ.get(DATABASE_VARIABLE)
    for name in [name for name in os.environ if is_setting(name)]:
        del os.environ[name]
    return database_url


def settings_environment(settings: Mapping[str, object]) -> dict[str, str]:
    """Config fields as the variables `wabahook` reads (`data_dir` -> `WABAHOOK_DATA_DIR`,
    `database_url` -> `DATABASE_URL`)."""
    known = field_names()
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise ValueError(f"not wabahook settings: {', '.join(unknown)}")
    return {env_name(name): str(value) for name, value in settings.items()}
