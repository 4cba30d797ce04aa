"""What a delivery carries, and what goes with it when it is sent again.

A run that is interrupted or deferred publishes its request again under the same id
(``ResumableTask._requeue``); a failed run is sent again by ``celery resumable retry``
from the request recorded when a run ended unfinished (``request_record``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["DEFERRED_SINCE", "DEFERRED_TIMES", "headers_of", "request_record", "resent_headers"]

# Message headers of a task deferred because its store could not be reached: since when
# (wall clock, seconds) and how many times, to bound the wait and back off.
DEFERRED_SINCE = "resumable_deferred_since"
DEFERRED_TIMES = "resumable_deferred_times"


def resent_headers(request: Any, deferral: Mapping[str, Any] | None) -> dict[str, Any]:
    """The headers of ``request`` sent again, with the deferral counters of ``deferral``."""
    headers = {
        name: value
        for name, value in headers_of(request).items()
        if name not in (DEFERRED_SINCE, DEFERRED_TIMES)
    }
    headers.update(deferral or {})
    return headers


def headers_of(request: Any) -> Mapping[str, Any]:
    """The request's custom headers (``apply(headers=...)`` takes whatever it is given)."""
    headers = request.headers
    return headers if isinstance(headers, Mapping) else {}


# Headers a request does not carry over when it is sent again: RabbitMQ's dead-letter
# history (as Celery's own retry drops it) and this package's deferral counters.
_HEADERS_NOT_RESENT = frozenset(
    {
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        DEFERRED_SINCE,
        DEFERRED_TIMES,
    }
)


def request_record(request: Any) -> dict[str, Any]:
    """What ``celery resumable retry`` needs to send the task again as Celery sent it.

    The options ``Task.signature_from_request`` sends a retry with, under their
    ``send_task`` names, except ``expires`` (a task sent again does not expire because
    it failed once) and ``retries`` (its count starts over). Unset fields are dropped
    when the record is stored.
    """
    delivery = request.delivery_info or {}
    limits = request.timelimit
    hard, soft = limits if isinstance(limits, list | tuple) and len(limits) == 2 else (None, None)
    headers = {
        name: value
        for name, value in headers_of(request).items()
        if name not in _HEADERS_NOT_RESENT
    }
    return {
        "args": list(request.args or ()),
        "kwargs": dict(request.kwargs or {}),
        "exchange": delivery.get("exchange"),
        "routing_key": delivery.get("routing_key"),
        "priority": delivery.get("priority"),
        "chain": request.chain,
        "link": request.callbacks,
        "link_error": request.errbacks,
        "chord": request.chord,
        "group_id": request.group,
        "group_index": request.group_index,
        # Celery makes a task its own root when none is given.
        "root_id": None if request.root_id == request.id else request.root_id,
        "parent_id": request.parent_id,
        "shadow": request.shadow,
        "time_limit": hard,
        "soft_time_limit": soft,
        "headers": headers,
        "reply_to": request.reply_to,
        "origin": request.origin,
        "ignore_result": True if request.ignore_result is True else None,
        "replaced_task_nesting": request.replaced_task_nesting or None,
    }
