"""The exceptions raised by celery-resumable.

Every error a user can catch derives from :class:`ResumableError`. The exceptions
that stop a run (:class:`RunStopped`: :class:`TaskInterrupted`, :class:`LeaseLostError`)
derive from :class:`BaseException` instead, so that ``except Exception`` blocks in task
code do not talk a stopping run out of stopping.
"""

from __future__ import annotations

__all__ = [
    "CheckpointBusyError",
    "CheckpointStoreError",
    "CursorDecodeError",
    "CursorEncodeError",
    "DuplicateStepError",
    "LeaseLostError",
    "NestedStepError",
    "NotInResumableTaskError",
    "NotInStepError",
    "ResumableError",
    "RunStopped",
    "StepMismatchError",
    "TaskInterrupted",
    "TooManyInterruptionsError",
]


class ResumableError(Exception):
    """Raised for every error of celery-resumable; the root of the family.

    The constructor arguments are kept in ``args`` so that result backends can rebuild
    the error from them; the message is made from them by ``__str__``.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DuplicateStepError(ResumableError):
    """Raised when one run of a task meets the same step name twice."""

    def __init__(self, step: str) -> None:
        super().__init__(step)
        self.step = step

    def __str__(self) -> str:
        return f"step {self.step!r} was already run in this task; every step needs a unique name"


class NestedStepError(ResumableError):
    """Raised when a step is started while another step is running."""

    def __init__(self, outer: str, inner: str) -> None:
        super().__init__(outer, inner)
        self.outer = outer
        self.inner = inner

    def __str__(self) -> str:
        return f"step {self.inner!r} was started inside step {self.outer!r}; steps cannot be nested"


class StepMismatchError(ResumableError):
    """Raised on resume when the task meets a step other than the one its checkpoint recorded.

    It means the task's code changed between runs. The task is not retried: reset its
    checkpoint (``celery -A proj resumable reset TASK_ID``) to start it over, or deploy
    code whose steps match the checkpoint and send it again from there
    (``celery -A proj resumable retry TASK_ID``).
    """

    def __init__(self, task_id: str, expected: str, found: str) -> None:
        super().__init__(task_id, expected, found)
        self.task_id = task_id
        self.expected = expected
        self.found = found

    def __str__(self) -> str:
        return (
            f"task {self.task_id}: the checkpoint expected step {self.expected!r} here but "
            f"the task ran step {self.found!r}; the task's steps changed since the checkpoint "
            "was written. To start the task over: "
            f"celery -A <your app> resumable reset {self.task_id} and send it again; to "
            "resume it from its checkpoint: deploy code whose steps match the checkpoint, "
            f"then celery -A <your app> resumable retry {self.task_id}"
        )


class NotInStepError(ResumableError):
    """Raised when ``set_cursor`` (or a ``_tx`` function) is called outside a step."""

    def __init__(self, function: str) -> None:
        super().__init__(function)
        self.function = function

    def __str__(self) -> str:
        return (
            f"{self.function}() was called outside a step; call it from the function "
            "run by step_cursor() or step()"
        )


class NotInResumableTaskError(ResumableError):
    """Raised when a step function is called outside a task whose base is ResumableTask."""

    def __init__(self, function: str) -> None:
        super().__init__(function)
        self.function = function

    def __str__(self) -> str:
        return (
            f"{self.function}() was called outside a resumable task; declare the task "
            "with @app.task(base=ResumableTask)"
        )


class CursorEncodeError(ResumableError):
    """Raised when a cursor or a step result cannot be stored as JSON, or would not come
    back equal and of the same type."""


class CursorDecodeError(ResumableError):
    """Raised when a stored cursor or step result cannot be read back as the expected type."""


class CheckpointStoreError(ResumableError):
    """Raised when the checkpoint store cannot be read or written.

    ``transient`` is True when the store could not be reached (a connection error, a
    timeout, a lock that was not granted) and the same call may succeed later; False
    for a permanent fault (no table, no permission, a value the database refuses).
    """

    def __init__(self, message: str, task_id: str | None = None, transient: bool = False) -> None:
        super().__init__(message, task_id, transient)
        self.message = message
        self.task_id = task_id
        self.transient = transient

    def __str__(self) -> str:
        prefix = f"task {self.task_id}: " if self.task_id else ""
        return f"{prefix}{self.message}"


class TooManyInterruptionsError(ResumableError):
    """Raised when a task was interrupted more times than ``resumable_max_interruptions``."""

    def __init__(self, task_id: str, interruptions: int, limit: int) -> None:
        super().__init__(task_id, interruptions, limit)
        self.task_id = task_id
        self.interruptions = interruptions
        self.limit = limit

    def __str__(self) -> str:
        return (
            f"task {self.task_id} was interrupted {self.interruptions} times, more than "
            f"resumable_max_interruptions={self.limit}; it is failed to break the loop"
        )


class CheckpointBusyError(ResumableError):
    """Raised when a checkpoint to reset or purge belongs to a run whose lease is alive.

    Pass ``force=True`` (``--force`` on the command line) to reset it anyway: the live
    run then stops at its next boundary and goes back on the queue to start over.
    """

    def __init__(self, task_id: str) -> None:
        super().__init__(task_id)
        self.task_id = task_id

    def __str__(self) -> str:
        return (
            f"task {self.task_id} is running (its lease is alive); the checkpoint was kept; "
            "force the reset to make the run start over"
        )


# -- the exceptions that stop a run ------------------------------------------------------


class RunStopped(BaseException):
    """Raised to end a run early; the root of the exceptions that stop a run.

    It derives from BaseException so ``except Exception`` in task code does not swallow
    it; code that catches BaseException must re-raise it. ResumableTask handles every
    subclass; none of them reaches the result backend as a failure.
    """


class TaskInterrupted(RunStopped):
    """Raised at a checkpoint boundary when the run must stop (shutdown, max runtime, reset).

    ResumableTask catches it, saves the checkpoint and re-queues the task.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LeaseLostError(RunStopped):
    """Raised when a run finds that another run has taken over its task's checkpoint.

    The stale run stops without writing: the run holding the lease carries the task on.
    """

    def __init__(self, task_id: str) -> None:
        super().__init__(task_id)
        self.task_id = task_id

    def __str__(self) -> str:
        return (
            f"task {self.task_id}: another run took over the checkpoint lease; this run "
            "stops without writing so that it cannot overwrite newer progress"
        )


class AlreadyCompleted(RunStopped):
    """Raised when a delivery finds its task id completed by an earlier run."""


class LeaseBusy(RunStopped):
    """Raised when another live run holds the task's lease; ``wait`` seconds until it expires."""

    def __init__(self, wait: float) -> None:
        super().__init__(wait)
        self.wait = wait


class StoreUnavailable(RunStopped):
    """Raised when a run cannot claim its checkpoint; the task is deferred or failed, not run."""

    def __init__(self, error: CheckpointStoreError) -> None:
        super().__init__(str(error))
        self.error = error
