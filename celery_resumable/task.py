"""ResumableTask: the Celery base class that runs a task body as a resumable run."""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import Any, NoReturn

from celery import Task
from celery.exceptions import Ignore, Reject, Retry

from celery_resumable import signals
from celery_resumable.config import ResumableConfig, config_for
from celery_resumable.delivery import (
    DEFERRED_SINCE,
    DEFERRED_TIMES,
    request_record,
    resent_headers,
)
from celery_resumable.errors import (
    AlreadyCompleted,
    CheckpointStoreError,
    LeaseBusy,
    LeaseLostError,
    StepMismatchError,
    StoreUnavailable,
    TaskInterrupted,
    TooManyInterruptionsError,
)
from celery_resumable.run import context as run_context
from celery_resumable.run.context import Run
from celery_resumable.store.records import Status
from celery_resumable.store.store import store_for
from celery_resumable.worker import notice
from celery_resumable.worker.install import install

__all__ = ["ResumableTask"]

logger = logging.getLogger("celery_resumable")

_MAX_BACKOFF = 60.0


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

    @classmethod
    def on_bound(cls, app: Any) -> None:
        """Give the app's workers the resumable bootsteps (nothing runs until one starts)."""
        super().on_bound(app)
        install(app)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Wrap the task body (``run``) of every task class in a resumable run.

        The body is wrapped rather than ``__call__`` overridden, so Celery's tracer calls
        it the way it calls any task's body (one request pushed, its fast path kept).
        """
        super().__init_subclass__(**kwargs)
        body = cls.__dict__.get("run")
        if body is None or getattr(body, "_resumable_body", None) is not None:
            return
        bound = not isinstance(body, staticmethod)
        function = body if bound else body.__func__

        @functools.wraps(function)
        def run(self: ResumableTask, *args: Any, **kwargs: Any) -> Any:
            call = functools.partial(function, self) if bound else function
            return self._run_resumable(call, args, kwargs)

        run._resumable_body = function  # type: ignore[attr-defined]
        cls.run = run

    def _run_resumable(self, body: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        request = self.request
        config = self.resumable_config
        outer = run_context.running()
        if request.called_directly or (outer is not None and outer.holds(request.id)):
            # A direct call, or a task calling itself directly (its request copies the
            # caller's id): it runs inline, storing nothing of its own.
            return self._call_directly(config, body, args, kwargs)
        notice.task_started()
        try:
            return self._run_delivery(request, config, body, args, kwargs)
        finally:
            notice.task_ended()

    def _run_delivery(
        self,
        request: Any,
        config: ResumableConfig,
        body: Callable[..., Any],
        args: Any,
        kwargs: Any,
    ) -> Any:
        task_id = request.id
        if not request.is_eager and notice.worker_stopping():
            # A delivery that reaches a stopping worker goes back untouched and uncounted.
            logger.info("task %s[%s] received while stopping; re-queued", self.name, task_id)
            self._requeue(None)
        run = Run(self, task_id, config, store_for(config), eager=bool(request.is_eager))
        token = run_context.enter(run)
        try:
            # The request is recorded only if the run ends unfinished: made then.
            run.claim(functools.partial(request_record, request))
            result = body(*args, **kwargs)
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
            self._on_store_unavailable(unavailable.error)
        except LeaseLostError as lost:
            logger.warning("%s", lost)
            raise Ignore() from None
        except Retry:
            # Saved before the retry was published; a retry(throw=False) kept the lease
            # for the body going on, and the body ended by raising that retry.
            self._save_quietly(run, "failed")
            raise
        except StepMismatchError:
            # The code changed under the checkpoint: keep its progress for the operator.
            self._save_quietly(run, "failed", progress=False)
            raise
        except BaseException:
            self._save_quietly(run, "failed")
            raise
        finally:
            run.close()
            run_context.leave(token)
        self._on_success(run)
        return result

    def _call_directly(
        self, config: ResumableConfig, body: Callable[..., Any], args: Any, kwargs: Any
    ) -> Any:
        """Run the body as a plain function call: nothing is stored.

        Inside another resumable run, the run-stopping exceptions reach that run, which
        saves and re-queues; outside one, a direct call never stops early.
        """
        outer = run_context.running()
        run = Run(self, None, config, None, stoppable=outer is not None, parent=outer)
        token = run_context.enter(run)
        try:
            return body(*args, **kwargs)
        finally:
            run_context.leave(token)

    def retry(
        self,
        args: Any = None,
        kwargs: Any = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: Any = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Any:
        """Celery's ``retry``, saving the checkpoint first so the retry resumes from it.

        With ``throw=False`` the body goes on after the retry is sent: the run then saves
        its progress but keeps its lease, so the retry waits until this run ends (and is
        skipped if it completes). A StepMismatchError or LeaseLostError is raised as it
        is, not retried.
        """
        if isinstance(exc, StepMismatchError | LeaseLostError):
            raise exc
        run = run_context.running()
        if run is not None and run.task is self:
            if throw:
                self._save_quietly(run, "failed")
            else:
                self._save_kept(run)
        return super().retry(args, kwargs, exc, throw, eta, countdown, max_retries, **options)

    def _save_kept(self, run: Run) -> None:
        try:
            run.write("running", attempts=2)
        except CheckpointStoreError as exc:
            logger.error("could not save the checkpoint: %s", exc)

    def on_replace(self, sig: Any) -> Any:
        """Celery's replacement hook: the replacement starts fresh under this task id.

        The checkpoint of the replaced run is deleted before the replacement is sent.
        """
        run = run_context.running()
        if run is not None and run.task is self:
            run.forget()
        return super().on_replace(sig)

    # -- outcomes ------------------------------------------------------------------

    def _on_success(self, run: Run) -> None:
        try:
            _write_final(run, "completed", attempts=3)
        except TaskInterrupted:
            logger.warning(
                "task %s[%s] finished while its checkpoint was reset; its result stands",
                self.name,
                run.task_id,
            )
        except LeaseLostError as lost:
            logger.warning("%s", lost)
        except CheckpointStoreError as exc:
            # The work is done; a late duplicate would resume from the last write.
            logger.error("could not mark the checkpoint completed: %s", exc)

    def _on_interrupt(self, run: Run, stop: TaskInterrupted) -> NoReturn:
        saved = False
        if stop.reason != "reset":  # a reset task has no row left: it starts over
            limit = self.resumable_config.max_interruptions
            count = run.count_interruption()
            if count > limit:
                error = TooManyInterruptionsError(run.task_id or "?", count, limit)
                self._save_quietly(run, "failed")
                raise error from None
            try:
                saved = run.write("interrupted", release=True, attempts=3)
                if saved:
                    run.publish_saved()
            except LeaseLostError as lost:
                logger.warning("%s", lost)
                raise Ignore() from None
            except TaskInterrupted:
                pass  # reset while stopping: the next run starts over
            except CheckpointStoreError as exc:
                if not exc.transient:
                    # Its progress can never be stored (a value the database refuses):
                    # running the task again would redo the same work and fail the same.
                    self._save_quietly(run, "failed", progress=False)
                    raise exc from None
                logger.error(
                    "interrupted run could not save; it resumes from its last write: %s", exc
                )
        step = run.in_progress[0] if run.in_progress else None
        logger.info(
            "task %s[%s] interrupted (%s) in step %r; re-queued",
            self.name,
            run.task_id,
            stop.reason,
            step,
        )
        if signals.task_interrupted.receivers:
            signals.task_interrupted.send(
                sender=self, task_id=run.task_id, reason=stop.reason, step=step, saved=saved
            )
        if self.request.is_eager:
            # No broker to go back to: the caller runs the task again to resume it.
            raise Ignore()
        self._requeue(None)

    def _on_store_unavailable(self, error: CheckpointStoreError) -> NoReturn:
        """Fail at once on a permanent store fault; defer with backoff while it is unreachable."""
        request = self.request
        if not error.transient or request.is_eager:
            logger.error("task %s[%s] failed: %s", self.name, request.id, error)
            raise error from None
        now = time.time()
        since = _number(getattr(request, DEFERRED_SINCE, None), now)
        times = int(_number(getattr(request, DEFERRED_TIMES, None), 0))
        remaining = self.resumable_config.store_wait - (now - since)
        if remaining <= 0:
            logger.error(
                "task %s[%s] failed: the checkpoint store was unreachable for %.0fs: %s",
                self.name,
                request.id,
                now - since,
                error,
            )
            raise error from None
        delay = min(2.0**times, _MAX_BACKOFF, remaining) * random.uniform(0.8, 1.0)
        logger.error("task %s[%s] deferred %.1fs: %s", self.name, request.id, delay, error.message)
        if not (self.ignore_result or request.ignore_result):
            # As Celery's own retry does: the result backend shows RETRY with the reason,
            # so the task does not look PENDING (never received) while it waits.
            waiting = CheckpointStoreError(
                f"{error.message}; waiting for the checkpoint store: next try in "
                f"{delay:.0f} s, failing after {remaining:.0f} s more (resumable_store_wait)",
                request.id,
                True,
            )
            try:
                self.backend.mark_as_retry(request.id, waiting, request=request)
            except Exception as exc:  # noqa: BLE001 - the state is a courtesy; the deferral matters
                logger.warning("could not mark task %s as waiting: %s", request.id, exc)
        self._requeue(delay, {DEFERRED_SINCE: since, DEFERRED_TIMES: times + 1})

    def _requeue(self, countdown: float | None, deferral: dict[str, Any] | None = None) -> NoReturn:
        """Publish this request again under the same id and retry count, then end this run.

        Everything of the request is kept except ``expires``: a started task does not
        expire because it was interrupted.
        """
        request = self.request
        headers = resent_headers(request, deferral)
        signature = self.signature_from_request(
            request, countdown=countdown, retries=request.retries, expires=None
        )
        signature.options["headers"] = headers
        try:
            signature.apply_async()
        except Exception as exc:  # noqa: BLE001 - the broker's own errors vary by transport
            logger.error("could not re-queue task %s[%s]: %s", self.name, request.id, exc)
            raise Reject(exc, requeue=True) from None
        raise Ignore()

    def _save_quietly(self, run: Run, status: Status, *, progress: bool = True) -> None:
        try:
            _write_final(run, status, attempts=2, progress=progress)
        except (CheckpointStoreError, LeaseLostError, TaskInterrupted) as exc:
            logger.error("could not save the checkpoint: %s", exc)


def _write_final(run: Run, status: Status, *, attempts: int, progress: bool = True) -> None:
    """Write the run's last status, releasing its lease.

    A progress the database refuses for good (a value it will not take) is left out and
    the status written alone; the row keeps its last good progress.
    """
    try:
        run.write(status, release=True, attempts=attempts, progress=progress)
    except CheckpointStoreError as exc:
        if exc.transient or not progress:
            raise
        logger.error("could not save the progress; the status is saved alone: %s", exc)
        run.write(status, release=True, attempts=attempts, progress=False)


def _number(value: Any, default: float) -> float:
    return (
        float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default
    )
