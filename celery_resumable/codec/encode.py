"""Typed JSON encoding and decoding of cursors and step results.

JSON values (None, bool, int, float, str, lists, objects with string keys) are stored
as they are. Every other supported value is stored tagged, saying what it is, so that
it comes back as the same type with or without an annotation::

    {"$type": "decimal", "value": "1.50"}
    {"$type": "tuple", "items": [1, "a"]}
    {"$type": "dataclass", "class": "shop.tasks:Totals", "fields": {"count": 3}}

A value is checked when it is encoded: when it would not come back equal and of the
same type (read the way a resumed run reads it, with the same annotation and function),
CursorEncodeError names it at once. See docs/concepts.md for the format.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import enum
import math
import uuid
import zoneinfo
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from celery_resumable._types import JSONValue
from celery_resumable.codec.classes import (
    PydanticModel,
    Scope,
    class_kind,
    first_parameter_type,
    is_named_tuple,
    reference,
    return_type,
)
from celery_resumable.codec.decode import decode_value, type_name
from celery_resumable.codec.fast_path import AS_THEY_ARE, LARGE_FLOAT, comes_back
from celery_resumable.codec.tagged import DECODE_ERRORS, TAG
from celery_resumable.errors import CursorDecodeError, CursorEncodeError

__all__ = ["Scope", "decode", "encode", "first_parameter_type", "return_type"]

_JSON_SCALARS = frozenset({int, str, bool, float, type(None)})


def encode(value: Any, what: str = "value", *, scope: Scope | None = None) -> JSONValue:
    """Return ``value`` as JSON, checked to come back equal and of the same type.

    ``scope`` is how a resumed run reads the value back: the annotation and the step
    function; without one, the value is checked as read without an annotation. Raises
    CursorEncodeError naming ``what``, the path inside the value and the type.
    """
    kind = type(value)
    # Built-in values read without an annotation come back as they are, by construction;
    # so do values of a type already checked against the annotation.
    trusted = scope is None or scope.target is None or kind in scope.trusted
    if trusted and (
        kind is int
        or kind is bool
        or value is None
        or (kind is str and value.isascii() and "\x00" not in value)
    ):
        return value  # type: ignore[no-any-return]
    plain = kind is list and AS_THEY_ARE.issuperset(map(type, value))  # ints, bools, None
    if plain and (trusted or (scope is not None and comes_back(value, scope.target))):
        return list(value)
    classes: list[type] = []
    try:
        if kind is tuple:  # the common cursor of keyset pagination: one call less
            data: JSONValue = {TAG: "tuple", "items": _encode_items(value, None, classes)}
        else:
            data = _encode(value, None, classes)
    except CursorEncodeError:
        # Paths are built only to report an error: encode again, naming where it failed.
        _encode(value, what, [])
        raise
    except RecursionError:
        raise CursorEncodeError(
            f"cannot store {what}: the value contains itself or is nested too deeply"
        ) from None
    if trusted and not classes:
        return data
    if scope is None:
        scope = Scope()
    # A cursor is checked once per type (and classes inside it) in a step, unless the
    # check depends on the value: a Literal, or a list or dict read as an annotation
    # says (their items are read as the annotation says, one by one).
    key: Any = (kind, frozenset(classes)) if classes else kind
    if not scope.cacheable or (kind in (list, dict) and scope.target is not None):
        key = None
    if key is None or key not in scope.trusted:
        if classes or not comes_back(value, scope.target):
            _check(value, data, what, scope)
        if key is not None:
            scope.trusted.add(key)
    return data


def decode(data: JSONValue, target: Any, what: str = "value", *, scope: Scope | None = None) -> Any:
    """Rebuild a stored value; ``target`` is the annotation to read it as (None: as stored).

    Tagged values come back as stored and are checked against ``target``; plain JSON is
    read as ``target`` says. ``scope`` gives the step function whose objects a stored
    class is looked up among. Raises CursorDecodeError naming ``what`` and the type.
    """
    try:
        return decode_value(data, target, what, scope if scope is not None else Scope(target))
    except CursorDecodeError:
        raise
    except DECODE_ERRORS as exc:
        raise CursorDecodeError(f"cannot read {what} back as {type_name(target)}: {exc}") from exc


# -- encoding -----------------------------------------------------------------------------


def _encode(value: Any, path: str | None, classes: list[type]) -> JSONValue:
    kind = type(value)
    if kind is str:
        if value.isascii() and "\x00" not in value:
            return value  # type: ignore[no-any-return]
        return _encode_text(value, path, None)
    if kind is int or kind is bool or value is None:
        return value  # type: ignore[no-any-return]
    if kind is tuple:
        return {TAG: "tuple", "items": _encode_items(value, path, classes)}
    if kind is list:
        return _encode_items(value, path, classes)
    if kind is dict:
        return _encode_dict(value, path, classes)
    if kind is float:
        return _encode_float(value, path, None)
    writer = _WRITERS.get(kind)
    if writer is not None:
        return writer(value, path, classes)  # type: ignore[no-any-return]
    return _encode_object(value, path, classes)


def _encode_items(value: Any, path: str | None, classes: list[type]) -> list[JSONValue]:
    if path is not None:
        return [_encode(item, f"{path}[{index}]", classes) for index, item in enumerate(value)]
    # Cursors are often short tuples of ints and strings: keep those without a call
    # (and count by hand: cheaper than enumerate() on this path).
    items = list(value)
    index = 0
    for item in value:
        kind = type(item)
        if kind is not int and not (kind is str and item.isascii() and "\x00" not in item):
            items[index] = _encode(item, None, classes)
        index += 1  # noqa: SIM113
    return items


def _encode_text(value: str, path: str | None, cls: type | None) -> JSONValue:
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise CursorEncodeError(
                f"cannot store {path}: the string contains a lone surrogate "
                f"({value[:40]!r}), which databases refuse"
            ) from None
    if "\x00" in value:
        # JSONB refuses NUL in strings: store the parts between the NULs.
        data: dict[str, JSONValue] = {TAG: "str", "parts": list(value.split("\x00"))}
    elif cls is None:
        return value
    else:
        data = {TAG: "str", "value": str.__str__(value)}
    if cls is not None:
        data["class"] = reference(cls)
    return data


def _encode_float(value: float, path: str | None, cls: type | None) -> JSONValue:
    if not math.isfinite(value):
        raise CursorEncodeError(f"cannot store {path}: {value!r} is not a finite number")
    if cls is None and -LARGE_FLOAT < value < LARGE_FLOAT:
        return value
    data: dict[str, JSONValue] = {TAG: "float", "value": float.__repr__(value)}
    if cls is not None:
        data["class"] = reference(cls)
    return data


def _encode_dict(value: dict[Any, Any], path: str | None, classes: list[type]) -> JSONValue:
    encoded: dict[str, JSONValue] = {}
    for key, item in value.items():
        if type(key) is not str or "\x00" in key:
            _refuse_key(key, path)
        encoded[key] = _encode(item, path and f"{path}[{key!r}]", classes)
    if TAG in encoded:  # a plain dict using the tag as a key: wrap it
        return {TAG: "dict", "value": encoded}
    return encoded


def _refuse_key(key: object, path: str | None) -> None:
    if isinstance(key, str):
        problem = (
            "contains a NUL character, which databases refuse"
            if "\x00" in key
            else f"of type {type(key).__qualname__} would come back as a plain str"
        )
        raise CursorEncodeError(f"cannot store {path}: dict key {key!r} {problem}")
    raise CursorEncodeError(
        f"cannot store {path}: dict key {key!r} of type {type(key).__qualname__} is not a string"
    )


def _encode_set(
    value: set[Any] | frozenset[Any], path: str | None, classes: list[type]
) -> JSONValue:
    try:
        ordered = sorted(value)  # the same set is stored the same way every time
    except TypeError:
        ordered = list(value)
    items = [_encode(item, path and f"{path}[]", classes) for item in ordered]
    return {TAG: "set" if type(value) is set else "frozenset", "items": items}


def _encode_datetime(value: dt.datetime, path: str | None, classes: list[type]) -> JSONValue:
    data: dict[str, JSONValue] = {TAG: "datetime", "value": value.isoformat()}
    zone = value.tzinfo
    if isinstance(zone, zoneinfo.ZoneInfo) and zone.key:
        data["zone"] = zone.key  # else the UTC offset alone comes back: an equal datetime
    if value.fold:
        data["fold"] = 1  # the second of two equal wall times (a clock set back)
    return data


def _encode_time(value: dt.time, path: str | None, classes: list[type]) -> JSONValue:
    if value.tzinfo is not None and not isinstance(value.tzinfo, dt.timezone):
        raise CursorEncodeError(
            f"cannot store {path}: a time with tzinfo of type {type(value.tzinfo).__qualname__} "
            "has no fixed UTC offset; use datetime.timezone or a datetime"
        )
    return {TAG: "time", "value": value.isoformat()}


def _encode_timedelta(value: dt.timedelta, path: str | None, classes: list[type]) -> JSONValue:
    return {
        TAG: "timedelta",
        "days": value.days,
        "seconds": value.seconds,
        "microseconds": value.microseconds,
    }


_Writer = Any  # Callable[[value, path, classes], JSONValue] for each exact type
_WRITERS: dict[type, _Writer] = {
    set: _encode_set,
    frozenset: _encode_set,
    dt.datetime: _encode_datetime,
    dt.date: lambda value, path, classes: {TAG: "date", "value": value.isoformat()},
    dt.time: _encode_time,
    dt.timedelta: _encode_timedelta,
    uuid.UUID: lambda value, path, classes: {TAG: "uuid", "value": str(value)},
    Decimal: lambda value, path, classes: {TAG: "decimal", "value": str(value)},
}


def _encode_object(value: Any, path: str | None, classes: list[type]) -> JSONValue:
    cls = type(value)
    kind = class_kind(cls)
    if kind is None:
        raise CursorEncodeError(f"cannot store {path}: {_unsupported(cls)}")
    classes.append(cls)
    if kind == "enum":
        member = _encode(value.value, path and f"{path}.value", classes)
        return {TAG: "enum", "class": reference(cls), "value": member}
    if kind == "int":
        return {TAG: "int", "class": reference(cls), "value": int(value)}
    if kind == "str":
        return _encode_text(value, path, cls)
    if kind == "float":
        return _encode_float(value, path, cls)
    if kind == "dataclass":
        items = [(field.name, getattr(value, field.name)) for field in dataclasses.fields(value)]
    elif kind == "namedtuple":
        items = list(zip(cls._fields, value, strict=True))
    else:  # pydantic: its fields, then its extra fields
        items = list(value)
    fields = {name: _encode(item, path and f"{path}.{name}", classes) for name, item in items}
    return {TAG: kind, "class": reference(cls), "fields": fields}


def _unsupported(cls: type) -> str:
    name = cls.__qualname__
    if issubclass(cls, Mapping):
        return f"a value of type {name} would come back as a dict; store dict(value)"
    if issubclass(cls, list):
        return f"a value of type {name} would come back as a list; store list(value)"
    return (
        f"a value of type {name} is not JSON; use JSON types, dataclasses, pydantic "
        "models, named tuples, enums, datetime, date, time, timedelta, UUID, Decimal, "
        "tuples or sets"
    )


# -- the check that a value comes back -----------------------------------------------------


def _check(value: object, data: JSONValue, what: str, scope: Scope) -> None:
    try:
        decoded = decode(data, scope.target, what, scope=scope)
    except CursorDecodeError as exc:
        raise CursorEncodeError(
            f"cannot store {what}: a value of type {type(value).__qualname__} could not be "
            f"read back in a resumed run: {exc}"
        ) from exc
    difference = _difference(value, decoded, what, None)
    if difference is not None:
        raise CursorEncodeError(f"cannot store {what}: {difference}")


def _difference(original: Any, decoded: Any, path: str, owner: type | None) -> str | None:
    """Where ``decoded`` is not equal to ``original`` or not of its type, or None.

    ``owner`` is the class whose field is compared, rebuilt from its stored fields.
    """
    kind = type(original)
    if kind is not type(decoded):
        return (
            f"{path} is a {kind.__qualname__} but would come back as a "
            f"{type(decoded).__qualname__} in a resumed run; make the annotation say what "
            "the value is"
        )
    if kind in _JSON_SCALARS:
        return None if original == decoded else _changed(original, decoded, path, owner)
    if kind is list or kind is tuple:
        if len(original) != len(decoded):
            return _changed(original, decoded, path, owner)
        for index, (left, right) in enumerate(zip(original, decoded, strict=True)):
            found = _difference(left, right, f"{path}[{index}]", owner)
            if found is not None:
                return found
        return None
    if kind is dict:
        if original.keys() != decoded.keys():
            return _changed(original, decoded, path, owner)
        for key, item in original.items():
            found = _difference(item, decoded[key], f"{path}[{key!r}]", owner)
            if found is not None:
                return found
        return None
    if kind is set or kind is frozenset:
        same = original == decoded and collections.Counter(map(type, original)) == (
            collections.Counter(map(type, decoded))
        )
        return None if same else _changed(original, decoded, path, owner)
    if kind is Decimal:  # NaN is not equal to itself; the digits must be kept
        same = str(original) == str(decoded)
        return None if same else _changed(original, decoded, path, owner)
    fields = _fields_of(original)
    if fields is not None:
        decoded_fields = _fields_of(decoded) or {}
        for name, item in fields.items():
            if name not in decoded_fields:
                return _changed(original, decoded, path, kind)
            found = _difference(item, decoded_fields[name], f"{path}.{name}", kind)
            if found is not None:
                return found
        return None
    try:
        same = bool(original == decoded) and vars_of(original) == vars_of(decoded)
    except Exception:  # noqa: BLE001 - a failing __eq__ means "not the same"
        same = False
    return None if same else _changed(original, decoded, path, owner)


def _fields_of(value: Any) -> dict[str, Any] | None:
    """The fields a class value is rebuilt from, compared one by one; None for others."""
    kind = type(value)
    if dataclasses.is_dataclass(kind):
        return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    if is_named_tuple(kind):
        return dict(zip(kind._fields, value, strict=True))
    if PydanticModel is not None and isinstance(value, PydanticModel):
        return {**dict(value), "__pydantic_private__": value.__pydantic_private__}
    return None


def vars_of(value: object) -> dict[str, Any] | None:
    """The instance attributes of a value (a subclass of int keeps them in ``__dict__``)."""
    return getattr(value, "__dict__", None) if not isinstance(value, enum.Enum) else None


def _changed(original: object, decoded: object, path: str, owner: type | None) -> str:
    cause = (
        f"{owner.__qualname__} is rebuilt from its stored fields and does not come back equal"
        if owner is not None
        else "the value does not come back equal"
    )
    return (
        f"{path} of type {type(original).__qualname__} would come back as {decoded!r} "
        f"instead of {original!r} in a resumed run; {cause}"
    )
