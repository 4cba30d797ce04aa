"""What an operator does to one task, shared by the command line and the Django admin."""

from __future__ import annotations

import datetime as dt
from typing import Any

from celery_resumable.store.records import RESEND_OPTIONS, request_of
from celery_resumable.store.store import CheckpointStore

__all__ = ["retry_task"]


def retry_task(app: Any, store: CheckpointStore, task_id: str) -> str | None:
    """Send ``task_id`` again under its id, to resume from its checkpoint.

    Returns why it was not sent (no checkpoint, completed, a live run, no recorded
    request), or None when it was sent. Raises CheckpointStoreError when the store
    cannot be read.
    """
    checkpoint = store.get(task_id)
    if checkpoint is None:
        return "no checkpoint"
    if checkpoint.status == "completed":
        return "completed; nothing to retry"
    if checkpoint.status == "running" and checkpoint.owner is not None:
        expires = checkpoint.lease_expires_at
        if expires is None or expires > _now():
            return "running; nothing to retry"
    request = request_of(checkpoint)
    if request is None:
        return (
            "its request was not recorded (a run records it when it fails or is interrupted, "
            "if it can be stored as JSON); send the task again yourself with the same task_id"
        )
    # The options Celery's own retry sends (chain, links, group and chord, headers, time
    # limits, routing), by name from a fixed list: nothing else of the row is passed on.
    options = {name: request[name] for name in RESEND_OPTIONS if request.get(name) is not None}
    app.send_task(
        checkpoint.task_name,
        args=request.get("args") or [],
        kwargs=request.get("kwargs") or {},
        task_id=task_id,
        **options,
    )
    return None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
