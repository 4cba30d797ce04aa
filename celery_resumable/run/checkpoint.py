"""The checkpoint of one run: its claim, its fenced writes, its transactions.

``RunCheckpoint`` owns everything a run knows about its stored row, in two explicit
states instead of flags:

- ``lease`` (``RunLease``, in the states of ``LeaseState``): unclaimed, held,
  released, lost or reset. Only a held lease writes; a write that matches nothing finds
  out whether the lease was lost or the task reset.
- ``row`` (``Row``): saved (the row holds what the run knows), changed (the run is ahead
  of the row: a write is due at the interval) or diverged (a transaction the run went
  past rolled back, or a COMMIT's outcome is unknown: the row is the truth, and only the
  status and the interruption count are written from then on). ``stored_steps`` is how
  many finished steps the row holds, or None when a write ended without its answer (the
  row is read before the next write).

Transactional writes move from open (the caller's transaction has not ended), to
committing (its COMMIT began), to settled; a failed COMMIT or a rollback undoes them.
The step order itself is the ``StepSequence``'s; this class only reads and feeds it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from celery_resumable._types import JSONValue
from celery_resumable.errors import (
    AlreadyCompleted,
    CheckpointBusyError,
    CheckpointStoreError,
    LeaseBusy,
    StoreUnavailable,
)
from celery_resumable.run.lease import LeaseState, RunLease
from celery_resumable.run.sequence import StepSequence
from celery_resumable.store.records import Claim, Found, State, Status

if TYPE_CHECKING:
    from celery_resumable.store.store import CheckpointStore

__all__ = ["Row", "RunCheckpoint", "TxChange"]

logger = logging.getLogger("celery_resumable")

_RETRY_DELAYS = (0.2, 0.5, 1.0)


class Row(enum.Enum):
    """What the stored row holds, compared with what the run knows."""

    SAVED = "saved"
    CHANGED = "changed"
    DIVERGED = "diverged"


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


class RunCheckpoint:
    """The stored side of one run; every method runs on the run's own thread."""

    __slots__ = (
        "committing",
        "interruptions",
        "interval",
        "last_write",
        "lease",
        "lease_seconds",
        "open_tx",
        "owner",
        "request",
        "row",
        "store",
        "stored_steps",
        "task_id",
        "task_name",
    )

    def __init__(
        self,
        store: CheckpointStore | None,
        task_id: str | None,
        task_name: str,
        lease_seconds: float,
        interval: float | None,
        owner: str,
    ) -> None:
        self.store = store if task_id is not None else None
        self.task_id = task_id
        self.task_name = task_name
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.interval = interval
        self.lease = RunLease(self.store, task_id, owner, lease_seconds)
        self.row = Row.SAVED
        self.stored_steps: int | None = 0
        self.interruptions = 0
        self.last_write = time.monotonic()
        self.open_tx: list[TxChange] = []
        self.committing: list[TxChange] = []
        # Makes the task's request, recorded by the writes that end a run unfinished
        # (failed, interrupted) for ``celery resumable retry``; a run that completes
        # never makes it.
        self.request: Callable[[], Mapping[str, Any]] | None = None

    # -- claim ---------------------------------------------------------------------

    def claim(self, request: Callable[[], Mapping[str, Any]] | None, eager: bool) -> Found | None:
        """Take the task's lease; the checkpoint found, or None for a run that stores nothing.

        Raises StoreUnavailable, AlreadyCompleted or LeaseBusy instead of running.
        """
        if self.store is None or self.task_id is None:
            return None
        self.request = request
        sent = time.monotonic()
        try:
            claim = self._take(self.store, self.task_id, eager)
        except CheckpointStoreError as exc:
            raise StoreUnavailable(exc) from None
        checkpoint = claim.checkpoint
        if not claim.claimed:
            if checkpoint.status == "completed":
                raise AlreadyCompleted()
            expires = checkpoint.lease_expires_at
            wait = self.lease_seconds if expires is None else _seconds_until(expires)
            raise LeaseBusy(min(max(wait, 1.0), self.lease_seconds))
        self.lease.take(sent)
        self.stored_steps = len(checkpoint.finished_steps)
        self.interruptions = checkpoint.interruptions
        self.last_write = time.monotonic()
        return checkpoint

    def _take(self, store: CheckpointStore, task_id: str, eager: bool) -> Claim:
        name = self.task_name
        claim = store.claim(task_id, name, self.owner, self.lease_seconds)
        found = claim.checkpoint
        other_task = found.task_name != name and (claim.claimed or found.status == "completed")
        if not (other_task or (eager and found.status == "completed")):
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
        return store.claim(task_id, name, self.owner, self.lease_seconds)

    def close(self) -> None:
        """Stop renewing the lease (the run has ended)."""
        self.lease.close()

    @property
    def held(self) -> bool:
        """Whether this run holds the lease now."""
        return self.lease.held

    def forget(self) -> None:
        """Delete the task's checkpoint while holding its lease (the task is replaced)."""
        if self.store is None or self.task_id is None or not self.held:
            return
        self.store.forget(self.task_id, self.owner)
        self.lease.end(LeaseState.RELEASED)

    # -- writes ----------------------------------------------------------------------

    def due(self, now: float) -> bool:
        """Whether a periodic write is due: changes to write, the interval passed, and no
        open transaction of the caller holding the row."""
        return (
            self.row is Row.CHANGED
            and self.interval is not None
            and now - self.last_write >= self.interval
            and not self.open_tx
        )

    def defer(self, now: float) -> None:
        """A periodic write failed for a passing reason: retry at most once a second."""
        interval = self.interval or 0.0
        self.last_write = now - interval + min(interval or 1.0, 1.0)

    def write(
        self,
        sequence: StepSequence,
        status: Status,
        *,
        release: bool = False,
        attempts: int = 1,
        progress: bool = True,
    ) -> bool:
        """Write the checkpoint fenced on the lease; False when there is nothing to write to.

        Without ``progress`` (or with a diverged row, unless completing) only the status
        and the interruption count are written.

        Raises LeaseLostError when another run holds the lease, TaskInterrupted("reset")
        when an operator reset the task, CheckpointStoreError when the store failed
        ``attempts`` times.
        """
        if self.store is None or self.task_id is None or not self.held:
            return False
        progress = progress and (status == "completed" or self.row is not Row.DIVERGED)
        sent = time.monotonic()
        for attempt in range(attempts):
            try:
                saved = self._save(self.store, self.task_id, sequence, status, release, progress)
            except CheckpointStoreError:
                if attempt + 1 >= attempts:
                    raise
                time.sleep(_RETRY_DELAYS[min(attempt, len(_RETRY_DELAYS) - 1)])
                continue
            if not saved:
                self.lease.raise_lost()
            if progress and not release:
                self.lease.extend(sent + self.lease_seconds)
            if self.row is Row.CHANGED:
                self.row = Row.SAVED
            if release:
                self.lease.end(LeaseState.RELEASED)
            self.last_write = time.monotonic()
            return True
        return False  # pragma: no cover - the loop returns or raises

    def _save(
        self,
        store: CheckpointStore,
        task_id: str,
        sequence: StepSequence,
        status: Status,
        release: bool,
        progress: bool,
    ) -> bool:
        if status == "completed":
            return store.complete(task_id, self.owner, self.interruptions)
        if not progress:
            if not release:
                return True  # nothing of the progress can be written yet
            return store.mark(task_id, self.owner, status, self.interruptions, self._request())
        state = sequence.state(self.interruptions)
        stored = self.known_steps(sequence)
        # Until the answer is recorded, whether the row holds the new steps is unknown:
        # an exception (a time limit, a lost connection) may land after the commit.
        self.stored_steps = None
        saved = store.save(
            task_id,
            self.owner,
            state,
            stored_steps=stored,
            status=status,
            lease_seconds=None if release else self.lease_seconds,
            request=self._request() if release else None,
        )
        self.stored_steps = len(state.finished) if saved else stored
        return saved

    def _request(self) -> Mapping[str, Any] | None:
        return None if self.request is None else self.request()

    def known_steps(self, sequence: StepSequence) -> int:
        """How many finished steps the stored row holds; read from the row after a write
        whose outcome is unknown."""
        if self.stored_steps is None:
            found = None
            if self.store is not None and self.task_id is not None:
                found = self.store.get(self.task_id)
            held = 0 if found is None else len(found.finished_steps)
            self.stored_steps = min(held, len(sequence.finished))
        return self.stored_steps

    # -- transactional writes ------------------------------------------------------

    def tx_written(self, change: TxChange) -> None:
        """The change was written in the caller's transaction, which has not ended yet.

        Meanwhile the keeper leaves the row alone: a renewal would wait on the
        transaction's lock (and hold up every other run's renewal), and the
        transaction's own write extends the lease when it commits.
        """
        self.open_tx.append(change)
        self.lease.pause()

    def tx_committing(self, change: TxChange) -> None:
        """The caller's transaction is committing ``change``; the COMMIT may still fail."""
        if change in self.open_tx:
            self.open_tx.remove(change)
            self.committing.append(change)
            self._reopen()

    def tx_commit_failed(self, change: TxChange, *, unknown: bool) -> None:
        """The COMMIT of ``change`` failed: rolled back, or (``unknown``) the connection
        was lost during it and whether the database committed cannot be known."""
        if change not in self.committing:
            return
        self.committing.remove(change)
        if unknown:
            self.stored_steps = None
        if unknown or change.consumed:
            self.row = Row.DIVERGED

    def tx_rolled_back(self, change: TxChange) -> None:
        """The caller's transaction rolled ``change`` back."""
        if change not in self.open_tx:
            return
        self.open_tx.remove(change)
        self._reopen()
        if change.consumed:
            # The step ended while its transaction was open and that transaction then
            # rolled back: the stored row, not this run's memory, holds the truth.
            self.row = Row.DIVERGED

    def tx_committed(self, sequence: StepSequence, change: TxChange) -> bool:
        """The caller's transaction committed ``change``: the run follows it.

        Returns False when the change was already settled.
        """
        if change in self.committing:
            self.committing.remove(change)
        elif change in self.open_tx:
            self.open_tx.remove(change)
            self._reopen()
        else:
            return False
        if not change.consumed:
            sequence.committed(change.step, change.finish, change.value)
        if self.row is not Row.DIVERGED:
            same = sequence.state(self.interruptions) == change.state
            self.row = Row.SAVED if same else Row.CHANGED
        self.stored_steps = len(change.state.finished)
        self.last_write = time.monotonic()
        self.lease.extend(change.sent + self.lease_seconds)
        return True

    def consume(self, step: str, result: JSONValue) -> JSONValue:
        """Step ``step`` ends with its transactions still open: they are past, and the
        result given to ``set_step_tx`` is the step's."""
        for change in self.open_tx:
            if change.step == step:
                change.consumed = True
                if change.finish:
                    result = change.value
        return result

    def _reopen(self) -> None:
        if not self.open_tx:
            self.lease.resume()


def _seconds_until(moment: dt.datetime) -> float:
    return float((moment - dt.datetime.now(dt.UTC)).total_seconds())
