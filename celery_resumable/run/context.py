"""The state of one run of a resumable task: steps, cursors, boundaries, validation.

``Run`` is the only place where a run's state changes; the step functions, the
transactional writes and ResumableTask call its methods.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from celery_resumable import signals
from celery_resumable._types import JSONValue
from celery_resumable.errors import (
    AlreadyCompleted,
    CheckpointBusyError,
    CheckpointStoreError,
    DuplicateStepError,
    LeaseBusy,
    LeaseLostError,
    NestedStepError,
    NotInResumableTaskError,
    NotInStepError,
    StepMismatchError,
    StoreUnavailable,
    TaskInterrupted,
)
from celery_resumable.run.progress import progress_info, publish
from celery_resumable.store.records import Claim, FinishedStep, State, Status
from celery_resumable.store.store import CheckpointStore
from celery_resumable.worker import notice
from celery_resumable.worker.lease_keeper import keeper

if TYPE_CHECKING:
    from celery import Task

    from celery_resumable.config import ResumableConfig

__all__ = ["Boundary", "Run", "StepStart", "TxChange", "current_run", "running"]

logger = logging.getLogger("celery_resumable")

Boundary = Literal["step_start", "step_end", "cursor"]

# A hook of the testing helpers: return True to interrupt the run at this boundary.
InterruptHook = Callable[["Run", Boundary], bool]
interrupt_hooks: list[InterruptHook] = []

_current: ContextVar[Run | None] = ContextVar("celery_resumable_run", default=None)

_RETRY_DELAYS = (0.2, 0.5, 1.0)


@dataclasses.dataclass(frozen=True)
class StepStart:
    """What ``Run.begin`` decided: skip with a stored result, or run from a cursor."""

    skipped: bool
    result: JSONValue = None
    cursor: JSONValue = None


@dataclasses.dataclass(eq=False)
class TxChange:
    """A change written in the caller's transaction: a step's cursor, or its finish."""

    step: str
    finish: bool
    value: JSONValue
    state: State
    consumed: bool = False  # the run went past it (the step ended) before the commit
    # When the write was sent (monotonic): it extends the lease from then, once committed.
    sent: float = 0.0


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
    """One execution of a resumable task, from its claim to its end.

    ``finished``, ``in_progress``, ``active`` and ``interruptions`` are read by the step
    functions and the testing helpers; they change only through the methods below.
    """

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
        self._parent = parent  # the run a direct call runs inside
        self._eager = eager  # run in the caller's process (apply()), not a delivery
        self.task_id = task_id
        self.store = store if task_id is not None else None
        self.lease_seconds = config.lease_seconds
        self.owner = uuid.uuid4().hex
        self.started = time.monotonic()
        self.finished: list[FinishedStep] = []
        self.in_progress: tuple[str, JSONValue] | None = None
        self.active: str | None = None
        self.cursor_label = ""  # how errors name the running step's cursor
        self.interruptions = 0
        self._interval = config.checkpoint_interval
        self._track_progress = config.track_progress and task_id is not None
        self._last_progress = self.started
        self._done = 0  # cursor advances of the running step
        self._total: int | None = None
        self._deadline = None if config.max_runtime is None else self.started + config.max_runtime
        self._claimed = False
        self._stored_steps = 0  # finished steps the stored row holds
        self._steps_unsure = False  # a write ended without its answer: read the row first
        self._stoppable = stoppable
        self._abandoned: str | None = None
        self._position = 0
        self._seen: set[str] = set()
        self._dirty = False
        self._progressed = False
        self._last_write = self.started
        # The lease as this process knows it: until when it is surely ours (monotonic),
        # whether another run took it, whether an operator reset the task.
        self._lease_until = float("inf")
        self._lease_lost = False
        self._reset = False
        self._released = False
        # Transactional writes whose transaction has not ended yet; those whose COMMIT
        # was under way when last seen (settled as committed when the run's code goes
        # on, since the COMMIT then returned); whether a transaction rolled back after
        # the run went past it, or a COMMIT of unknown outcome, made the stored row the
        # truth instead of the run's memory.
        self._open_tx: list[TxChange] = []
        self._committing: list[TxChange] = []
        self._finished_by_tx: str | None = None
        self._diverged = False

    @property
    def stored_steps(self) -> int:
        """How many of the finished steps the stored row holds."""
        return self._stored_steps

    def holds(self, task_id: str | None) -> bool:
        """Whether this run, or the run it is called inside, holds ``task_id``'s lease."""
        if self._parent is not None:
            return self._parent.holds(task_id)
        return (
            task_id is not None
            and task_id == self.task_id
            and self._claimed
            and not (self._released or self._lease_lost)
        )

    @property
    def claimed(self) -> bool:
        """Whether this run holds the task's lease (always False for direct calls)."""
        return self._claimed

    # -- claim ---------------------------------------------------------------------

    def claim(self, request: Mapping[str, Any] | None = None) -> None:
        """Take the task's lease and load its checkpoint, before the task body runs.

        Raises StoreUnavailable, AlreadyCompleted or LeaseBusy instead of running.
        """
        if self.store is None or self.task_id is None:
            return
        sent = time.monotonic()
        try:
            claim = self._take(self.store, self.task_id, request)
        except CheckpointStoreError as exc:
            raise StoreUnavailable(exc) from None
        checkpoint = claim.checkpoint
        if not claim.claimed:
            if checkpoint.status == "completed":
                raise AlreadyCompleted()
            expires = checkpoint.lease_expires_at
            wait = self.lease_seconds if expires is None else _seconds_until(expires)
            raise LeaseBusy(min(max(wait, 1.0), self.lease_seconds))
        self._claimed = True
        self._lease_until = sent + self.lease_seconds
        self.finished = list(checkpoint.finished_steps)
        self._stored_steps = len(self.finished)
        if checkpoint.current_step is not None:
            self.in_progress = (checkpoint.current_step, checkpoint.cursor)
        self.interruptions = checkpoint.interruptions
        self._last_write = time.monotonic()
        keeper.add(self)
        if (self.finished or self.in_progress) and signals.task_resumed.receivers:
            signals.task_resumed.send(
                sender=self.task,
                task_id=self.task_id,
                finished_steps=[step.name for step in self.finished],
                current_step=checkpoint.current_step,
            )

    def _take(
        self, store: CheckpointStore, task_id: str, request: Mapping[str, Any] | None
    ) -> Claim:
        claim = store.claim(task_id, self.task.name, self.owner, self.lease_seconds, request)
        found = claim.checkpoint
        other_task = found.task_name != self.task.name and (
            claim.claimed or found.status == "completed"
        )
        if not (other_task or (self._eager and found.status == "completed")):
            return claim
        # The id's row belongs to another task, or to a finished eager run (Celery's eager
        # chains run several tasks under one id; an eager call is not a delivery): this
        # run starts fresh, it never resumes or skips another's work.
        if claim.claimed:
            store.forget(task_id, self.owner)
        else:
            try:
                store.reset(task_id)
            except CheckpointBusyError:
                raise LeaseBusy(1.0) from None
        return store.claim(task_id, self.task.name, self.owner, self.lease_seconds, request)

    # -- steps ---------------------------------------------------------------------

    def begin(self, name: str) -> StepStart:
        """Validate and enter step ``name``: skip it, resume it, or start it fresh."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"a step name must be a non-empty string, not {name!r}")
        if self.active is not None:
            raise NestedStepError(self.active, name)
        if name in self._seen:
            raise DuplicateStepError(name)
        if self._committing:
            self._settle()
        if self._abandoned is not None:
            self._settle_abandoned()
        self._seen.add(name)
        index = self._position
        self._position += 1
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
        if self.in_progress is None:
            self._dirty = True  # the row learns which step is in progress
        self._done = 0
        self._total = None
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
        if self._committing:
            self._settle()
        self.in_progress = (self.active, cursor)
        self._done += 1
        self._dirty = True
        self._progressed = True
        self.boundary("cursor")

    def measure(self, done: int, total: int | None) -> None:
        """Set how many items the running step has done, and of how many (None: unknown)."""
        self._done = done
        self._total = total

    def finish(self, name: str, result: JSONValue) -> None:
        """Record step ``name`` as finished with its encoded result; a boundary.

        A step finished by ``set_step_tx`` keeps the result given there, whether its
        transaction committed inside the step or commits after it.
        """
        if self._committing:
            self._settle()
        if self._finished_by_tx == name:
            self._finished_by_tx = None
        else:
            for change in self._open_tx:
                if change.step == name:
                    change.consumed = True
                    if change.finish:
                        result = change.value
            self.finished.append(FinishedStep(name, result))
        self.in_progress = None
        self.active = None
        self._dirty = True
        self._progressed = True
        self._send(signals.step_finished, step=name)
        self.boundary("step_end")

    def abort(self, name: str) -> None:
        """Leave step ``name`` unfinished: its function raised or its loop was left."""
        if self._committing:
            self._settle()
        if self.active == name:
            self.active = None
            self._abandoned = name

    def _settle_abandoned(self) -> None:
        # The task went on after a step stopped early (a caught error, a loop left with
        # break): the step is over for this task, so record it as finished.
        name = self._abandoned
        self._abandoned = None
        if name is not None and self.in_progress is not None and self.in_progress[0] == name:
            logger.debug("task %s: step %r ended early and the task went on", self.task_id, name)
            self.finished.append(FinishedStep(name, None))
            self.in_progress = None
            self._dirty = True

    # -- transactional writes ------------------------------------------------------

    def tx_change(self, function: str, finish: bool, value: JSONValue) -> TxChange:
        """Prepare a write of the running step's cursor or finish in the caller's transaction.

        Raises NotInStepError outside a step, and stops the run (before anything is
        written, so the caller's transaction rolls back) when it must stop.
        """
        if self.active is None:
            raise NotInStepError(function)
        name = self.active
        if self._committing:
            self._settle()
        self.check_stop("cursor")
        if finish:
            state = State(
                (*self.finished, FinishedStep(name, value)), None, None, self.interruptions
            )
        else:
            done = self._done + 1
            state = State(tuple(self.finished), name, value, self.interruptions, done, self._total)
        return TxChange(name, finish, value, state, sent=time.monotonic())

    def tx_written(self, change: TxChange) -> None:
        """The change was written in the caller's transaction, which has not ended yet."""
        self._open_tx.append(change)

    def tx_lost(self) -> NoReturn:
        """A transactional write found the lease taken or the task reset."""
        self._raise_lost()

    def tx_committing(self, change: TxChange) -> None:
        """The caller's transaction is committing ``change``; the COMMIT may still fail."""
        if change in self._open_tx:
            self._open_tx.remove(change)
            self._committing.append(change)

    def tx_commit_failed(self, change: TxChange, *, unknown: bool) -> None:
        """The COMMIT of ``change`` failed: rolled back, or (``unknown``) the connection
        was lost during it and whether the database committed cannot be known."""
        if change not in self._committing:
            return
        self._committing.remove(change)
        if unknown or change.consumed:
            # The stored row, not this run's memory, holds the truth.
            self._diverged = True

    def _settle(self) -> None:
        # The run's own code goes on, so every COMMIT it saw begin has returned.
        for change in list(self._committing):
            self.tx_committed(change)

    def tx_committed(self, change: TxChange) -> None:
        """The caller's transaction committed ``change``: the run's state follows it."""
        if change in self._committing:
            self._committing.remove(change)
        elif change in self._open_tx:
            self._open_tx.remove(change)
        else:
            return
        if not change.consumed and self.active == change.step:
            if change.finish:
                self.finished.append(FinishedStep(change.step, change.value))
                self.in_progress = None
                self._finished_by_tx = change.step
            else:
                self.in_progress = (change.step, change.value)
                self._done += 1
                self._progressed = True
        self._dirty = self.state() != change.state
        self._stored_steps = len(change.state.finished)
        self._last_write = now = time.monotonic()
        # The write extended the lease; the keeper left the row alone meanwhile (see
        # ``lease``). After a long transaction, renew at once rather than at the next tick.
        self._lease_until = max(self._lease_until, change.sent + self.lease_seconds)
        if self._lease_until - now < self.lease_seconds * 2 / 3:
            keeper.renew_soon()
        if self._interval is not None and now - self._last_progress >= self._interval:
            self._publish_progress(now)

    def tx_rolled_back(self, change: TxChange) -> None:
        """The caller's transaction rolled ``change`` back."""
        if change not in self._open_tx:
            return
        self._open_tx.remove(change)
        if change.consumed:
            # The step ended while its transaction was open and that transaction then
            # rolled back: the stored row, not this run's memory, holds the truth.
            self._diverged = True

    # -- boundaries and writes -----------------------------------------------------

    def boundary(self, kind: Boundary) -> None:
        """Stop if the run must stop; write the checkpoint if the interval has passed."""
        now = time.monotonic()
        self.check_stop(kind, now)
        if self._dirty and self._interval is not None and now - self._last_write >= self._interval:
            self._periodic_write(now)

    def check_stop(self, kind: Boundary, now: float | None = None) -> None:
        """Raise TaskInterrupted if the run must stop here, LeaseLostError if it lost its lease.

        A direct call runs under the lease of the run it is called inside: that run's
        lost lease, reset or lease deadline stops it too.
        """
        if now is None:
            now = time.monotonic()
        self._check_lease(now)
        if not self._stoppable:
            return
        if notice.shutdown_requested():
            raise TaskInterrupted("shutdown")
        if self._deadline is not None and self._progressed and now >= self._deadline:
            raise TaskInterrupted("max_runtime")
        for hook in interrupt_hooks:
            if hook(self, kind):
                raise TaskInterrupted("requested")

    def _check_lease(self, now: float) -> None:
        if self._parent is not None:
            self._parent._check_lease(now)
        if self._lease_lost:
            raise LeaseLostError(self.task_id or "?")
        if self._reset:
            raise TaskInterrupted("reset")
        if self._stoppable and now >= self._lease_until:
            # Renewals failed for a whole lease: another run may hold the task now.
            raise TaskInterrupted("lease_expired")

    def _periodic_write(self, now: float) -> None:
        if self._open_tx or self._diverged:
            return  # the caller's open transaction holds the row: write after it ends
        try:
            if self.write("running"):
                self._publish_progress(now)
        except CheckpointStoreError as exc:
            if not exc.transient:
                raise  # a value the database refuses: no later write could store it
            # Retry at a later boundary, at most once a second while the store is down.
            logger.warning("checkpoint write failed; the task goes on: %s", exc)
            interval = self._interval or 0.0
            self._last_write = now - interval + min(interval or 1.0, 1.0)

    def publish_saved(self) -> None:
        """Publish the position just written (an interrupt's), so the result backend
        shows what the next run resumes from rather than an older position."""
        if not self._diverged:  # otherwise only the status was written
            self._publish_progress(time.monotonic())

    def _publish_progress(self, now: float) -> None:
        if not self._track_progress or self.task_id is None:
            return
        self._last_progress = now
        name, cursor = self.in_progress if self.in_progress is not None else (None, None)
        finished = [step.name for step in self.finished]
        info = progress_info(name, cursor, finished, self._done, self._total)
        publish(self.task, self.task_id, info)

    def state(self) -> State:
        """The progress to write."""
        name, cursor = self.in_progress if self.in_progress is not None else (None, None)
        if name is None:
            return State(tuple(self.finished), None, None, self.interruptions)
        return State(
            tuple(self.finished), name, cursor, self.interruptions, self._done, self._total
        )

    def count_interruption(self) -> int:
        """Count one more interruption of the task; returns the new count."""
        self.interruptions += 1
        self._dirty = True
        return self.interruptions

    def write(
        self, status: Status, *, release: bool = False, attempts: int = 1, progress: bool = True
    ) -> bool:
        """Write the checkpoint fenced on the lease; False when there is nothing to write to.

        Without ``progress`` only the status and the interruption count are written.

        Raises LeaseLostError when another run holds the lease, TaskInterrupted("reset")
        when an operator reset the task, CheckpointStoreError when the store failed
        ``attempts`` times.
        """
        if self.store is None or self.task_id is None or not self._claimed or self._released:
            return False
        # After a rolled-back transaction the run went past, or a COMMIT whose outcome
        # is unknown, the stored row is the truth: only the status and the count change.
        if self._committing:
            self._settle()
        progress = progress and (status == "completed" or not self._diverged)
        sent = time.monotonic()
        for attempt in range(attempts):
            try:
                saved = self._save(status, release, progress)
            except CheckpointStoreError:
                if attempt + 1 >= attempts:
                    raise
                time.sleep(_RETRY_DELAYS[min(attempt, len(_RETRY_DELAYS) - 1)])
                continue
            if not saved:
                self._raise_lost()
            if progress and not release:
                self._lease_until = sent + self.lease_seconds
            self._dirty = False
            self._released = release
            self._last_write = time.monotonic()
            return True
        return False  # pragma: no cover - the loop returns or raises

    def _save(self, status: Status, release: bool, progress: bool) -> bool:
        store, task_id = self.store, self.task_id
        if store is None or task_id is None:
            return True
        if not progress:
            if not release:
                return True  # nothing of the progress can be written yet
            return store.mark(task_id, self.owner, status, self.interruptions)
        lease = None if release else self.lease_seconds
        state = self.state()
        if self._steps_unsure:
            self._stored_steps = self._steps_in_row(store, task_id)
        # Until the answer is recorded, whether the row holds the new steps is unknown:
        # an exception (a time limit, a lost connection) may land after the commit.
        self._steps_unsure = True
        saved = store.save(
            task_id,
            self.owner,
            state,
            stored_steps=self._stored_steps,
            status=status,
            lease_seconds=lease,
        )
        if saved:
            self._stored_steps = len(state.finished)
        self._steps_unsure = False
        return saved

    def _steps_in_row(self, store: CheckpointStore, task_id: str) -> int:
        """How many finished steps the stored row holds (after a write of unknown outcome)."""
        checkpoint = store.get(task_id)
        if checkpoint is None:
            return 0
        return min(len(checkpoint.finished_steps), len(self.finished))

    def _raise_lost(self) -> NoReturn:
        """A fenced write matched nothing: find out why and stop accordingly."""
        if self.store is None or self.task_id is None:
            raise LeaseLostError(self.task_id or "?")
        if self._reset or not self.store.exists(self.task_id):
            self._reset = True
            self._released = True
            raise TaskInterrupted("reset")
        self._lease_lost = True
        raise LeaseLostError(self.task_id)

    def forget(self) -> None:
        """Delete the task's checkpoint while holding its lease (the task is replaced)."""
        if self.store is None or self.task_id is None or not self._claimed or self._released:
            return
        self.store.forget(self.task_id, self.owner)
        self._released = True

    @property
    def lease(self) -> tuple[CheckpointStore, str, str, float] | None:
        """What the lease keeper renews: store, task id, owner token, lease length.

        None while the caller's transaction holds the row: a renewal would wait on that
        lock (and hold up the renewals of every other run of the process), and the
        transaction's own write extends the lease when it commits.
        """
        if self.store is None or self.task_id is None or self._lease_lost or self._released:
            return None
        if self._open_tx:
            return None
        return self.store, self.task_id, self.owner, self.lease_seconds

    def lease_renewed(self, sent: float) -> None:
        """The lease keeper extended the lease with a statement sent at ``sent``."""
        self._lease_until = sent + self.lease_seconds

    def lease_missing(self) -> None:
        """The lease keeper did not find the lease: another run took it, or a reset."""
        if self.store is None or self.task_id is None or self._released:
            return
        if self.store.exists(self.task_id):
            self._lease_lost = True
        else:
            self._reset = True

    def close(self) -> None:
        """Stop renewing the lease."""
        keeper.remove(self)

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
