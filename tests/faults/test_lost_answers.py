"""A write whose answer is lost after the database committed it is run again, and the
second execution recognises the first one's success instead of reading a lost lease."""

from __future__ import annotations

import pytest

from celery_resumable.store.records import State
from tests.faults.conftest import Faulty


@pytest.mark.parametrize("status", ["interrupted", "failed", "completed"])
def test_a_release_whose_answer_is_lost_is_not_a_lost_lease(faulty: Faulty, status: str) -> None:
    # Given a claimed task
    store = faulty.store
    assert store.claim("task-1", "t", "owner-1", 60).claimed

    # When its final write commits and the answer never reaches the worker
    faulty.proxy.fail_on(status.encode(), "after")
    saved = store.save("task-1", "owner-1", State((), "loop", 7, 1), status=status)

    # Then the write, run again on a new connection, reports success (a completed row
    # keeps no progress)
    assert faulty.proxy.struck.is_set()
    assert saved
    checkpoint = faulty.direct.get("task-1")
    assert checkpoint is not None
    assert (checkpoint.status, checkpoint.cursor, checkpoint.lease_expires_at) == (
        status,
        None if status == "completed" else 7,
        None,
    )


def test_a_status_mark_whose_answer_is_lost_is_not_a_lost_lease(faulty: Faulty) -> None:
    # Given a claimed task
    store = faulty.store
    assert store.claim("task-1", "t", "owner-1", 60).claimed

    # When the mark that releases it commits and its answer is lost
    faulty.proxy.fail_on(b"interrupted", "after")
    marked = store.mark("task-1", "owner-1", "interrupted", 1)

    # Then the mark, run again, reports success, and the task is free to claim
    assert faulty.proxy.struck.is_set()
    assert marked
    assert store.claim("task-1", "t", "owner-2", 60).claimed


def test_a_claim_whose_answer_is_lost_still_holds_the_lease(faulty: Faulty) -> None:
    # Given a task never run
    store = faulty.store
    store.get("other")  # the table exists before the claim is failed

    # When its claim commits and the answer is lost
    faulty.proxy.fail_on(b"owner-1", "after")
    claim = store.claim("task-1", "t", "owner-1", 60)

    # Then the claim run again finds the lease its first execution took
    assert faulty.proxy.struck.is_set()
    assert claim.claimed
    assert not store.claim("task-1", "t", "owner-2", 60).claimed


def test_a_released_lease_is_not_renewed(faulty: Faulty) -> None:
    # Given a run that released its lease
    store = faulty.store
    assert store.claim("task-1", "t", "owner-1", 60).claimed
    assert store.save("task-1", "owner-1", State((), None, None, 1), status="interrupted")

    # When a renewal sent before the release arrives after it
    renewed = store.renew([("task-1", "owner-1")], 60)

    # Then the row stays free for the next delivery
    assert renewed == set()
    assert store.claim("task-1", "t", "owner-2", 60).claimed
