"""The run of the resumable task executing here: its steps, checkpoint, stops and progress.

``Run`` puts together the two owners of a run's state: the ``StepSequence`` (the step
order, pure) and the ``RunCheckpoint`` (the stored row, the lease, the transactions).
The step functions, the transactional writes and ResumableTask call its methods, on
the run's own thread; the lease keeper reaches a run only through its ``LeaseDoor``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from celery_resumable import signals
from celery_resumable._types import JSONValue
from celery_resumable.errors import (
    CheckpointStoreError,
    NotInResumableTaskError,
    NotInStepError,
    TaskInterrupted,
)
from celery_resumable.run.checkpoint import Row, RunCheckpoint, TxChange
from celery_resumable.run.lease import LeaseState
from celery_resumable.run.owner import new_owner
from celery_resumable.run.progress import progress_info, publish
from celery_resumable.run.sequence import StepSequence, StepStart
from celery_resumable.store.records import FinishedStep, Status
from celery_resumable.worker import notice

if TYPE_CHECKING:
    from celery import Task

    from celery_resumable.config import ResumableConfig
    from celery_resumable.store.store import CheckpointStore

__all__ = ["Boundary", "Run", "StepStart", "TxChange", "current_run", "running"]

logger = logging.getLogger("celery_resumable")

Boundary = Literal["step_start", "step_end", "cursor"]

# A hook of the testing helpers: return True to interrupt the run at this boundary.
InterruptHook = Callable[["Run", Boundary], bool]
interrupt_hooks: list[InterruptHook] = []

_current: ContextVar[Run | None] = ContextVar("celery_resumable_run", default=None)


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
    """One execution of a resumable task, from its claim to its end."""

    __slots__ = (
        "_deadline",
        "_eager",
        "_last_progress",
        "_parent",
        "_stoppable",
        "_track_progress",
        "checkpoint",
        "cursor_label",
        "sequence",
        "started",
        "task",
        "task_id",
    )

    def __init__(
        self,
        task: Task[Any, Any],
        task_id: str | None,
        config: ResumableConfig,
        store: CheckpointStore | None,
        *,
        stoppable: bool = True,
        parent: Run | None = None,
        eager: bool = False,
    ) -> None:
        self.task = task
        self.task_id = task_id
        self._parent = parent  # the run a direct call runs inside
        self._eager = eager  # run in the caller's process (apply()), not a delivery
        self._stoppable = stoppable
        self.sequence = StepSequence(task_id)
        self.checkpoint = RunCheckpoint(
            store,
            task_id,
            task.name,
            config.lease_seconds,
            config.checkpoint_interval,
            new_owner(),
        )
        self.cursor_label = ""  # how errors name the running step's cursor
        self.started = now = time.monotonic()
        self._deadline = None if config.max_runtime is None else now + config.max_runtime
        self._track_progress = config.track_progress and task_id is not None
        self._last_progress = now

    # -- what the step functions and the testing helpers read ----------------------

    @property
    def finished(self) -> list[FinishedStep]:
        """The finished steps, in order."""
        return self.sequence.finished

    @property
    def in_progress(self) -> tuple[str, JSONValue] | None:
        """The step in progress and its encoded cursor, if any."""
        return self.sequence.in_progress

    @property
    def active(self) -> str | None:
        """The step whose function runs now, if any."""
        return self.sequence.active

    @property
    def interruptions(self) -> int:
        """How many times the task was interrupted, this run's interruption included."""
        return self.checkpoint.interruptions

    @property
    def store(self) -> CheckpointStore | None:
        """The store the run writes to; None for a run that stores nothing."""
        return self.checkpoint.store

    @property
    def owner(self) -> str:
        """The owner token the run's writes are fenced on."""
        return self.checkpoint.owner

    @property
    def lease_seconds(self) -> float:
        """How long each write or renewal extends the lease."""
        return self.checkpoint.lease_seconds

    @property
    def stored_steps(self) -> int:
        """How many finished steps the stored row holds (read from it when unknown)."""
        return self.checkpoint.known_steps(self.sequence)

    @property
    def claimed(self) -> bool:
        """Whether this run took the task's lease (always False for direct calls)."""
        return self.checkpoint.lease.state is not LeaseState.UNCLAIMED

    def holds(self, task_id: str | None) -> bool:
        """Whether this run, or the run it is called inside, holds ``task_id``'s lease."""
        if self._parent is not None:
            return self._parent.holds(task_id)
        return task_id is not None and task_id == self.task_id and self.checkpoint.held

    # -- claim and end ---------------------------------------------------------------

    def claim(self, request: Callable[[], Mapping[str, Any]] | None = None) -> None:
        """Take the task's lease and load its checkpoint, before the task body runs.

        ``request`` makes the task's request record, should a write that ends the run
        unfinished need it.

        Raises StoreUnavailable, AlreadyCompleted or LeaseBusy instead of running.
        """
        found = self.checkpoint.claim(request, self._eager)
        if found is None or not (found.finished_steps or found.current_step is not None):
            return  # nothing to resume: the sequence made with the run stands
        in_progress = None if found.current_step is None else (found.current_step, found.cursor)
        self.sequence = StepSequence(self.task_id, found.finished_steps, in_progress)
        if self.sequence.resuming and signals.task_resumed.receivers:
            signals.task_resumed.send(
                sender=self.task,
                task_id=self.task_id,
                finished_steps=[step.name for step in self.finished],
                current_step=found.current_step,
            )

    def close(self) -> None:
        """Stop renewing the lease."""
        self.checkpoint.close()

    # -- steps ---------------------------------------------------------------------

    def begin(self, name: str) -> StepStart:
        """Validate and enter step ``name``: skip it, resume it, or start it fresh."""
        if self.checkpoint.committing:
            self._settle()
        start = self.sequence.begin(name)
        if start.changed and self.checkpoint.row is Row.SAVED:
            self.checkpoint.row = Row.CHANGED  # see _changed
        if start.skipped:
            if signals.step_skipped.receivers:
                self._send(signals.step_skipped, step=name)
            return start
        self.cursor_label = ""  # made when the step sets its first cursor
        if signals.step_started.receivers:
            self._send(signals.step_started, step=name, cursor=start.cursor)
        self.boundary("step_start")
        return start

    def set_cursor(self, cursor: JSONValue) -> None:
        """Record the encoded cursor of the running step; a boundary."""
        self._settle()
        self._changed(self.sequence.advance(cursor))
        self.boundary("cursor")

    def measure(self, done: int, total: int | None) -> None:
        """Set how many items the running step has done, and of how many (None: unknown)."""
        self.sequence.measure(done, total)

    def finish(self, name: str, result: JSONValue) -> None:
        """Record step ``name`` as finished with its encoded result; a boundary.

        A step finished by ``set_step_tx`` keeps the result given there, whether its
        transaction committed inside the step or commits after it.
        """
        checkpoint = self.checkpoint
        if checkpoint.committing:
            self._settle()
        if checkpoint.open_tx:
            result = checkpoint.consume(name, result)
        if self.sequence.finish(name, result) and checkpoint.row is Row.SAVED:
            checkpoint.row = Row.CHANGED  # see _changed
        if signals.step_finished.receivers:
            self._send(signals.step_finished, step=name)
        self.boundary("step_end")

    def abort(self, name: str) -> None:
        """Leave step ``name`` unfinished: its function raised or its loop was left."""
        self._settle()
        self.sequence.abort(name)

    def count_interruption(self) -> int:
        """Count one more interruption of the task; returns the new count."""
        self.checkpoint.interruptions += 1
        self._changed(True)
        return self.checkpoint.interruptions

    def _changed(self, changed: bool) -> None:
        if changed and self.checkpoint.row is Row.SAVED:
            self.checkpoint.row = Row.CHANGED

    # -- boundaries, stops and writes --------------------------------------------------

    def boundary(self, kind: Boundary, now: float | None = None, *, write: bool = True) -> None:
        """Stop if the run must stop here; with ``write``, write the checkpoint if the
        interval has passed. ``now`` is the monotonic time, when the caller read it."""
        if now is None:
            now = time.monotonic()
        if self._parent is not None:
            self._parent._check_lease(now)
        checkpoint = self.checkpoint
        lease = checkpoint.lease
        until, missing = lease.door.view  # held, the usual case: nothing more to check
        if missing or now >= until or lease.state is not LeaseState.HELD:
            lease.check(now, self._stoppable)
        if self._stoppable:
            if notice.shutdown_requested():
                raise TaskInterrupted("shutdown")
            if self._deadline is not None and self.sequence.advanced and now >= self._deadline:
                raise TaskInterrupted("max_runtime")
            if interrupt_hooks:
                for hook in interrupt_hooks:
                    if hook(self, kind):
                        raise TaskInterrupted("requested")
        if write and checkpoint.row is Row.CHANGED and checkpoint.due(now):
            self._periodic_write(now)

    def check_stop(self, kind: Boundary, now: float | None = None) -> None:
        """Raise TaskInterrupted if the run must stop here, LeaseLostError if it lost its lease.

        A direct call runs under the lease of the run it is called inside: that run's
        lost lease, reset or lease deadline stops it too.
        """
        self.boundary(kind, now, write=False)

    def _check_lease(self, now: float) -> None:
        if self._parent is not None:
            self._parent._check_lease(now)
        self.checkpoint.lease.check(now, self._stoppable)

    def _periodic_write(self, now: float) -> None:
        if self.checkpoint.row is Row.DIVERGED:
            return  # only the run's final write changes a row that is the truth
        try:
            if self.write("running"):
                self._publish_progress(now)
        except CheckpointStoreError as exc:
            if not exc.transient:
                raise  # a value the database refuses: no later write could store it
            logger.warning("checkpoint write failed; the task goes on: %s", exc)
            self.checkpoint.defer(now)

    def write(
        self, status: Status, *, release: bool = False, attempts: int = 1, progress: bool = True
    ) -> bool:
        """Write the checkpoint fenced on the lease (see ``RunCheckpoint.write``)."""
        self._settle()
        return self.checkpoint.write(
            self.sequence, status, release=release, attempts=attempts, progress=progress
        )

    def forget(self) -> None:
        """Delete the task's checkpoint while holding its lease (the task is replaced)."""
        self.checkpoint.forget()

    # -- transactional writes ------------------------------------------------------

    def tx_change(self, function: str, finish: bool, value: JSONValue) -> TxChange:
        """Prepare a write of the running step's cursor or finish in the caller's transaction.

        Raises NotInStepError outside a step, and stops the run (before anything is
        written, so the caller's transaction rolls back) when it must stop.
        """
        name = self.sequence.active
        if name is None:
            raise NotInStepError(function)
        self._settle()
        self.check_stop("cursor")
        state = self.sequence.after(name, finish, value, self.checkpoint.interruptions)
        return TxChange(name, finish, value, state, sent=time.monotonic())

    def tx_written(self, change: TxChange) -> None:
        """The change was written in the caller's transaction, which has not ended yet."""
        self.checkpoint.tx_written(change)

    def tx_lost(self) -> NoReturn:
        """A transactional write found the lease taken or the task reset."""
        self.checkpoint.lease.raise_lost()

    def tx_committing(self, change: TxChange) -> None:
        """The caller's transaction is committing ``change``; the COMMIT may still fail."""
        self.checkpoint.tx_committing(change)

    def tx_commit_failed(self, change: TxChange, *, unknown: bool) -> None:
        """The COMMIT of ``change`` failed: rolled back, or (``unknown``) of unknown outcome."""
        self.checkpoint.tx_commit_failed(change, unknown=unknown)

    def tx_committed(self, change: TxChange) -> None:
        """The caller's transaction committed ``change``: the run's state follows it."""
        if not self.checkpoint.tx_committed(self.sequence, change):
            return
        now = time.monotonic()
        interval = self.checkpoint.interval
        if interval is not None and now - self._last_progress >= interval:
            self._publish_progress(now)

    def _settle(self) -> None:
        # The run's own code goes on, so every COMMIT it saw begin has returned.
        if not self.checkpoint.committing:
            return  # a boundary's usual case: no list copied
        for change in list(self.checkpoint.committing):
            self.tx_committed(change)

    def tx_rolled_back(self, change: TxChange) -> None:
        """The caller's transaction rolled ``change`` back."""
        self.checkpoint.tx_rolled_back(change)

    # -- progress ------------------------------------------------------------------

    def publish_saved(self) -> None:
        """Publish the position just written (an interrupt's): where the next run resumes."""
        if self.checkpoint.row is not Row.DIVERGED:  # otherwise only the status was written
            self._publish_progress(time.monotonic())

    def _publish_progress(self, now: float) -> None:
        if not self._track_progress or self.task_id is None:
            return
        self._last_progress = now
        sequence = self.sequence
        name, cursor = sequence.in_progress if sequence.in_progress is not None else (None, None)
        finished = [step.name for step in sequence.finished]
        info = progress_info(name, cursor, finished, sequence.done, sequence.total)
        publish(self.task, self.task_id, info)

    def _send(self, signal: Any, **kwargs: Any) -> None:
        if signal.receivers:
            signal.send(sender=self.task, task_id=self.task_id, **kwargs)


def enter(run: Run) -> Any:
    """Make ``run`` the current run; returns the token for ``leave``."""
    return _current.set(run)


def leave(token: Any) -> None:
    """Restore the run that was current before ``enter``."""
    _current.reset(token)
