"""The state of one run of a resumable task: steps, cursors, boundaries, validation."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Literal

from . import _worker, signals
from ._records import FinishedStep, State, Status
from ._store import CheckpointStore
from ._types import JSONValue
from .errors import (
    CheckpointStoreError,
    DuplicateStepError,
    LeaseLostError,
    NestedStepError,
    NotInResumableTaskError,
    NotInStepError,
    StepMismatchError,
    TaskInterrupted,
)

if TYPE_CHECKING:
    from celery import Task

    from ._config import ResumableConfig

__all__ = ["AlreadyCompleted", "Boundary", "LeaseBusy", "Run", "StepStart", "current_run"]

logger = logging.getLogger("celery_resumable")

Boundary = Literal["step_start", "step_end", "cursor"]

# A hook of the testing helpers: return True to interrupt the run at this boundary.
InterruptHook = Callable[["Run", Boundary], bool]
interrupt_hooks: list[InterruptHook] = []

_current: ContextVar[Run | None] = ContextVar("celery_resumable_run", default=None)

_RETRY_DELAYS = (0.2, 0.5, 1.0)


class AlreadyCompleted(BaseException):
    """Raised when a delivery finds its task id completed by an earlier run."""


class LeaseBusy(BaseException):
    """Raised when another live run holds the task's lease; ``wait`` seconds until it expires."""

    def __init__(self, wait: float) -> None:
        super().__init__(wait)
        self.wait = wait


class StoreUnavailable(BaseException):
    """Raised when the checkpoint cannot be loaded; the task is deferred, not run blind."""

    def __init__(self, error: CheckpointStoreError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclasses.dataclass(frozen=True)
class StepStart:
    """What ``Run.begin`` decided: skip with a stored result, or run from a cursor."""

    skipped: bool
    result: JSONValue = None
    cursor: JSONValue = None


def running() -> Run | None:
    """The run of the resumable task executing here, if any."""
    return _current.get()


def current_run(function: str) -> Run:
    """Return the run of the resumable task executing here; raise when there is none."""
    run = _current.get()
    if run is None:
        raise NotInResumableTaskError(function)
    return run


class Run:
    """One execution of a resumable task, from its first step to its end."""

    def __init__(
        self,
        task: Task[Any, Any],
        task_id: str | None,
        config: ResumableConfig,
        store: CheckpointStore | None,
    ) -> None:
        self.task = task
        self.task_id = task_id
        self.store = store if task_id is not None else None
        self.lease_seconds = config.lease_seconds
        self.interval = config.checkpoint_interval
        self.owner = uuid.uuid4().hex
        self.started = time.monotonic()
        self.deadline = None if config.max_runtime is None else self.started + config.max_runtime
        self.loaded = False
        self.finished: list[FinishedStep] = []
        self.in_progress: tuple[str, JSONValue] | None = None
        self.active: str | None = None
        self.cursor_label = ""  # how errors name the running step's cursor
        self.abandoned: str | None = None
        self.position = 0
        self.seen: set[str] = set()
        self.interruptions = 0
        self.dirty = False
        self.progressed = False
        self.last_write = self.started
        self.lease_lost = False
        self.released = False
        # Transactional writes: how many were made, the step one of them finished, and
        # whether the latest commit may still have failed after its commit event.
        self.tx_writes = 0
        self.finished_by_tx: str | None = None
        self.unconfirmed = False

    # -- loading -------------------------------------------------------------------

    def ensure_loaded(self) -> None:
        """Claim the task's lease and load its checkpoint (once, at the first step)."""
        if self.loaded:
            return
        if self.store is None or self.task_id is None:
            self.loaded = True
            return
        try:
            claim = self.store.claim(self.task_id, self.task.name, self.owner, self.lease_seconds)
        except CheckpointStoreError as exc:
            raise StoreUnavailable(exc) from None
        checkpoint = claim.checkpoint
        if not claim.claimed:
            if checkpoint.status == "completed":
                raise AlreadyCompleted()
            expires = checkpoint.lease_expires_at
            wait = self.lease_seconds if expires is None else _seconds_until(expires)
            raise LeaseBusy(min(max(wait, 1.0), self.lease_seconds))
        self.loaded = True
        self.finished = list(checkpoint.finished_steps)
        if checkpoint.current_step is not None:
            self.in_progress = (checkpoint.current_step, checkpoint.cursor)
        self.interruptions = checkpoint.interruptions
        self.last_write = time.monotonic()
        _worker.keeper.add(self)
        if (self.finished or self.in_progress) and signals.task_resumed.receivers:
            signals.task_resumed.send(
                sender=self.task,
                task_id=self.task_id,
                finished_steps=[step.name for step in self.finished],
                current_step=checkpoint.current_step,
            )

    # -- steps ---------------------------------------------------------------------

    def begin(self, name: str) -> StepStart:
        """Validate and enter step ``name``: skip it, resume it, or start it fresh."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"a step name must be a non-empty string, not {name!r}")
        if self.active is not None:
            raise NestedStepError(self.active, name)
        if name in self.seen:
            raise DuplicateStepError(name)
        self.ensure_loaded()
        self.unconfirmed = False
        if self.abandoned is not None:
            self._settle_abandoned()
        self.seen.add(name)
        index = self.position
        self.position += 1
        if index < len(self.finished):
            expected = self.finished[index].name
            if expected != name:
                raise StepMismatchError(self.task_id or "?", expected, name)
            self._send(signals.step_skipped, step=name)
            return StepStart(skipped=True, result=self.finished[index].result)
        cursor: JSONValue = None
        if self.in_progress is not None:
            recorded, cursor = self.in_progress
            if recorded != name:
                raise StepMismatchError(self.task_id or "?", recorded, name)
        self.in_progress = (name, cursor)
        self.active = name
        self.cursor_label = f"the cursor of step {name!r}"
        self._send(signals.step_started, step=name, cursor=cursor)
        self.boundary("step_start")
        return StepStart(skipped=False, cursor=cursor)

    def set_cursor(self, cursor: JSONValue) -> None:
        """Record the encoded cursor of the running step; a boundary."""
        if self.active is None:
            raise NotInStepError("set_cursor")
        self.unconfirmed = False
        self.in_progress = (self.active, cursor)
        self.dirty = True
        self.progressed = True
        self.boundary("cursor")

    def finish(self, name: str, result: JSONValue) -> None:
        """Record step ``name`` as finished with its encoded result; a boundary.

        A step already finished by ``set_step_tx`` keeps the result stored there.
        """
        self.unconfirmed = False
        if self.finished_by_tx == name:
            self.finished_by_tx = None
        else:
            self.finished.append(FinishedStep(name, result))
        self.in_progress = None
        self.active = None
        self.dirty = True
        self.progressed = True
        self._send(signals.step_finished, step=name)
        self.boundary("step_end")

    def abort(self, name: str) -> None:
        """Leave step ``name`` unfinished: its function raised or its loop was left."""
        if self.active == name:
            self.active = None
            self.abandoned = name

    def _settle_abandoned(self) -> None:
        # The task went on after a step stopped early (a caught error, a loop left with
        # break): the step is over for this task, so record it as finished.
        name = self.abandoned
        self.abandoned = None
        if name is not None and self.in_progress is not None and self.in_progress[0] == name:
            logger.debug("task %s: step %r ended early and the task went on", self.task_id, name)
            self.finished.append(FinishedStep(name, None))
            self.in_progress = None
            self.dirty = True

    # -- boundaries and writes -----------------------------------------------------

    def boundary(self, kind: Boundary) -> None:
        """Stop if the run must stop; write the checkpoint if the interval has passed."""
        self.check_stop(kind)
        if self.dirty and self.interval is not None:
            now = time.monotonic()
            if now - self.last_write >= self.interval:
                self._periodic_write(now)

    def check_stop(self, kind: Boundary) -> None:
        """Raise TaskInterrupted if the run must stop here, LeaseLostError if it lost its lease."""
        if self.lease_lost:
            raise LeaseLostError(self.task_id or "?")
        if _worker.shutdown_requested():
            raise TaskInterrupted("shutdown")
        if self.deadline is not None and self.progressed and time.monotonic() >= self.deadline:
            raise TaskInterrupted("max_runtime")
        for hook in interrupt_hooks:
            if hook(self, kind):
                raise TaskInterrupted("requested")

    def _periodic_write(self, now: float) -> None:
        try:
            self.write("running")
        except CheckpointStoreError as exc:
            # Retry at a later boundary, at most once a second while the store is down.
            logger.warning("checkpoint write failed; the task goes on: %s", exc)
            self.last_write = now - (self.interval or 0.0) + min(self.interval or 1.0, 1.0)

    def state(self) -> State:
        """The progress to write."""
        name, cursor = self.in_progress if self.in_progress is not None else (None, None)
        return State(tuple(self.finished), name, cursor, self.interruptions)

    def write(self, status: Status, *, release: bool = False, attempts: int = 1) -> bool:
        """Write the checkpoint fenced on the lease; False when there is nothing to write to.

        Raises LeaseLostError when another run holds the lease, CheckpointStoreError when
        the store failed ``attempts`` times.
        """
        if self.store is None or self.task_id is None or not self.loaded or self.released:
            return False
        if self.unconfirmed and status != "completed":
            # The last transactional commit may have failed after its commit event:
            # the stored row is the truth, so only give the lease up.
            return self._release_only(release)
        for attempt in range(attempts):
            try:
                saved = self.store.save(
                    self.task_id,
                    self.owner,
                    self.state(),
                    status=status,
                    lease_seconds=None if release else self.lease_seconds,
                )
            except CheckpointStoreError:
                if attempt + 1 >= attempts:
                    raise
                time.sleep(_RETRY_DELAYS[min(attempt, len(_RETRY_DELAYS) - 1)])
                continue
            if not saved:
                self.lease_lost = True
                raise LeaseLostError(self.task_id)
            self.dirty = False
            self.released = release
            self.last_write = time.monotonic()
            return True
        return False  # pragma: no cover - the loop returns or raises

    def _release_only(self, release: bool) -> bool:
        if release and self.store is not None and self.task_id is not None:
            self.store.release(self.task_id, self.owner)
            self.released = True
        return False

    def renew_lease(self) -> None:
        """Extend the lease (called by the lease keeper thread)."""
        if self.store is None or self.task_id is None or self.lease_lost:
            return
        try:
            if not self.store.renew(self.task_id, self.owner, self.lease_seconds):
                self.lease_lost = True
        except CheckpointStoreError as exc:
            logger.warning("lease renewal failed; retrying: %s", exc)

    def close(self) -> None:
        """Stop renewing the lease."""
        _worker.keeper.remove(self)

    def _send(self, signal: Any, **kwargs: Any) -> None:
        if signal.receivers:
            signal.send(sender=self.task, task_id=self.task_id, **kwargs)


def _seconds_until(moment: dt.datetime) -> float:
    return float((moment - dt.datetime.now(dt.UTC)).total_seconds())


def enter(run: Run) -> Any:
    """Make ``run`` the current run; returns the token for ``leave``."""
    return _current.set(run)


def leave(token: Any) -> None:
    """Restore the run that was current before ``enter``."""
    _current.reset(token)
