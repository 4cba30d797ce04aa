"""The step functions called from a resumable task's body."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sized
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar, overload

from celery_resumable.codec.classes import result_scope
from celery_resumable.codec.encode import Scope, decode, encode, first_parameter_type
from celery_resumable.errors import CursorDecodeError, CursorEncodeError, NotInStepError
from celery_resumable.run.context import Run, current_run

__all__ = ["iterate", "set_cursor", "step", "step_cursor"]

P = ParamSpec("P")
T = TypeVar("T")

# How the cursor of the running step_cursor function is read back, for set_cursor.
_cursor_scope: ContextVar[Scope | None] = ContextVar("celery_resumable_cursor", default=None)


def step(name: str, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``fn(*args, **kwargs)`` as step ``name`` unless an earlier run finished it.

    Returns ``fn``'s result, which is stored as JSON; a skipped step returns the stored
    result, equal to it and of the same type (checked against ``fn``'s return annotation
    when it has one).

    Raises DuplicateStepError, NestedStepError, StepMismatchError,
    NotInResumableTaskError, CursorEncodeError (a result that would not come back equal
    and of the same type) and CursorDecodeError (an annotation naming a class that
    cannot be found, or a stored result that does not fit the annotation).
    """
    run = current_run("step")
    return _run_step(run, name, result_scope(fn, name), lambda _cursor: fn(*args, **kwargs))


def step_cursor(name: str, fn: Callable[[Any], T], /, *, cursor_type: Any = None) -> T:
    """Run ``fn(cursor)`` as step ``name``, resuming from the cursor an earlier run saved.

    ``cursor`` is None on a fresh start, else the saved cursor decoded to
    ``cursor_type``, or to the annotation of ``fn``'s first parameter (``X | None``
    included), or plain JSON. ``fn`` advances the cursor with ``set_cursor``.
    Raises what ``step`` raises.
    """
    run = current_run("step_cursor")
    what = f"the function of step {name!r}"
    cursor_scope = Scope(_cursor_type(fn, cursor_type, what), fn)

    def call(cursor: Any) -> T:
        token = _cursor_scope.set(cursor_scope)
        try:
            return fn(_decode_cursor(name, cursor, cursor_scope))
        finally:
            _cursor_scope.reset(token)

    return _run_step(run, name, result_scope(fn, name), call)


def cursor_scope() -> Scope | None:
    """How the running ``step_cursor`` function reads its cursor back (for ``_tx`` writes)."""
    return _cursor_scope.get()


def _label_cursor(run: Run) -> str:
    """How errors name the running step's cursor, made once per step."""
    run.cursor_label = f"the cursor of step {run.active!r}"
    return run.cursor_label


def _run_step(run: Run, name: str, scope: Scope, call: Callable[[Any], T]) -> T:
    start = run.begin(name)
    if start.skipped:
        what = f"the stored result of step {name!r}"
        return decode(start.result, scope.target, what, scope=scope)  # type: ignore[no-any-return]
    try:
        result = call(start.cursor)
        try:
            encoded = encode(result, "", scope=scope)
        except CursorEncodeError:
            # The label is made only to report the error: encoded again, naming the step.
            encode(result, f"the result of step {name!r}", scope=scope)
            raise
    except BaseException:
        run.abort(name)
        raise
    run.finish(name, encoded)
    return result


def set_cursor(value: object) -> None:
    """Record ``value`` as the cursor of the running step; a checkpoint boundary.

    The value is encoded at once. Raises CursorEncodeError naming the type when it
    cannot be stored or would not come back equal and of the same type (read as the
    step function's cursor type), NotInStepError outside a step,
    NotInResumableTaskError outside a resumable task, and TaskInterrupted when the run
    must stop here.
    """
    run = current_run("set_cursor")
    if run.active is None:
        raise NotInStepError("set_cursor")
    label = run.cursor_label or _label_cursor(run)
    run.set_cursor(encode(value, label, scope=_cursor_scope.get()))


@overload
def iterate(name: str, source: Iterable[T], /) -> Iterator[T]: ...


@overload
def iterate(
    name: str, source: Callable[[Any], Iterable[tuple[Any, T]]], /, *, cursor_type: Any = None
) -> Iterator[T]: ...


def iterate(name: str, source: Any, /, *, cursor_type: Any = None) -> Iterator[Any]:
    """Run step ``name`` as a ``for`` loop, advancing the cursor after each item's body.

    ``source`` is an iterable (the cursor counts the items done; a resumed loop skips
    them) or a function ``source(cursor)`` returning ``(cursor, item)`` pairs, called
    with the saved cursor (decoded like ``step_cursor``'s) or None. The step finishes
    when the loop ends; leaving it with ``break`` finishes it too. Each item is a
    checkpoint boundary. Raises what ``step`` raises.
    """
    run = current_run("iterate")
    by_cursor = callable(source) and not isinstance(source, Iterable)
    target = (
        _cursor_type(source, cursor_type, f"the source of step {name!r}") if by_cursor else None
    )
    scope = Scope(target, source if by_cursor else None)
    start = run.begin(name)
    if start.skipped:
        return
    total = len(source) if isinstance(source, Sized) else None
    try:
        if by_cursor:
            cursor = _decode_cursor(name, start.cursor, scope)
            run.measure(0, total)
            for position, item in source(cursor):
                yield item
                label = run.cursor_label or _label_cursor(run)
                run.set_cursor(encode(position, label, scope=scope))
        else:
            done = _count_cursor(name, start.cursor)
            run.measure(done, total)
            for item in itertools.islice(source, done, None):
                yield item
                done += 1
                run.set_cursor(done)
    except BaseException:
        run.abort(name)
        raise
    run.finish(name, None)


def _cursor_type(fn: Callable[..., Any], explicit: Any, what: str) -> Any:
    return explicit if explicit is not None else first_parameter_type(fn, what)


def _decode_cursor(name: str, cursor: Any, scope: Scope) -> Any:
    if cursor is None:
        return None
    return decode(cursor, scope.target, f"the cursor of step {name!r}", scope=scope)


def _count_cursor(name: str, cursor: Any) -> int:
    if cursor is None:
        return 0
    if isinstance(cursor, bool) or not isinstance(cursor, int) or cursor < 0:
        raise CursorDecodeError(
            f"cannot read the cursor of step {name!r} back as a count of items: {cursor!r}"
        )
    return cursor
