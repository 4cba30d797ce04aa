"""Celery signals sent by resumable tasks.

Every signal is sent with the task as ``sender`` and ``task_id`` as a keyword.
Receivers run inline at the point of the event, in the worker process running the task.
"""

from __future__ import annotations

from celery.utils.dispatch import Signal

__all__ = ["step_finished", "step_skipped", "step_started", "task_interrupted", "task_resumed"]

step_started = Signal(name="step_started", providing_args={"task_id", "step", "cursor"})
"""Sent when a step starts or resumes; ``cursor`` is the stored cursor (JSON) or None."""

step_finished = Signal(name="step_finished", providing_args={"task_id", "step"})
"""Sent when a step finishes and is recorded."""

step_skipped = Signal(name="step_skipped", providing_args={"task_id", "step"})
"""Sent when a step is skipped because an earlier run finished it."""

task_interrupted = Signal(
    name="task_interrupted", providing_args={"task_id", "reason", "step", "saved"}
)
"""Sent after an interrupted run saved (``saved``) and before it is re-queued."""

task_resumed = Signal(
    name="task_resumed", providing_args={"task_id", "finished_steps", "current_step"}
)
"""Sent when a run loads a checkpoint with progress from an earlier run."""
