"""``celery -A proj resumable ...`` when something is wrong: one clear line and exit 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from celery_resumable import CheckpointStore
from celery_resumable.store.records import FinishedStep, State
from tests.services import require_entry_point
from tests.unit.test_cli import celery

DOWN = "postgresql+psycopg://app:s3cr3t-pw@127.0.0.1:9/test"


@pytest.fixture(autouse=True)
def _resumable_command_installed() -> None:
    require_entry_point("celery.commands", "resumable", "celery_resumable.cli:resumable")


@pytest.fixture
def store_path(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.sqlite3'}"


@pytest.mark.parametrize(
    "command",
    [["list"], ["show", "abc"], ["reset", "abc"], ["retry", "abc"], ["purge"]],
    ids=lambda command: command[0],
)
def test_a_store_that_is_down_prints_one_line_and_exits_1(command: list[str]) -> None:
    # When an operator runs a command while the database refuses connections
    ran = celery(DOWN, *command)

    # Then one line says what is wrong, without a traceback or the password
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert "Traceback" not in ran.stderr
    assert ran.stderr.splitlines() == [ran.stderr.strip()]
    assert ran.stderr.startswith("Error: could not connect to the checkpoint store")
    assert "app:***@127.0.0.1:9/test" in ran.stderr
    assert "s3cr3t-pw" not in ran.stderr + ran.stdout
    assert "the server at 127.0.0.1:9 refused the connection: is it running?" in ran.stderr


def test_reset_of_an_unknown_task_fails_as_show_does(store_path: str) -> None:
    CheckpointStore(store_path).list()

    shown = celery(store_path, "show", "nope")
    reset = celery(store_path, "reset", "nope")

    assert shown.returncode == 1
    assert reset.returncode == 1
    assert reset.stdout.splitlines() == ["nope: no checkpoint"]
    assert "no checkpoint for task nope" in reset.stderr


def test_reset_of_known_and_unknown_tasks_resets_the_known_and_exits_1(store_path: str) -> None:
    store = CheckpointStore(store_path)
    store.claim("known", "app.t", "o", 60)
    store.release("known", "o")

    reset = celery(store_path, "reset", "known", "nope")

    assert reset.returncode == 1
    assert reset.stdout.splitlines() == ["known: reset", "nope: no checkpoint"]
    assert store.get("known") is None


def test_show_shortens_long_values_unless_full(store_path: str) -> None:
    # Given a task whose first step returned 2,000 ids and whose cursor is long too
    store = CheckpointStore(store_path)
    ids = list(range(100_000, 102_000))
    store.claim("big", "app.import_users", "o", 60)
    cursor = {"seen": ids[:500]}
    store.save("big", "o", State((FinishedStep("download", ids),), "process", cursor, 0))

    # When an operator shows it
    shown = celery(store_path, "show", "big")

    # Then it fits on a screen, and says how to see everything
    assert shown.returncode == 0, shown.stderr
    assert len(shown.stdout.splitlines()) < 60
    record = json.loads(shown.stdout)
    result = record["finished_steps"][0]["result"]
    assert isinstance(result, str)
    assert len(result) < 300
    assert f"… ({len(json.dumps(ids))} characters; --full shows all)" in result
    assert "--full shows all" in record["cursor"]
    assert record["status"] == "running"

    # And --full shows every value whole
    full = celery(store_path, "show", "--full", "big")
    assert full.returncode == 0, full.stderr
    whole = json.loads(full.stdout)
    assert whole["finished_steps"][0]["result"] == ids
    assert whole["cursor"] == cursor


def test_show_keeps_short_values_as_they_are(store_path: str) -> None:
    store = CheckpointStore(store_path)
    store.claim("small", "app.t", "o", 60)
    store.save("small", "o", State((FinishedStep("one", [1, 2, 3]),), "two", {"last": 7}, 0))

    shown = celery(store_path, "show", "small")

    record = json.loads(shown.stdout)
    assert record["finished_steps"][0]["result"] == [1, 2, 3]
    assert record["cursor"] == {"last": 7}
