"""keyset() pages a query through iterate(): a query per batch, resumed after the last key."""

from __future__ import annotations

import datetime as dt
import random
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from celery import Celery
from celery.result import AsyncResult
from sqlalchemy.orm import DeclarativeBase, Session

from celery_resumable import ResumableTask, checkpoint_store, iterate, keyset
from celery_resumable.testing import interrupt_at_cursor, interrupt_when
from tests.conftest import drop_table

MakeTable = Callable[..., sa.Table]


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


@pytest.fixture
def numbers(engine: sa.Engine, make_table: MakeTable) -> Callable[[list[int]], sa.Table]:
    """A table of integer ids (inserted in random order) and a value."""

    def make(ids: list[int]) -> sa.Table:
        table = make_table(
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("value", sa.String(20)),
        )
        insert(engine, table, ids)
        return table

    return make


def insert(engine: sa.Engine, table: sa.Table, ids: list[int]) -> None:
    shuffled = random.sample(ids, len(ids))
    with engine.begin() as connection:
        connection.execute(table.insert(), [{"id": i, "value": f"v{i}"} for i in shuffled])


def count_queries(engine: sa.Engine) -> list[str]:
    """The SQL statements sent on ``engine`` from now on."""
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(args[2])

    sa.event.listen(engine, "before_cursor_execute", record)
    return statements


@pytest.mark.parametrize(("rows", "batch_size", "queries"), [(10, 3, 4), (9, 3, 4), (2, 500, 1)])
def test_pages_through_all_rows_in_key_order_one_query_per_batch(
    db_app: Celery,
    engine: sa.Engine,
    numbers: Callable[[list[int]], sa.Table],
    rows: int,
    batch_size: int,
    queries: int,
) -> None:
    # Given a table of rows inserted in random order
    table = numbers(list(range(1, rows + 1)))
    statements = count_queries(engine)
    seen: list[int] = []
    checked_out: list[int] = []

    @db_app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        source = keyset(sa.select(table), key="id", batch_size=batch_size, connection=engine)
        for row in iterate("rows", source):
            seen.append(row.id)
            checked_out.append(engine.pool.checkedout())

    # When the task runs
    assert job.apply().state == "SUCCESS"

    # Then every row came once, in key order, with a query per batch (and one short or
    # empty batch at the end) after the one query that looks for a NULL key, and no
    # connection was held while the loop body ran
    assert seen == list(range(1, rows + 1))
    assert len(statements) == 1 + queries == 1 + rows // batch_size + 1
    assert set(checked_out) == {0}


def test_an_interrupted_run_resumes_after_the_last_key(
    db_app: Celery, engine: sa.Engine, numbers: Callable[[list[int]], sa.Table]
) -> None:
    table = numbers(list(range(1, 26)))
    seen: list[int] = []

    @db_app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        for row in iterate(
            "rows", keyset(sa.select(table), key="id", batch_size=4, connection=engine)
        ):
            seen.append(row.id)

    # Given a run interrupted after its tenth row
    with interrupt_at_cursor("rows", 10):
        first = job.apply()
    assert first.state == "IGNORED"
    assert seen == list(range(1, 11))
    checkpoint = checkpoint_store(db_app).get(first.id)
    assert checkpoint is not None
    assert (checkpoint.current_step, checkpoint.cursor) == ("rows", 10)

    # When it runs again under the same task id
    statements = count_queries(engine)
    second = job.apply(task_id=first.id)

    # Then it continues after key 10: no row twice, none missed
    assert second.state == "SUCCESS"
    assert seen == list(range(1, 26))
    assert len(statements) == 1 + 4  # the NULL check, rows 11-14, 15-18, 19-22, 23-25


def test_rows_inserted_behind_the_cursor_are_not_visited_and_those_ahead_are(
    db_app: Celery, engine: sa.Engine, numbers: Callable[[list[int]], sa.Table]
) -> None:
    table = numbers(list(range(10, 101, 10)))
    seen: list[int] = []

    @db_app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        for row in iterate(
            "rows", keyset(sa.select(table), key="id", batch_size=3, connection=engine)
        ):
            seen.append(row.id)

    # Given a run interrupted after key 50
    with interrupt_at_cursor("rows", lambda cursor: cursor == 50):
        first = job.apply()
    assert seen == [10, 20, 30, 40, 50]

    # When rows are inserted behind and ahead of the cursor before it resumes
    insert(engine, table, [5, 15, 45, 55, 200])
    job.apply(task_id=first.id)

    # Then only those ahead are visited, in key order
    assert seen == [10, 20, 30, 40, 50, 55, 60, 70, 80, 90, 100, 200]


def test_a_composite_key_pages_and_resumes_with_a_tuple_cursor(
    db_app: Celery, engine: sa.Engine, make_table: MakeTable
) -> None:
    table = make_table(
        sa.Column("day", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(20), primary_key=True),
    )
    keys = [(day, f"n{n}") for day in (1, 2, 3, 4) for n in (3, 1, 2)]
    with engine.begin() as connection:
        connection.execute(
            table.insert(), [{"day": d, "name": n} for d, n in random.sample(keys, 12)]
        )
    source = keyset(sa.select(table), key=("day", "name"), batch_size=4, connection=engine)
    seen: list[tuple[int, str]] = []

    @db_app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        for row in iterate("rows", source):
            seen.append((row.day, row.name))

    # Given a run interrupted in the middle of a day, in the middle of a batch
    with interrupt_at_cursor("rows", 5):
        first = job.apply()
    checkpoint = checkpoint_store(db_app).get(first.id)
    assert checkpoint is not None
    assert checkpoint.cursor == {"$type": "tuple", "items": [2, "n2"]}

    # When it resumes
    job.apply(task_id=first.id)

    # Then the rows came in (day, name) order, each once, and the cursor is a typed tuple
    assert seen == sorted(keys)
    assert source.cursor_type == tuple[int, str]


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

    @db_app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        for row in iterate("rows", source):
            seen.append(row.key)

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


def test_count_gives_the_progress_total(
    db_app: Celery, engine: sa.Engine, numbers: Callable[[list[int]], sa.Table]
) -> None:
    table = numbers(list(range(1, 8)))
    progress: dict[str, list[Any]] = {}

    @db_app.task(base=ResumableTask, bind=True, resumable_checkpoint_interval=0)
    def job(self: Any, count: bool) -> None:
        source = keyset(sa.select(table), key="id", batch_size=3, connection=engine, count=count)
        for row in iterate("rows", source):
            if row.id == 5:
                result = AsyncResult(self.request.id, app=db_app)
                progress[str(count)] = [result.state, result.info]

    # When the task runs with count=True, then without
    statements = count_queries(engine)
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


@pytest.mark.parametrize("kind", ["connection", "session", "session_entity"])
def test_runs_on_a_connection_or_a_session(
    db_app: Celery, engine: sa.Engine, numbers: Callable[[list[int]], sa.Table], kind: str
) -> None:
    table = numbers(list(range(1, 11)))

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
    db_app: Celery, engine: sa.Engine, numbers: Callable[[list[int]], sa.Table]
) -> None:
    table = numbers(list(range(1, 21)))
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
        (lambda t, e: keyset(sa.select(t), key=("id", "id"), connection=e), ValueError, "twice"),
        (lambda t, e: keyset(sa.select(t), key=(), connection=e), TypeError, "column name"),
        (lambda t, e: keyset(sa.select(t), key=t.c.id, connection=e), TypeError, "column name"),
        (
            lambda t, e: keyset(sa.select(t), key="id", batch_size=0, connection=e),
            ValueError,
            "at least 1",
        ),
        (
            lambda t, e: keyset(sa.select(t), key="id", batch_size=2.5, connection=e),
            TypeError,
            "int",
        ),
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
        "key twice",
        "empty key",
        "column object",
        "batch size 0",
        "batch size float",
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


NULL_KEY = (
    r"keyset\(\) key \({}\) is NULL in a row of the query; a keyset key must never be NULL: "
    "filter those rows out or page by a key that has no NULL"
)

NULL_KEY_ROWS = {
    "key": [(1, 1), (2, 2), (None, 3), (None, 4), (5, 5), (6, 6), (7, 7)],
    "part": [(1, 1), (2, 2), (3, None), (None, 4), (5, 5), (6, 6), (7, 7)],
}


@pytest.fixture
def null_keys(engine: sa.Engine, make_table: MakeTable) -> Callable[[list[Any]], sa.Table]:
    """A table with an id and two nullable columns ``key`` and ``part``, one row per pair."""

    def make(pairs: list[Any]) -> sa.Table:
        table = make_table(
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("key", sa.Integer, nullable=True),
            sa.Column("part", sa.Integer, nullable=True),
        )
        with engine.begin() as connection:
            connection.execute(
                table.insert(),
                [{"id": i, "key": k, "part": p} for i, (k, p) in enumerate(pairs, start=1)],
            )
        return table

    return make


@pytest.mark.parametrize(
    ("key", "names"), [("key", "key"), (("key", "part"), "key, part")], ids=["key", "composite"]
)
def test_a_null_key_fails_the_run_before_any_row_is_processed(
    db_app: Celery,
    engine: sa.Engine,
    null_keys: Callable[[list[Any]], sa.Table],
    key: str | tuple[str, ...],
    names: str,
) -> None:
    # Given keys 1, 2, NULL, NULL, 5, 6, 7 (for a composite key: a NULL in either part)
    table = null_keys(NULL_KEY_ROWS["key" if isinstance(key, str) else "part"])
    seen: list[int] = []

    @db_app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        source = keyset(sa.select(table), key=key, batch_size=2, connection=engine)
        for row in iterate("rows", source):
            seen.append(row.id)

    # When the task runs
    result = job.apply()

    # Then it fails with the keyset's ValueError before the loop body saw a row, on every
    # database (PostgreSQL sorts NULLs last, SQLite and MariaDB first)
    assert result.state == "FAILURE"
    assert isinstance(result.result, ValueError)
    assert re.fullmatch(NULL_KEY.format(names), str(result.result))
    assert seen == []


def test_a_resumed_run_fails_before_any_row_when_null_keys_appeared(
    db_app: Celery, engine: sa.Engine, null_keys: Callable[[list[Any]], sa.Table]
) -> None:
    table = null_keys([(k, k) for k in range(1, 6)])
    seen: list[int] = []

    @db_app.task(base=ResumableTask, bind=True)
    def job(self: Any) -> None:
        source = keyset(sa.select(table), key="key", batch_size=2, connection=engine)
        for row in iterate("rows", source):
            seen.append(row.key)

    # Given a run interrupted after key 2, and rows with a NULL key added since
    with interrupt_at_cursor("rows", 2):
        first = job.apply()
    assert seen == [1, 2]
    with engine.begin() as connection:
        connection.execute(table.insert(), [{"id": 10, "key": None}, {"id": 11, "key": None}])

    # When it resumes
    second = job.apply(task_id=first.id)

    # Then it fails before the loop body saw another row
    assert second.state == "FAILURE"
    assert re.fullmatch(NULL_KEY.format("key"), str(second.result))
    assert seen == [1, 2]


def test_a_null_key_raises_before_a_session_entity_row_is_read(
    engine: sa.Engine, null_keys: Callable[[list[Any]], sa.Table]
) -> None:
    table = null_keys(NULL_KEY_ROWS["key"])

    class Base(DeclarativeBase):
        pass

    class Thing(Base):
        __table__ = table

    seen: list[int] = []
    with Session(engine) as session:
        source = keyset(sa.select(Thing), key="key", batch_size=2, connection=session)
        with pytest.raises(ValueError, match=NULL_KEY.format("key")):
            seen.extend(row[0].id for _, row in source(None))
    assert seen == []


def test_one_null_check_per_pass_not_per_batch(
    engine: sa.Engine, numbers: Callable[[list[int]], sa.Table]
) -> None:
    table = numbers(list(range(1, 8)))
    source = keyset(sa.select(table), key="id", batch_size=2, connection=engine)

    statements = count_queries(engine)
    assert [key for key, _ in source(None)] == list(range(1, 8))
    fresh = len(statements)
    assert [key for key, _ in source(3)] == list(range(4, 8))

    # 1 check + 4 batches of 2, 2, 2, 1; then 1 check + 2 batches of 2, 2 (and an empty one)
    assert fresh == 1 + 4
    assert len(statements) - fresh == 1 + 3
    assert sum("IS NULL" in statement for statement in statements) == 2


def test_a_keyset_without_count_is_not_sized_and_with_count_it_is(
    sqlite_engine: sa.Engine, sqlite_table: sa.Table
) -> None:
    with sqlite_engine.begin() as connection:
        connection.execute(sqlite_table.insert(), [{"id": i} for i in range(1, 4)])
    query = sa.select(sqlite_table)
    plain = keyset(query, key="id", connection=sqlite_engine)
    counted = keyset(query, key="id", connection=sqlite_engine, count=True)

    assert not hasattr(plain, "__len__")
    assert len(counted) == 3
    assert bool(counted)
    assert [key for key, _ in counted(1)] == [2, 3]
