"""Celery unit tests that pass with Celery's Task and are expected to fail with ResumableTask.

Each entry is a test id of Celery's own suite (relative to its source tree) and the
reason. Every reason is a documented difference (docs/concepts.md, "What changes for a
task that uses no steps"); an entry that no longer differs is reported as stale by
``run_celery_suite.py`` and should be removed. Keep this list short: a new failure is a
compatibility bug until shown otherwise.
"""

from __future__ import annotations

__all__ = ["EXPECTED_DIFFERENCES"]

# ResumableTask sets acks_late = True, so a message is acknowledged after the task
# returns, not when the worker accepts it. These tests assume Celery's default of early
# acknowledgement. (Verified: with acks_late and reject_on_worker_lost reset to Celery's
# defaults, every test of worker/test_request.py passes.)
ACKS_LATE = (
    "acks_late = True (documented default): the message is acknowledged after the task, "
    "not when the worker accepts it"
)

# ResumableTask sets reject_on_worker_lost = True (it takes effect with acks_late), so a
# task whose worker process died (WorkerLostError, or the task itself raising SystemExit
# or KeyboardInterrupt) is rejected and requeued to resume from its checkpoint, instead
# of being marked FAILURE in the result backend. These tests assert the FAILURE.
# (Verified: with only acks_late reset, the four exit_from_task_itself tests, which set
# acks_late themselves, still fail; with only reject_on_worker_lost reset, just the two
# ACKS_LATE tests fail.)
WORKER_LOST = (
    "reject_on_worker_lost = True (documented default): a task whose worker was lost is "
    "requeued, not stored as FAILURE"
)

# A run claims its task id's checkpoint before the body runs and marks it completed
# when the body returns, so that a late duplicate delivery of a finished task is skipped,
# steps or not (DESIGN: "One runner per task id"; docs/concepts.md). These tests deliver
# the same task id twice outside eager mode and assert that the body runs twice.
DUPLICATE_SKIPPED = (
    "a delivery of a task id that already completed is skipped (documented: one runner "
    "per task id, late duplicates are not run again)"
)

_REQUEST = "t/unit/worker/test_request.py::test_Request::"
_TRACE = "t/unit/tasks/test_trace.py::test_trace::"

EXPECTED_DIFFERENCES: dict[str, str] = {
    f"{_REQUEST}test_on_accepted_acks_early": ACKS_LATE,
    f"{_REQUEST}test_on_success_acks_early": ACKS_LATE,
    f"{_REQUEST}test_on_failure_WorkerLostError": WORKER_LOST,
    f"{_REQUEST}test_on_failure_WorkerLostError_skips_lookup_for_rpc_backend": WORKER_LOST,
    f"{_REQUEST}test_on_failure_WorkerLostError_skips_lookup_when_ignore_result": WORKER_LOST,
    f"{_REQUEST}test_on_failure_WorkerLostError_backend_unavailable": WORKER_LOST,
    f"{_REQUEST}test_on_failure__WorkerLostError": WORKER_LOST,
    f"{_REQUEST}test_on_failure_exit_from_task_itself_is_worker_lost[exc0-exitcode 1]": (
        WORKER_LOST
    ),
    f"{_REQUEST}test_on_failure_exit_from_task_itself_is_worker_lost[exc1-exitcode 0]": (
        WORKER_LOST
    ),
    f"{_REQUEST}test_on_failure_exit_from_task_itself_is_worker_lost[exc2-exitcode 1]": (
        WORKER_LOST
    ),
    f"{_REQUEST}test_on_failure_exit_from_task_itself_is_worker_lost[exc3-KeyboardInterrupt]": (
        WORKER_LOST
    ),
    f"{_REQUEST}test_on_hard_timeout_clears_synthetic_traceback": DUPLICATE_SKIPPED,
    f"{_TRACE}test_deduplicate_successful_tasks__no_deduplication": DUPLICATE_SKIPPED,
    f"{_TRACE}test_deduplicate_successful_tasks__result_not_found": DUPLICATE_SKIPPED,
}
