"""An assertion for typed round trips: equal, and of the same type all the way down."""

from __future__ import annotations

import dataclasses
from typing import Any

import pydantic


def assert_same(actual: Any, expected: Any, path: str = "value") -> None:
    """Assert ``actual == expected`` with the same type at every level of nesting."""
    assert type(actual) is type(expected), (
        f"{path}: {type(actual).__qualname__} is not {type(expected).__qualname__}"
    )
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys(), path
        for key, item in expected.items():
            assert_same(actual[key], item, f"{path}[{key!r}]")
    elif isinstance(expected, list | tuple):
        assert len(actual) == len(expected), path
        for index, item in enumerate(expected):
            assert_same(actual[index], item, f"{path}[{index}]")
    elif isinstance(expected, set | frozenset):
        assert actual == expected, path
        assert sorted(type(item).__qualname__ for item in actual) == sorted(
            type(item).__qualname__ for item in expected
        ), path
    elif dataclasses.is_dataclass(expected):
        for field in dataclasses.fields(expected):
            name = field.name
            assert_same(getattr(actual, name), getattr(expected, name), f"{path}.{name}")
    elif isinstance(expected, pydantic.BaseModel):
        for name, item in expected:
            assert_same(getattr(actual, name), item, f"{path}.{name}")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"
