"""The records of the checkpoint table, as the rest of the package sees them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Mapping
from typing import Any, Literal

from kombu.utils import json as kombu_json

from celery_resumable._types import JSONValue

__all__ = [
    "CLAIM_COLUMNS",
    "RESEND_OPTIONS",
    "STATUSES",
    "Checkpoint",
    "Claim",
    "FinishedStep",
    "Found",
    "State",
    "Status",
    "checkpoint_of",
    "request_json",
    "request_of",
]

logger = logging.getLogger("celery_resumable")

_MAX_REQUEST_BYTES = 1_000_000
_ENCODE_ERRORS = (TypeError, ValueError, RecursionError)

RESEND_OPTIONS: tuple[str, ...] = (
    "exchange",
    "routing_key",
    "priority",
    "chain",
    "link",
    "link_error",
    "chord",
    "group_id",
    "group_index",
    "root_id",
    "parent_id",
    "shadow",
    "time_limit",
    "soft_time_limit",
    "headers",
    "reply_to",
    "origin",
    "ignore_result",
    "replaced_task_nesting",
)
"""The fields of a recorded request that are ``send_task`` options, by their option names.

Besides these a request holds ``args`` and ``kwargs``. Only these names are ever passed
on, whatever else a row holds.
"""

Status = Literal["running", "interrupted", "failed", "completed"]
STATUSES: tuple[Status, ...] = ("running", "interrupted", "failed", "completed")


@dataclasses.dataclass(frozen=True)
class FinishedStep:
    """A step that finished, with its result as stored JSON."""

    name: str
    result: JSONValue


@dataclasses.dataclass(frozen=True)
class State:
    """What a run writes: the finished steps and the step in progress with its cursor."""

    finished: tuple[FinishedStep, ...]
    current_step: str | None
    cursor: JSONValue
    interruptions: int
    done: int | None = None
    total: int | None = None


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One row of the checkpoint table."""

    task_id: str
    task_name: str
    status: Status
    finished_steps: tuple[FinishedStep, ...]
    current_step: str | None
    cursor: JSONValue
    interruptions: int
    owner: str | None
    lease_expires_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    request: str | None = None
    """The task's request (kombu JSON), recorded by a run that ended failed or
    interrupted, if storable: its arguments and the RESEND_OPTIONS that were set. None
    once the task completed."""
    done: int | None = None
    """Items the step in progress has done, as of the last write."""
    total: int | None = None
    """Items the step in progress has in all, when known."""

    @property
    def state(self) -> State:
        """The progress part of the row."""
        return State(
            self.finished_steps,
            self.current_step,
            self.cursor,
            self.interruptions,
            self.done,
            self.total,
        )


# The columns a claim reads back: what a run needs to start, resume or stand aside.
CLAIM_COLUMNS = (
    "task_name",
    "status",
    "finished_steps",
    "current_step",
    "cursor",
    "interruptions",
    "owner",
    "lease_expires_at",
)


class Found:
    """What a claim reads back of its task's row (``CLAIM_COLUMNS``)."""

    __slots__ = (
        "_expires",
        "current_step",
        "cursor",
        "finished_steps",
        "interruptions",
        "owner",
        "status",
        "task_name",
    )

    def __init__(self, row: Mapping[str, Any]) -> None:
        self.task_name: str = row["task_name"]
        self.status: Status = row["status"]
        steps = row["finished_steps"]
        self.finished_steps = (
            tuple(FinishedStep(item["name"], item["result"]) for item in steps) if steps else ()
        )
        self.current_step: str | None = row["current_step"]
        self.cursor: JSONValue = row["cursor"]
        self.interruptions: int = row["interruptions"]
        expires = row["lease_expires_at"]
        # A released lease keeps its last owner's token in the row (see the release
        # statement); no run holds it.
        self.owner: str | None = row["owner"] if expires is not None else None
        self._expires: dt.datetime | None = expires

    @property
    def lease_expires_at(self) -> dt.datetime | None:
        """When the lease of the run holding the task ends (UTC); None when none holds it.
        Read only by a claim that did not take the lease."""
        return _aware(self._expires)


class Claim:
    """The outcome of trying to take a task's lease: the row, and whether it is ours."""

    __slots__ = ("checkpoint", "claimed")

    def __init__(self, checkpoint: Found, claimed: bool) -> None:
        self.checkpoint = checkpoint
        self.claimed = claimed


def request_json(request: Mapping[str, Any] | None) -> str | None:
    """The request as kombu JSON (typed values kept), or None when it cannot be stored.

    Fields that are not set (None, or an empty list, mapping or string) are left out.
    A request with a value JSON cannot hold is not stored at all, and a warning names
    its fields: sent again without them, the task would not be the one Celery sent
    (a chain cut short, an error callback lost).
    """
    if request is None:
        return None
    fields = {name: value for name, value in request.items() if not _unset(value)}
    try:
        text = _dumps(fields)
    except _ENCODE_ERRORS:
        refused = [name for name, value in fields.items() if not _storable(value)]
        logger.warning(
            "the request of a task is not recorded: its %s cannot be stored as JSON; "
            "`celery resumable retry` will refuse it",
            ", ".join(refused) or "fields",
        )
        return None
    if len(text) > _MAX_REQUEST_BYTES:
        logger.warning(
            "the request of a task is not recorded: %d characters of JSON, more than %d; "
            "`celery resumable retry` will refuse it",
            len(text),
            _MAX_REQUEST_BYTES,
        )
        return None
    return text


def _unset(value: Any) -> bool:
    return value is None or (isinstance(value, list | tuple | dict | str) and not value)


def _dumps(value: Any) -> str:
    return str(kombu_json.dumps(value))  # type: ignore[no-untyped-call]


def _storable(value: Any) -> bool:
    try:
        _dumps(value)
    except _ENCODE_ERRORS:
        return False
    return True


def request_of(checkpoint: Checkpoint) -> dict[str, Any] | None:
    """The recorded request of a checkpoint: ``args``, ``kwargs`` and RESEND_OPTIONS."""
    if checkpoint.request is None:
        return None
    try:
        value = kombu_json.loads(checkpoint.request)  # type: ignore[no-untyped-call]
    except (TypeError, ValueError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def checkpoint_of(row: Any) -> Checkpoint:
    """The Checkpoint of a row of the table (a mapping of its columns)."""
    found = Found(row)
    return Checkpoint(
        task_id=row["task_id"],
        task_name=found.task_name,
        status=found.status,
        finished_steps=found.finished_steps,
        current_step=found.current_step,
        cursor=found.cursor,
        interruptions=found.interruptions,
        owner=found.owner,
        lease_expires_at=found.lease_expires_at,
        created_at=_aware(row["created_at"]),  # type: ignore[arg-type]
        updated_at=_aware(row["updated_at"]),  # type: ignore[arg-type]
        request=row["request"],
        done=row["done"],
        total=row["total"],
    )


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else value.replace(tzinfo=dt.UTC)
