"""Settings: defaults, app.conf, per-task overrides and clear errors for bad values."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from celery import Celery

from celery_resumable import ResumableConfig, ResumableTask
from celery_resumable.config import config_for


def test_defaults() -> None:
    config = config_for(Celery("defaults"))

    assert config == ResumableConfig(
        store_url="sqlite:///celery_resumable.sqlite3",
        table_name="celery_resumable_checkpoints",
        checkpoint_interval=5.0,
        max_runtime=None,
        lease_seconds=60.0,
        max_interruptions=100,
        keep_completed=86400.0,  # Celery's result_expires: one day
        create_tables=True,
        store_wait=300.0,
        track_progress=True,
    )


def test_completed_rows_are_kept_as_long_as_celery_keeps_results() -> None:
    # Given apps with results kept an hour, forever, and a store setting of their own
    hour = Celery("hour")
    hour.conf.result_expires = datetime.timedelta(hours=1)
    forever = Celery("forever")
    forever.conf.result_expires = None
    own = Celery("own")
    own.conf.update(result_expires=60, resumable_keep_completed=7200)

    # Then checkpoints are kept as long as results, a day when results never expire,
    # and as the store setting says when it is set
    assert config_for(hour).keep_completed == 3600.0
    assert config_for(forever).keep_completed == 86400.0
    assert config_for(own).keep_completed == 7200.0


def test_task_options_override_app_settings() -> None:
    app = Celery("overrides")
    app.conf.update(resumable_checkpoint_interval=1.0, resumable_max_runtime=300)

    @app.task(base=ResumableTask, bind=True, resumable_max_runtime=None, resumable_lease_seconds=10)
    def job(self: Any) -> None:
        pass

    config = job.resumable_config
    assert (config.checkpoint_interval, config.max_runtime, config.lease_seconds) == (
        1.0,
        None,
        10.0,
    )
    assert config_for(app).max_runtime == 300.0


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("resumable_checkpoint_interval", -1, "must be zero or more seconds, not -1"),
        ("resumable_checkpoint_interval", "5", "must be a number of seconds, not '5'"),
        ("resumable_max_runtime", 0, "must be more than zero seconds, not 0"),
        ("resumable_lease_seconds", None, "must be a number of seconds, not None"),
        ("resumable_max_interruptions", 2.5, "must be a whole number, zero or more, not 2.5"),
        ("resumable_store_url", "", "must be a non-empty string, not ''"),
        ("resumable_create_tables", "yes", "must be True or False, not 'yes'"),
    ],
)
def test_bad_values_name_the_setting(setting: str, value: object, message: str) -> None:
    app = Celery("bad")
    app.conf[setting] = value

    with pytest.raises(ValueError, match=f"^{setting} {message}$"):
        config_for(app)


def test_zero_interval_and_none_interval_are_allowed() -> None:
    app = Celery("intervals")
    app.conf.resumable_checkpoint_interval = 0
    assert config_for(app).checkpoint_interval == 0.0
    other = Celery("intervals2")
    other.conf.resumable_checkpoint_interval = None
    assert config_for(other).checkpoint_interval is None
