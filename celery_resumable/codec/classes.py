"""Where the codec finds classes: the objects a step's code already holds.

A stored value of a class (a dataclass, a pydantic model, an enum, a named tuple, a
subclass of ``int``, ``str`` or ``float``) names its class as ``module:qualname``.
Reading it back never imports anything: the name is looked up, in this order, among
the classes the annotation in use names (its arguments, and the field annotations of
the classes it names, recursively), the cells of the step function's closure, the step
function's globals, and the modules already imported (``sys.modules``), walking their
``__dict__`` only, so no ``__getattr__`` hook runs. The object found must be a class of
the kind the stored value says.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import sys
import types
import typing
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from celery_resumable.errors import CursorDecodeError

try:  # pydantic is optional
    from pydantic import BaseModel as PydanticModel
except ImportError:  # pragma: no cover - exercised only without pydantic
    PydanticModel = None  # type: ignore[assignment,misc]

T = TypeVar("T")

# Values kept per function: by its id, a weak reference to it, its annotations, the value.
PerFunction = dict[int, tuple["weakref.ref[Any]", object, T]]

__all__ = [
    "PydanticModel",
    "Scope",
    "class_kind",
    "field_hints",
    "first_parameter_type",
    "is_named_tuple",
    "reference",
    "result_scope",
    "return_type",
]


def reference(cls: type) -> str:
    """The name under which a value of ``cls`` is stored: ``module:qualname``."""
    return f"{cls.__module__}:{cls.__qualname__}"


def is_named_tuple(cls: type) -> bool:
    """Whether ``cls`` is a named tuple class (``typing.NamedTuple`` or ``namedtuple``)."""
    return issubclass(cls, tuple) and isinstance(getattr(cls, "_fields", None), tuple)


def class_kind(cls: type) -> str | None:
    """The stored kind of a class the codec rebuilds by reference, or None."""
    if issubclass(cls, enum.Enum):
        return "enum"
    if PydanticModel is not None and issubclass(cls, PydanticModel):
        return "pydantic"
    if dataclasses.is_dataclass(cls):
        return "dataclass"
    if is_named_tuple(cls):
        return "namedtuple"
    for base, kind in ((int, "int"), (str, "str"), (float, "float")):
        if issubclass(cls, base) and cls is not base and cls is not bool:
            return kind
    return None


class Scope:
    """The annotation a value is read back with, and the step function whose objects it sees.

    ``trusted`` remembers the value types already checked to come back unchanged, so
    that a cursor set many times in one step is checked once per type.
    """

    __slots__ = ("_annotated", "_cache", "_function", "cacheable", "target", "trusted")

    def __init__(self, target: Any = None, function: Any = None) -> None:
        self.target = target
        # Held weakly: a scope kept per function (``result_scope``) must not keep its
        # function, and the closure of a task body's run, alive.
        self._function = _weakly(function)
        # A Literal makes the check depend on the value, not only on its type.
        self.cacheable = target is None or _without_literal(target)
        self.trusted: set[Any] = set()
        self._annotated: dict[str, type] | None = None
        self._cache: dict[str, type] = {}

    @property
    def function(self) -> Any:
        """The step function whose objects the value sees (None: none, or gone)."""
        return self._function()

    def resolve(self, name: str, kind: str) -> type | None:
        """The class stored as ``name`` (``module:qualname``) of ``kind``, or None."""
        found = self._cache.get(name)
        if found is None:
            found = self._find(name)
            if found is None:
                return None
            self._cache[name] = found
            _collect(found, self._annotations(), set())  # its fields' classes too
        return found if class_kind(found) == kind else None

    def _annotations(self) -> dict[str, type]:
        if self._annotated is None:
            self._annotated = {}
            _collect(self.target, self._annotated, set())
            if isinstance(self.function, type):
                _collect(self.function, self._annotated, set())
        return self._annotated

    def _find(self, name: str) -> type | None:
        annotated = self._annotations()
        found = annotated.get(name)
        if found is not None:
            return found
        function = _plain_function(self.function)
        for value in _closure(function).values():
            if isinstance(value, type) and reference(value) == name:
                return value
        module, _, qualname = name.partition(":")
        namespaces = [getattr(function, "__globals__", None)]
        if module in sys.modules:
            namespaces.append(vars(sys.modules[module]))
        for namespace in namespaces:
            if isinstance(namespace, dict):
                found = _walk(namespace, qualname)
                if found is not None and reference(found) == name:
                    return found
        # A class moved to another module since the value was stored: the annotation
        # names it, alone under its name.
        moved = [cls for cls in annotated.values() if cls.__qualname__ == qualname]
        return moved[0] if len(moved) == 1 else None


def _walk(namespace: dict[str, Any], qualname: str) -> type | None:
    parts = qualname.split(".")
    if "<locals>" in parts:
        return None
    found = namespace.get(parts[0])
    for part in parts[1:]:
        if not isinstance(found, type):
            return None
        found = vars(found).get(part)
    return found if isinstance(found, type) else None


def _collect(annotation: Any, found: dict[str, type], seen: set[int]) -> None:
    """Add the classes ``annotation`` names to ``found``, with their fields' classes."""
    if id(annotation) in seen or annotation is None:
        return
    seen.add(id(annotation))
    supertype = getattr(annotation, "__supertype__", None)
    if supertype is not None:  # NewType
        _collect(supertype, found, seen)
        return
    if typing.get_origin(annotation) is typing.Literal:
        for choice in typing.get_args(annotation):
            if isinstance(choice, enum.Enum):
                _collect(type(choice), found, seen)
        return
    origin = typing.get_origin(annotation)
    if isinstance(origin, type) and origin.__module__ != "builtins":
        _collect(origin, found, seen)  # a generic class of the user's: Box[int]
    for argument in typing.get_args(annotation):
        _collect(argument, found, seen)
    if isinstance(annotation, type) and origin is None:
        found.setdefault(reference(annotation), annotation)
        if class_kind(annotation) is not None or typing.is_typeddict(annotation):
            for hint in field_hints(annotation).values():
                _collect(hint, found, seen)


def field_hints(cls: type) -> dict[str, Any]:
    """The resolved field annotations of ``cls``; empty when they cannot be resolved."""
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - an unresolvable hint only narrows the lookup
        return {}


def _without_literal(annotation: Any) -> bool:
    try:
        return _without_literal_cached(annotation)
    except TypeError:  # an unhashable annotation
        return not _mentions_literal(annotation, set())


@functools.lru_cache(maxsize=256)
def _without_literal_cached(annotation: Any) -> bool:
    return not _mentions_literal(annotation, set())


def _mentions_literal(annotation: Any, seen: set[int]) -> bool:
    if id(annotation) in seen:
        return False
    seen.add(id(annotation))
    if typing.get_origin(annotation) is typing.Literal:
        return True
    supertype = getattr(annotation, "__supertype__", None)
    if supertype is not None:
        return _mentions_literal(supertype, seen)
    if isinstance(annotation, type) and typing.is_typeddict(annotation):
        return any(_mentions_literal(hint, seen) for hint in field_hints(annotation).values())
    return any(_mentions_literal(argument, seen) for argument in typing.get_args(annotation))


# -- the step function's own objects ---------------------------------------------------


def _plain_function(function: Any) -> Any:
    """The Python function behind a bound method, a partial or a decorated function."""
    for _ in range(100):
        if isinstance(function, functools.partial):
            function = function.func
        elif isinstance(function, types.MethodType):
            function = function.__func__
        elif inspect.isfunction(function) and hasattr(function, "__wrapped__"):
            function = function.__wrapped__
        else:
            return function
    return function


def _closure(function: Any) -> dict[str, Any]:
    code = getattr(function, "__code__", None)
    cells = getattr(function, "__closure__", None)
    if code is None or not cells:
        return {}
    variables = {}
    for name, cell in zip(code.co_freevars, cells, strict=False):
        try:
            variables[name] = cell.cell_contents
        except ValueError:  # a cell not yet assigned
            continue
    return variables


# Resolved annotations per function: a step function defined at module level is
# resolved once, not at every run. Kept while the function lives and its annotations
# are the same dict.
_resolved: PerFunction[dict[str, Any]] = {}


def _hints(function: Any, what: str, advice: str) -> dict[str, Any]:
    return _per_function(_resolved, function, lambda: _resolve_hints(function, what, advice))


def _weakly(function: Any) -> Callable[[], Any]:
    """A weak reference to ``function``, or a call returning it where it takes none."""
    try:
        return weakref.ref(function)
    except TypeError:  # None, a builtin type's instance without weak references
        return lambda: function


def _per_function(cache: PerFunction[T], function: Any, make: Callable[[], T]) -> T:
    """``make()``, kept in ``cache`` for ``function`` while it lives and its annotations
    stay the same dict.

    Kept by ``id``, with a weak reference that tells a live function from a new one
    given the id of a dead one, and removes the entry when the function goes: one dict
    lookup, where a WeakKeyDictionary makes a weak reference at every lookup.
    """
    annotations = getattr(function, "__annotations__", None)
    key = id(function)
    cached = cache.get(key)
    if cached is not None and cached[0]() is function and cached[1] is annotations:
        return cached[2]
    value = make()
    try:
        alive = weakref.ref(function, functools.partial(_forget, cache, key))
    except TypeError:  # a builtin or another object without weak references
        return value
    cache[key] = (alive, annotations, value)
    return value


def _forget(cache: PerFunction[Any], key: int, gone: weakref.ref[Any]) -> None:
    # Only the entry of the function that went: its id may be a new function's already.
    entry = cache.get(key)
    if entry is not None and entry[0] is gone:
        cache.pop(key, None)


def _resolve_hints(function: Any, what: str, advice: str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function)
    except NameError:
        # A class local to the task body, named in a string annotation: the function
        # holds it in its closure when its body uses it.
        closure = _closure(_plain_function(function))
        try:
            return typing.get_type_hints(function, localns=closure)
        except NameError as exc:
            raise CursorDecodeError(
                f"cannot resolve the annotations of {what}: {exc}; {advice}"
            ) from exc
    except TypeError:
        return {}


def first_parameter_type(fn: Any, what: str) -> Any:
    """Return the annotation of ``fn``'s first parameter, or None when it has none.

    Raises CursorDecodeError when the annotation names a class that cannot be found.
    """
    hints = _hints(
        fn,
        what,
        "define the class at module level, use it in the function's body, "
        "or pass the type explicitly",
    )
    try:
        parameters = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return None
    if not parameters:
        return None
    return hints.get(parameters[0])


def return_type(fn: Any, what: str) -> Any:
    """Return ``fn``'s return annotation, or None when it has none.

    Raises CursorDecodeError when the annotation names a class that cannot be found.
    """
    advice = "define the class at module level, or use it in the function's body"
    return _hints(fn, what, advice).get("return")


# The scope a step function's results are read back with, per function: what it has
# learnt (the types that come back, the classes found) holds for every call of the same
# function with the same annotations, in every run.
_result_scopes: PerFunction[Scope] = {}


def result_scope(fn: Any, step: str) -> Scope:
    """The scope the results of ``fn``, the function of step ``step``, are read back with.

    Raises CursorDecodeError when the return annotation names a class that cannot be found.
    """
    return _per_function(
        _result_scopes, fn, lambda: Scope(return_type(fn, f"the function of step {step!r}"), fn)
    )
