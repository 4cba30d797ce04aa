"""Progress of a running run, published to the result backend as state ``PROGRESS``.

The info holds the run's own keys (``step``, ``cursor``, ``finished_steps``, ``done``,
``total``) and the keys progress bars read: those of celery-progress's
``ProgressRecorder`` (``current``, ``total``, ``percent``, ``description``, ``pending``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from celery.backends.base import DisabledBackend

if TYPE_CHECKING:
    from celery import Task

__all__ = ["PROGRESS", "progress_info", "publish"]

logger = logging.getLogger("celery_resumable")

PROGRESS = "PROGRESS"

_CURSOR_TEXT = 60  # characters of the cursor shown in the description


def progress_info(
    step: str | None, cursor: Any, finished: Sequence[str], done: int, total: int | None
) -> dict[str, Any]:
    """The PROGRESS info of a run: its own keys and those of celery-progress.

    ``current`` is the items done in the running step and ``total`` their number (None
    when unknown); ``percent`` is ``100 * current / total`` rounded to two places as
    celery-progress computes it, and 0 when the total is unknown.
    """
    current = done if step is not None else 0
    percent = 0.0
    if step is not None and total:
        percent = round(100 * current / total, 2)
    return {
        "step": step,
        "cursor": cursor,
        "finished_steps": list(finished),
        "done": done,
        "total": total,
        "current": current,
        "percent": percent,
        "description": _description(step, cursor, finished),
        "pending": False,
    }


def _description(step: str | None, cursor: Any, finished: Sequence[str]) -> str:
    if step is None:
        return f"after step {finished[-1]}" if finished else "starting"
    if cursor is None:
        return f"step {step}"
    text = json.dumps(cursor, ensure_ascii=False, sort_keys=True)
    if len(text) > _CURSOR_TEXT:
        text = text[: _CURSOR_TEXT - 1] + "…"
    return f"step {step}, cursor {text}"


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
