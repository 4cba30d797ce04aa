"""Progress of a running run, published to the result backend as state ``PROGRESS``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from celery.backends.base import DisabledBackend

if TYPE_CHECKING:
    from celery import Task

__all__ = ["PROGRESS", "publish"]

logger = logging.getLogger("celery_resumable")

PROGRESS = "PROGRESS"


def publish(task: Task[Any, Any], task_id: str, info: dict[str, Any]) -> None:
    """Set ``task_id``'s state to PROGRESS with ``info``; never raises.

    Tasks that ignore their results, or have no result backend, publish nothing: no
    state is left that no final state would replace.
    """
    if task.ignore_result or isinstance(task.backend, DisabledBackend):
        return
    try:
        task.update_state(task_id=task_id, state=PROGRESS, meta=info)
    except Exception as exc:  # noqa: BLE001 - progress must never fail the task
        logger.warning("could not publish the progress of task %s: %s", task_id, exc)
