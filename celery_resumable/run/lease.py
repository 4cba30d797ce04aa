"""A run's lease as its process knows it, and the one door other threads use to reach it.

The lease keeper renews leases on a thread of its own. It never touches a run: it reads
what to renew from the run's ``LeaseDoor`` and posts back what it found (renewed until
when, or missing). The run's own thread reads the door at each boundary and decides
there (``RunLease.check``) whether the lease was lost or the task reset, so every change
of a run's state happens on the run's thread. The door's fields are guarded by its lock.
"""

from __future__ import annotations

import enum
import threading
import time
from typing import TYPE_CHECKING, NoReturn

from celery_resumable.errors import LeaseLostError, TaskInterrupted
from celery_resumable.worker.lease_keeper import Lease, keeper

if TYPE_CHECKING:
    from celery_resumable.store.store import CheckpointStore

__all__ = ["LeaseDoor", "LeaseState", "RunLease"]


class LeaseState(enum.Enum):
    """Where a run stands with its task's lease."""

    UNCLAIMED = "unclaimed"  # not claimed (yet), or a run that stores nothing
    HELD = "held"  # claimed: its writes are fenced on the owner token
    RELEASED = "released"  # written with the lease ended, or the checkpoint deleted
    LOST = "lost"  # another run took the lease
    RESET = "reset"  # an operator deleted the checkpoint


class LeaseDoor:
    """What the lease keeper's thread and the run's thread share (the keeper's LeaseHolder).

    The run publishes what to renew (``open``/``close``) and extends ``until`` after its
    own writes; the keeper reads ``lease`` and calls ``lease_renewed``/``lease_missing``.
    """

    def __init__(self, lease_seconds: float) -> None:
        self.lease_seconds = lease_seconds
        self._lock = threading.Lock()
        self._lease: Lease | None = None
        # Until when the lease is surely held, and whether the keeper found it missing:
        # one tuple, replaced whole under the lock, so that reading it takes none.
        self.view: tuple[float, bool] = (float("-inf"), False)

    @property
    def lease(self) -> Lease | None:
        """The store, task id, owner token and lease length to renew; None for nothing."""
        with self._lock:
            return self._lease

    def open(self, lease: Lease, until: float | None = None) -> None:
        """Renew ``lease`` from now on; it is surely held until ``until`` (monotonic),
        when given (see ``extend``)."""
        with self._lock:
            self._lease = lease
            if until is not None:
                held, missing = self.view
                if until > held:
                    self.view = (until, missing)

    def close(self) -> None:
        """Renew nothing (released, lost, or a transaction holds the row meanwhile)."""
        if self._lease is None:
            return  # only the run's own thread sets it: closed already
        with self._lock:
            self._lease = None

    def lease_renewed(self, sent: float) -> None:
        """The keeper extended the lease with a statement sent at ``sent`` (monotonic)."""
        self.extend(sent + self.lease_seconds)

    def lease_missing(self) -> None:
        """The keeper did not find the lease: another run took it, or a reset."""
        with self._lock:
            if self._lease is not None:
                self.view = (self.view[0], True)

    def extend(self, until: float) -> None:
        """The lease is surely held until ``until`` (monotonic), or longer."""
        with self._lock:
            held, missing = self.view
            if until > held:
                self.view = (until, missing)

    def read(self) -> tuple[float, bool]:
        """Until when the lease is surely held, and whether the keeper found it missing."""
        return self.view


class RunLease:
    """The lease of one run, on the run's own thread; the process's lease keeper renews
    it through the door."""

    def __init__(
        self, store: CheckpointStore | None, task_id: str | None, owner: str, seconds: float
    ) -> None:
        self.store = store
        self.task_id = task_id
        self.owner = owner
        self.seconds = seconds
        self.state = LeaseState.UNCLAIMED
        self.door = LeaseDoor(seconds)

    @property
    def held(self) -> bool:
        """Whether this run holds the lease now."""
        return self.state is LeaseState.HELD

    def take(self, sent: float) -> None:
        """The claim sent at ``sent`` (monotonic) took the lease."""
        if self.store is None or self.task_id is None:
            return
        self.state = LeaseState.HELD
        lease = (self.store, self.task_id, self.owner, self.seconds)
        self.door.open(lease, sent + self.seconds)
        keeper.add(self.door, lease)

    def close(self) -> None:
        """Stop renewing the lease (the run has ended)."""
        self.door.close()
        keeper.remove(self.door)

    def pause(self) -> None:
        """Leave the row alone while the caller's transaction holds it."""
        self.door.close()

    def resume(self) -> None:
        """Renew the lease again (the caller's transactions have ended)."""
        if self.held and self.store is not None and self.task_id is not None:
            self.door.open((self.store, self.task_id, self.owner, self.seconds))

    def extend(self, until: float) -> None:
        """The run's own write extended the lease until ``until`` (monotonic). When
        little is left of it (after a long transaction), it is renewed at once."""
        self.door.extend(until)
        left, _ = self.door.read()
        if left - time.monotonic() < self.seconds * 2 / 3:
            keeper.renew_soon()

    def check(self, now: float, stoppable: bool) -> None:
        """Raise LeaseLostError when another run took the lease, TaskInterrupted("reset")
        when an operator reset the task, and (``stoppable``) TaskInterrupted("lease_expired")
        when renewals failed for a whole lease."""
        state = self.state
        if state is LeaseState.HELD:
            until, missing = self.door.view
            if missing:
                self._gone()
                state = self.state
            elif now < until or not stoppable:
                return  # held, the usual case
            else:
                # Renewals failed for a whole lease: another run may hold the task now.
                raise TaskInterrupted("lease_expired")
        if state is LeaseState.LOST:
            raise LeaseLostError(self.task_id or "?")
        if state is LeaseState.RESET:
            raise TaskInterrupted("reset")

    def raise_lost(self) -> NoReturn:
        """A fenced write matched nothing: find out why and stop accordingly."""
        if self.store is None or self.task_id is None:
            raise LeaseLostError(self.task_id or "?")
        if self.state is LeaseState.RESET or not self.store.exists(self.task_id):
            self.end(LeaseState.RESET)
            raise TaskInterrupted("reset")
        self.end(LeaseState.LOST)
        raise LeaseLostError(self.task_id)

    def end(self, state: LeaseState) -> None:
        """The lease is released, lost or reset: nothing of it is renewed any more."""
        self.state = state
        self.door.close()

    def _gone(self) -> None:
        """The renewal did not find the lease: lost, or reset by an operator."""
        if self.store is None or self.task_id is None:
            return
        self.end(LeaseState.LOST if self.store.exists(self.task_id) else LeaseState.RESET)
