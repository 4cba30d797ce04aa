"""Reading back a value stored tagged: ``{"$type": ...}`` says what to rebuild.

No annotation is needed: a tagged value comes back as it was stored. A stored class is
looked up by its ``Scope`` (never imported) and built field by field.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import typing
import uuid
import zoneinfo
from decimal import Decimal, InvalidOperation
from typing import Any

from celery_resumable._types import JSONValue
from celery_resumable.codec.classes import PydanticModel, Scope
from celery_resumable.errors import CursorDecodeError

__all__ = ["DECODE_ERRORS", "TAG", "build", "read_exact", "read_tagged"]

TAG = "$type"

# What reading malformed data can raise from Python's own constructors.
DECODE_ERRORS = (TypeError, ValueError, KeyError, AttributeError, InvalidOperation)

_VALIDATE_BY_NAME: dict[str, Any] = {}
if PydanticModel is not None and (
    "by_name" in inspect.signature(PydanticModel.model_validate).parameters
):  # pragma: no branch - pydantic >= 2.11
    _VALIDATE_BY_NAME = {"by_name": True}


def read_exact(data: JSONValue, path: str, scope: Scope) -> Any:
    """Rebuild a value stored by this version: tags say everything, no annotation needed."""
    kind = type(data)
    if kind is list:
        assert isinstance(data, list)
        return [read_exact(item, f"{path}[{index}]", scope) for index, item in enumerate(data)]
    if kind is dict:
        assert isinstance(data, dict)
        if TAG in data:
            return read_tagged(data, path, scope)
        return {key: read_exact(item, f"{path}[{key!r}]", scope) for key, item in data.items()}
    return data


def read_tagged(data: dict[str, JSONValue], path: str, scope: Scope) -> Any:
    kind = data[TAG]
    reader = _READERS.get(kind) if isinstance(kind, str) else None
    if reader is None:
        raise CursorDecodeError(
            f"cannot read {path} back: unknown stored type {kind!r} "
            "(written by a newer version of celery-resumable?)"
        )
    return reader(data, path, scope)


def _items(data: dict[str, JSONValue], path: str, scope: Scope) -> list[Any]:
    items = data["items"]
    if type(items) is not list:
        raise TypeError(f"'items' is {items!r}, not a list")
    return [read_exact(item, f"{path}[{index}]", scope) for index, item in enumerate(items)]


def _fields(
    data: dict[str, JSONValue], names: typing.Iterable[str], path: str, scope: Scope
) -> Any:
    fields = data["fields"]
    if type(fields) is not dict:
        raise TypeError(f"'fields' is {fields!r}, not an object")
    return {
        name: read_exact(fields[name], f"{path}.{name}", scope) for name in names if name in fields
    }


def _text(data: dict[str, JSONValue], key: str = "value") -> str:
    value = data[key]
    if type(value) is not str:
        raise TypeError(f"{key!r} is {value!r}, not a string")
    return value


def _class(data: dict[str, JSONValue], kind: str, path: str, scope: Scope) -> type:
    name = _text(data, "class")
    found = scope.resolve(name, kind)
    if found is None:
        module, _, qualname = name.partition(":")
        raise CursorDecodeError(
            f"cannot read {path} back: the class {qualname} (module {module}) is not among "
            "the classes the step's code holds (its annotations, its function's closure "
            "and globals, the modules imported); define the class at module level, or use "
            "it in the step's function or its annotation"
        )
    return found


def build(cls: type, path: str, make: typing.Callable[[], Any]) -> Any:
    try:
        return make()
    except DECODE_ERRORS as exc:  # pydantic's ValidationError is a ValueError
        raise CursorDecodeError(f"cannot read {path} back as {cls.__qualname__}: {exc}") from exc


def _read_tuple(data: dict[str, JSONValue], path: str, scope: Scope) -> Any:
    return tuple(_items(data, path, scope))


def _read_set(data: dict[str, JSONValue], path: str, scope: Scope) -> Any:
    return set(_items(data, path, scope))


def _read_frozenset(data: dict[str, JSONValue], path: str, scope: Scope) -> Any:
    return frozenset(_items(data, path, scope))


def _read_dict(data: dict[str, JSONValue], path: str, scope: Scope) -> Any:
    value = data["value"]
    if type(value) is not dict:
        raise TypeError(f"'value' is {value!r}, not an object")
    return {key: read_exact(item, f"{path}[{key!r}]", scope) for key, item in value.items()}


def _read_datetime(data: dict[str, JSONValue], path: str, scope: Scope) -> Any:
    value = dt.datetime.fromisoformat(_text(data))
    zone = data.get("zone")
    if zone is not None:  # the same wall time in the same zone, as Python compares them
        value = value.replace(tzinfo=zoneinfo.ZoneInfo(_text(data, "zone")))
    return value.replace(fold=1) if data.get("fold") == 1 else value


def _read_date(data: dict[str, JSONValue], path: str, scope: Scope) -> Any:
    return dt.date.fromisoformat(_text(data))


def _read_time(data: dict[str, JSONValue], path: str, scope: Scope) -> Any:
    return dt.time.fromisoformat(_text(data))


def _read_timedelta(data: dict[str, JSONValue], path: str, scope: Scope) -> Any:
    parts = {key: data[key] for key in ("days", "seconds", "microseconds")}
    if any(type(part) is not int for part in parts.values()):
        raise TypeError(f"a timedelta needs whole numbers, not {parts!r}")
    return dt.timedelta(**parts)  # type: ignore[arg-type]


def _read_uuid(data: dict[str, JSONValue], path: str, scope: Scope) -> Any:
    return uuid.UUID(_text(data))


def _read_decimal(data: dict[str, JSONValue], path: str, scope: Scope) -> Any:
    return Decimal(_text(data))


def _read_float(data: dict[str, JSONValue], path: str, scope: Scope) -> Any:
    number = float(_text(data))
    if "class" not in data:
        return number
    cls = _class(data, "float", path, scope)
    return build(cls, path, lambda: cls(number))


def _read_int(data: dict[str, JSONValue], path: str, scope: Scope) -> Any:
    number = data["value"]
    if type(number) is not int:
        raise TypeError(f"'value' is {number!r}, not a whole number")
    cls = _class(data, "int", path, scope)
    return build(cls, path, lambda: cls(number))


def _read_str(data: dict[str, JSONValue], path: str, scope: Scope) -> Any:
    if "parts" in data:  # a string with NUL characters, split at them
        parts = data["parts"]
        if type(parts) is not list or any(type(part) is not str for part in parts):
            raise TypeError(f"'parts' is {parts!r}, not a list of strings")
        text = "\x00".join(parts)  # type: ignore[arg-type]
    else:
        text = _text(data)
    if "class" not in data:
        return text
    cls = _class(data, "str", path, scope)
    return build(cls, path, lambda: cls(text))


def _read_enum(data: dict[str, JSONValue], path: str, scope: Scope) -> Any:
    cls = _class(data, "enum", path, scope)
    value = read_exact(data["value"], f"{path}.value", scope)
    return build(cls, path, lambda: cls(value))


def _read_dataclass(data: dict[str, JSONValue], path: str, scope: Scope) -> Any:
    cls = _class(data, "dataclass", path, scope)
    names = [field.name for field in dataclasses.fields(cls) if field.init]
    values = _fields(data, names, path, scope)
    return build(cls, path, lambda: cls(**values))


def _read_namedtuple(data: dict[str, JSONValue], path: str, scope: Scope) -> Any:
    cls = _class(data, "namedtuple", path, scope)
    values = _fields(data, cls._fields, path, scope)  # type: ignore[attr-defined]
    return build(cls, path, lambda: cls(**values))


def _read_pydantic(data: dict[str, JSONValue], path: str, scope: Scope) -> Any:
    cls = _class(data, "pydantic", path, scope)
    fields = data["fields"]
    names = list(fields) if type(fields) is dict else []
    values = _fields(data, names, path, scope)
    return build(cls, path, lambda: cls.model_validate(values, **_VALIDATE_BY_NAME))  # type: ignore[attr-defined]


_Reader = typing.Callable[[dict[str, JSONValue], str, Scope], Any]
_READERS: dict[str, _Reader] = {
    "tuple": _read_tuple,
    "set": _read_set,
    "frozenset": _read_frozenset,
    "dict": _read_dict,
    "datetime": _read_datetime,
    "date": _read_date,
    "time": _read_time,
    "timedelta": _read_timedelta,
    "uuid": _read_uuid,
    "decimal": _read_decimal,
    "float": _read_float,
    "int": _read_int,
    "str": _read_str,
    "enum": _read_enum,
    "dataclass": _read_dataclass,
    "namedtuple": _read_namedtuple,
    "pydantic": _read_pydantic,
}
