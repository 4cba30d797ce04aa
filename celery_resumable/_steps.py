"""The step functions called from a resumable task's body."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any, ParamSpec, TypeVar, overload

from ._codec import decode, encode, first_parameter_type, return_type
from ._context import Run, current_run
from .errors import CursorDecodeError, NotInStepError

__all__ = ["iterate", "set_cursor", "step", "step_cursor"]

P = ParamSpec("P")
T = TypeVar("T")


def step(name: str, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``fn(*args, **kwargs)`` as step ``name`` unless an earlier run finished it.

    Returns ``fn``'s result, which is stored as JSON; a skipped step returns the stored
    result decoded to ``fn``'s return annotation (plain JSON without one).

    Raises DuplicateStepError, NestedStepError, StepMismatchError,
    NotInResumableTaskError, CursorEncodeError (result not storable) and
    CursorDecodeError (stored result not readable as the annotation).
    """
    return _run_step(current_run("step"), name, fn, lambda _cursor: fn(*args, **kwargs))


def step_cursor(name: str, fn: Callable[[Any], T], /, *, cursor_type: Any = None) -> T:
    """Run ``fn(cursor)`` as step ``name``, resuming from the cursor an earlier run saved.

    ``cursor`` is None on a fresh start, else the saved cursor decoded to
    ``cursor_type``, or to the annotation of ``fn``'s first parameter (``X | None``
    included), or plain JSON. ``fn`` advances the cursor with ``set_cursor``.
    Raises what ``step`` raises.
    """
    run = current_run("step_cursor")
    target = _cursor_type(fn, cursor_type, f"the function of step {name!r}")
    return _run_step(run, name, fn, lambda cursor: fn(_decode_cursor(name, cursor, target)))


def _run_step(run: Run, name: str, fn: Callable[..., T], call: Callable[[Any], T]) -> T:
    start = run.begin(name)
    if start.skipped:
        return _stored_result(name, fn, start.result)  # type: ignore[no-any-return]
    try:
        result = call(start.cursor)
        encoded = encode(result, f"the result of step {name!r}")
    except BaseException:
        run.abort(name)
        raise
    run.finish(name, encoded)
    return result


def set_cursor(value: object) -> None:
    """Record ``value`` as the cursor of the running step; a checkpoint boundary.

    The value is encoded at once. Raises CursorEncodeError naming the type when it
    cannot be stored, NotInStepError outside a step, NotInResumableTaskError outside a
    resumable task, and TaskInterrupted when the run must stop here.
    """
    run = current_run("set_cursor")
    if run.active is None:
        raise NotInStepError("set_cursor")
    run.set_cursor(encode(value, run.cursor_label))


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
    start = run.begin(name)
    if start.skipped:
        return
    total = len(source) if isinstance(source, Sized) else None
    try:
        if by_cursor:
            cursor = _decode_cursor(name, start.cursor, target)
            run.measure(0, total)
            for position, item in source(cursor):
                yield item
                run.set_cursor(encode(position, run.cursor_label))
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


def _stored_result(name: str, fn: Callable[..., Any], stored: Any) -> Any:
    target = return_type(fn, f"the function of step {name!r}")
    return decode(stored, target, f"the stored result of step {name!r}")


def _cursor_type(fn: Callable[..., Any], explicit: Any, what: str) -> Any:
    return explicit if explicit is not None else first_parameter_type(fn, what)


def _decode_cursor(name: str, cursor: Any, target: Any) -> Any:
    if cursor is None:
        return None
    return decode(cursor, target, f"the cursor of step {name!r}")


def _count_cursor(name: str, cursor: Any) -> int:
    if cursor is None:
        return 0
    if isinstance(cursor, bool) or not isinstance(cursor, int) or cursor < 0:
        raise CursorDecodeError(
            f"cannot read the cursor of step {name!r} back as a count of items: {cursor!r}"
        )
    return cursor
