"""Unit tests of the typed JSON codec of cursors and step results."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, Optional

import pydantic
import pytest

from celery_resumable._codec import decode, encode, first_parameter_type, return_type
from celery_resumable.errors import CursorDecodeError, CursorEncodeError

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
    ],
)
def test_round_trip_rebuilds_an_equal_value_of_the_same_type(value: object, target: Any) -> None:
    # When
    decoded = _round_trip(value, target)

    # Then
    assert decoded == value
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
    ("value", "expected"),
    [
        pytest.param(Point(1, 2), {"x": 1, "y": 2}, id="dataclass"),
        pytest.param(Page(3), {"offset": 3, "token": None, "limit": None, "tags": []}, id="page"),
        pytest.param(Totals(1, 2), {"a": 1, "b": 2, "total": 3}, id="init-false-field"),
        pytest.param(Address(city="A", postcode="B"), {"city": "A", "postcode": "B"}, id="model"),
        pytest.param(dt.datetime(2024, 1, 2, 3, 4, 5), "2024-01-02T03:04:05", id="datetime"),
        pytest.param(
            dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
            "2024-01-02T03:04:05+00:00",
            id="aware-datetime",
        ),
        pytest.param(dt.date(2024, 1, 2), "2024-01-02", id="date"),
        pytest.param(dt.time(3, 4, 5), "03:04:05", id="time"),
        pytest.param(uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001", id="uuid"),
        pytest.param(Decimal("1.10"), "1.10", id="decimal-keeps-its-digits"),
        pytest.param(Color.RED, "red", id="enum"),
        pytest.param((1, "a"), [1, "a"], id="tuple"),
        pytest.param({3, 1, 2}, [1, 2, 3], id="set-sorted"),
        pytest.param(frozenset({"b", "c", "a"}), ["a", "b", "c"], id="frozenset-sorted"),
        pytest.param({"k": (1, 2)}, {"k": [1, 2]}, id="dict"),
        pytest.param(None, None, id="none"),
        pytest.param(1.5, 1.5, id="float"),
    ],
)
def test_encode_returns_plain_json(value: object, expected: object) -> None:
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
    assert isinstance(encoded, list)
    assert sorted(encoded, key=json.dumps) == [{"x": 1, "y": 2}, {"x": 3, "y": 4}]


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


def test_decode_float_target_accepts_an_int_and_returns_a_float() -> None:
    # When
    decoded = decode(3, float)

    # Then
    assert decoded == 3.0
    assert type(decoded) is float


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


def test_return_type_of_an_unresolvable_forward_reference_raises() -> None:
    # Given
    class LocalResult:
        pass

    def step() -> LocalResult:
        return LocalResult()

    # When / Then
    with pytest.raises(CursorDecodeError, match="name 'LocalResult' is not defined"):
        return_type(step, "step 'load'")
