"""The exceptions raised by celery-resumable.

Every error a user can catch derives from :class:`ResumableError`. The one exception
that does not is :class:`TaskInterrupted`, which derives from :class:`BaseException` so
that ``except Exception`` blocks in task code do not swallow a shutdown.
"""

from __future__ import annotations

__all__ = [
    "CheckpointStoreError",
    "CursorDecodeError",
    "CursorEncodeError",
    "DuplicateStepError",
    "LeaseLostError",
    "NestedStepError",
    "NotInResumableTaskError",
    "NotInStepError",
    "ResumableError",
    "StepMismatchError",
    "TaskInterrupted",
    "TooManyInterruptionsError",
]


class ResumableError(Exception):
    """Raised for every error of celery-resumable; the root of the family."""


class DuplicateStepError(ResumableError):
    """Raised when one run of a task meets the same step name twice."""

    def __init__(self, step: str) -> None:
        super().__init__(
            f"step {step!r} was already run in this task; every step needs a unique name"
        )
        self.step = step


class NestedStepError(ResumableError):
    """Raised when a step is started while another step is running."""

    def __init__(self, outer: str, inner: str) -> None:
        super().__init__(
            f"step {inner!r} was started inside step {outer!r}; steps cannot be nested"
        )
        self.outer = outer
        self.inner = inner


class StepMismatchError(ResumableError):
    """Raised on resume when the task meets a step other than the one its checkpoint recorded.

    It means the task's code changed between runs. The task is not retried: reset its
    checkpoint (``celery resumable reset TASK_ID``) to start it over.
    """

    def __init__(self, task_id: str, expected: str, found: str) -> None:
        super().__init__(
            f"task {task_id}: the checkpoint expected step {expected!r} here but the "
            f"task ran step {found!r}; the task's steps changed since the checkpoint "
            "was written; reset the checkpoint to start over"
        )
        self.task_id = task_id
        self.expected = expected
        self.found = found


class NotInStepError(ResumableError):
    """Raised when ``set_cursor`` (or a ``_tx`` function) is called outside a step."""

    def __init__(self, function: str) -> None:
        super().__init__(
            f"{function}() was called outside a step; call it from the function "
            "run by step_cursor() or step()"
        )
        self.function = function


class NotInResumableTaskError(ResumableError):
    """Raised when a step function is called outside a task whose base is ResumableTask."""

    def __init__(self, function: str) -> None:
        super().__init__(
            f"{function}() was called outside a resumable task; declare the task "
            "with @app.task(base=ResumableTask)"
        )
        self.function = function


class CursorEncodeError(ResumableError):
    """Raised when a cursor or a step result cannot be stored as JSON."""


class CursorDecodeError(ResumableError):
    """Raised when a stored cursor or step result cannot be read back as the expected type."""


class CheckpointStoreError(ResumableError):
    """Raised when the checkpoint store cannot be read or written."""

    def __init__(self, message: str, task_id: str | None = None) -> None:
        prefix = f"task {task_id}: " if task_id else ""
        super().__init__(f"{prefix}{message}")
        self.task_id = task_id


class LeaseLostError(ResumableError):
    """Raised when a run finds that another run has taken over its task's checkpoint."""

    def __init__(self, task_id: str) -> None:
        super().__init__(
            f"task {task_id}: another run took over the checkpoint lease; this run stops "
            "without writing so that it cannot overwrite newer progress"
        )
        self.task_id = task_id


class TooManyInterruptionsError(ResumableError):
    """Raised when a task was interrupted more times than ``resumable_max_interruptions``."""

    def __init__(self, task_id: str, interruptions: int, limit: int) -> None:
        super().__init__(
            f"task {task_id} was interrupted {interruptions} times, more than "
            f"resumable_max_interruptions={limit}; it is failed to break the loop"
        )
        self.task_id = task_id
        self.interruptions = interruptions
        self.limit = limit


class TaskInterrupted(BaseException):
    """Raised at a checkpoint boundary when the run must stop (shutdown, max runtime).

    ResumableTask catches it, saves the checkpoint and re-queues the task. It derives
    from BaseException so ``except Exception`` in task code does not swallow it; code
    that catches BaseException must re-raise it.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
