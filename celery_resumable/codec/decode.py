"""Reading stored JSON back: a tagged value by its tag, plain JSON by the annotation.

A tagged value (``{"$type": ...}``) says what it is, so it comes back as the value that
was stored whatever the annotation; the annotation is then only checked. Plain JSON is
read as the annotation says, which also reads the untagged values of version 0.1
(ISO strings for dates, lists for tuples, objects for dataclasses).
"""

from __future__ import annotations

import collections.abc as abc
import dataclasses
import datetime as dt
import enum
import types
import typing
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn

from celery_resumable._types import JSONValue
from celery_resumable.codec.classes import Scope, class_kind
from celery_resumable.codec.tagged import DECODE_ERRORS, TAG, build, read_exact, read_tagged
from celery_resumable.errors import CursorDecodeError

__all__ = ["decode_value", "fits", "type_name"]

_LIST_ORIGINS = frozenset({list, abc.Sequence, abc.MutableSequence, abc.Collection, abc.Iterable})
_SET_ORIGINS: dict[Any, type] = {
    set: set,
    frozenset: frozenset,
    abc.Set: frozenset,
    abc.MutableSet: set,
}
_MAP_ORIGINS = frozenset({dict, abc.Mapping, abc.MutableMapping})
_ANY = (None, Any, object)
_JSON_SCALARS = frozenset({int, str, bool, float})
_SCALAR_BASES: dict[str, type | tuple[type, ...]] = {"int": int, "str": str, "float": (int, float)}


def decode_value(data: JSONValue, target: Any, path: str, scope: Scope) -> Any:
    """Rebuild the value stored as ``data``, read as ``target`` (None: as stored)."""
    kind = type(data)
    if kind is target and kind in _JSON_SCALARS:
        return data
    if kind is dict and TAG in data:  # type: ignore[operator]
        value = read_tagged(data, path, scope)  # type: ignore[arg-type]
        if not fits(value, target):
            raise CursorDecodeError(
                f"cannot read {path} back as {type_name(target)}: "
                f"the stored value is a {type(value).__qualname__}"
            )
        return value
    if target in _ANY or isinstance(target, typing.TypeVar):
        return read_exact(data, path, scope)
    if target is type(None):
        _expect(data is None, data, target, path)
        return None
    supertype = getattr(target, "__supertype__", None)
    if supertype is not None:  # NewType: the value is of its supertype
        return decode_value(data, supertype, path, scope)
    origin = typing.get_origin(target)
    args = typing.get_args(target)
    if origin is typing.Annotated:
        return decode_value(data, args[0], path, scope)
    if origin is typing.Union or origin is types.UnionType:
        return _decode_union(data, args, target, path, scope)
    if origin is typing.Literal:
        for choice in args:
            stored = _plain(choice)
            if type(stored) is type(data) and stored == data:
                return choice
        _mismatch(data, target, path)
    if origin is not None:
        return _decode_generic(data, origin, args, target, path, scope)
    if isinstance(target, type):
        return _decode_class(data, target, path, scope)
    raise CursorDecodeError(f"cannot read {path} back: unsupported type {target!r}")


def fits(value: object, target: Any) -> bool:
    """Whether ``value`` (rebuilt from a tagged value) is of the type ``target`` names."""
    if target in _ANY or isinstance(target, typing.TypeVar):
        return True
    supertype = getattr(target, "__supertype__", None)
    if supertype is not None:
        return fits(value, supertype)
    origin = typing.get_origin(target)
    if origin is typing.Annotated:
        return fits(value, typing.get_args(target)[0])
    if origin is typing.Union or origin is types.UnionType:
        return any(fits(value, member) for member in typing.get_args(target))
    if origin is typing.Literal:
        return any(
            type(value) is type(choice) and value == choice for choice in typing.get_args(target)
        )
    if origin is not None:
        return isinstance(origin, type) and isinstance(value, origin)
    if isinstance(target, type):
        if typing.is_typeddict(target):
            return type(value) is dict
        return isinstance(value, target)
    return False


# -- plain JSON, read as the annotation says ----------------------------------------------


def _decode_union(
    data: JSONValue, args: tuple[Any, ...], target: Any, path: str, scope: Scope
) -> Any:
    if data is None and type(None) in args:
        return None
    # A member that takes the JSON as it is comes first: an int stays an int in
    # ``Decimal | int``, as it was when it was stored.
    members = sorted(
        (arg for arg in args if arg is not type(None)), key=lambda arg: not _takes(data, arg)
    )
    errors = []
    for member in members:
        try:
            return decode_value(data, member, path, scope)
        except (CursorDecodeError, *DECODE_ERRORS) as exc:
            errors.append(str(exc))
    raise CursorDecodeError(f"cannot read {path} back as {type_name(target)}: {'; '.join(errors)}")


def _takes(data: JSONValue, target: Any) -> bool:
    """Whether ``target`` reads ``data`` as the same JSON value, without conversion."""
    while getattr(target, "__supertype__", None) is not None:
        target = target.__supertype__
    origin = typing.get_origin(target) or target
    kind = type(data)
    if kind is bool:
        return origin is bool
    if kind is int:
        return origin is int or origin is float
    if kind is float:
        return origin is float
    if kind is str:
        return origin is str
    if kind is list:
        return origin in _LIST_ORIGINS
    if kind is dict:
        return origin in _MAP_ORIGINS or (isinstance(target, type) and typing.is_typeddict(target))
    return target in _ANY


def _decode_generic(
    data: JSONValue, origin: Any, args: tuple[Any, ...], target: Any, path: str, scope: Scope
) -> Any:
    if origin in _LIST_ORIGINS or origin in _SET_ORIGINS:
        _expect(isinstance(data, list), data, target, path)
        assert isinstance(data, list)
        item_type = args[0] if args else None
        items = [
            decode_value(item, item_type, f"{path}[{i}]", scope) for i, item in enumerate(data)
        ]
        return items if origin in _LIST_ORIGINS else _SET_ORIGINS[origin](items)
    if origin is tuple:
        _expect(isinstance(data, list), data, target, path)
        assert isinstance(data, list)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(
                decode_value(item, args[0], f"{path}[{i}]", scope) for i, item in enumerate(data)
            )
        if args == ((),):
            args = ()
        _expect(len(args) == len(data), data, target, path)
        return tuple(
            decode_value(item, arg, f"{path}[{i}]", scope)
            for i, (item, arg) in enumerate(zip(data, args, strict=True))
        )
    if origin in _MAP_ORIGINS:
        _expect(isinstance(data, dict), data, target, path)
        assert isinstance(data, dict)
        value_type = args[1] if len(args) == 2 else None
        return {
            key: decode_value(item, value_type, f"{path}[{key!r}]", scope)
            for key, item in data.items()
        }
    raise CursorDecodeError(f"cannot read {path} back: unsupported type {target!r}")


def _decode_class(data: Any, target: Any, path: str, scope: Scope) -> Any:
    if target is bool or target is str:
        _expect(isinstance(data, target), data, target, path)
        return data
    if target is int or target is float:
        # An int stays an int under ``float``: that is what was stored.
        allowed = int if target is int else (int, float)
        _expect(isinstance(data, allowed) and not isinstance(data, bool), data, target, path)
        return data
    if target in (list, tuple, set, frozenset, dict):
        _expect(isinstance(data, dict if target is dict else list), data, target, path)
        return data if target in (list, dict) else target(data)
    if typing.is_typeddict(target):
        _expect(isinstance(data, dict), data, target, path)
        assert isinstance(data, dict)
        hints = _class_hints(target)
        return {
            key: decode_value(item, hints.get(key), f"{path}[{key!r}]", scope)
            for key, item in data.items()
        }
    if target in (dt.datetime, dt.date, dt.time):
        _expect(isinstance(data, str), data, target, path)
        return target.fromisoformat(data)
    if target is uuid.UUID or target is Decimal:
        _expect(isinstance(data, str | int) and not isinstance(data, bool), data, target, path)
        try:
            return target(str(data))
        except (ValueError, InvalidOperation):
            _mismatch(data, target, path)
    kind = class_kind(target)
    if kind == "enum":
        for member in target:
            stored = _plain(member.value)
            if type(stored) is type(data) and stored == data:
                return member
        if isinstance(data, int | str) and not isinstance(data, bool):
            try:  # a combination of flags, or an alias
                member = target(data)
            except ValueError:
                _mismatch(data, target, path)
            if type(_plain(member.value)) is type(data):
                return member
        _mismatch(data, target, path)
    if kind == "pydantic":
        return build(target, path, lambda: target.model_validate(data))
    if kind == "dataclass":
        return _decode_dataclass(data, target, path, scope)
    if kind == "namedtuple":
        _expect(isinstance(data, list), data, target, path)
        assert isinstance(data, list)
        hints = _class_hints(target)
        names = target._fields
        _expect(len(data) <= len(names), data, target, path)
        values = [
            decode_value(item, hints.get(name), f"{path}.{name}", scope)
            for item, name in zip(data, names, strict=False)
        ]
        return build(target, path, lambda: target(*values))
    if kind is not None:  # a subclass of int, str or float
        base = _SCALAR_BASES[kind]
        _expect(isinstance(data, base) and not isinstance(data, bool), data, target, path)
        return build(target, path, lambda: target(data))
    raise CursorDecodeError(f"cannot read {path} back: unsupported type {target.__qualname__}")


def _decode_dataclass(data: JSONValue, target: type, path: str, scope: Scope) -> Any:
    _expect(isinstance(data, dict), data, target, path)
    assert isinstance(data, dict)
    hints = _class_hints(target)
    values = {}
    for field in dataclasses.fields(target):
        if field.init and field.name in data:
            values[field.name] = decode_value(
                data[field.name], hints.get(field.name), f"{path}.{field.name}", scope
            )
    try:
        return target(**values)
    except TypeError as exc:
        raise CursorDecodeError(f"cannot read {path} back as {target.__qualname__}: {exc}") from exc


def _class_hints(target: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(target)
    except NameError as exc:
        raise CursorDecodeError(
            f"cannot resolve the annotations of {target.__qualname__}: {exc}; "
            "define the classes its fields name at module level"
        ) from exc


def _plain(value: object) -> object:
    """The JSON that version 0.1 stored for an enum member's value or a Literal choice."""
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _expect(ok: bool, data: JSONValue, target: Any, path: str) -> None:
    if not ok:
        _mismatch(data, target, path)


def _mismatch(data: JSONValue, target: Any, path: str) -> NoReturn:
    raise CursorDecodeError(f"cannot read {path} back as {type_name(target)}: found {data!r}")


def type_name(target: Any) -> str:
    """How messages name a type: a class by its qualified name, anything else by repr."""
    return target.__qualname__ if isinstance(target, type) else repr(target)
