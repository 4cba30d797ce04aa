"""The checks that both keyset adapters (SQLAlchemy Selects, Django QuerySets) make alike."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["check_batch_size", "null_key_error"]


def check_batch_size(batch_size: object) -> None:
    """Raise TypeError unless ``batch_size`` is an int, ValueError when it is below 1."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"keyset() batch_size must be an int, not {type(batch_size).__qualname__}")
    if batch_size < 1:
        raise ValueError(f"keyset() batch_size must be at least 1, not {batch_size}")


def null_key_error(names: Sequence[str]) -> ValueError:
    """The error for a query with a row whose key (or a part of it) is NULL."""
    return ValueError(
        f"keyset() key ({', '.join(names)}) is NULL in a row of the query; a keyset key "
        "must never be NULL: filter those rows out or page by a key that has no NULL"
    )
