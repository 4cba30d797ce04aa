"""The lease keeper: one thread per process renewing the leases of the runs in it.

Every tick, the leases of all runs of a store are renewed in one statement, whatever
their number. The thread also purges old checkpoints (at most every ten minutes per
store), so purging never runs inside a task's run. In a worker's process the thread stays
between runs and keeps ticking while idle, so that a new run never has to wake it.
Elsewhere (eager runs) it outlives the last run by ``IDLE_SECONDS``, so that runs in quick
succession share one thread instead of starting one each, and then ends; ``stop`` ends it
at once (a test suite that checks for leftover threads calls it, and the pytest plugin
does after each test).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Protocol

from celery_resumable.errors import CheckpointStoreError

if TYPE_CHECKING:
    from celery_resumable.store.store import CheckpointStore

__all__ = ["IDLE_SECONDS", "LeaseHolder", "LeaseKeeper", "keeper"]

logger = logging.getLogger("celery_resumable.worker")

# Outside a worker, how long the thread waits for a new run after the last one ended.
IDLE_SECONDS = 2.0


# What a run's lease renewal needs: the store, task id, owner token and lease length.
Lease = tuple["CheckpointStore", str, str, float]


class LeaseHolder(Protocol):
    """A run whose lease the keeper renews."""

    @property
    def lease(self) -> Lease | None:
        """The store, task id, owner token and lease length; None when there is nothing to renew."""

    def lease_renewed(self, sent: float) -> None:
        """The lease was extended by a statement sent at monotonic time ``sent``."""

    def lease_missing(self) -> None:
        """The renewal did not find the run's lease: another run took it, or a reset."""


class LeaseKeeper:
    """Renews the leases of the runs of this process, a third of the shortest lease apart."""

    def __init__(self) -> None:
        self._runs: set[LeaseHolder] = set()
        self._stores: dict[int, CheckpointStore] = {}
        self._period: float | None = None  # the renewal period the thread sleeps by
        # In a worker's process the thread stays between runs (starting one per run would
        # cost every short task); elsewhere (eager runs) it ends once idle for IDLE_SECONDS.
        self.persistent = False
        self._ending = False  # end the thread as soon as it is idle (stop)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._soon = False  # renew at once instead of at the next tick
        self._fork_hook = False

    def renew_soon(self) -> None:
        """Renew the leases now, not at the next tick (a lease that has little time left)."""
        self._soon = True
        self._wake.set()

    def add(self, run: LeaseHolder, lease: Lease | None = None) -> None:
        """Renew ``run``'s lease until it is removed; ``lease`` is ``run.lease`` when the
        caller has it at hand."""
        if lease is None:
            lease = run.lease
        with self._lock:
            self._runs.add(run)
            self._ending = False
            # Wake the thread only when its schedule must change: this lease is shorter
            # than the others (or the first). The period is set here, not only by the
            # thread, which may see the run only after it has ended.
            wake = lease is not None and (self._period is None or lease[3] / 3 < self._period)
            if lease is not None:
                self._stores.setdefault(id(lease[0]), lease[0])
                if wake:
                    self._period = lease[3] / 3
            if self._thread is None:
                if not self._fork_hook:
                    # A forked child has none of its parent's runs nor its thread.
                    self._fork_hook = True
                    os.register_at_fork(after_in_child=self._after_fork)
                self._thread = threading.Thread(
                    target=self._loop, name="celery-resumable-lease", daemon=True
                )
                self._thread.start()
                return
        if wake:
            self._wake.set()

    def remove(self, run: LeaseHolder) -> None:
        """Stop renewing ``run``'s lease (the thread stays for the next run a while)."""
        with self._lock:
            self._runs.discard(run)

    def stop(self) -> None:
        """End the thread now, and wait for it, unless it has runs or a worker keeps it."""
        with self._lock:
            thread = self._thread
            if thread is None or self._runs or self.persistent:
                return
            self._ending = True
        self._wake.set()
        if thread is not threading.current_thread():
            thread.join(1.0)

    def _loop(self) -> None:
        self._purge_due()
        next_tick: float | None = None
        idle_since: float | None = None
        while True:
            now = time.monotonic()
            with self._lock:
                if self._runs or self.persistent:
                    idle_since = None
                else:
                    idle_since = now if idle_since is None else idle_since
                if idle_since is not None and (self._ending or now - idle_since >= IDLE_SECONDS):
                    # The stores of past runs are forgotten too: the next run brings its
                    # own (a store purges at most every ten minutes whoever asks).
                    self._thread = None
                    self._period = None
                    self._ending = False
                    self._stores = {}
                    return
                leases = [run.lease for run in self._runs]
                shortest = min((lease[3] for lease in leases if lease), default=None)
                # Idle, the thread keeps ticking at the last period (a tick without runs
                # sends nothing), so that the next run does not have to wake it: its
                # first renewal is at most one period away. Set under the lock: add()
                # reads it to decide whether to wake the thread.
                if shortest is not None:
                    self._period = shortest / 3
                period = self._period
            timeout = None
            if period is not None:
                if next_tick is None or next_tick > now + period:
                    next_tick = now + period
                timeout = max(next_tick - now, 0.0)
            if idle_since is not None:
                left = max(idle_since + IDLE_SECONDS - now, 0.0)
                timeout = left if timeout is None else min(timeout, left)
            self._wake.wait(timeout)
            self._wake.clear()
            if self._soon or (next_tick is not None and time.monotonic() >= next_tick):
                self._soon = False
                next_tick = None
                self.tick()

    def _purge_due(self) -> None:
        with self._lock:
            known = list(self._stores.values())
        for store in known:
            store.purge_due()

    def tick(self) -> None:
        """Renew every lease once, one statement per store and lease length; purge if due."""
        groups: dict[tuple[int, float], list[tuple[LeaseHolder, str, str]]] = {}
        stores: dict[int, CheckpointStore] = {}
        with self._lock:
            runs = list(self._runs)
        for run in runs:
            lease = run.lease
            if lease is None:
                continue
            store, task_id, owner, seconds = lease
            stores[id(store)] = store
            groups.setdefault((id(store), seconds), []).append((run, task_id, owner))
        for (store_key, seconds), members in groups.items():
            sent = time.monotonic()
            try:
                renewed = stores[store_key].renew(
                    [(task_id, owner) for _, task_id, owner in members], seconds
                )
            except CheckpointStoreError as exc:
                logger.warning("lease renewal failed; retrying: %s", exc)
                continue
            for run, task_id, _ in members:
                try:
                    if task_id in renewed:
                        run.lease_renewed(sent)
                    else:
                        run.lease_missing()
                except Exception:
                    logger.exception("lease renewal failed")
        self._purge_due()

    def _after_fork(self) -> None:
        self.persistent = False
        self._runs = set()
        self._stores = {}
        self._period = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None
        self._soon = False
        self._ending = False

    def stay(self, persistent: bool) -> None:
        """Keep the thread between runs (a worker runs here), or end it once idle."""
        with self._lock:
            self.persistent = persistent
            self._ending = not persistent
        if not persistent:
            self._wake.set()


keeper = LeaseKeeper()
