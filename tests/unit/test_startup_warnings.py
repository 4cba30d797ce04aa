"""A worker warns at start about settings it will not read and about the default store."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

from celery_resumable import ResumableTask, step
from celery_resumable.worker.notice import clear_shutdown

# start_worker finalizes the app, which registers every shared task defined so far in
# the session (the unit tests define several under the same names).
pytestmark = pytest.mark.filterwarnings("ignore::celery.exceptions.DuplicateTaskNameWarning")


def _app(**settings: object) -> Celery:
    app = Celery("startup", broker="memory://", backend="cache+memory://")
    app.conf.update(settings)

    @app.task(base=ResumableTask, bind=True, shared=False)
    def job(self: object) -> int:
        return int(step("one", lambda: 1))

    return app


def _start_and_stop(app: Celery) -> None:
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING"):
            pass
    finally:
        clear_shutdown()
        app.close()


class _Records(logging.Handler):
    """The records logged to the ``celery_resumable`` logger (the worker sets up its own
    logging when it starts, which leaves pytest's capture out)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "celery_resumable" and record.levelno == logging.WARNING:
            self.messages.append(record.getMessage())


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    """The warnings of the ``celery_resumable`` logger during the test."""
    handler = _Records()
    logger = logging.getLogger("celery_resumable")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def test_a_misspelled_setting_is_named_with_the_setting_meant(
    warnings: list[str], tmp_path: Path
) -> None:
    # Given an app whose store setting is misspelled, and a setting that is nothing like ours
    app = _app(
        resumable_store_url=f"sqlite:///{tmp_path / 'store.sqlite3'}",
        resumable_store_uri="postgresql://db/app",
        resumable_colour="blue",
    )

    # When a worker starts
    _start_and_stop(app)

    # Then it warns once for each, naming the closest known setting where there is one
    messages = list(warnings)
    assert len(messages) == 2, messages
    uri, colour = sorted(messages, key=lambda message: "colour" in message)
    assert "resumable_store_uri" in uri
    assert "did you mean resumable_store_url?" in uri
    assert "resumable_colour" in colour
    assert "did you mean" not in colour


def test_a_misspelled_setting_under_a_django_namespace(warnings: list[str], tmp_path: Path) -> None:
    # Given settings read with config_from_object(..., namespace="CELERY")
    class Settings:
        CELERY_BROKER_URL = "memory://"
        CELERY_RESUMABLE_STORE_URL = f"sqlite:///{tmp_path / 'store.sqlite3'}"
        CELERY_RESUMABLE_CHECKPOINT_INTERVALS = 1.0

    app = _app()
    app.config_from_object(Settings, namespace="CELERY")

    # When a worker starts
    _start_and_stop(app)

    # Then the misspelled one is named as written, with the name meant in the same spelling
    messages = list(warnings)
    assert len(messages) == 1, messages
    assert "CELERY_RESUMABLE_CHECKPOINT_INTERVALS" in messages[0]
    assert "did you mean CELERY_RESUMABLE_CHECKPOINT_INTERVAL?" in messages[0]


def test_the_default_sqlite_store_is_named_with_its_path(
    warnings: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an app that keeps the default store
    monkeypatch.chdir(tmp_path)
    app = _app()

    # When a worker starts
    _start_and_stop(app)

    # Then it says the default SQLite file is in use, where, and that only this host shares it
    messages = list(warnings)
    assert len(messages) == 1, messages
    assert str(tmp_path / "celery_resumable.sqlite3") in messages[0]
    assert "this host" in messages[0]
    assert "resumable_store_url" in messages[0]
    # and it did not create the file
    assert not (tmp_path / "celery_resumable.sqlite3").exists()


def test_no_warning_for_known_settings_and_a_configured_store(
    warnings: list[str], tmp_path: Path
) -> None:
    app = _app(
        resumable_store_url=f"sqlite:///{tmp_path / 'store.sqlite3'}",
        resumable_checkpoint_interval=1.0,
        resumable_track_progress=False,
    )

    _start_and_stop(app)

    assert warnings == []
