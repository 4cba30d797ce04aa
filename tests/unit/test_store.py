"""The checkpoint store on SQLite, PostgreSQL and MariaDB: claims, fenced writes, operations."""

from __future__ import annotations

import time
import uuid

import pytest

from celery_resumable import CheckpointStore, FinishedStep
from celery_resumable.errors import CheckpointBusyError, CheckpointStoreError
from celery_resumable.store.records import State


def progress(*finished: str, current: str | None = None, cursor: object = None) -> State:
    return State(
        tuple(FinishedStep(name, {"n": i}) for i, name in enumerate(finished)), current, cursor, 0
    )  # type: ignore[arg-type]


def new_id() -> str:
    return str(uuid.uuid4())


def test_first_claim_creates_the_row_and_takes_the_lease(store: CheckpointStore) -> None:
    task_id = new_id()

    claim = store.claim(task_id, "app.import_users", "owner-1", 60)

    assert claim.claimed
    found = claim.checkpoint
    assert (found.task_name, found.status, found.owner) == (
        "app.import_users",
        "running",
        "owner-1",
    )
    checkpoint = store.get(task_id)
    assert checkpoint is not None
    assert (checkpoint.task_id, checkpoint.task_name, checkpoint.status) == (
        task_id,
        "app.import_users",
        "running",
    )
    assert (checkpoint.finished_steps, checkpoint.current_step, checkpoint.cursor) == (
        (),
        None,
        None,
    )
    assert checkpoint.owner == "owner-1"
    assert checkpoint.lease_expires_at is not None
    assert checkpoint.lease_expires_at == found.lease_expires_at
    assert checkpoint.lease_expires_at > checkpoint.updated_at


def test_a_live_lease_blocks_a_second_claim(store: CheckpointStore) -> None:
    task_id = new_id()
    store.claim(task_id, "t", "owner-1", 60)

    second = store.claim(task_id, "t", "owner-2", 60)

    assert not second.claimed
    assert second.checkpoint.owner == "owner-1"


def test_an_expired_lease_is_taken_over_and_the_stale_owner_is_fenced(
    store: CheckpointStore,
) -> None:
    # Given a run whose lease expired
    task_id = new_id()
    store.claim(task_id, "t", "stale", 0.2)
    assert store.save(task_id, "stale", progress("a"), lease_seconds=0.2)
    time.sleep(0.3)

    # When another run claims the task
    claim = store.claim(task_id, "t", "fresh", 60)

    # Then it gets the stale run's progress, and the stale run can no longer write
    assert claim.claimed
    assert [s.name for s in claim.checkpoint.finished_steps] == ["a"]
    assert not store.save(task_id, "stale", progress("a", "b"), lease_seconds=60)
    assert store.renew([(task_id, "stale")], 60) == set()
    checkpoint = store.get(task_id)
    assert checkpoint is not None
    assert [s.name for s in checkpoint.finished_steps] == ["a"]


def test_save_round_trips_steps_results_and_cursor(store: CheckpointStore) -> None:
    task_id = new_id()
    store.claim(task_id, "t", "o", 60)
    cursor = {"last_id": 41, "at": "2026-11-28T10:00:00+00:00", "ids": [1, 2]}

    assert store.save(
        task_id, "o", progress("download", current="process", cursor=cursor), lease_seconds=60
    )

    checkpoint = store.get(task_id)
    assert checkpoint is not None
    assert checkpoint.finished_steps == (FinishedStep("download", {"n": 0}),)
    assert (checkpoint.current_step, checkpoint.cursor) == ("process", cursor)
    assert checkpoint.status == "running"


def test_saving_without_a_lease_releases_it_for_the_next_run(store: CheckpointStore) -> None:
    task_id = new_id()
    store.claim(task_id, "t", "o", 60)

    assert store.save(task_id, "o", progress("a"), status="interrupted")

    checkpoint = store.get(task_id)
    assert checkpoint is not None
    assert (checkpoint.status, checkpoint.owner, checkpoint.lease_expires_at) == (
        "interrupted",
        None,
        None,
    )
    assert store.claim(task_id, "t", "next", 60).claimed


def test_a_completed_task_cannot_be_claimed(store: CheckpointStore) -> None:
    task_id = new_id()
    store.claim(task_id, "t", "o", 60)
    store.save(task_id, "o", progress("a"), status="completed")

    claim = store.claim(task_id, "t", "late-duplicate", 60)

    assert not claim.claimed
    assert claim.checkpoint.status == "completed"


def test_release_keeps_progress(store: CheckpointStore) -> None:
    task_id = new_id()
    store.claim(task_id, "t", "o", 60)
    store.save(task_id, "o", progress("a", current="b", cursor=3), lease_seconds=60)

    assert store.release(task_id, "o")

    checkpoint = store.get(task_id)
    assert checkpoint is not None
    assert (checkpoint.owner, checkpoint.current_step, checkpoint.cursor) == (None, "b", 3)


def test_list_filters_by_status_and_name(store: CheckpointStore) -> None:
    ids = [new_id() for _ in range(3)]
    for task_id, name in zip(ids, ["a.one", "a.two", "a.one"], strict=True):
        store.claim(task_id, name, "o", 60)
    store.save(ids[0], "o", progress(), status="completed")

    assert {c.task_id for c in store.list()} == set(ids)
    assert [c.task_id for c in store.list(status="completed")] == [ids[0]]
    assert {c.task_id for c in store.list(status=["running"], task_name="a.one")} == {ids[2]}
    assert len(store.list(limit=2)) == 2
    with pytest.raises(ValueError, match="unknown checkpoint status 'done'"):
        store.list(status="done")  # type: ignore[arg-type]


def test_reset_deletes_a_checkpoint_whose_lease_is_free(store: CheckpointStore) -> None:
    task_id = new_id()
    store.claim(task_id, "t", "o", 60)
    store.save(task_id, "o", progress("a"), status="interrupted")

    assert store.reset(task_id)
    assert store.get(task_id) is None
    assert not store.reset(task_id)


def test_reset_of_a_live_run_is_refused_unless_forced(store: CheckpointStore) -> None:
    # Given a run holding a live lease
    task_id = new_id()
    store.claim(task_id, "t", "o", 60)

    # When an operator resets it without force, then with force
    with pytest.raises(CheckpointBusyError, match=f"task {task_id} is running"):
        store.reset(task_id)
    kept = store.get(task_id)
    forced = store.reset(task_id, force=True)

    # Then the first is refused and keeps the row; the forced one deletes it
    assert kept is not None and kept.owner == "o"
    assert forced
    assert store.get(task_id) is None


def test_purge_deletes_only_old_completed_rows(store: CheckpointStore) -> None:
    old, running = new_id(), new_id()
    for task_id in (old, running):
        store.claim(task_id, "t", "o", 60)
    store.save(old, "o", progress(), status="completed")
    time.sleep(0.05)

    assert store.purge(older_than=3600) == 0
    assert store.purge(older_than=0.01) == 1
    assert store.get(old) is None
    assert store.get(running) is not None


def test_store_errors_name_the_task_and_hide_the_password() -> None:
    store = CheckpointStore("postgresql+psycopg://celery:s3cr3t-pw@127.0.0.1:1/test")

    with pytest.raises(CheckpointStoreError) as raised:
        store.claim("task-42", "t", "o", 60)

    message = str(raised.value)
    assert message.startswith("task task-42: could not")
    assert "s3cr3t-pw" not in message
    assert "celery:***@127.0.0.1:1" in message
    assert raised.value.task_id == "task-42"


def test_an_unknown_database_is_a_clear_error() -> None:
    store = CheckpointStore("nosuchdb://localhost/x")

    with pytest.raises(CheckpointStoreError, match="nosuchdb"):
        store.get("t")
