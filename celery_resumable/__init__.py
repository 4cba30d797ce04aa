"""Checkpointable Celery tasks: named steps, cursors and a SQL checkpoint store.

A task declared with ``base=ResumableTask`` splits its body into ``step`` and
``step_cursor`` calls (or ``iterate`` loops). When the worker stops, the task stops at
its next checkpoint boundary, saves, and goes back on the queue; the next run skips the
finished steps and resumes the step in progress from its cursor.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# Where each public name lives. The package imports them on first use, so that a module
# of it (the `celery resumable` command, which every `celery` command loads) can be
# imported without SQLAlchemy and the rest.
_HOMES = {
    "Checkpoint": "celery_resumable.store.records",
    "CheckpointStore": "celery_resumable.store.store",
    "FinishedStep": "celery_resumable.store.records",
    "ResumableConfig": "celery_resumable.config",
    "ResumableTask": "celery_resumable.task",
    "checkpoint_store": "celery_resumable.store.store",
    "iterate": "celery_resumable.steps",
    "keyset": "celery_resumable.keyset",
    "set_cursor": "celery_resumable.steps",
    "set_step_cursor_tx": "celery_resumable.tx",
    "set_step_tx": "celery_resumable.tx",
    "step": "celery_resumable.steps",
    "step_cursor": "celery_resumable.steps",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'celery_resumable' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


__version__ = "0.1.0"
