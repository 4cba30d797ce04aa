"""Statements compiled once per database, for the driver's own cursor.

A run's statements (claim, write, release) are the library's hot path: SQLAlchemy builds
and types them once, then ``execute`` runs them on a pooled DBAPI connection without
the execution machinery around each call. Parameters and rows go through the same
SQLAlchemy type processors a Core ``execute`` would apply.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import CursorResult, Dialect
from sqlalchemy.sql.compiler import SQLCompiler

__all__ = ["Outcome", "Prepared", "StatementTooLargeError", "abandon"]

Processor = Callable[[Any], Any]


def abandon(connection: Any) -> None:
    """Never use ``connection`` again: an exception interrupted its statement.

    A soft time limit (raised from a signal handler), ``KeyboardInterrupt`` or a green
    timeout can land while a statement is on the wire. The connection is then in the
    middle of the protocol; back in the pool (which does not reset autocommit
    connections) it would fail every later statement of the process. It is invalidated
    instead (closed, its pool slot refilled with a new connection on the next checkout).
    """
    with contextlib.suppress(Exception):
        connection.invalidate()


class StatementTooLargeError(Exception):
    """Raised instead of sending a statement larger than the database accepts."""

    def __init__(self, size: int, limit: int, sizes: dict[str, int]) -> None:
        super().__init__(size, limit)
        self.size = size
        self.limit = limit
        self.sizes = sizes  # bytes of each parameter, by name


class Outcome:
    """What a prepared statement returned: its rows (processed) and its row count."""

    __slots__ = ("rowcount", "rows")

    def __init__(self, rows: list[dict[str, Any]], rowcount: int) -> None:
        self.rows = rows
        self.rowcount = rowcount

    @classmethod
    def of(cls, result: CursorResult[Any], rows: bool = True) -> Outcome:
        """The outcome of a SQLAlchemy result: its rows (when wanted) and row count."""
        found = [dict(row) for row in result.mappings()] if rows and result.returns_rows else []
        return cls(found, result.rowcount)


class Prepared:
    """One statement, compiled for one dialect, with its parameter and row processors."""

    def __init__(
        self, statement: sa.ClauseElement, dialect: Dialect, returns: Sequence[sa.Column[Any]] = ()
    ) -> None:
        self.statement: Any = statement
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        self.sql = str(compiled)
        self.positional = bool(compiled.positional)
        self.order: tuple[str, ...] = tuple(compiled.positiontup or ())
        self.defaults: dict[str, Any] = {}
        self.processors: dict[str, Processor] = {}
        for bind, name in compiled.bind_names.items():
            if not bind.required:
                self.defaults[name] = bind.effective_value
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self.processors[name] = processor
        # Whether the statement returns rows (a SELECT, or DML with RETURNING), known
        # here so that a run never asks the driver (a cursor's ``description`` costs).
        self.returns_rows = bool(getattr(statement, "is_select", False)) or bool(
            compiled.effective_returning
        )
        # Constant parameters (literals) are processed once, here.
        for name in list(self.defaults):
            process = self.processors.pop(name, None)
            if process is not None:
                self.defaults[name] = process(self.defaults[name])
        self._processing = tuple(self.processors.items())
        # Picks the positional parameters out of a dict (a tuple for two names or more).
        self._pick = operator.itemgetter(*self.order) if len(self.order) > 1 else None
        self.columns: list[tuple[str, Processor | None]] = [
            (column.name, column.type.dialect_impl(dialect).result_processor(dialect, None))
            for column in returns
        ]
        self._names = tuple(name for name, _ in self.columns)
        self._processed = any(process is not None for _, process in self.columns)
        # The most bytes of parameters one statement may carry (MySQL's
        # max_allowed_packet, less the statement itself); None: no known limit.
        self.limit: int | None = None

    def parameters(self, values: Mapping[str, Any]) -> Any:
        """The DBAPI parameters for ``values`` (the statement's named bind parameters)."""
        params = {**self.defaults, **values}
        for name, process in self._processing:
            params[name] = process(params[name])
        return self._positions(params) if self.positional else params

    def _positions(self, params: dict[str, Any]) -> tuple[Any, ...]:
        if self._pick is not None:
            return self._pick(params)  # type: ignore[no-any-return]
        return tuple(params[name] for name in self.order)

    def check_size(self, parameters: Any) -> None:
        """Raise StatementTooLargeError when ``parameters`` exceed ``limit`` bytes."""
        named = list(
            zip(self.order, parameters, strict=True) if self.positional else parameters.items()
        )
        # A character is at most 4 bytes in UTF-8: most statements are surely small
        # enough without encoding anything.
        if (
            self.limit is None
            or 4 * sum(len(value) for _, value in named if isinstance(value, str | bytes))
            <= self.limit
        ):
            return
        sizes = {
            name: len(value.encode() if isinstance(value, str) else value)
            for name, value in named
            if isinstance(value, str | bytes)
        }
        size = sum(sizes.values())
        if self.limit is not None and size > self.limit:
            raise StatementTooLargeError(size, self.limit, sizes)

    def row(self, row: tuple[Any, ...]) -> dict[str, Any]:
        """A row of the driver's, by column name, through the result processors."""
        if not self._processed:
            return dict(zip(self._names, row, strict=False))
        return {
            name: value if process is None else process(value)
            for (name, process), value in zip(self.columns, row, strict=False)
        }
