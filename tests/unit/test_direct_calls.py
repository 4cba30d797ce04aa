"""A resumable task called directly inside another runs under the outer run's lease:
when that lease is lost, reset or past its deadline, the inner loop stops too."""

from __future__ import annotations

import time
from typing import Any

import pytest
from celery import Celery

from celery_resumable import CheckpointStore, ResumableTask, iterate
from tests.unit.test_edges import expire_lease

LEASE = 1.5  # the keeper renews every half second


@pytest.mark.parametrize("takeover", ["another_run", "forced_reset"])
def test_a_direct_call_stops_when_the_outer_run_loses_its_task(
    app: Celery, checkpoints: CheckpointStore, takeover: str
) -> None:
    processed: list[int] = []

    @app.task(base=ResumableTask, bind=True)
    def inner(self: Any, task_id: str) -> None:
        for item in iterate("inner", range(200)):
            if item == 5:
                # Given the outer task taken from its run: by another run, or reset
                if takeover == "another_run":
                    expire_lease(checkpoints, task_id)
                    checkpoints.claim(task_id, outer.name, "intruder", 60)
                else:
                    checkpoints.reset(task_id, force=True)
            processed.append(item)
            time.sleep(0.02)

    @app.task(base=ResumableTask, bind=True, resumable_lease_seconds=LEASE)
    def outer(self: Any) -> None:
        inner(self.request.id)  # a direct call: it runs under the outer run

    # When the outer run's lease keeper learns it
    outer.apply()

    # Then the inner loop stopped within a renewal or two, not after every item
    assert 6 <= len(processed) < 100


def test_a_direct_call_stops_at_the_outer_run_lease_deadline(
    app: Celery, checkpoints: CheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    processed: list[int] = []

    @app.task(base=ResumableTask, bind=True)
    def inner(self: Any) -> None:
        for item in iterate("inner", range(200)):
            if item == 5:
                # Given a store that this worker can no longer reach for renewals
                monkeypatch.setattr(checkpoints, "url", "postgresql+psycopg://nobody@127.0.0.1:9/x")
            processed.append(item)
            time.sleep(0.02)

    @app.task(base=ResumableTask, bind=True, resumable_lease_seconds=LEASE)
    def outer(self: Any) -> None:
        inner()

    # When the outer run's lease may have expired
    result = outer.apply()

    # Then the inner loop stopped there (the outer run went back to be run again)
    assert result.state == "IGNORED"
    assert len(processed) < 200
