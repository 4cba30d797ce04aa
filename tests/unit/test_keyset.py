"""keyset() pages a query through iterate(): a query per batch, resumed after the last key.

The paging behaviour holds for every query keyset() takes: the ``adapter`` fixture runs
each test of the first part with a SQLAlchemy ``Select`` and with a Django ``QuerySet``
of the same rows, on each database. What only a ``Select`` has is tested in the second
part; what only a ``QuerySet`` has, in tests/unit/django_app/test_django_keyset.py.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import uuid
from collections.abc import Callable, Iterator
from operator import attrgetter
from pathlib import Path
from typing import Any, Protocol

import pytest
import sqlalchemy as sa
from celery import Celery
from celery.result import AsyncResult
from sqlalchemy.orm import DeclarativeBase, Session

from celery_resumable import ResumableTask, checkpoint_store, iterate, keyset
from celery_resumable.errors import CursorDecodeError
from celery_resumable.keyset import Keyset
from celery_resumable.testing import interrupt_at_cursor, interrupt_when
from tests.conftest import drop_table

MakeTable = Callable[..., sa.Table]

NULL_KEY = (
    r"keyset\(\) key \({}\) is NULL in a row of the query; a keyset key must never be NULL: "
    "filter those rows out or page by a key that has no NULL"
)

NULL_KEY_ROWS = {
    "key": [(1, 1), (2, 2), (None, 3), (None, 4), (5, 5), (6, 6), (7, 7)],
    "part": [(1, 1), (2, 2), (3, None), (None, 4), (5, 5), (6, 6), (7, 7)],
}


@pytest.fixture
def db_app(store_url: str, table_name: str) -> Iterator[Celery]:
    """An app whose checkpoints live in the database under test, with a result backend."""
    app = Celery("keyset", broker="memory://", backend="cache+memory://")
    app.conf.update(
        resumable_store_url=store_url,
        resumable_table_name=table_name,
        resumable_checkpoint_interval=None,
        task_store_eager_result=False,
    )
    yield app
    drop_table(store_url, table_name)
    app.close()


@pytest.fixture
def engine(store_url: str) -> Iterator[sa.Engine]:
    """The caller's own engine on the database under test."""
    engine = sa.create_engine(store_url)
    yield engine
    engine.dispose()


@pytest.fixture
def make_table(engine: sa.Engine) -> Iterator[MakeTable]:
    """Create a table of this test with the given columns; dropped after the test."""
    tables: list[sa.Table] = []

    def make(*columns: sa.Column[Any]) -> sa.Table:
        table = sa.Table(f"keyset_{uuid.uuid4().hex[:10]}", sa.MetaData(), *columns)
        table.create(engine)
        tables.append(table)
        return table

    yield make
    for table in tables:
        table.drop(engine)


def insert(engine: sa.Engine, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` in random order."""
    with engine.begin() as connection:
        connection.execute(table.insert(), random.sample(rows, len(rows)))


def count_queries(engine: sa.Engine) -> list[str]:
    """The SQL statements sent on ``engine`` from now on."""
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(args[2])

    sa.event.listen(engine, "before_cursor_execute", record)
    return statements


class PagesSide(Protocol):
    """One adapter's side: the same rows as a query keyset() pages, and its queries.

    Rows have ``id`` and ``value`` (``numbers``), a composite key ``day``, ``name``
    (``pairs``), or ``id`` and the nullable ``key`` and ``part`` (``nullable``). Each call
    adds rows and returns the query of all of them.
    """

    def numbers(self, ids: list[int]) -> Any: ...

    def pairs(self, keys: list[tuple[int, str]]) -> Any: ...

    def nullable(self, rows: list[tuple[int, int | None, int | None]]) -> Any: ...

    def keyset(self, query: Any, **options: Any) -> Keyset:
        """``keyset()`` of ``query`` (on the side's database)."""
        ...

    def queries(self) -> list[str]:
        """The SQL sent from now on."""
        ...


class SelectSide:
    """SQLAlchemy ``Select`` queries of tables of this test, run on ``engine``."""

    def __init__(self, engine: sa.Engine, make_table: MakeTable) -> None:
        self.engine = engine
        self.make_table = make_table
        self.tables: dict[str, sa.Table] = {}

    def numbers(self, ids: list[int]) -> sa.Select[Any]:
        table = self._table(
            "numbers",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("value", sa.String(20)),
        )
        insert(self.engine, table, [{"id": i, "value": f"v{i}"} for i in ids])
        return sa.select(table)

    def pairs(self, keys: list[tuple[int, str]]) -> sa.Select[Any]:
        table = self._table(
            "pairs",
            sa.Column("day", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("name", sa.String(20), primary_key=True),
        )
        insert(self.engine, table, [{"day": day, "name": name} for day, name in keys])
        return sa.select(table)

    def nullable(self, rows: list[tuple[int, int | None, int | None]]) -> sa.Select[Any]:
        table = self._table(
            "nullable",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("key", sa.Integer, nullable=True),
            sa.Column("part", sa.Integer, nullable=True),
        )
        insert(self.engine, table, [{"id": i, "key": k, "part": p} for i, k, p in rows])
        return sa.select(table)

    def keyset(self, query: Any, **options: Any) -> Keyset:
        return keyset(query, connection=self.engine, **options)

    def queries(self) -> list[str]:
        return count_queries(self.engine)

    def _table(self, name: str, *columns: sa.Column[Any]) -> sa.Table:
        if name not in self.tables:
            self.tables[name] = self.make_table(*columns)
        return self.tables[name]


@pytest.fixture(params=["sqlalchemy", "django"])
def adapter(
    request: pytest.FixtureRequest, store_url: str, engine: sa.Engine, make_table: MakeTable
) -> Iterator[PagesSide]:
    """Each adapter's side, its rows on the database under test."""
    if request.param == "sqlalchemy":
        yield SelectSide(engine, make_table)
        return
    pytest.importorskip("django")
    from tests.unit.django_app.shared import django_rows

    with django_rows(store_url) as side:
        yield side


def with_ids(pairs: list[tuple[int | None, int | None]]) -> list[tuple[int, Any, Any]]:
    """``(key, part)`` pairs as ``nullable`` rows, with ids from 1."""
    return [(i, key, part) for i, (key, part) in enumerate(pairs, start=1)]


def paging_task(
    app: Celery, source: Keyset, seen: list[Any], read: Callable[[Any], Any] = attrgetter("id")
) -> Any:
    """A task that runs ``source`` as the ``iterate`` step "rows", noting ``read(row)``."""

    @app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        for row in iterate("rows", source):
            seen.append(read(row))

    return job


@pytest.mark.parametrize(("rows", "batch_size", "queries"), [(10, 3, 4), (9, 3, 4), (2, 500, 1)])
def test_pages_through_all_rows_in_key_order_one_query_per_batch(
    db_app: Celery, adapter: PagesSide, rows: int, batch_size: int, queries: int
) -> None:
    # Given rows inserted in random order
    query = adapter.numbers(list(range(1, rows + 1)))
    statements = adapter.queries()
    seen: list[int] = []

    job = paging_task(db_app, adapter.keyset(query, key="id", batch_size=batch_size), seen)

    # When the task runs
    assert job.apply().state == "SUCCESS"

    # Then every row came once, in key order, with a query per batch (and one short or
    # empty batch at the end) after the one query that looks for a NULL key
    assert seen == list(range(1, rows + 1))
    assert len(statements) == 1 + queries == 1 + rows // batch_size + 1


def test_an_interrupted_run_resumes_after_the_last_key(db_app: Celery, adapter: PagesSide) -> None:
    query = adapter.numbers(list(range(1, 26)))
    seen: list[int] = []

    job = paging_task(db_app, adapter.keyset(query, key="id", batch_size=4), seen)

    # Given a run interrupted after its tenth row
    with interrupt_at_cursor("rows", 10):
        first = job.apply()
    assert first.state == "IGNORED"
    assert seen == list(range(1, 11))
    checkpoint = checkpoint_store(db_app).get(first.id)
    assert checkpoint is not None
    assert (checkpoint.current_step, checkpoint.cursor) == ("rows", 10)

    # When it runs again under the same task id
    statements = adapter.queries()
    second = job.apply(task_id=first.id)

    # Then it continues after key 10: no row twice, none missed
    assert second.state == "SUCCESS"
    assert seen == list(range(1, 26))
    assert len(statements) == 1 + 4  # the NULL check, rows 11-14, 15-18, 19-22, 23-25


def test_rows_inserted_behind_the_cursor_are_not_visited_and_those_ahead_are(
    db_app: Celery, adapter: PagesSide
) -> None:
    query = adapter.numbers(list(range(10, 101, 10)))
    seen: list[int] = []

    job = paging_task(db_app, adapter.keyset(query, key="id", batch_size=3), seen)

    # Given a run interrupted after key 50
    with interrupt_at_cursor("rows", lambda cursor: cursor == 50):
        first = job.apply()
    assert seen == [10, 20, 30, 40, 50]

    # When rows are inserted behind and ahead of the cursor before it resumes
    adapter.numbers([5, 15, 45, 55, 200])
    job.apply(task_id=first.id)

    # Then only those ahead are visited, in key order
    assert seen == [10, 20, 30, 40, 50, 55, 60, 70, 80, 90, 100, 200]


def test_a_composite_key_pages_and_resumes_with_a_tuple_cursor(
    db_app: Celery, adapter: PagesSide
) -> None:
    keys = [(day, f"n{n}") for day in (1, 2, 3, 4) for n in (3, 1, 2)]
    source = adapter.keyset(adapter.pairs(keys), key=("day", "name"), batch_size=4)
    seen: list[tuple[int, str]] = []

    job = paging_task(db_app, source, seen, attrgetter("day", "name"))

    # Given a run interrupted in the middle of a day, in the middle of a batch
    with interrupt_at_cursor("rows", 5):
        first = job.apply()
    checkpoint = checkpoint_store(db_app).get(first.id)
    assert checkpoint is not None
    assert checkpoint.cursor == {"$type": "tuple", "items": [2, "n2"]}

    # When it resumes
    job.apply(task_id=first.id)

    # Then the rows came in (day, name) order, each once
    assert seen == sorted(keys)


def test_count_gives_the_progress_total(db_app: Celery, adapter: PagesSide) -> None:
    query = adapter.numbers(list(range(1, 8)))
    progress: dict[str, list[Any]] = {}

    @db_app.task(base=ResumableTask, bind=True, resumable_checkpoint_interval=0)
    def job(self: Any, count: bool) -> None:
        source = adapter.keyset(query, key="id", batch_size=3, count=count)
        for row in iterate("rows", source):
            if row.id == 5:
                result = AsyncResult(self.request.id, app=db_app)
                progress[str(count)] = [result.state, result.info]

    # When the task runs with count=True, then without
    statements = adapter.queries()
    job.apply(args=(True,))
    assert len(statements) == 1 + 1 + 3  # the COUNT, the NULL check, three batches
    job.apply(args=(False,))

    # Then the progress total is the number of rows with count=True, unknown without
    assert progress["True"][0] == "PROGRESS"
    assert progress["True"][1] == {
        "step": "rows",
        "cursor": 4,
        "finished_steps": [],
        "done": 4,
        "total": 7,
        "current": 4,
        "percent": 57.14,
        "description": "step rows, cursor 4",
        "pending": False,
    }
    assert progress["False"][1]["total"] is None


def test_a_keyset_without_count_is_not_sized_and_with_count_it_is(adapter: PagesSide) -> None:
    query = adapter.numbers([1, 2, 3])
    plain = adapter.keyset(query, key="id")
    counted = adapter.keyset(query, key="id", count=True)

    assert not hasattr(plain, "__len__")
    assert len(counted) == 3  # type: ignore[arg-type]
    assert bool(counted)
    assert [key for key, _ in counted(1)] == [2, 3]


@pytest.mark.parametrize(
    ("key", "names"), [("key", "key"), (("key", "part"), "key, part")], ids=["key", "composite"]
)
def test_a_null_key_fails_the_run_before_any_row_is_processed(
    db_app: Celery, adapter: PagesSide, key: str | tuple[str, ...], names: str
) -> None:
    # Given keys 1, 2, NULL, NULL, 5, 6, 7 (for a composite key: a NULL in either part)
    query = adapter.nullable(with_ids(NULL_KEY_ROWS["key" if isinstance(key, str) else "part"]))
    seen: list[int] = []

    job = paging_task(db_app, adapter.keyset(query, key=key, batch_size=2), seen)

    # When the task runs
    result = job.apply()

    # Then it fails with the keyset's ValueError before the loop body saw a row, on every
    # database (PostgreSQL sorts NULLs last, SQLite and MariaDB first)
    assert result.state == "FAILURE"
    assert isinstance(result.result, ValueError)
    assert re.fullmatch(NULL_KEY.format(names), str(result.result))
    assert seen == []


def test_a_resumed_run_fails_before_any_row_when_null_keys_appeared(
    db_app: Celery, adapter: PagesSide
) -> None:
    query = adapter.nullable([(k, k, k) for k in range(1, 6)])
    seen: list[int] = []

    job = paging_task(
        db_app, adapter.keyset(query, key="key", batch_size=2), seen, attrgetter("key")
    )

    # Given a run interrupted after key 2, and rows with a NULL key added since
    with interrupt_at_cursor("rows", 2):
        first = job.apply()
    assert seen == [1, 2]
    adapter.nullable([(10, None, None), (11, None, None)])

    # When it resumes
    second = job.apply(task_id=first.id)

    # Then it fails before the loop body saw another row
    assert second.state == "FAILURE"
    assert re.fullmatch(NULL_KEY.format("key"), str(second.result))
    assert seen == [1, 2]


def test_one_null_check_per_pass_not_per_batch(adapter: PagesSide) -> None:
    source = adapter.keyset(adapter.numbers(list(range(1, 8))), key="id", batch_size=2)

    statements = adapter.queries()
    assert [key for key, _ in source(None)] == list(range(1, 8))
    fresh = len(statements)
    assert [key for key, _ in source(3)] == list(range(4, 8))

    # 1 check + 4 batches of 2, 2, 2, 1; then 1 check + 2 batches of 2, 2 (and an empty one)
    assert fresh == 1 + 4
    assert len(statements) - fresh == 1 + 3
    assert sum("IS NULL" in statement for statement in statements) == 2


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"key": "id", "batch_size": 0}, ValueError, r"batch_size must be at least 1, not 0"),
        ({"key": "id", "batch_size": 2.5}, TypeError, r"batch_size must be an int, not float"),
        ({"key": "id", "batch_size": "10"}, TypeError, r"batch_size must be an int, not str"),
        ({"key": ()}, TypeError, r"key must be a name or a tuple of names, not \(\)"),
        ({"key": ["id"]}, TypeError, r"key must be a name or a tuple of names"),
        ({"key": ("id", "id")}, ValueError, "key names a column twice"),
    ],
    ids=["batch size 0", "batch size float", "batch size str", "empty key", "list", "key twice"],
)
def test_a_bad_batch_size_or_key_is_refused_when_keyset_is_called(
    adapter: PagesSide, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    query = adapter.numbers([1, 2])
    statements = adapter.queries()

    with pytest.raises(error, match=rf"keyset\(\) {message}"):
        adapter.keyset(query, **options)
    assert statements == []


def test_a_saved_cursor_of_another_shape_is_refused(adapter: PagesSide) -> None:
    source = adapter.keyset(adapter.pairs([(1, "a")]), key=("day", "name"))

    with pytest.raises(CursorDecodeError, match=r"keyset cursor 5 back as a key of 2 columns"):
        list(source(5))


# -- a SQLAlchemy Select alone -------------------------------------------------------------


def test_an_engine_holds_no_connection_while_the_loop_body_runs(
    db_app: Celery, engine: sa.Engine, make_table: MakeTable
) -> None:
    query = SelectSide(engine, make_table).numbers(list(range(1, 8)))
    checked_out: list[int] = []

    @db_app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        for _row in iterate("rows", keyset(query, key="id", batch_size=3, connection=engine)):
            checked_out.append(engine.pool.checkedout())

    assert job.apply().state == "SUCCESS"
    assert checked_out == [0] * 7


def test_the_cursor_type_follows_the_key_columns(
    db_app: Celery, engine: sa.Engine, make_table: MakeTable
) -> None:
    side = SelectSide(engine, make_table)
    pairs = side.pairs([(1, "a")])
    numbers = side.numbers(list(range(1, 6)))
    # A column built from text has no Python type: its cursor is plain JSON
    untyped = sa.select(sa.column("id")).select_from(numbers.subquery())
    seen: list[int] = []

    job = paging_task(db_app, keyset(untyped, key="id", batch_size=2, connection=engine), seen)

    with interrupt_at_cursor("rows", 2):
        first = job.apply()
    assert job.apply(task_id=first.id).state == "SUCCESS"

    assert seen == [1, 2, 3, 4, 5]
    assert keyset(pairs, key=("day", "name"), connection=engine).cursor_type == tuple[int, str]
    assert keyset(untyped, key="id", connection=engine).cursor_type is Any


def _uuid(i: int) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_OID, str(i))


def _moment(i: int) -> dt.datetime:
    return dt.datetime(2026, 3, 1, 12) + dt.timedelta(minutes=7 * i)


@pytest.mark.parametrize(
    ("column_type", "make_key", "python_type"),
    [
        (sa.Uuid(), _uuid, uuid.UUID),
        (sa.DateTime(), _moment, dt.datetime),
        (sa.String(20), lambda i: f"key{i:03}", str),
    ],
    ids=["uuid", "datetime", "str"],
)
def test_a_typed_key_comes_back_as_the_same_type_in_a_resumed_run(
    db_app: Celery,
    engine: sa.Engine,
    make_table: MakeTable,
    column_type: Any,
    make_key: Callable[[int], Any],
    python_type: type,
) -> None:
    table = make_table(sa.Column("key", column_type, primary_key=True))
    with engine.begin() as connection:
        connection.execute(table.insert(), [{"key": make_key(i)} for i in range(12)])
        in_order = list(connection.scalars(sa.select(table.c.key).order_by(table.c.key)))
    source = keyset(sa.select(table), key="key", batch_size=5, connection=engine)
    seen: list[Any] = []

    job = paging_task(db_app, source, seen, attrgetter("key"))

    # Given a run interrupted after its third row
    with interrupt_at_cursor("rows", 3):
        first = job.apply()
    checkpoint = checkpoint_store(db_app).get(first.id)
    assert checkpoint is not None
    stored = checkpoint.cursor

    # When it resumes
    statements = count_queries(engine)
    assert job.apply(task_id=first.id).state == "SUCCESS"

    # Then the cursor was stored as JSON tagged with its type and read back as the key's
    # type (SQLite's UUID and DateTime columns accept nothing else), and the resumed run
    # went on after the third key
    assert source.cursor_type is python_type
    third = in_order[2]
    if isinstance(third, str):
        assert stored == third
    else:
        assert isinstance(stored, dict)
        assert stored["value"] == (
            third.isoformat() if isinstance(third, dt.datetime) else str(third)
        )
    assert seen == in_order
    assert len(statements) == 1 + 2  # the NULL check, rows 4-8, then 9-12


@pytest.mark.parametrize("kind", ["connection", "session", "session_entity"])
def test_runs_on_a_connection_or_a_session(
    db_app: Celery, engine: sa.Engine, make_table: MakeTable, kind: str
) -> None:
    side = SelectSide(engine, make_table)
    side.numbers(list(range(1, 11)))
    table = side.tables["numbers"]

    class Base(DeclarativeBase):
        pass

    class Number(Base):
        __table__ = table
        number = table.c.id  # an attribute named unlike its column

    seen: list[int] = []

    @db_app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        if kind == "connection":
            with engine.connect() as connection:
                source = keyset(sa.select(table), key="id", batch_size=4, connection=connection)
                seen.extend(row.id for row in iterate("rows", source))
            return
        with Session(engine) as session:
            if kind == "session":
                source = keyset(sa.select(table), key="id", batch_size=4, connection=session)
                seen.extend(row.id for row in iterate("rows", source))
            else:
                query = sa.select(Number)
                source = keyset(query, key="number", batch_size=4, connection=session)
                seen.extend(row[0].number for row in iterate("rows", source))

    # Given a run interrupted after its sixth row
    with interrupt_at_cursor("rows", 6):
        first = job.apply()

    # When it resumes, then it went on after the sixth row
    assert job.apply(task_id=first.id).state == "SUCCESS"
    assert seen == list(range(1, 11))


def test_a_labelled_key_in_a_filtered_query(
    db_app: Celery, engine: sa.Engine, make_table: MakeTable
) -> None:
    side = SelectSide(engine, make_table)
    side.numbers(list(range(1, 21)))
    table = side.tables["numbers"]
    query = sa.select(table.c.id.label("number"), table.c.value).where(table.c.id % 2 == 0)
    seen: list[int] = []

    @db_app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        source = keyset(
            query.order_by(table.c.value), key="number", batch_size=3, connection=engine
        )
        seen.extend(row.number for row in iterate("rows", source))

    with interrupt_when(
        lambda run, boundary: boundary == "cursor" and run.in_progress == ("rows", 8)
    ):
        first = job.apply()
    job.apply(task_id=first.id)

    # The query's own filter holds, its ORDER BY is replaced by the key's
    assert seen == list(range(2, 21, 2))


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'rows.sqlite3'}")
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_table(sqlite_engine: sa.Engine) -> sa.Table:
    table = sa.Table(
        "things",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("group", sa.Integer, nullable=True),
    )
    table.create(sqlite_engine)
    return table


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda t, e: keyset(sa.text("SELECT 1"), key="id", connection=e),
            TypeError,
            "not TextClause",
        ),
        (lambda t, e: keyset([1, 2], key="id", connection=e), TypeError, "not list"),
        (lambda t, e: keyset(sa.select(t), key="id"), TypeError, r"needs connection=.*not None"),
        (lambda t, e: keyset(sa.select(t), key="id", connection="x"), TypeError, "not str"),
        (lambda t, e: keyset(sa.select(t), key="nope", connection=e), ValueError, "'nope' is not"),
        (lambda t, e: keyset(sa.select(t.c.group), key="id", connection=e), ValueError, "'id'"),
        (lambda t, e: keyset(sa.select(t), key=t.c.id, connection=e), TypeError, "a name or"),
        (lambda t, e: keyset(sa.select(t).limit(5), key="id", connection=e), ValueError, "LIMIT"),
        (lambda t, e: keyset(sa.select(t).offset(5), key="id", connection=e), ValueError, "OFFSET"),
    ],
    ids=[
        "text",
        "list",
        "no connection",
        "not a connection",
        "unknown key",
        "key not selected",
        "column object",
        "limit",
        "offset",
    ],
)
def test_bad_input_raises_when_keyset_is_called(
    sqlite_engine: sa.Engine,
    sqlite_table: sa.Table,
    call: Callable[[sa.Table, sa.Engine], Any],
    error: type[Exception],
    message: str,
) -> None:
    statements = count_queries(sqlite_engine)
    with pytest.raises(error, match=message):
        call(sqlite_table, sqlite_engine)
    assert statements == []


def test_a_null_key_raises_before_a_session_entity_row_is_read(
    engine: sa.Engine, make_table: MakeTable
) -> None:
    side = SelectSide(engine, make_table)
    side.nullable(with_ids(NULL_KEY_ROWS["key"]))

    class Base(DeclarativeBase):
        pass

    class Thing(Base):
        __table__ = side.tables["nullable"]

    seen: list[int] = []
    with Session(engine) as session:
        source = keyset(sa.select(Thing), key="key", batch_size=2, connection=session)
        with pytest.raises(ValueError, match=NULL_KEY.format("key")):
            seen.extend(row[0].id for _, row in source(None))
    assert seen == []
