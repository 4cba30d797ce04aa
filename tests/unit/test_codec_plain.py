"""Plain values read as plain annotations skip the store-time check, and nothing else does."""

from __future__ import annotations

import json
from typing import Any, Literal, Optional

import pytest

from celery_resumable.codec.encode import Scope, decode, encode
from celery_resumable.codec.fast_path import comes_back
from celery_resumable.errors import CursorEncodeError
from tests.unit.sameness import assert_same

PLAIN = [
    (7, int),
    (True, bool),
    ("ascii text", str),
    (2.5, float),
    ([1, 2, 3], list[int]),
    ([], list[str]),
    ({"a": [1.5, -2.0], "b": []}, dict[str, list[float]]),
    ([{"id": 1, "ok": 2}], list[dict[str, int]]),
    ([["a"], ["b", "c"]], list[list[str]]),
]


@pytest.mark.parametrize(("value", "target"), PLAIN)
def test_plain_values_of_plain_annotations_come_back_as_they_are(value: Any, target: Any) -> None:
    # Given a plain value read back as a plain annotation
    assert comes_back(value, target)

    # When it is stored (through JSON text, as a database keeps it) and read back
    data = encode(value, "value", scope=Scope(target))
    stored = json.loads(json.dumps(data))

    # Then it comes back equal and of the same types, without any tag
    assert stored == value
    assert_same(decode(stored, target), value)


MISMATCHED = [
    ([1, True], list[int]),
    ([1, 2.5], list[int]),
    ([1.0], list[int]),
    ({"a": 1}, dict[str, str]),
    (["x", 1], list[str]),
    ([[1]], list[int]),
]


@pytest.mark.parametrize(("value", "target"), MISMATCHED)
def test_values_that_differ_from_their_annotation_are_still_refused(
    value: Any, target: Any
) -> None:
    assert not comes_back(value, target)
    with pytest.raises(CursorEncodeError):
        encode(value, "value", scope=Scope(target))


NOT_KNOWN = [
    ([True], list[int]),  # a bool is not an int here
    ("caf\u00e9", str),  # stored as it is, but checked the long way
    ("a\x00b", str),  # stored tagged
    (1e17, float),  # stored tagged
    (float("nan"), float),
    ((1, 2), list[int]),
    ([1], list),
    ([1], Optional[list[int]]),  # noqa: UP045 - unions are checked the long way
    ("a", Literal["a"]),
    ({1: "a"}, dict[int, str]),
    ([1], Any),
]


@pytest.mark.parametrize(("value", "target"), NOT_KNOWN)
def test_anything_else_is_left_to_the_full_check(value: Any, target: Any) -> None:
    assert not comes_back(value, target)


def test_an_annotation_that_cannot_be_hashed_is_left_to_the_full_check() -> None:
    class Unhashable:
        __hash__ = None  # type: ignore[assignment]

    assert not comes_back([1], Unhashable())
