"""The records of the checkpoint table, as the rest of the package sees them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping
from typing import Any, Literal

from kombu.utils import json as kombu_json

from ._types import JSONValue

__all__ = [
    "STATUSES",
    "Checkpoint",
    "Claim",
    "FinishedStep",
    "State",
    "Status",
    "checkpoint_of",
    "request_json",
    "request_of",
]

_MAX_REQUEST_BYTES = 1_000_000

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
    """The task's arguments and routing recorded by its first run (kombu JSON), if storable."""
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


@dataclasses.dataclass(frozen=True)
class Claim:
    """The outcome of trying to take a task's lease: the row, and whether it is ours."""

    checkpoint: Checkpoint
    claimed: bool


def request_json(request: Mapping[str, Any] | None) -> str | None:
    """The request as kombu JSON (typed values kept), or None when it cannot be stored."""
    if request is None:
        return None
    try:
        text = str(kombu_json.dumps(dict(request)))  # type: ignore[no-untyped-call]
    except (TypeError, ValueError):
        return None
    return text if len(text) <= _MAX_REQUEST_BYTES else None


def request_of(checkpoint: Checkpoint) -> dict[str, Any] | None:
    """The recorded request of a checkpoint: ``args``, ``kwargs`` and routing options."""
    if checkpoint.request is None:
        return None
    try:
        value = kombu_json.loads(checkpoint.request)  # type: ignore[no-untyped-call]
    except (TypeError, ValueError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def checkpoint_of(row: Any) -> Checkpoint:
    """The Checkpoint of a row of the table (a mapping of its columns)."""
    return Checkpoint(
        task_id=row["task_id"],
        task_name=row["task_name"],
        status=row["status"],
        finished_steps=tuple(
            FinishedStep(item["name"], item["result"]) for item in row["finished_steps"]
        ),
        current_step=row["current_step"],
        cursor=row["cursor"],
        interruptions=row["interruptions"],
        # A released lease keeps its last owner's token in the row (see the release
        # statement); no run holds it.
        owner=row["owner"] if row["lease_expires_at"] is not None else None,
        lease_expires_at=_aware(row["lease_expires_at"]),
        created_at=_aware(row["created_at"]),  # type: ignore[arg-type]
        updated_at=_aware(row["updated_at"]),  # type: ignore[arg-type]
        request=row["request"],
        done=row["done"],
        total=row["total"],
    )


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else value.replace(tzinfo=dt.UTC)
