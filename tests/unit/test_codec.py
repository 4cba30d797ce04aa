"""Unit tests of the typed JSON codec of cursors and step results."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import enum
import gc
import json
import math
import operator
import sys
import uuid
import zoneinfo
from decimal import Decimal
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    Literal,
    NamedTuple,
    NewType,
    Optional,
    TypedDict,
    TypeVar,
)

import pydantic
import pytest

from celery_resumable.codec.classes import _result_scopes, result_scope
from celery_resumable.codec.encode import Scope, decode, encode, first_parameter_type, return_type
from celery_resumable.errors import CursorDecodeError, CursorEncodeError
from tests.unit.sameness import assert_same

# --- types used by the tests -------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Corner(enum.Enum):
    TOP_LEFT = (0, 0)
    BOTTOM_RIGHT = (1, 1)


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


@dataclasses.dataclass
class Segment:
    start: Point
    end: Point
    label: str


@dataclasses.dataclass
class Page:
    offset: int
    token: str | None = None
    limit: Optional[int] = None  # noqa: UP045 - the typing.Optional spelling is under test
    tags: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Totals:
    a: int
    b: int
    total: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.total = self.a + self.b


@dataclasses.dataclass
class Batch:
    rows: list[object]


class Opaque:
    """A class the codec does not know."""


class Pair(NamedTuple):
    left: int
    right: str


class Money(TypedDict):
    amount: Decimal
    day: dt.date


class UserId(int):
    """An int that says what it counts."""


class Sku(str):
    """A str that says what it names."""


class Ratio(float):
    """A float that says what it measures."""


class Permission(enum.Flag):
    READ = 1
    WRITE = 2


OrderId = NewType("OrderId", int)


@dataclasses.dataclass
class Invoice:
    lines: list[Pair]
    totals: dict[str, Decimal]
    owner: UserId
    paid_on: dt.date | None = None


class Address(pydantic.BaseModel):
    city: str
    postcode: str


class Customer(pydantic.BaseModel):
    name: str
    address: Address
    joined: dt.datetime


class Measurement(pydantic.BaseModel):
    value: float


class WithOpaque(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(arbitrary_types_allowed=True)

    thing: Opaque


@dataclasses.dataclass
class Order:
    customer: Customer
    amount: Decimal
    color: Color


if TYPE_CHECKING:  # a name only a type checker sees
    from collections import OrderedDict


@dataclasses.dataclass
class HiddenAnnotation:
    items: OrderedDict[str, int]


def _round_trip(value: object, target: Any) -> Any:
    """Encode ``value``, store it as JSON text, read it back and decode it as ``target``."""
    stored = json.dumps(encode(value), allow_nan=False)
    return decode(json.loads(stored), target)


UTC_PLUS_2 = dt.timezone(dt.timedelta(hours=2))
PARIS = zoneinfo.ZoneInfo("Europe/Paris")
CUSTOMER = Customer(
    name="Ada",
    address=Address(city="London", postcode="N1"),
    joined=dt.datetime(2024, 5, 1, 9, 30, tzinfo=dt.UTC),
)


# --- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "target"),
    [
        pytest.param(Point(1, 2), Point, id="dataclass"),
        pytest.param(Segment(Point(0, 0), Point(3, 4), "diag"), Segment, id="nested-dataclass"),
        pytest.param(Page(10), Page, id="dataclass-defaults"),
        pytest.param(Page(10, "abc", 50, ["a", "b"]), Page, id="dataclass-optionals-set"),
        pytest.param(Totals(1, 2), Totals, id="dataclass-init-false-field"),
        pytest.param(Address(city="Paris", postcode="75001"), Address, id="pydantic"),
        pytest.param(CUSTOMER, Customer, id="nested-pydantic"),
        pytest.param(
            Order(CUSTOMER, Decimal("12.50"), Color.GREEN), Order, id="pydantic-in-dataclass"
        ),
        pytest.param(dt.datetime(2024, 1, 2, 3, 4, 5, 678901), dt.datetime, id="naive-datetime"),
        pytest.param(dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC_PLUS_2), dt.datetime, id="tz"),
        pytest.param(dt.date(2024, 2, 29), dt.date, id="date"),
        pytest.param(dt.time(23, 59, 58, 123), dt.time, id="time"),
        pytest.param(dt.time(8, 0, tzinfo=dt.UTC), dt.time, id="tz-aware-time"),
        pytest.param(uuid.UUID("12345678-1234-5678-1234-567812345678"), uuid.UUID, id="uuid"),
        pytest.param(Decimal("0.1"), Decimal, id="decimal"),
        pytest.param(Decimal("-1E+3"), Decimal, id="decimal-exponent"),
        pytest.param(Color.RED, Color, id="enum"),
        pytest.param(Level.HIGH, Level, id="int-enum"),
        pytest.param((7, "seven"), tuple[int, str], id="tuple-fixed"),
        pytest.param((1, 2, 3), tuple[int, ...], id="tuple-variadic"),
        pytest.param((), tuple[int, ...], id="tuple-variadic-empty"),
        pytest.param([Point(1, 2), Point(3, 4)], list[Point], id="list-of-dataclasses"),
        pytest.param({"a": Point(1, 2)}, dict[str, Point], id="dict-of-dataclasses"),
        pytest.param({3, 1, 2}, set[int], id="set"),
        pytest.param(frozenset({"b", "a"}), frozenset[str], id="frozenset"),
        pytest.param({Point(1, 2), Point(0, 5)}, set[Point], id="set-of-dataclasses"),
        pytest.param(
            {"x": [(1, "a"), (2, "b")]}, dict[str, list[tuple[int, str]]], id="nested-containers"
        ),
        pytest.param(None, int | None, id="union-none"),
        pytest.param(5, int | None, id="union-value"),
        pytest.param(None, Optional[Point], id="optional-none"),  # noqa: UP045
        pytest.param(Point(1, 1), Optional[Point], id="optional-value"),  # noqa: UP045
        pytest.param(Point(1, 1), Point | None, id="dataclass-or-none"),
        pytest.param("b", Literal["a", "b"], id="literal-str"),
        pytest.param(2, Literal[1, 2], id="literal-int"),
        pytest.param("text", str, id="str"),
        pytest.param(True, bool, id="bool"),
        pytest.param(2.5, float, id="float"),
        pytest.param(10**30, int, id="big-int"),
        pytest.param(3, float, id="int-for-float"),
        pytest.param(1e300, float, id="float-with-an-exponent"),
        pytest.param(Pair(1, "a"), Pair, id="named-tuple"),
        pytest.param(Pair(1, "a"), tuple[int, str], id="named-tuple-as-tuple"),
        pytest.param(
            {"amount": Decimal("1.50"), "day": dt.date(2024, 1, 2)}, Money, id="typed-dict"
        ),
        pytest.param(OrderId(5), OrderId, id="new-type"),
        pytest.param(UserId(7), UserId, id="int-subclass"),
        pytest.param(Sku("A-1"), Sku, id="str-subclass"),
        pytest.param(Ratio(0.5), Ratio, id="float-subclass"),
        pytest.param(Permission.READ | Permission.WRITE, Permission, id="flag-combination"),
        pytest.param(dt.timedelta(days=-2, microseconds=7), dt.timedelta, id="timedelta"),
        pytest.param(dt.datetime(2024, 10, 27, 2, 30, tzinfo=PARIS), dt.datetime, id="zoned"),
        pytest.param(
            dt.datetime(2024, 10, 27, 2, 30, tzinfo=PARIS, fold=1), dt.datetime, id="zoned-fold"
        ),
        pytest.param(
            Invoice([Pair(1, "a")], {"net": Decimal("9.99")}, UserId(3), dt.date(2024, 5, 6)),
            Invoice,
            id="nested-classes",
        ),
        pytest.param(
            {"a": [dt.date(2024, 1, 1), None], "b": [(UserId(1), Decimal("1"))]},
            dict[str, list[Any]],
            id="nested-containers-of-typed-values",
        ),
        pytest.param({"$type": "mine", "items": (1,)}, dict[str, Any], id="dict-with-tag-key"),
        pytest.param("a\x00b", str, id="nul-in-str"),
        pytest.param(Decimal("NaN"), Decimal, id="decimal-nan"),
        pytest.param(frozenset({Color.RED}), frozenset[Color], id="frozenset-of-enums"),
    ],
)
@pytest.mark.parametrize("annotated", [True, False], ids=["annotated", "no-annotation"])
def test_round_trip_rebuilds_an_equal_value_of_the_same_type(
    value: object, target: Any, annotated: bool
) -> None:
    # When
    decoded = _round_trip(value, target if annotated else None)

    # Then
    if isinstance(value, Decimal) and value.is_nan():
        assert str(decoded) == "NaN"
    else:
        assert_same(decoded, value)
    assert type(decoded) is type(value)


def test_round_trip_keeps_the_utc_offset_of_an_aware_datetime() -> None:
    # Given
    value = dt.datetime(2024, 6, 1, 12, 0, tzinfo=UTC_PLUS_2)

    # When
    decoded = _round_trip(value, dt.datetime)

    # Then
    assert decoded.utcoffset() == dt.timedelta(hours=2)


def test_round_trip_of_a_naive_datetime_stays_naive() -> None:
    decoded = _round_trip(dt.datetime(2024, 6, 1, 12, 0), dt.datetime)

    assert decoded.tzinfo is None


def test_round_trip_rebuilds_nested_dataclass_instances() -> None:
    # Given
    value = Segment(Point(0, 0), Point(3, 4), "diag")

    # When
    decoded = _round_trip(value, Segment)

    # Then
    assert isinstance(decoded.start, Point)
    assert isinstance(decoded.end, Point)


def test_round_trip_rebuilds_nested_pydantic_models_and_their_datetimes() -> None:
    decoded = _round_trip(CUSTOMER, Customer)

    assert isinstance(decoded.address, Address)
    assert decoded.joined == CUSTOMER.joined
    assert decoded.joined.tzinfo is not None


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(None, id="none"),
        pytest.param(True, id="bool"),
        pytest.param(10**30, id="big-int"),
        pytest.param(1.5, id="float"),
        pytest.param(-(10.0**15), id="large-float"),
        pytest.param("text é ☃", id="str"),
        pytest.param([1, "a", None, [2.5]], id="list"),
        pytest.param({"k": [1, 2], "n": {"m": None}}, id="dict"),
    ],
)
def test_encode_keeps_json_values_as_plain_json(value: object) -> None:
    # When
    encoded = encode(value)

    # Then
    assert encoded == value
    assert json.loads(json.dumps(encoded, allow_nan=False)) == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(
            Point(1, 2),
            {"$type": "dataclass", "class": f"{__name__}:Point", "fields": {"x": 1, "y": 2}},
            id="dataclass",
        ),
        pytest.param(
            Address(city="A", postcode="B"),
            {
                "$type": "pydantic",
                "class": f"{__name__}:Address",
                "fields": {"city": "A", "postcode": "B"},
            },
            id="pydantic",
        ),
        pytest.param(
            Corner.TOP_LEFT,
            {
                "$type": "enum",
                "class": f"{__name__}:Corner",
                "value": {"$type": "tuple", "items": [0, 0]},
            },
            id="enum",
        ),
        pytest.param(
            Pair(1, "a"),
            {
                "$type": "namedtuple",
                "class": f"{__name__}:Pair",
                "fields": {"left": 1, "right": "a"},
            },
            id="named-tuple",
        ),
        pytest.param(
            UserId(7),
            {"$type": "int", "class": f"{__name__}:UserId", "value": 7},
            id="int-subclass",
        ),
        pytest.param(
            dt.datetime(2024, 1, 2, 3, 4, 5),
            {"$type": "datetime", "value": "2024-01-02T03:04:05"},
            id="datetime",
        ),
        pytest.param(
            dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
            {"$type": "datetime", "value": "2024-01-02T03:04:05+00:00"},
            id="aware-datetime",
        ),
        pytest.param(
            dt.datetime(2024, 7, 1, 12, tzinfo=PARIS),
            {"$type": "datetime", "value": "2024-07-01T12:00:00+02:00", "zone": "Europe/Paris"},
            id="zoned-datetime",
        ),
        pytest.param(dt.date(2024, 1, 2), {"$type": "date", "value": "2024-01-02"}, id="date"),
        pytest.param(dt.time(3, 4, 5), {"$type": "time", "value": "03:04:05"}, id="time"),
        pytest.param(
            dt.timedelta(days=1, seconds=2, microseconds=3),
            {"$type": "timedelta", "days": 1, "seconds": 2, "microseconds": 3},
            id="timedelta",
        ),
        pytest.param(
            uuid.UUID(int=1),
            {"$type": "uuid", "value": "00000000-0000-0000-0000-000000000001"},
            id="uuid",
        ),
        pytest.param(Decimal("1.10"), {"$type": "decimal", "value": "1.10"}, id="decimal-digits"),
        pytest.param((1, "a"), {"$type": "tuple", "items": [1, "a"]}, id="tuple"),
        pytest.param({3, 1, 2}, {"$type": "set", "items": [1, 2, 3]}, id="set-sorted"),
        pytest.param(
            frozenset({"b", "c", "a"}),
            {"$type": "frozenset", "items": ["a", "b", "c"]},
            id="frozenset",
        ),
        pytest.param({"k": (1, 2)}, {"k": {"$type": "tuple", "items": [1, 2]}}, id="tuple-in-dict"),
        pytest.param(1e16, {"$type": "float", "value": "1e+16"}, id="float-with-an-exponent"),
        pytest.param("a\x00b\x00", {"$type": "str", "parts": ["a", "b", ""]}, id="nul-in-str"),
        pytest.param(
            {"$type": "mine", "n": 1},
            {"$type": "dict", "value": {"$type": "mine", "n": 1}},
            id="dict-using-the-tag-key",
        ),
    ],
)
def test_encode_tags_what_json_cannot_say(value: object, expected: object) -> None:
    # When
    encoded = encode(value)

    # Then
    assert encoded == expected
    assert json.loads(json.dumps(encoded, allow_nan=False)) == expected


def test_encode_of_a_set_of_unorderable_items_keeps_every_item() -> None:
    # Given
    value = {Point(1, 2), Point(3, 4)}

    # When
    encoded = encode(value)

    # Then
    assert isinstance(encoded, dict)
    items = encoded["items"]
    assert isinstance(items, list)
    fields = sorted((item["fields"] for item in items), key=json.dumps)  # type: ignore[index]
    assert fields == [{"x": 1, "y": 2}, {"x": 3, "y": 4}]


@pytest.mark.parametrize(
    ("data", "target", "expected"),
    [
        pytest.param({"offset": 1}, Page, Page(1, None, None, []), id="missing-defaults"),
        pytest.param({"offset": 1, "token": None}, Page, Page(1), id="explicit-none"),
        pytest.param({"offset": 1, "token": "t"}, Page, Page(1, "t"), id="optional-with-value"),
        pytest.param({"x": 1, "y": 2, "z": 3}, Point, Point(1, 2), id="unknown-key-ignored"),
        pytest.param({"a": 1, "b": 2, "total": 99}, Totals, Totals(1, 2), id="init-false-redone"),
    ],
)
def test_decode_dataclass_fills_defaults_and_ignores_unknown_keys(
    data: Any, target: Any, expected: object
) -> None:
    assert decode(data, target) == expected


@pytest.mark.parametrize(
    ("data", "target", "expected"),
    [
        pytest.param(["b", "a"], list, ["b", "a"], id="bare-list"),
        pytest.param([1, 2], tuple, (1, 2), id="bare-tuple"),
        pytest.param([1, 2], set, {1, 2}, id="bare-set"),
        pytest.param([1, 2], frozenset, frozenset({1, 2}), id="bare-frozenset"),
        pytest.param({"a": 1}, dict, {"a": 1}, id="bare-dict"),
        pytest.param("x", int | str, "x", id="union-second-member"),
        pytest.param(1.0, int | float, 1.0, id="union-float-member"),
        pytest.param([], tuple[()], (), id="empty-tuple"),
    ],
)
def test_decode_of_bare_containers_and_unions(data: Any, target: Any, expected: object) -> None:
    # When
    decoded = decode(data, target)

    # Then
    assert decoded == expected
    assert type(decoded) is type(expected)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"a": [1, {"b": None}], "c": 1.5}, id="object"),
        pytest.param([1, "x", True, None], id="array"),
        pytest.param("2024-01-01", id="iso-string-stays-a-string"),
        pytest.param(None, id="null"),
    ],
)
@pytest.mark.parametrize("target", [None, Any, object])
def test_decode_without_a_type_returns_the_plain_json(data: Any, target: Any) -> None:
    assert decode(data, target) == data


# --- int and float -----------------------------------------------------------------------


def test_decode_float_target_accepts_an_int_and_keeps_it_an_int() -> None:
    # When an int was stored by a function annotated ``-> float``
    decoded = decode(3, float)

    # Then it comes back as the int the function returned
    assert decoded == 3
    assert type(decoded) is int


@pytest.mark.parametrize(
    ("data", "target"),
    [
        pytest.param(1.0, int, id="float-as-int"),
        pytest.param(1.5, int, id="fraction-as-int"),
        pytest.param(True, int, id="bool-as-int"),
        pytest.param(False, float, id="bool-as-float"),
        pytest.param(1, bool, id="int-as-bool"),
        pytest.param("1", int, id="str-as-int"),
        pytest.param(1, str, id="int-as-str"),
    ],
)
def test_decode_rejects_numbers_and_bools_of_the_wrong_kind(data: Any, target: type) -> None:
    # When
    with pytest.raises(CursorDecodeError) as excinfo:
        decode(data, target)

    # Then
    message = str(excinfo.value)
    assert target.__qualname__ in message
    assert f"found {data!r}" in message


# --- encode errors -----------------------------------------------------------------------


def test_encode_of_an_unsupported_object_names_its_type_and_the_path() -> None:
    with pytest.raises(CursorEncodeError) as excinfo:
        encode(Opaque())

    message = str(excinfo.value)
    assert "cannot store value:" in message
    assert "Opaque" in message


@pytest.mark.parametrize(
    ("value", "path"),
    [
        pytest.param(Batch([1, 2, Opaque()]), "value.rows[2]", id="dataclass-list-item"),
        pytest.param({"a": [Opaque()]}, "value['a'][0]", id="dict-list-item"),
        pytest.param((1, Opaque()), "value[1]", id="tuple-item"),
        pytest.param({Opaque()}, "value[]", id="set-item"),
        pytest.param(
            Segment(Point(0, 0), Point(0, 0), Opaque()),  # type: ignore[arg-type]
            "value.label",
            id="dataclass-field",
        ),
    ],
)
def test_encode_error_names_the_path_of_the_unsupported_value(value: object, path: str) -> None:
    # When
    with pytest.raises(CursorEncodeError) as excinfo:
        encode(value)

    # Then
    message = str(excinfo.value)
    assert f"cannot store {path}:" in message
    assert "a value of type Opaque is not JSON" in message


def test_encode_error_starts_its_path_at_the_given_name() -> None:
    with pytest.raises(CursorEncodeError) as excinfo:
        encode(Batch([Opaque()]), "the cursor of step 'load'")

    assert "cannot store the cursor of step 'load'.rows[0]:" in str(excinfo.value)


def test_encode_error_names_the_qualified_name_of_a_local_class() -> None:
    # Given
    class Local:
        pass

    # When
    with pytest.raises(CursorEncodeError) as excinfo:
        encode([Local()])

    # Then
    assert (
        "a value of type test_encode_error_names_the_qualified_name_of_a_local_class.<locals>.Local"
        in str(excinfo.value)
    )


def test_encode_rejects_a_class_object() -> None:
    with pytest.raises(CursorEncodeError, match="a value of type type is not JSON"):
        encode(Point)


@pytest.mark.parametrize(
    ("value", "path", "key"),
    [
        pytest.param({1: "one"}, "value", "1 of type int", id="int-key"),
        pytest.param({"a": {(1, 2): 3}}, "value['a']", "(1, 2) of type tuple", id="nested"),
        pytest.param({None: 0}, "value", "None of type NoneType", id="none-key"),
    ],
)
def test_encode_rejects_a_non_string_dict_key(value: object, path: str, key: str) -> None:
    # When
    with pytest.raises(CursorEncodeError) as excinfo:
        encode(value)

    # Then
    assert str(excinfo.value) == f"cannot store {path}: dict key {key} is not a string"


@pytest.mark.parametrize(
    ("value", "path"),
    [
        pytest.param(math.nan, "value", id="nan"),
        pytest.param(math.inf, "value", id="inf"),
        pytest.param(-math.inf, "value", id="minus-inf"),
        pytest.param([1.0, math.nan], "value[1]", id="nan-in-list"),
        pytest.param({"score": math.inf}, "value['score']", id="inf-in-dict"),
    ],
)
def test_encode_rejects_non_finite_floats(value: object, path: str) -> None:
    with pytest.raises(CursorEncodeError) as excinfo:
        encode(value)

    assert str(excinfo.value).startswith(f"cannot store {path}: ")
    assert "is not a finite number" in str(excinfo.value)


@pytest.mark.parametrize("number", [math.nan, math.inf])
def test_encode_rejects_non_finite_floats_inside_a_pydantic_model(number: float) -> None:
    with pytest.raises(CursorEncodeError, match="is not a finite number"):
        encode(Measurement(value=number))


def test_encode_of_a_pydantic_model_with_an_unserialisable_field_raises_cursor_encode_error() -> (
    None
):
    with pytest.raises(CursorEncodeError, match="Opaque"):
        encode(WithOpaque(thing=Opaque()))


# --- decode errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "target", "fragments"),
    [
        pytest.param("x", list[int], ["list[int]", "found 'x'"], id="str-for-list"),
        pytest.param([1], dict[str, int], ["dict[str, int]", "found [1]"], id="list-for-dict"),
        pytest.param([1, 2], Point, ["as Point", "found [1, 2]"], id="list-for-dataclass"),
        pytest.param(5, dt.date, ["as date", "found 5"], id="int-for-date"),
        pytest.param({"a": 1}, set[int], ["set[int]", "found {'a': 1}"], id="dict-for-set"),
        pytest.param(None, int, ["as int", "found None"], id="null-for-int"),
        pytest.param(
            [1, "a", 3], tuple[int, str], ["tuple[int, str]", "found [1, 'a', 3]"], id="too-long"
        ),
        pytest.param([1], tuple[int, str], ["tuple[int, str]", "found [1]"], id="too-short"),
        pytest.param(
            "c", Literal["a", "b"], ["Literal['a', 'b']", "found 'c'"], id="literal-not-allowed"
        ),
        pytest.param("not-a-date", dt.date, ["as date", "'not-a-date'"], id="bad-iso-date"),
        pytest.param(
            "2024-01-01Tnoon", dt.datetime, ["as datetime", "'2024-01-01Tnoon'"], id="bad-datetime"
        ),
        pytest.param("noon", dt.time, ["as time", "'noon'"], id="bad-iso-time"),
        pytest.param("purple", Color, ["as Color", "'purple'"], id="bad-enum-value"),
        pytest.param(7, Level, ["as Level", "7"], id="bad-int-enum-value"),
        pytest.param({"x": 1}, Point, ["as Point", "'y'"], id="missing-required-field"),
        pytest.param(
            {"city": "Oslo"}, Address, ["as Address", "postcode", "Field required"], id="pydantic"
        ),
        pytest.param(
            {"city": 1, "postcode": "0150"},
            Address,
            ["as Address", "city", "string"],
            id="pydantic-wrong-type",
        ),
        pytest.param("x", int | None, ["int | None", "found 'x'"], id="union"),
    ],
)
def test_decode_error_names_the_target_and_what_was_found(
    data: Any, target: Any, fragments: list[str]
) -> None:
    # When
    with pytest.raises(CursorDecodeError) as excinfo:
        decode(data, target)

    # Then
    message = str(excinfo.value)
    assert message.startswith("cannot read value back")
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("data", "target", "path", "found"),
    [
        pytest.param(
            {"start": {"x": "a", "y": 1}, "end": {"x": 0, "y": 0}, "label": "l"},
            Segment,
            "value.start.x",
            "int: found 'a'",
            id="nested-dataclass-field",
        ),
        pytest.param([1, 2, "3"], list[int], "value[2]", "int: found '3'", id="list-item"),
        pytest.param({"k": [1, "x"]}, dict[str, tuple[int, int]], "value['k'][1]", "int", id="d"),
        pytest.param(
            {"offset": 0, "tags": ["a", 1]}, Page, "value.tags[1]", "str: found 1", id="list-field"
        ),
    ],
)
def test_decode_error_names_the_path_of_the_bad_item(
    data: Any, target: Any, path: str, found: str
) -> None:
    with pytest.raises(CursorDecodeError) as excinfo:
        decode(data, target)

    assert str(excinfo.value).startswith(f"cannot read {path} back as {found}")


def test_decode_error_starts_its_path_at_the_given_name() -> None:
    with pytest.raises(CursorDecodeError) as excinfo:
        decode({"x": "a", "y": 1}, Point, "the cursor of step 'load'")

    assert str(excinfo.value) == "cannot read the cursor of step 'load'.x back as int: found 'a'"


def test_decode_error_of_a_union_reports_each_member_that_failed() -> None:
    # When
    with pytest.raises(CursorDecodeError) as excinfo:
        decode("x", int | Point)

    # Then
    message = str(excinfo.value)
    assert "as int | tests.unit.test_codec.Point" in message
    assert "as int: found 'x'" in message
    assert "as Point: found 'x'" in message


def test_decode_rejects_an_unsupported_target_type() -> None:
    with pytest.raises(CursorDecodeError, match="unsupported type Opaque"):
        decode({}, Opaque)


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(uuid.UUID, id="uuid"),
        pytest.param(Decimal, id="decimal"),
    ],
)
def test_decode_of_a_malformed_string_raises_cursor_decode_error(target: type) -> None:
    with pytest.raises(CursorDecodeError, match=f"cannot read value back as {target.__name__}"):
        decode("not-a-number", target)


@pytest.mark.parametrize("target", [uuid.UUID, Decimal])
def test_decode_error_of_a_malformed_string_names_what_was_found(target: type) -> None:
    with pytest.raises(CursorDecodeError, match="not-a-number"):
        decode("not-a-number", target)


def test_decode_of_a_dataclass_with_an_unresolvable_annotation_raises_cursor_decode_error() -> None:
    with pytest.raises(CursorDecodeError, match="OrderedDict"):
        decode({"items": {"a": 1}}, HiddenAnnotation)


def test_round_trip_of_a_literal_enum_member() -> None:
    assert _round_trip(Color.RED, Literal[Color.RED]) is Color.RED


@pytest.mark.parametrize(
    ("data", "target"),
    [
        pytest.param(True, Literal[1], id="bool-for-int-literal"),
        pytest.param(1, Literal[True], id="int-for-bool-literal"),
        pytest.param(1.0, Literal[1], id="float-for-int-literal"),
    ],
)
def test_decode_literal_rejects_a_value_of_another_json_type(data: Any, target: Any) -> None:
    with pytest.raises(CursorDecodeError):
        decode(data, target)


def test_round_trip_of_an_enum_with_tuple_values() -> None:
    assert _round_trip(Corner.BOTTOM_RIGHT, Corner) is Corner.BOTTOM_RIGHT


# --- first_parameter_type and return_type ------------------------------------------------


def _cursor_or_none(cursor: Point | None, limit: int) -> list[Point]:
    return []


def _optional_cursor(cursor: Optional[Page] = None) -> None:  # noqa: UP045
    return None


def _tuple_cursor(cursor: tuple[int, str]) -> dict[str, Customer]:
    return {}


def _unannotated(cursor, limit: int):  # type: ignore[no-untyped-def]
    return cursor


def _no_parameters() -> int:
    return 1


class _Job:
    def resume(self, cursor: Segment) -> Point:
        return cursor.start


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        pytest.param(_cursor_or_none, Point | None, id="x-or-none"),
        pytest.param(_optional_cursor, Optional[Page], id="optional"),  # noqa: UP045
        pytest.param(_tuple_cursor, tuple[int, str], id="tuple"),
        pytest.param(_Job().resume, Segment, id="bound-method-skips-self"),
        pytest.param(_unannotated, None, id="unannotated"),
        pytest.param(_no_parameters, None, id="no-parameters"),
        pytest.param(lambda cursor: cursor, None, id="lambda"),
    ],
)
def test_first_parameter_type_reads_the_first_parameters_annotation(fn: Any, expected: Any) -> None:
    assert first_parameter_type(fn, "the step") == expected


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        pytest.param(_cursor_or_none, list[Point], id="list"),
        pytest.param(_tuple_cursor, dict[str, Customer], id="dict"),
        pytest.param(_Job().resume, Point, id="bound-method"),
        pytest.param(_no_parameters, int, id="int"),
        pytest.param(_optional_cursor, type(None), id="none-annotation-is-nonetype"),
        pytest.param(_unannotated, None, id="unannotated"),
    ],
)
def test_return_type_reads_the_return_annotation(fn: Any, expected: Any) -> None:
    assert return_type(fn, "the step") == expected


def test_first_parameter_type_drives_decode_of_an_optional_cursor() -> None:
    # Given
    target = first_parameter_type(_cursor_or_none, "the step")

    # When
    resumed = decode(encode(Point(4, 5)), target)
    fresh = decode(None, target)

    # Then
    assert resumed == Point(4, 5)
    assert fresh is None


def test_first_parameter_type_returns_none_for_a_callable_without_a_signature() -> None:
    assert first_parameter_type(print, "print") is None


def test_first_parameter_type_of_an_unresolvable_forward_reference_raises() -> None:
    # Given
    class LocalCursor:
        pass

    def step(cursor: LocalCursor) -> None:
        return None

    # When
    with pytest.raises(CursorDecodeError) as excinfo:
        first_parameter_type(step, "step 'load'")

    # Then
    message = str(excinfo.value)
    assert message.startswith("cannot resolve the annotations of step 'load': ")
    assert "LocalCursor" in message
    assert "pass the type explicitly" in message


def test_return_type_of_a_local_class_is_found_in_the_functions_closure() -> None:
    # Given a string annotation naming a class local to this function, used by the body
    class LocalResult:
        pass

    def step() -> LocalResult:
        return LocalResult()

    # When / Then
    assert return_type(step, "step 'load'") is LocalResult


def test_return_type_of_an_unresolvable_forward_reference_raises() -> None:
    # Given a string annotation naming a local class the function does not hold
    class LocalResult:
        pass

    def step() -> LocalResult:
        return make_local_result()  # type: ignore[no-any-return]

    def make_local_result() -> object:
        return LocalResult()

    # When / Then
    with pytest.raises(CursorDecodeError, match="name 'LocalResult' is not defined"):
        return_type(step, "step 'load'")


def test_a_step_functions_scope_is_kept_while_it_lives_and_its_annotations_stay() -> None:
    def load() -> int:
        return 1

    # The same function gets the same scope at every call
    scope = result_scope(load, "load")
    assert result_scope(load, "load") is scope
    assert scope.target is int

    # New annotations are read again
    load.__annotations__ = {"return": str}
    assert result_scope(load, "load").target is str

    # A function that is gone leaves nothing behind: another function, even one given
    # its id, is read for itself
    key = id(load)
    del load
    gc.collect()
    assert key not in _result_scopes

    def other() -> float:
        return 1.0

    assert result_scope(other, "other").target is float


def test_a_callable_without_weak_references_gets_a_scope_each_time() -> None:
    # An itemgetter takes no weak reference: its scope is made at each call, never kept
    first = operator.itemgetter(0)
    scope = result_scope(first, "first")
    assert scope.target is None and scope.function is first
    assert result_scope(first, "first") is not scope
    assert id(first) not in _result_scopes


# --- untagged JSON stored by version 0.1 -------------------------------------------------


@pytest.mark.parametrize(
    ("data", "target", "expected"),
    [
        pytest.param("2024-01-02", dt.date, dt.date(2024, 1, 2), id="date"),
        pytest.param("1.50", Decimal, Decimal("1.50"), id="decimal"),
        pytest.param([1, "a"], Pair, Pair(1, "a"), id="named-tuple"),
        pytest.param(
            {"amount": "1.50", "day": "2024-01-02"},
            Money,
            {"amount": Decimal("1.50"), "day": dt.date(2024, 1, 2)},
            id="typed-dict",
        ),
        pytest.param(5, OrderId, 5, id="new-type"),
        pytest.param(7, UserId, UserId(7), id="int-subclass"),
        pytest.param("A-1", Sku, Sku("A-1"), id="str-subclass"),
        pytest.param(3, Permission, Permission.READ | Permission.WRITE, id="flag"),
        pytest.param([[1, "a"]], list[Pair], [Pair(1, "a")], id="list-of-named-tuples"),
        pytest.param(
            {"a": "0.1"}, dict[str, Decimal], {"a": Decimal("0.1")}, id="dict-of-decimals"
        ),
        pytest.param(
            {"lines": [[1, "a"]], "totals": {"net": "2"}, "owner": 3},
            Invoice,
            Invoice([Pair(1, "a")], {"net": Decimal("2")}, UserId(3)),
            id="nested-dataclass",
        ),
    ],
)
def test_decode_reads_untagged_json_as_the_annotation_says(
    data: Any, target: Any, expected: object
) -> None:
    # When
    decoded = decode(data, target)

    # Then
    assert_same(decoded, expected)


def test_decode_of_a_union_prefers_the_member_that_takes_the_json_as_it_is() -> None:
    # When an int was stored by a function annotated ``-> Decimal | int``
    decoded = decode(5, Decimal | int)

    # Then it stays the int it was
    assert_same(decoded, 5)


# --- class lookup --------------------------------------------------------------------------


def test_decode_finds_a_local_class_in_the_functions_closure() -> None:
    # Given a class local to this test, stored without an annotation
    @dataclasses.dataclass
    class Local:
        when: dt.date

    def produce() -> object:
        return Local(dt.date(2024, 1, 2))

    stored = json.loads(json.dumps(encode(produce(), scope=Scope(None, produce))))

    # When
    decoded = decode(stored, None, scope=Scope(None, produce))

    # Then
    assert_same(decoded, Local(dt.date(2024, 1, 2)))


def test_decode_never_imports_the_module_a_stored_class_names() -> None:
    # Given a stored class of a module nobody imported
    assert "tabnanny" not in sys.modules
    stored = {"$type": "dataclass", "class": "tabnanny:NannyNag", "fields": {}}

    # When
    with pytest.raises(CursorDecodeError) as excinfo:
        decode(stored, None)

    # Then
    assert "the class NannyNag (module tabnanny) is not among the classes" in str(excinfo.value)
    assert "tabnanny" not in sys.modules


@pytest.mark.parametrize(
    "stored",
    [
        pytest.param({"$type": "dataclass", "class": "os:system", "fields": {}}, id="a-function"),
        pytest.param(
            {"$type": "enum", "class": f"{__name__}:Point", "value": 1}, id="a-dataclass-as-enum"
        ),
        pytest.param({"$type": "int", "class": "builtins:bool", "value": 1}, id="bool-as-int"),
        pytest.param(
            {"$type": "dataclass", "class": f"{__name__}:Point.__init__", "fields": {}},
            id="a-method",
        ),
    ],
)
def test_decode_only_builds_a_class_of_the_kind_stored(stored: Any) -> None:
    with pytest.raises(CursorDecodeError, match="is not among the classes"):
        decode(stored, None)


def test_decode_of_an_unknown_tag_raises_cursor_decode_error() -> None:
    with pytest.raises(CursorDecodeError, match="unknown stored type 'bytes'"):
        decode({"$type": "bytes", "value": "AA=="}, None)


def test_decode_checks_a_tagged_value_against_the_annotation() -> None:
    # Given a cursor stored as a date, read by code that now expects an int
    stored = encode(dt.date(2024, 1, 2))

    # When / Then
    with pytest.raises(CursorDecodeError, match="as int: the stored value is a date"):
        decode(stored, int)


# --- refusal when a value would not come back ------------------------------------------


def test_encode_refuses_a_value_of_a_class_it_cannot_find_again() -> None:
    # Given a class the code reading the value back does not hold
    def make() -> object:
        @dataclasses.dataclass
        class Hidden:
            n: int

        return Hidden(1)

    # When
    with pytest.raises(CursorEncodeError) as excinfo:
        encode(make(), "the result of step 'make'", scope=Scope(None, make))

    # Then
    message = str(excinfo.value)
    assert message.startswith("cannot store the result of step 'make': a value of type ")
    assert "Hidden" in message
    assert "define the class at module level" in message


def test_encode_refuses_a_value_its_annotation_would_turn_into_another_type() -> None:
    with pytest.raises(CursorEncodeError) as excinfo:
        encode("2024-01-02", "the result of step 'day'", scope=Scope(dt.date))

    assert str(excinfo.value).startswith(
        "cannot store the result of step 'day': the result of step 'day' is a str but would "
        "come back as a date"
    )


@dataclasses.dataclass
class Tally:
    start: int
    seen: int = dataclasses.field(init=False, default=0)


def test_encode_refuses_a_dataclass_its_fields_do_not_rebuild() -> None:
    # Given a field set outside __init__, which a rebuilt Tally does not get back
    tally = Tally(1)
    tally.seen = 5

    # When / Then
    with pytest.raises(CursorEncodeError, match=r"value\.seen of type int would come back as 0"):
        encode(tally)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        pytest.param(
            collections.OrderedDict(a=1), "OrderedDict would come back as a dict", id="ordered-dict"
        ),
        pytest.param(
            collections.defaultdict(list), "defaultdict would come back as a dict", id="defaultdict"
        ),
        pytest.param({Sku("a"): 1}, "of type Sku would come back as a plain str", id="str-key"),
        pytest.param({"a\x00": 1}, "contains a NUL character", id="nul-in-key"),
        pytest.param("\ud800", "lone surrogate", id="lone-surrogate"),
        pytest.param(dt.time(1, tzinfo=PARIS), "has no fixed UTC offset", id="zoned-time"),
    ],
)
def test_encode_refuses_what_would_not_come_back(value: object, fragment: str) -> None:
    with pytest.raises(CursorEncodeError, match=fragment):
        encode(value)


def test_encode_checks_a_literal_cursor_at_every_value() -> None:
    # Given a scope whose annotation accepts only some strings, after an accepted one
    scope = Scope(Literal["a", "b"])
    assert encode("a", scope=scope) == "a"

    # When / Then another string is still checked
    with pytest.raises(CursorEncodeError, match="'c'"):
        encode("c", scope=scope)


def test_encode_of_a_value_that_contains_itself_raises_cursor_encode_error() -> None:
    # Given
    loop: list[object] = []
    loop.append(loop)

    # When / Then
    with pytest.raises(CursorEncodeError, match="contains itself"):
        encode(loop)


_Item = TypeVar("_Item")


def test_decode_finds_a_local_generic_class_named_by_the_annotation() -> None:
    # Given a generic dataclass local to this test, named only by the annotation
    @dataclasses.dataclass
    class Box(Generic[_Item]):
        item: _Item

    stored = json.loads(json.dumps(encode(Box(Decimal("2")), scope=Scope(Box[Decimal]))))

    # When
    decoded = decode(stored, Box[Decimal])

    # Then
    assert_same(decoded, Box(Decimal("2")))


def test_decode_finds_a_class_moved_to_another_module_through_the_annotation() -> None:
    # Given a Point stored when the class lived in another module
    stored = {"$type": "dataclass", "class": "old.models:Point", "fields": {"x": 1, "y": 2}}

    # When the code reading it back annotates the Point of this module
    decoded = decode(stored, Point | None)

    # Then
    assert_same(decoded, Point(1, 2))


@pytest.mark.parametrize(
    ("value", "target"),
    [([1, 2, 3], list[int]), ([True, False], list[bool]), ([1, None, True], None), ([], list[str])],
)
def test_a_list_of_plain_values_is_stored_as_a_copy(value: list[Any], target: Any) -> None:
    # Given a list of ints, bools or None, read back as its annotation says (or without one)
    stored = encode(value, scope=Scope(target))

    # Then it is stored as it is, in a list of its own: a change after the step is not stored
    assert stored == value
    assert stored is not value
    value.append(7)
    assert stored != value


def test_a_list_of_ints_read_as_another_annotation_is_checked_the_long_way() -> None:
    # A list of ints the annotation reads as strings would not come back the same
    with pytest.raises(CursorEncodeError, match="list"):
        encode([1, 2], "the result", scope=Scope(list[str]))
