"""ResumableTask: the Celery base class that runs a task body as a resumable run."""

from __future__ import annotations

import logging
from typing import Any, NoReturn

from celery import Celery, Task
from celery.exceptions import Ignore, Reject, Retry

from . import _context, _worker, signals
from ._config import ResumableConfig, config_for
from ._context import AlreadyCompleted, LeaseBusy, Run, StoreUnavailable
from ._records import Status
from ._store import CheckpointStore
from .errors import (
    CheckpointStoreError,
    LeaseLostError,
    StepMismatchError,
    TaskInterrupted,
    TooManyInterruptionsError,
)

__all__ = ["ResumableTask", "checkpoint_store", "store_for"]

logger = logging.getLogger("celery_resumable")

_STORE_RETRY_SECONDS = 5.0
_STORES: dict[tuple[str, str, bool, float], CheckpointStore] = {}


def store_for(config: ResumableConfig) -> CheckpointStore:
    """Return the store for ``config``, one per URL and table in a process."""
    key = (config.store_url, config.table_name, config.create_tables, config.keep_completed)
    store = _STORES.get(key)
    if store is None:
        store = CheckpointStore(
            config.store_url,
            config.table_name,
            create_tables=config.create_tables,
            keep_completed=config.keep_completed,
        )
        _STORES[key] = store
    return store


class ResumableTask(Task):  # type: ignore[misc]
    """Celery task base class whose body can use steps and cursors.

    Declare with ``@app.task(base=ResumableTask, bind=True)``. Messages are acknowledged
    late and rejected when the worker is lost, so a hard-killed run is redelivered.
    Each ``resumable_*`` setting can be given as a task option to override ``app.conf``.
    """

    acks_late = True
    reject_on_worker_lost = True

    @property
    def resumable_config(self) -> ResumableConfig:
        """The settings in force for this task."""
        return config_for(self.app, self)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        config = self.resumable_config
        task_id = None if request.called_directly else request.id
        if task_id is not None and not request.is_eager and _worker.worker_stopping():
            # A delivery that reaches a stopping worker goes back untouched and uncounted.
            logger.info("task %s[%s] received while stopping; re-queued", self.name, task_id)
            self._requeue(None)
        run = Run(self, task_id, config, store_for(config) if task_id else None)
        token = _context.enter(run)
        try:
            result = super().__call__(*args, **kwargs)
        except TaskInterrupted as stop:
            self._on_interrupt(run, stop)
        except AlreadyCompleted:
            logger.info("task %s[%s] already completed; delivery skipped", self.name, task_id)
            raise Ignore() from None
        except LeaseBusy as busy:
            logger.info(
                "task %s[%s] is running elsewhere; deferred %.1fs", self.name, task_id, busy.wait
            )
            if request.is_eager:
                raise Ignore() from None
            self._requeue(busy.wait)
        except StoreUnavailable as unavailable:
            logger.error("task %s[%s] deferred: %s", self.name, task_id, unavailable.error)
            if request.is_eager or task_id is None:
                raise unavailable.error from None
            self._requeue(_STORE_RETRY_SECONDS)
        except LeaseLostError as lost:
            logger.warning("%s", lost)
            raise Ignore() from None
        except (Retry, StepMismatchError):
            raise  # a retry saved before publishing; a mismatch keeps the record as it is
        except BaseException:
            self._save_quietly(run, "failed")
            raise
        finally:
            run.close()
            _context.leave(token)
        self._on_success(run)
        return result

    def retry(self, *args: Any, exc: BaseException | None = None, **kwargs: Any) -> Any:
        """Celery's ``retry``, saving the checkpoint first so the retry resumes from it.

        A StepMismatchError or LeaseLostError is raised as it is, not retried.
        """
        if isinstance(exc, StepMismatchError | LeaseLostError):
            raise exc
        run = _context.running()
        if run is not None and run.task is self:
            self._save_quietly(run, "failed")
        return super().retry(*args, exc=exc, **kwargs)

    # -- outcomes ------------------------------------------------------------------

    def _on_success(self, run: Run) -> None:
        try:
            run.write("completed", release=True, attempts=3)
        except LeaseLostError as lost:
            logger.warning("%s", lost)
        except CheckpointStoreError as exc:
            # The work is done; a late duplicate would resume from the last write.
            logger.error("could not mark the checkpoint completed: %s", exc)

    def _on_interrupt(self, run: Run, stop: TaskInterrupted) -> NoReturn:
        run.interruptions += 1
        limit = self.resumable_config.max_interruptions
        if run.interruptions > limit:
            error = TooManyInterruptionsError(run.task_id or "?", run.interruptions, limit)
            self._save_quietly(run, "failed")
            raise error from None
        saved = False
        try:
            saved = run.write("interrupted", release=True, attempts=3)
        except LeaseLostError as lost:
            logger.warning("%s", lost)
            raise Ignore() from None
        except CheckpointStoreError as exc:
            logger.error("interrupted run could not save; it resumes from its last write: %s", exc)
        logger.info(
            "task %s[%s] interrupted (%s) in step %r; re-queued",
            self.name,
            run.task_id,
            stop.reason,
            run.in_progress[0] if run.in_progress else None,
        )
        if signals.task_interrupted.receivers:
            signals.task_interrupted.send(
                sender=self,
                task_id=run.task_id,
                reason=stop.reason,
                step=run.in_progress[0] if run.in_progress else None,
                saved=saved,
            )
        if self.request.is_eager or run.task_id is None:
            # No broker to go back to: the caller runs the task again to resume it.
            raise Ignore()
        self._requeue(None)

    def _requeue(self, countdown: float | None) -> NoReturn:
        """Publish this request again under the same id and retry count, then end this run."""
        request = self.request
        signature = self.signature_from_request(
            request, countdown=countdown, retries=request.retries
        )
        try:
            signature.apply_async()
        except Exception as exc:  # noqa: BLE001 - the broker's own errors vary by transport
            logger.error("could not re-queue task %s[%s]: %s", self.name, request.id, exc)
            raise Reject(exc, requeue=True) from None
        raise Ignore()

    def _save_quietly(self, run: Run, status: Status) -> None:
        try:
            run.write(status, release=True, attempts=2)
        except (CheckpointStoreError, LeaseLostError) as exc:
            logger.error("could not save the checkpoint: %s", exc)


def checkpoint_store(app: Celery) -> CheckpointStore:
    """Return the checkpoint store configured by ``app.conf`` (``resumable_store_url``).

    The store reads and manages checkpoints: ``get(task_id)``, ``list(...)``,
    ``reset(task_id)`` and ``purge(...)``.
    """
    return store_for(config_for(app))
