"""The records of the checkpoint table, as the rest of the package sees them."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Literal

from ._types import JSONValue

__all__ = ["STATUSES", "Checkpoint", "Claim", "FinishedStep", "State", "Status"]

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
