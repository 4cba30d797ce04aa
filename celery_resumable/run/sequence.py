"""The step order of one run: what ran, what is current, what a resume skips.

``StepSequence`` is pure: no I/O, no clock, no thread. It validates step calls against
the finished steps and the step in progress loaded from the checkpoint, and says what
the run's checkpoint should hold (``state``). Each method that changes what the stored
row should hold returns True, so the owner of the checkpoint knows it has changes to write.
"""

from __future__ import annotations

from typing import NamedTuple

from celery_resumable._types import JSONValue
from celery_resumable.errors import (
    DuplicateStepError,
    NestedStepError,
    NotInStepError,
    StepMismatchError,
)
from celery_resumable.store.records import FinishedStep, State

__all__ = ["StepSequence", "StepStart"]


class StepStart(NamedTuple):
    """What ``begin`` decided: skip with a stored result, or run from a cursor."""

    skipped: bool
    result: JSONValue = None
    cursor: JSONValue = None
    changed: bool = False  # the stored row learns which step is in progress


# The start of a step that runs from the beginning (the usual case), made once.
_FRESH = StepStart(skipped=False, changed=True)


class StepSequence:
    """The finished steps, the step in progress and the step running now, in call order.

    ``finished`` and ``in_progress`` are what the checkpoint holds (once written);
    ``active`` is the step whose function runs now. ``advanced`` tells whether this run
    moved past anything (a cursor or a finished step) since it began.
    """

    __slots__ = (
        "_abandoned",
        "_finished_early",
        "_position",
        "_seen",
        "active",
        "advanced",
        "done",
        "finished",
        "in_progress",
        "task_id",
        "total",
    )

    def __init__(
        self,
        task_id: str | None,
        finished: tuple[FinishedStep, ...] = (),
        in_progress: tuple[str, JSONValue] | None = None,
    ) -> None:
        self.task_id = task_id
        self.finished: list[FinishedStep] = list(finished)
        self.in_progress = in_progress
        self.active: str | None = None
        self.done = 0  # cursor advances of the step in progress
        self.total: int | None = None
        self.advanced = False
        self._position = 0
        self._seen: set[str] = set()
        self._abandoned: str | None = None  # left early: finished if the task goes on
        self._finished_early: str | None = None  # finished by its transaction, still running

    @property
    def resuming(self) -> bool:
        """Whether the run starts from a checkpoint that holds progress."""
        return bool(self.finished) or self.in_progress is not None

    def begin(self, name: str) -> StepStart:
        """Validate and enter step ``name``: skip it, resume it, or start it fresh.

        Raises TypeError for a name that is not a non-empty string, NestedStepError
        inside another step, DuplicateStepError for a name this run used, and
        StepMismatchError when the checkpoint holds another step at this position.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"a step name must be a non-empty string, not {name!r}")
        if self.active is not None:
            raise NestedStepError(self.active, name)
        if name in self._seen:
            raise DuplicateStepError(name)
        changed = self._abandoned is not None and self._settle_abandoned()
        self._seen.add(name)
        index = self._position
        self._position += 1
        if index < len(self.finished):
            expected = self.finished[index].name
            if expected != name:
                raise StepMismatchError(self.task_id or "?", expected, name)
            return StepStart(True, self.finished[index].result, None, changed)
        cursor: JSONValue = None
        if self.in_progress is not None:
            recorded, cursor = self.in_progress
            if recorded != name:
                raise StepMismatchError(self.task_id or "?", recorded, name)
        else:
            changed = True
        self.done = 0
        self.total = None
        self.in_progress = (name, cursor)
        self.active = name
        if cursor is None and changed:
            return _FRESH
        return StepStart(False, None, cursor, changed)

    def advance(self, cursor: JSONValue, function: str = "set_cursor") -> bool:
        """The running step reached ``cursor`` (encoded). Raises NotInStepError outside a step."""
        if self.active is None:
            raise NotInStepError(function)
        self.in_progress = (self.active, cursor)
        self.done += 1
        self.advanced = True
        return True

    def measure(self, done: int, total: int | None) -> None:
        """Set how many items the running step has done, and of how many (None: unknown)."""
        self.done = done
        self.total = total

    def finish(self, name: str, result: JSONValue) -> bool:
        """Step ``name`` returned ``result`` (encoded); kept as finished unless its
        transaction finished it already (with the result given there)."""
        if self._finished_early == name:
            self._finished_early = None
        else:
            self.finished.append(FinishedStep(name, result))
        self.in_progress = None
        self.active = None
        self.advanced = True
        return True

    def abort(self, name: str) -> None:
        """Leave step ``name`` unfinished: its function raised or its loop was left."""
        if self.active == name:
            self.active = None
            self._abandoned = name

    def committed(self, step: str, finish: bool, value: JSONValue) -> None:
        """A transaction committed the running step's cursor, or its finish, while it runs."""
        if self.active != step:
            return
        if finish:
            self.finished.append(FinishedStep(step, value))
            self.in_progress = None
            self._finished_early = step
        else:
            self.in_progress = (step, value)
            self.done += 1
            self.advanced = True

    def state(self, interruptions: int) -> State:
        """What the checkpoint should hold now."""
        if self.in_progress is None:
            return State(tuple(self.finished), None, None, interruptions)
        name, cursor = self.in_progress
        return State(tuple(self.finished), name, cursor, interruptions, self.done, self.total)

    def after(self, step: str, finish: bool, value: JSONValue, interruptions: int) -> State:
        """What the checkpoint holds once the running ``step`` writes ``value`` as its
        next cursor, or (``finish``) as its result."""
        if finish:
            return State((*self.finished, FinishedStep(step, value)), None, None, interruptions)
        done = self.done + 1
        return State(tuple(self.finished), step, value, interruptions, done, self.total)

    def _settle_abandoned(self) -> bool:
        # The task went on after a step stopped early (a caught error, a loop left with
        # break): the step is over for this task, so it counts as finished.
        name, self._abandoned = self._abandoned, None
        if name is None or self.in_progress is None or self.in_progress[0] != name:
            return False
        self.finished.append(FinishedStep(name, None))
        self.in_progress = None
        return True
