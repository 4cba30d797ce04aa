"""docker-compose.yml and its Dockerfile name things that exist.

Docker is not on the development machines, so the stack is checked without it: every
Celery command of a service loads its app (the same way ``celery -A`` does, with that
service's environment), names a subcommand and options Celery accepts, and a task that
is registered with arguments it accepts; every host, dependency and file named exists.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.services import DEFAULT_PORTS

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (pip install -e '.[test]')")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
CELERY_SERVICES = sorted(
    name for name, service in SERVICES.items() if service.get("command", [None])[0] == "celery"
)

# Loads the app as `celery -A` does and reports what the checks need, as JSON.
PROBE = """
import inspect, json, sys
from celery.app.utils import find_app

app = find_app(sys.argv[1])
task_name, args = sys.argv[2], json.loads(sys.argv[3])
task = app.tasks.get(task_name) if task_name else None
if task is not None:
    inspect.signature(task.run).bind(*args)  # raises TypeError when they do not fit
print(json.dumps({
    "tasks": sorted(app.tasks),
    "broker_url": app.conf.broker_url,
    "result_backend": app.conf.result_backend,
    "resumable_store_url": app.conf.get("resumable_store_url"),
}))
"""


def command(service: str) -> list[str]:
    value = SERVICES[service]["command"]
    return shlex.split(value) if isinstance(value, str) else list(value)


def option(arguments: list[str], *names: str) -> str | None:
    """The value of an option written ``-A value``, ``--app value`` or ``--app=value``."""
    for index, argument in enumerate(arguments):
        if argument in names and index + 1 < len(arguments):
            return arguments[index + 1]
        for name in names:
            if name.startswith("--") and argument.startswith(f"{name}="):
                return argument.partition("=")[2]
    return None


def app_and_subcommand(service: str) -> tuple[str, str, list[str]]:
    """``celery -A APP SUBCOMMAND ARGS...`` split into its parts."""
    arguments = command(service)[1:]
    app = option(arguments, "-A", "--app")
    assert app is not None, f"{service}: `celery` without -A"
    index = arguments.index(app) if app in arguments else -1
    rest = arguments[index + 1 :] if index >= 0 else arguments[1:]
    return app, rest[0], rest[1:]


def service_environment(service: str) -> dict[str, str]:
    environment = SERVICES[service].get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {name: str(value) for name, value in environment.items()}


def run_in_service_environment(service: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    """Run Python here as the service would in its container (/app holds the examples)."""
    python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, **service_environment(service), "PYTHONPATH": python_path}
    return subprocess.run(
        [sys.executable, *arguments], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def dockerfile_instructions() -> list[tuple[str, str]]:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    instructions = [line.split(None, 1) for line in lines if line and not line.startswith("#")]
    return [(parts[0].upper(), parts[1] if len(parts) > 1 else "") for parts in instructions]


def test_the_stack_starts_by_default_and_the_test_services_by_name() -> None:
    by_default = {name for name, service in SERVICES.items() if not service.get("profiles")}

    assert by_default == {"redis", "postgres", "worker1", "worker2", "producer", "flower"}
    for name in ("mariadb", "rabbitmq"):
        assert SERVICES[name]["profiles"] == ["test"]


def published(service: str) -> list[tuple[str, int, int]]:
    """The service's published ports as (host address, host port, container port)."""
    found = []
    for mapping in SERVICES[service].get("ports") or []:
        host, host_port, container_port = str(mapping).rsplit(":", 2)
        found.append((host, int(host_port), int(container_port)))
    return found


def test_ports_are_published_on_the_loopback_only() -> None:
    for name in SERVICES:
        for host, _host_port, _container_port in published(name):
            assert host == "127.0.0.1", f"{name} is published beyond this machine"


def test_the_stack_starts_beside_a_local_postgresql_and_redis() -> None:
    # The stack's own services stay off the ports of the machine's PostgreSQL and Redis,
    # and the README and the compose file say which variables point the tests at them.
    readme = (ROOT / "README.md").read_text()
    header = (ROOT / "docker-compose.yml").read_text()
    for service, variable, url in (
        ("postgres", "RESUMABLE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:{}/test"),
        ("redis", "RESUMABLE_TEST_REDIS", "redis://127.0.0.1:{}/15"),
    ):
        [(_host, host_port, container_port)] = published(service)
        assert container_port == DEFAULT_PORTS[service]
        assert host_port != DEFAULT_PORTS[service]
        assert f"{variable}={url.format(host_port)}" in readme
        assert f"{variable}={url.format(host_port)}" in header
    # The test-only services keep their usual ports: they start only when named.
    for service, name in (("mariadb", "mysql"), ("rabbitmq", "rabbitmq")):
        [(_host, host_port, container_port)] = published(service)
        assert host_port == container_port == DEFAULT_PORTS[name]


def test_dependencies_and_urls_name_services_of_the_file() -> None:
    for name, service in SERVICES.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
            if condition.get("condition") == "service_healthy":
                assert "healthcheck" in SERVICES[dependency], f"{dependency} has no healthcheck"
        for variable, value in service_environment(name).items():
            if "://" in value:
                host = urlsplit(value).hostname
                assert host in SERVICES, f"{name}: {variable} names unknown host {host}"
                assert host in (service.get("depends_on") or {}), f"{name} must wait for {host}"


@pytest.mark.parametrize("service", CELERY_SERVICES)
def test_celery_command_loads_its_app_and_names_what_exists(service: str) -> None:
    # Given the service's command and environment
    app, subcommand, arguments = app_and_subcommand(service)
    task_name, task_args = "", "[]"
    if subcommand == "call":
        task_name = arguments[0]
        task_args = option(arguments, "-a", "--args") or "[]"

    # When its app is loaded as `celery -A` loads it
    probe = run_in_service_environment(service, "-c", PROBE, app, task_name, task_args)

    # Then it loads, with the stack's broker, result backend and store
    assert probe.returncode == 0, probe.stderr
    loaded = json.loads(probe.stdout)
    assert urlsplit(loaded["broker_url"]).hostname == "redis"
    assert urlsplit(loaded["result_backend"]).hostname == "redis"  # states for Flower
    assert urlsplit(loaded["resumable_store_url"]).hostname == "postgres"
    # And a task it sends is registered and takes those arguments
    if task_name:
        assert task_name in loaded["tasks"], f"{service}: no task {task_name}"
    # And Celery accepts the subcommand and its options (flower's comes with flower)
    if subcommand == "flower" and not _installed("flower"):
        return
    help_run = run_in_service_environment(service, "-m", *command(service), "--help")
    assert help_run.returncode == 0, help_run.stdout + help_run.stderr


def test_workers_have_names_of_their_own_and_send_events_for_flower() -> None:
    workers = [name for name in CELERY_SERVICES if app_and_subcommand(name)[1] == "worker"]
    names = [option(command(name), "-n", "--hostname") for name in workers]

    assert workers == ["worker1", "worker2"]
    assert len(set(names)) == len(names)
    for name in workers:
        assert "-E" in command(name) or "--task-events" in command(name)


def test_dockerfile_copies_and_installs_what_the_commands_use() -> None:
    instructions = dockerfile_instructions()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    copied: list[str] = []
    installs = ""
    for instruction, argument in instructions:
        if instruction == "COPY":
            *sources, _destination = argument.split()
            for source in sources:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
            copied.extend(source.rstrip("/") for source in sources)
        elif instruction == "RUN" and "pip install" in argument:
            installs += argument

    assert instructions[0] == ("FROM", "python:3.11-slim")
    for service in SERVICES.values():
        if "build" in service:
            assert service["build"] == "."
    # The package, built from its sources, with the extras the stack's URLs need.
    assert {"pyproject.toml", "README.md", "celery_resumable"} <= set(copied)
    assert '".[postgres,redis]"' in installs
    assert {"postgres", "redis"} <= set(extras)
    # Each app module is in the image, and flower is installed for the flower service.
    for service in CELERY_SERVICES:
        module = app_and_subcommand(service)[0].split(":")[0]
        assert module.split(".")[0] in copied, f"{module} is not copied into the image"
        if app_and_subcommand(service)[1] == "flower":
            assert "flower" in installs


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_ci_extras_checks_each_extra_alone_and_the_dockerfiles_install_line() -> None:
    # .ci/extras installs each extra in a fresh environment and shows it working; an
    # extra added to pyproject.toml needs a check there too.
    script = (ROOT / ".ci" / "extras").read_text()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]

    # "test" and "bench" are for working on the project: its suite and its benchmarks
    # are what shows them working.
    for extra in set(extras) - {"test", "bench"}:
        assert f"check_{extra}() {{" in script, f".ci/extras does not check the {extra} extra"
        assert f'"$WORK/src[{extra}]"' in script
    assert "sed -n 's/^RUN pip install //p' Dockerfile" in script
    # The redis extra brings what Celery itself declares for Redis (kombu's transport).
    assert any(requirement.startswith("celery[redis]") for requirement in extras["redis"])
