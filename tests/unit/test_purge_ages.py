"""Ages, limits and offsets given to the store and the command line are checked up front."""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import pytest
from celery import Celery

from celery_resumable import CheckpointStore, ResumableTask
from tests.services import require_entry_point
from tests.unit.test_cli import celery

BAD_AGES = [
    pytest.param(math.nan, id="nan"),
    pytest.param(math.inf, id="inf"),
    pytest.param(-math.inf, id="minus-inf"),
    pytest.param(-1.0, id="negative"),
]


def completed(store: CheckpointStore, *task_ids: str) -> None:
    """Run a resumable task to its end under each of ``task_ids``, checkpointing to ``store``."""
    app = Celery(f"purge_{uuid.uuid4().hex[:8]}", broker="memory://", set_as_current=False)
    app.conf.update(
        resumable_store_url=store.url,
        resumable_table_name=store.table.name,
        resumable_track_progress=False,
    )

    @app.task(base=ResumableTask, name="app.report", shared=False)
    def report() -> None:
        pass

    try:
        for task_id in task_ids:
            assert report.apply(task_id=task_id).state == "SUCCESS"
    finally:
        app.close()


@pytest.mark.parametrize("age", BAD_AGES)
def test_purge_refuses_an_age_that_is_not_a_number_of_seconds(
    store: CheckpointStore, age: float
) -> None:
    # Given a completed checkpoint
    completed(store, "task-1")

    # When purge is given an age that is not a finite number of seconds, zero or more
    with pytest.raises(ValueError, match="older_than") as raised:
        store.purge(older_than=age)

    # Then it is refused, naming the argument and the value, and nothing is deleted
    assert repr(age) in str(raised.value)
    assert store.get("task-1") is not None


@pytest.mark.parametrize("age", ["1", True])
def test_purge_refuses_an_age_that_is_not_a_number(store: CheckpointStore, age: object) -> None:
    completed(store, "task-1")

    with pytest.raises(ValueError, match="older_than"):
        store.purge(older_than=age)  # type: ignore[arg-type]

    assert store.get("task-1") is not None


def test_purge_with_an_age_of_zero_deletes_every_completed_row(store: CheckpointStore) -> None:
    completed(store, "task-1", "task-2")

    assert store.purge(older_than=0) == 2
    assert store.list() == []


@pytest.mark.parametrize("age", BAD_AGES)
def test_a_store_refuses_a_keep_completed_that_is_not_a_number_of_seconds(
    tmp_path: Path, age: float
) -> None:
    url = f"sqlite:///{tmp_path / 'checkpoints.sqlite3'}"

    with pytest.raises(ValueError, match="keep_completed") as raised:
        CheckpointStore(url, keep_completed=age)

    assert repr(age) in str(raised.value)


@pytest.mark.parametrize("argument", ["limit", "offset"])
@pytest.mark.parametrize("value", [-1, 1.5, None], ids=["negative", "fraction", "none"])
def test_list_refuses_a_limit_or_offset_that_is_not_a_count(
    store: CheckpointStore, argument: str, value: object
) -> None:
    with pytest.raises(ValueError, match=argument) as raised:
        store.list(**{argument: value})  # type: ignore[arg-type]

    assert repr(value) in str(raised.value)


def test_list_pages_with_limit_and_offset(store: CheckpointStore) -> None:
    completed(store, "task-1", "task-2", "task-3")

    everything = [c.task_id for c in store.list()]
    pages = [[c.task_id for c in store.list(limit=2, offset=offset)] for offset in (0, 2, 4)]

    assert sorted(everything) == ["task-1", "task-2", "task-3"]
    assert pages == [everything[:2], everything[2:], []]


# -- the command line ------------------------------------------------------------------


@pytest.fixture
def store_path(tmp_path: Path) -> str:
    require_entry_point("celery.commands", "resumable", "celery_resumable.cli:resumable")
    return f"sqlite:///{tmp_path / 'cli.sqlite3'}"


@pytest.mark.parametrize("age", ["nan", "inf", "-1"])
def test_the_command_line_refuses_an_age_that_is_not_a_number_of_seconds(
    store_path: str, age: str
) -> None:
    # Given a completed checkpoint
    store = CheckpointStore(store_path)
    completed(store, "task-1")

    # When an operator purges with an age that is not a finite number of seconds
    purged = celery(store_path, "purge", "--older-than", age)

    # Then it is a usage error naming the option, and nothing is deleted
    assert purged.returncode == 2, purged.stdout
    assert "--older-than" in purged.stderr
    assert store.get("task-1") is not None


def test_the_command_line_lists_past_the_limit_with_an_offset(store_path: str) -> None:
    # Given three checkpoints
    store = CheckpointStore(store_path)
    completed(store, "task-1", "task-2", "task-3")

    # When an operator lists the second page of two
    listed = celery(store_path, "list", "--limit", "2", "--offset", "2")
    refused = celery(store_path, "list", "--offset", "-1")

    # Then the last one shows alone, and a negative offset is a usage error
    assert listed.returncode == 0, listed.stderr
    shown = [line.split()[0] for line in listed.stdout.splitlines()[1:]]
    assert shown == [store.list()[2].task_id]
    assert refused.returncode == 2
    assert "--offset" in refused.stderr
