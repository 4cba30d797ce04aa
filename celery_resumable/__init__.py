"""Checkpointable Celery tasks: named steps, cursors and a SQL checkpoint store.

A task declared with ``base=ResumableTask`` splits its body into ``step`` and
``step_cursor`` calls (or ``iterate`` loops). When the worker stops, the task stops at
its next checkpoint boundary, saves, and goes back on the queue; the next run skips the
finished steps and resumes the step in progress from its cursor.
"""

from __future__ import annotations

from celery_resumable.config import ResumableConfig
from celery_resumable.keyset import keyset
from celery_resumable.steps import iterate, set_cursor, step, step_cursor
from celery_resumable.store.records import Checkpoint, FinishedStep
from celery_resumable.store.store import CheckpointStore, checkpoint_store
from celery_resumable.task import ResumableTask
from celery_resumable.tx import set_step_cursor_tx, set_step_tx

__all__ = [
    "Checkpoint",
    "CheckpointStore",
    "FinishedStep",
    "ResumableConfig",
    "ResumableTask",
    "checkpoint_store",
    "iterate",
    "keyset",
    "set_cursor",
    "set_step_cursor_tx",
    "set_step_tx",
    "step",
    "step_cursor",
]

__version__ = "0.1.0"
