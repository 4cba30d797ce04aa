"""Completed runs kept in time partitions of PostgreSQL (``resumable_partitions``):
a completion writes the _done row once, a late duplicate is skipped after the completed
checkpoint row is gone, partitions cover now and the day ahead at the width the retention
asks, and retention drops them whole."""

from __future__ import annotations

import datetime as dt
import itertools
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from celery import Celery

from celery_resumable import CheckpointStore, ResumableTask, checkpoint_store, step
from celery_resumable.config import forget_config
from celery_resumable.errors import CheckpointStoreError
from celery_resumable.store.partitions import (
    Partition,
    ahead,
    create_partition,
    due,
    partitions,
    width_for,
)
from tests.conftest import drop_table
from tests.services import POSTGRES_URL, require

postgres = pytest.mark.postgres


@pytest.fixture
def app(table_name: str) -> Iterator[Celery]:
    """An app keeping its completed runs in time partitions of a table of this test."""
    require("postgres")
    celery_app = Celery("parted", broker="memory://", backend="cache+memory://")
    celery_app.conf.update(
        resumable_store_url=POSTGRES_URL,
        resumable_table_name=table_name,
        resumable_partitions=True,
        task_store_eager_result=False,
    )
    yield celery_app
    forget_config(celery_app)
    drop_table(POSTGRES_URL, table_name)
    drop_table(POSTGRES_URL, f"{table_name}_done")


def _job(app: Celery, ran: list[str]) -> Any:
    @app.task(base=ResumableTask, bind=True, name="parted.job")
    def job(self: Any) -> int:
        ran.append(self.request.id)
        return step("one", lambda: 1) + step("two", lambda: 2)

    return job


def _age(store: CheckpointStore, seconds: float) -> None:
    """Make the completed checkpoint rows ``seconds`` older (as if written that long ago)."""
    with store.engine.begin() as connection:
        connection.execute(
            sa.text(
                f"UPDATE {store.table_name} SET updated_at = updated_at - "
                "make_interval(secs => :s) WHERE status = 'completed'"
            ),
            {"s": seconds},
        )


def _live_rows(store: CheckpointStore) -> int:
    with store.engine.connect() as connection:
        count = f"SELECT count(*) FROM {store.table_name}"
        return int(connection.execute(sa.text(count)).scalar_one())


def _done_rows(store: CheckpointStore, task_id: str) -> list[Any]:
    with store.engine.connect() as connection:
        query = (
            f"SELECT tableoid::regclass::text, * FROM {store.table_name}_done WHERE task_id = :t"
        )
        return list(connection.execute(sa.text(query), {"t": task_id}))


@postgres
def test_a_completion_writes_its_done_row_once_and_only_while_it_holds_the_lease(
    app: Celery,
) -> None:
    store = checkpoint_store(app)
    assert store.claim("task-1", "parted.job", "owner-1", 60).claimed

    # A completion by a run that lost its lease writes nothing
    assert not store.complete("task-1", "owner-2", 0)
    assert _done_rows(store, "task-1") == []

    # The holder's completion writes the row into the partition of the moment; run again as
    # after a lost answer, it matches the completed row and writes no second one
    assert store.complete("task-1", "owner-1", 2)
    params = {"p_task_id": "task-1", "p_owner": "owner-1", "p_status": "completed"}
    again = store._seam.statement(
        "task-1", "save to", lambda sql: sql.complete_again, {**params, "p_interruptions": 2}
    )
    assert again.rowcount == 1
    rows = _done_rows(store, "task-1")
    assert len(rows) == 1
    partition, finished_at, _, interruptions, task_id, task_name = rows[0]
    # In the partition of 3 hours that holds its end (the default retention: one day)
    slot = finished_at.hour // 3 * 3
    assert partition == f"{store.table_name}_done_{finished_at:%Y%m%d}{slot:02d}"
    assert (interruptions, task_id, task_name) == (2, "task-1", "parted.job")


@postgres
def test_a_late_duplicate_is_skipped_once_the_completed_row_left_the_checkpoint_table(
    app: Celery,
) -> None:
    ran: list[str] = []
    job = _job(app, ran)
    store = checkpoint_store(app)
    first = job.apply()
    assert first.result == 3

    # Given the completed checkpoint row deleted by purge, five minutes on
    assert store.purge() == 0  # too young: it stays beside its _done row
    assert _live_rows(store) == 1
    _age(store, 301)
    assert store.purge() == 0  # not a purge of the task: it is still known completed
    assert _live_rows(store) == 0

    # When the task is delivered again, the claim finds it completed
    claim = store.claim(first.id, "parted.job", "late-duplicate", 60)
    assert not claim.claimed
    assert claim.checkpoint.status == "completed"
    assert _live_rows(store) == 0
    row = store.get(first.id)
    assert row is not None and row.status == "completed" and row.task_name == "parted.job"
    assert row.finished_steps == () and row.owner is None
    assert ran == [first.id]


@postgres
def test_list_shows_each_task_once_with_the_completed_ones_from_the_done_table(
    app: Celery,
) -> None:
    ran: list[str] = []
    job = _job(app, ran)
    store = checkpoint_store(app)
    done = [job.apply().id for _ in range(3)]
    assert store.claim("running-1", "parted.other", "o", 60).claimed

    def listed(**filters: Any) -> list[tuple[str, str]]:
        return sorted((c.task_id, c.status) for c in store.list(**filters))

    everything = sorted([*((t, "completed") for t in done), ("running-1", "running")])
    # While the completed rows are in both tables, and once they left the checkpoint one
    for moved in (False, True):
        if moved:
            _age(store, 301)
            store.purge()
            assert _live_rows(store) == 1
        assert listed() == everything
        assert listed(status="completed") == sorted((t, "completed") for t in done)
        assert listed(status="running") == [("running-1", "running")]
        assert listed(task_name="parted.other") == [("running-1", "running")]
        assert [c.task_id for c in store.list(limit=1)] == ["running-1"]  # newest first
        assert len(store.list(limit=2, offset=2)) == 2


@postgres
def test_a_reset_of_a_completed_task_lets_it_run_again(app: Celery) -> None:
    ran: list[str] = []
    job = _job(app, ran)
    store = checkpoint_store(app)
    task_id = job.apply().id
    _age(store, 301)
    store.purge()

    assert store.reset(task_id)
    assert store.get(task_id) is None
    assert store.claim(task_id, "parted.job", "owner-2", 60).claimed
    assert not store.reset("never-seen")


def _now(store: CheckpointStore) -> dt.datetime:
    with store.engine.connect() as connection:
        now = connection.execute(sa.text("SELECT timezone('UTC', now())")).scalar_one()
        assert isinstance(now, dt.datetime)
        return now


def _assert_cover(spans: list[Partition], since: dt.datetime, until: dt.datetime) -> None:
    """``spans`` follow one another without a gap or an overlap from ``since`` to ``until``."""
    spans = sorted(spans, key=lambda span: span.start)
    assert spans[0].start <= since
    for before, after in itertools.pairwise(spans):
        assert before.end == after.start, (before, after)
    assert spans[-1].end > until


@postgres
def test_purge_drops_the_partitions_older_than_keep_completed(app: Celery) -> None:
    store = checkpoint_store(app)
    store.get("warm-up")  # makes the tables and the partitions due
    done = f"{store.table_name}_done"
    now = _now(store)
    hours = dt.timedelta(hours=3)
    with store.engine.begin() as connection:
        made = partitions(connection, done)
        # The default retention (one day) asks for partitions of 3 hours, a day ahead
        assert {span.end - span.start for span in made} == {hours}
        assert ahead(hours) == dt.timedelta(days=1)
        _assert_cover(made, now, now + ahead(hours))
        # Given two older partitions holding 3 and 2 completed runs: one that ended more
        # than a day ago, one that ended when the first one made begins
        first = made[0].start
        for start, runs in ((first - dt.timedelta(days=1) - hours, 3), (first - hours, 2)):
            connection.execute(sa.text(create_partition(done, start, start + hours)))
            for n in range(runs):
                connection.execute(
                    sa.text(f"INSERT INTO {done} VALUES (:at, :at, 0, :id, 'parted.job')"),
                    {"at": start + dt.timedelta(hours=1), "id": f"old-{runs}-{n}"},
                )
    assert store.get("old-3-0") is not None

    # When purge runs with the default age (one day), then with none
    assert store.purge() == 3
    with store.engine.connect() as connection:
        left = {span.start for span in partitions(connection, done)}
    # Then the partition that ended more than a day ago went whole; the other stays
    assert first - dt.timedelta(days=1) - hours not in left
    assert first - hours in left
    assert store.get("old-3-0") is None and store.get("old-2-0") is not None
    assert store.purge(older_than=0) == 2
    with store.engine.connect() as connection:
        assert partitions(connection, done) == made


def test_the_width_of_partitions_is_at_most_an_eighth_of_the_retention() -> None:
    hours = [width_for(keep) / dt.timedelta(hours=1) for keep in (600, 86400, 7 * 86400)]
    assert hours == [1, 3, 12]
    assert width_for(57600) == dt.timedelta(hours=2)
    assert width_for(30 * 86400) == width_for(None) == dt.timedelta(days=1)


def test_partitions_due_cover_now_to_a_day_ahead_around_those_made_at_other_widths() -> None:
    now = dt.datetime(2026, 12, 5, 10, 30)
    made = due("t_done", [], now, dt.timedelta(hours=3))
    assert [span.start.hour for span in made] == [9, 12, 15, 18, 21, 0, 3, 6, 9]
    assert made[0].name == "t_done_2026120509"
    _assert_cover(made, now, now + dt.timedelta(days=1))
    # Narrower partitions: eight ahead, not a day of them
    made = due("t_done", [], now, dt.timedelta(hours=1))
    assert [span.start.hour for span in made] == list(range(10, 19))
    assert due("t_done", [], now, dt.timedelta(days=1))[-1].end == dt.datetime(2026, 12, 7)

    # Partitions made earlier at other widths, with a gap, stay as they are; new ones
    # fill around them, at most as wide as asked and aligned on midnight
    picks = random.Random(17)
    for _ in range(300):
        have: list[Partition] = []
        start = dt.datetime(2026, 12, 4) + dt.timedelta(hours=picks.randrange(48))
        for _ in range(picks.randrange(4)):
            width = dt.timedelta(hours=picks.choice((1, 3, 6, 24)))
            have.append(Partition("", start, start + width))
            start += width + dt.timedelta(hours=picks.choice((0, 0, 2)))
        width = dt.timedelta(hours=picks.choice((1, 2, 3, 4, 6, 8, 12, 24)))
        made = due("t_done", have, now, width)
        assert all(span.end - span.start <= width for span in made)
        assert all(span.end <= dt.datetime(2026, 12, 8) for span in made)
        # The new spans overlap no old one, and old and new cover now to a day ahead
        for span in made:
            assert not [old for old in have if old.start < span.end and span.start < old.end]
        covering = sorted(have + made, key=lambda span: span.start)
        until = now + ahead(width)
        relevant = [span for span in covering if span.end > now and span.start <= until]
        _assert_cover(relevant, now, until)


def test_partitions_need_postgresql(tmp_path: Path) -> None:
    store = CheckpointStore(f"sqlite:///{tmp_path / 'c.sqlite3'}", partitions=True)
    with pytest.raises(CheckpointStoreError, match="resumable_partitions needs a Post"):
        store.get("task-1")


def test_the_setting_is_a_flag() -> None:
    app = Celery("partitions-flag", set_as_current=False)
    app.conf.resumable_partitions = "yes"
    with pytest.raises(ValueError, match="resumable_partitions must be True or False"):
        checkpoint_store(app)


@postgres
def test_a_completion_on_a_day_without_its_partition_makes_it(app: Celery) -> None:
    ran: list[str] = []
    job = _job(app, ran)
    store = checkpoint_store(app)
    store.get("warm-up")
    done = f"{store.table_name}_done"
    with store.engine.begin() as connection:
        made = partitions(connection, done)
        for span in made:
            connection.execute(sa.text(f'DROP TABLE "{span.name}"'))

    # A run completes all the same, and its _done row is in the partition made for it
    first = job.apply()
    assert first.result == 3
    assert len(_done_rows(store, first.id)) == 1
    with store.engine.connect() as connection:
        assert partitions(connection, done)[0] in made


@postgres
def test_purge_keeps_a_fresh_completed_row_beside_its_done_row_whatever_the_age(
    app: Celery,
) -> None:
    ran: list[str] = []
    job = _job(app, ran)
    store = checkpoint_store(app)
    task_id = job.apply().id

    # A purge of every completed row leaves it: a claim that started before the
    # completion committed may still be looking for it
    store.purge(older_than=0)
    assert _live_rows(store) == 1
    assert store.get(task_id) is not None


@postgres
def test_a_table_name_with_capitals_gets_its_partitions(table_name: str) -> None:
    require("postgres")
    name = f"Ckpt_{table_name}"
    store = CheckpointStore(POSTGRES_URL, name, partitions=True)
    try:
        assert store.claim("task-1", "parted.job", "owner-1", 60).claimed
        assert store.complete("task-1", "owner-1", 0)
        with store.engine.connect() as connection:
            made = partitions(connection, f"{name}_done")
        _assert_cover(made, _now(store), _now(store) + dt.timedelta(days=1))
        assert store.purge(older_than=0) == 0
    finally:
        with store.engine.begin() as connection:
            connection.execute(sa.text(f'DROP TABLE IF EXISTS "{name}", "{name}_done"'))
        store.engine.dispose()
