"""``celery -A proj resumable ...``: list, show, reset and purge checkpoints.

Celery finds the ``resumable`` command through the ``celery.commands`` entry point, which
exists only once the package is installed: on a fresh checkout these tests skip (and fail
under CI=true, where the README's test command installs the package first).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from celery_resumable import CheckpointStore
from celery_resumable.store.records import State
from tests.services import require_entry_point

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _resumable_command_installed() -> None:
    require_entry_point("celery.commands", "resumable", "celery_resumable.cli:resumable")


@pytest.fixture
def store_path(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.sqlite3'}"


def celery(store_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.unit.cli_app", "resumable", *args],
        cwd=ROOT, env={**os.environ, "RESUMABLE_CLI_STORE": store_url},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_list_show_reset_and_purge(store_path: str) -> None:
    # Given one running and one completed checkpoint
    store = CheckpointStore(store_path)
    store.claim("task-running", "app.import_users", "o", 60)
    store.save(
        "task-running", "o", State((), "process", {"last_id": 7}, 2, 7, 100), lease_seconds=60
    )
    store.claim("task-done", "app.report", "o", 60)
    store.save("task-done", "o", State((), None, None, 0), status="completed")

    # When an operator lists them
    listed = celery(store_path, "list", "--status", "running")

    # Then the running one shows with its step and interruptions
    assert listed.returncode == 0, listed.stderr
    assert "task-running" in listed.stdout
    assert "process" in listed.stdout
    assert '{"last_id": 7}' in listed.stdout
    assert "7/100" in listed.stdout
    assert "task-done" not in listed.stdout

    shown = celery(store_path, "show", "task-running")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["cursor"] == {"last_id": 7}
    assert json.loads(shown.stdout)["interruptions"] == 2

    refused = celery(store_path, "reset", "task-running")
    assert refused.returncode == 1
    assert refused.stdout.splitlines() == ["task-running: running; kept (use --force to reset it)"]
    assert store.get("task-running") is not None

    reset = celery(store_path, "reset", "--force", "task-running", "task-unknown")
    assert reset.stdout.splitlines() == ["task-running: reset", "task-unknown: no checkpoint"]
    assert store.get("task-running") is None

    purged = celery(store_path, "purge", "--older-than", "0")
    assert purged.stdout.strip() == "purged 1 checkpoints"
    assert store.list() == []


def test_show_of_an_unknown_task_fails_clearly(store_path: str) -> None:
    CheckpointStore(store_path).list()

    shown = celery(store_path, "show", "nope")

    assert shown.returncode != 0
    assert "no checkpoint for task nope" in shown.stderr
