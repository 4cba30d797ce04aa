"""Typed JSON encoding and decoding of cursors and step results.

Encoding turns a value into plain JSON: dataclasses and pydantic models become objects,
``datetime``/``date``/``time`` ISO strings, ``UUID`` and ``Decimal`` strings, tuples and
sets arrays, enums their value. Decoding is driven by a type (a cursor type or an
annotation) and rebuilds the same value; with no type it returns the plain JSON.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import inspect
import math
import types
import typing
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn

from ._types import JSONValue
from .errors import CursorDecodeError, CursorEncodeError

try:  # pydantic is optional
    from pydantic import BaseModel as _PydanticModel
except ImportError:  # pragma: no cover - exercised only without pydantic
    _PydanticModel = None  # type: ignore[assignment,misc]

__all__ = ["decode", "encode", "first_parameter_type", "return_type"]

_SCALARS = (str, int, bool)


def encode(value: object, what: str = "value") -> JSONValue:
    """Return ``value`` as plain JSON; raise CursorEncodeError naming ``what`` and the type."""
    try:
        return _encode(value, None)
    except CursorEncodeError:
        # Paths are built only to report an error: encode again, naming where it failed.
        return _encode(value, what)


def _encode(value: object, path: str | None) -> JSONValue:
    if value is None or isinstance(value, _SCALARS):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CursorEncodeError(f"cannot store {path}: {value!r} is not a finite number")
        return value
    if isinstance(value, enum.Enum):
        return _encode(value.value, path)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if _PydanticModel is not None and isinstance(value, _PydanticModel):
        try:
            dumped = value.model_dump(mode="json")
        except ValueError as exc:  # pydantic's serialization errors are ValueErrors
            raise CursorEncodeError(
                f"cannot store {path}: {type(value).__qualname__} cannot be dumped as JSON: {exc}"
            ) from exc
        return _encode(dumped, path)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            field.name: _encode(getattr(value, field.name), path and f"{path}.{field.name}")
            for field in dataclasses.fields(value)
        }
    if isinstance(value, list | tuple):
        if path is None:
            return [_encode(item, None) for item in value]
        return [_encode(item, f"{path}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, set | frozenset):
        items = [_encode(item, path and f"{path}[]") for item in value]
        try:
            return sorted(items)  # type: ignore[type-var]
        except TypeError:
            return items
    if isinstance(value, Mapping):
        encoded: dict[str, JSONValue] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise CursorEncodeError(
                    f"cannot store {path}: dict key {key!r} of type "
                    f"{type(key).__qualname__} is not a string"
                )
            encoded[key] = _encode(item, path and f"{path}[{key!r}]")
        return encoded
    raise CursorEncodeError(
        f"cannot store {path}: a value of type {type(value).__qualname__} is not JSON; "
        "use JSON types, dataclasses, pydantic models, datetime, date, UUID, Decimal "
        "or tuples"
    )


def decode(data: JSONValue, target: Any, what: str = "value") -> Any:
    """Rebuild a value of type ``target`` from JSON; ``None`` as target returns ``data``."""
    try:
        return _decode(data, target, what)
    except CursorDecodeError:
        raise
    except (TypeError, ValueError, KeyError, InvalidOperation) as exc:
        raise CursorDecodeError(f"cannot read {what} back as {_type_name(target)}: {exc}") from exc


def _decode(data: JSONValue, target: Any, path: str) -> Any:
    if target is None or target is Any or target is object:
        return data
    if target is type(None):
        _expect(data is None, data, target, path)
        return None
    origin = typing.get_origin(target)
    args = typing.get_args(target)
    if origin is typing.Union or origin is types.UnionType:
        return _decode_union(data, args, target, path)
    if origin is typing.Literal:
        for choice in args:
            stored = _encode(choice, path)
            if type(stored) is type(data) and stored == data:
                return choice
        _mismatch(data, target, path)
    if origin is not None:
        return _decode_generic(data, origin, args, target, path)
    if isinstance(target, type):
        return _decode_class(data, target, path)
    raise CursorDecodeError(f"cannot read {path} back: unsupported type {target!r}")


def _decode_union(data: JSONValue, args: tuple[Any, ...], target: Any, path: str) -> Any:
    if data is None and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _decode(data, arg, path)
        except (CursorDecodeError, TypeError, ValueError, KeyError, InvalidOperation) as exc:
            errors.append(str(exc))
    raise CursorDecodeError(f"cannot read {path} back as {_type_name(target)}: {'; '.join(errors)}")


def _decode_generic(
    data: JSONValue, origin: Any, args: tuple[Any, ...], target: Any, path: str
) -> Any:
    if origin in (list, set, frozenset) or origin is Sequence:
        _expect(isinstance(data, list), data, target, path)
        assert isinstance(data, list)
        item_type = args[0] if args else None
        items = [_decode(item, item_type, f"{path}[{i}]") for i, item in enumerate(data)]
        return items if origin in (list, Sequence) else origin(items)
    if origin is tuple:
        _expect(isinstance(data, list), data, target, path)
        assert isinstance(data, list)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(item, args[0], f"{path}[{i}]") for i, item in enumerate(data))
        if args == ((),):
            args = ()
        _expect(len(args) == len(data), data, target, path)
        return tuple(
            _decode(item, arg, f"{path}[{i}]")
            for i, (item, arg) in enumerate(zip(data, args, strict=True))
        )
    if origin in (dict, Mapping):
        _expect(isinstance(data, dict), data, target, path)
        assert isinstance(data, dict)
        value_type = args[1] if len(args) == 2 else None
        return {key: _decode(item, value_type, f"{path}[{key!r}]") for key, item in data.items()}
    raise CursorDecodeError(f"cannot read {path} back: unsupported type {target!r}")


def _decode_class(data: Any, target: type, path: str) -> Any:
    if target is bool or target is str:
        _expect(isinstance(data, target), data, target, path)
        return data
    if target is int:
        _expect(isinstance(data, int) and not isinstance(data, bool), data, target, path)
        return data
    if target is float:
        _expect(isinstance(data, int | float) and not isinstance(data, bool), data, target, path)
        return float(data)
    if target in (list, tuple, set, frozenset, dict):
        _expect(isinstance(data, dict if target is dict else list), data, target, path)
        return data if target in (list, dict) else target(data)
    if issubclass(target, enum.Enum):
        for member in target:
            if _encode(member.value, path) == data:
                return member
        _mismatch(data, target, path)
    if target in (dt.datetime, dt.date, dt.time):
        _expect(isinstance(data, str), data, target, path)
        return target.fromisoformat(data)
    if target is uuid.UUID or target is Decimal:
        _expect(isinstance(data, str | int), data, target, path)
        try:
            return target(str(data))
        except (ValueError, InvalidOperation):
            _mismatch(data, target, path)
    if _PydanticModel is not None and issubclass(target, _PydanticModel):
        try:
            return target.model_validate(data)
        except ValueError as exc:
            raise CursorDecodeError(
                f"cannot read {path} back as {target.__qualname__}: {exc}"
            ) from exc
    if dataclasses.is_dataclass(target):
        return _decode_dataclass(data, target, path)
    raise CursorDecodeError(f"cannot read {path} back: unsupported type {target.__qualname__}")


def _decode_dataclass(data: JSONValue, target: type, path: str) -> Any:
    _expect(isinstance(data, dict), data, target, path)
    assert isinstance(data, dict)
    hints = _hints(target, f"the dataclass {target.__qualname__}")
    values = {}
    for field in dataclasses.fields(target):
        if not field.init:
            continue
        if field.name in data:
            values[field.name] = _decode(
                data[field.name], hints.get(field.name), f"{path}.{field.name}"
            )
    try:
        return target(**values)
    except TypeError as exc:
        raise CursorDecodeError(f"cannot read {path} back as {target.__qualname__}: {exc}") from exc


def _expect(ok: bool, data: JSONValue, target: Any, path: str) -> None:
    if not ok:
        _mismatch(data, target, path)


def _mismatch(data: JSONValue, target: Any, path: str) -> NoReturn:
    raise CursorDecodeError(f"cannot read {path} back as {_type_name(target)}: found {data!r}")


def _type_name(target: Any) -> str:
    return target.__qualname__ if isinstance(target, type) else repr(target)


def first_parameter_type(fn: Any, what: str) -> Any:
    """Return the annotation of ``fn``'s first parameter, or None when it has none."""
    hints = _hints(fn, what)
    try:
        parameters = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return None
    if not parameters:
        return None
    return hints.get(parameters[0])


def return_type(fn: Any, what: str) -> Any:
    """Return ``fn``'s return annotation, or None when it has none."""
    return _hints(fn, what).get("return")


def _hints(fn: Any, what: str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except NameError as exc:
        raise CursorDecodeError(
            f"cannot resolve the annotations of {what}: {exc}; pass the type explicitly"
        ) from exc
    except TypeError:
        return {}
