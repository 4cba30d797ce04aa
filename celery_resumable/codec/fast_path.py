"""Values that come back from the store as they are, recognised without a round trip.

A value made only of lists, dicts with string keys, ASCII strings, ints, bools and finite
floats below 1e16, read back as an annotation made of the same types (``list[int]``,
``dict[str, list[str]]``, ...), is stored untagged and read back equal and of the same
types. For such a value the store-time check (encode, decode, compare) can be skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, get_args, get_origin

__all__ = ["AS_THEY_ARE", "LARGE_FLOAT", "comes_back"]

Check = Callable[[Any], bool]

# Above this a float's repr has an exponent, and PostgreSQL's JSONB gives it back as an
# integer: such floats are stored tagged.
LARGE_FLOAT = 1e16
_CHECKS: dict[Any, Check | None] = {}
# The types whose every value is stored as it is and comes back equal and of its type.
AS_THEY_ARE = frozenset({int, bool, type(None)})


def comes_back(value: Any, target: Any) -> bool:
    """Whether ``value`` is plain JSON that ``target`` reads back as ``value`` itself.

    False means "not known": the caller checks the value the long way.
    """
    try:
        check = _CHECKS[target]
    except KeyError:
        check = _CHECKS[target] = _compiled(target)
    except TypeError:  # an annotation that cannot be hashed
        return False
    return check is not None and check(value)


def _compiled(target: Any) -> Check | None:
    scalar = _SCALARS.get(target)
    if scalar is not None:
        return scalar
    origin, arguments = get_origin(target), get_args(target)
    if origin is list and len(arguments) == 1:
        exact = _EXACT.get(arguments[0])
        if exact is not None:  # a list of ints (or bools): checked in C
            return lambda value: type(value) is list and exact.issuperset(map(type, value))
        item = _compiled(arguments[0])
        if item is not None:
            return lambda value: type(value) is list and all(map(item, value))
    if origin is dict and len(arguments) == 2 and arguments[0] is str:
        entry = _compiled(arguments[1])
        if entry is not None:
            return lambda value: (
                type(value) is dict
                and all(_is_text(key) and entry(item) for key, item in value.items())
            )
    return None


def _is_text(value: Any) -> bool:
    return type(value) is str and value.isascii() and "\x00" not in value


def _is_int(value: Any) -> bool:
    return type(value) is int


def _is_bool(value: Any) -> bool:
    return type(value) is bool


def _is_float(value: Any) -> bool:
    return type(value) is float and -LARGE_FLOAT < value < LARGE_FLOAT


# The item types whose every value comes back: their items are checked by type alone.
_EXACT: dict[Any, frozenset[type]] = {int: frozenset({int}), bool: frozenset({bool})}
_SCALARS: dict[Any, Check] = {int: _is_int, bool: _is_bool, str: _is_text, float: _is_float}
