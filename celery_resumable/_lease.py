"""The lease keeper: one thread per process renewing the leases of the runs in it.

Every tick, the leases of all runs of a store are renewed in one statement, whatever
their number. The thread also purges old checkpoints, so purging never runs inside a
task's run.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Protocol

from .errors import CheckpointStoreError

if TYPE_CHECKING:
    from ._store import CheckpointStore

__all__ = ["LeaseHolder", "LeaseKeeper", "keeper"]

logger = logging.getLogger("celery_resumable.worker")


class LeaseHolder(Protocol):
    """A run whose lease the keeper renews."""

    @property
    def lease(self) -> tuple[CheckpointStore, str, str, float] | None:
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
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, run: LeaseHolder) -> None:
        """Renew ``run``'s lease until it is removed."""
        lease = run.lease
        with self._lock:
            self._runs.add(run)
            if lease is not None:
                self._stores.setdefault(id(lease[0]), lease[0])
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="celery-resumable-lease", daemon=True
                )
                self._thread.start()
            # Wake the thread only when its schedule must change: it slept with no run to
            # renew, or this lease is shorter than the others.
            wake = lease is not None and (self._period is None or lease[3] / 3 < self._period)
        if wake:
            self._wake.set()

    def remove(self, run: LeaseHolder) -> None:
        """Stop renewing ``run``'s lease."""
        with self._lock:
            self._runs.discard(run)

    def _loop(self) -> None:
        next_tick: float | None = None
        while True:
            with self._lock:
                leases = [run.lease for run in self._runs]
            shortest = min((lease[3] for lease in leases if lease), default=None)
            self._period = None if shortest is None else shortest / 3
            timeout = None  # with no run to renew, sleep until add() wakes the thread
            if shortest is not None:
                now = time.monotonic()
                if next_tick is None or next_tick > now + shortest / 3:
                    next_tick = now + shortest / 3
                timeout = max(next_tick - now, 0.0)
            self._wake.wait(timeout)
            self._wake.clear()
            if next_tick is not None and time.monotonic() >= next_tick:
                next_tick = None
                self.tick()

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
        with self._lock:
            known = list(self._stores.values())
        for store in known:
            store.purge_due()

    def _after_fork(self) -> None:
        self._runs = set()
        self._stores = {}
        self._period = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None


keeper = LeaseKeeper()
os.register_at_fork(after_in_child=keeper._after_fork)
