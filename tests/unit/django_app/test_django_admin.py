"""The admin page of the checkpoint table, through Django's test client as a superuser."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery, signals
from django.conf import settings
from django.contrib import admin
from django.core.management import call_command
from django.db import connections
from django.test import Client, override_settings
from django.test.utils import setup_test_environment, teardown_test_environment
from django.urls import path

from celery_resumable import CheckpointStore, ResumableTask, checkpoint_store, iterate, step
from celery_resumable.contrib.django.models import Checkpoint
from celery_resumable.store.records import State
from celery_resumable.worker.notice import clear_shutdown
from tests.unit.django_app.conftest import drop


def __getattr__(name: str) -> Any:
    """``urlpatterns``, built when Django first resolves a URL (the admin app is installed
    by the ``admin_site`` fixture only)."""
    if name == "urlpatterns":
        return [path("admin/", admin.site.urls)]
    raise AttributeError(name)


ADMIN_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
]
ADMIN_SETTINGS: dict[str, Any] = {
    "INSTALLED_APPS": [*ADMIN_APPS, "celery_resumable.contrib.django", "tests.unit.django_app"],
    "ROOT_URLCONF": __name__,
    "ALLOWED_HOSTS": ["testserver"],
    "MIDDLEWARE": [
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
    ],
    "TEMPLATES": [
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "APP_DIRS": True,
            "OPTIONS": {
                "context_processors": [
                    "django.template.context_processors.request",
                    "django.contrib.auth.context_processors.auth",
                    "django.contrib.messages.context_processors.messages",
                ]
            },
        }
    ],
}
CHANGELIST = "/admin/celery_resumable/checkpoint/"


@pytest.fixture(scope="module")
def admin_site() -> Iterator[None]:
    """Django's admin on the ``default`` database, migrated back to zero afterwards."""
    connection = connections["default"]
    had_migrations = "django_migrations" in connection.introspection.table_names()
    # The test client's response.context needs Django's instrumented template rendering.
    setup_test_environment()
    with override_settings(**ADMIN_SETTINGS):
        # Set inside the override, which drops it on exit: the suite's settings have none,
        # and override_settings cannot restore an empty SECRET_KEY.
        settings.SECRET_KEY = "admin-tests"
        for label in ("contenttypes", "auth", "sessions", "admin"):
            call_command("migrate", label, database="default", verbosity=0)
        yield
        for label in ("admin", "sessions", "auth", "contenttypes"):
            call_command("migrate", label, "zero", database="default", verbosity=0)
    teardown_test_environment()
    if not had_migrations:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS django_migrations")


@pytest.fixture
def app() -> Iterator[Celery]:
    """The project's Celery app: checkpoints in Django's default database, in the model's table."""
    celery_app = Celery("admin-tests", broker="memory://", backend="cache+memory://")
    celery_app.conf.update(
        resumable_store_url="django://default",
        resumable_table_name=Checkpoint._meta.db_table,
        resumable_checkpoint_interval=None,
        task_store_eager_result=False,
    )
    celery_app.set_current()
    yield celery_app
    clear_shutdown()
    celery_app.close()
    connection = connections["default"]
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {connection.ops.quote_name(Checkpoint._meta.db_table)}")


@pytest.fixture(scope="module", autouse=True)
def _drop_table() -> Iterator[None]:
    """Drop the checkpoint table after these tests (the store creates it once per process)."""
    yield
    drop("default", Checkpoint._meta.db_table)


@pytest.fixture
def store(app: Celery) -> CheckpointStore:
    return checkpoint_store(app)


@pytest.fixture
def client(admin_site: None) -> Client:
    from django.contrib.auth.models import User

    user = User.objects.create_superuser(f"admin-{uuid.uuid4().hex[:8]}", "a@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def sent() -> Iterator[list[tuple[str, str]]]:
    """The (task name, task id) of each message the app publishes."""
    published: list[tuple[str, str]] = []

    def record(sender: Any = None, headers: Any = None, **_: Any) -> None:
        published.append((str(headers["task"]), str(headers["id"])))

    signals.before_task_publish.connect(record, weak=False)
    yield published
    signals.before_task_publish.disconnect(record)


def _failed_task(app: Celery) -> str:
    """Run a task that fails in its second step; return its id."""

    @app.task(base=ResumableTask, bind=True, shared=False, name="admin.tests.fails")
    def fails(self: Any, count: int) -> None:
        step("prepare", lambda: count)
        for item in iterate("import", range(count)):
            if item == 2:
                raise RuntimeError("broken")

    result = fails.apply(args=(5,))
    assert result.state == "FAILURE"
    return str(result.id)


def _running_task(store: CheckpointStore, task_id: str) -> None:
    store.claim(task_id, "admin.tests.long", "owner", 600)
    store.save(task_id, "owner", State((), "copy", {"page": 4}, 0, 40, 100), lease_seconds=600)


def _messages(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_the_list_shows_each_checkpoint_with_its_step_and_progress(
    client: Client, app: Celery, store: CheckpointStore
) -> None:
    # Given a failed task and a running one
    failed = _failed_task(app)
    _running_task(store, "running-1")

    # When the list page is opened
    response = client.get(CHANGELIST)

    # Then it shows both, with status, step and progress
    assert response.status_code == 200
    page = response.content.decode()
    assert failed in page and "running-1" in page
    assert "admin.tests.fails" in page and "admin.tests.long" in page
    assert "failed" in page and "running" in page
    assert "40/100" in page
    assert "import" in page and "copy" in page


def test_filters_and_search(client: Client, app: Celery, store: CheckpointStore) -> None:
    failed = _failed_task(app)
    _running_task(store, "running-2")

    by_status = client.get(CHANGELIST, {"status": "running"}).content.decode()
    by_name = client.get(CHANGELIST, {"task_name": "admin.tests.fails"}).content.decode()
    by_id = client.get(CHANGELIST, {"q": failed[:13]}).content.decode()

    assert "running-2" in by_status and failed not in by_status
    assert failed in by_name and "running-2" not in by_name
    assert failed in by_id and "running-2" not in by_id


def test_retry_sends_a_failed_task_again_and_refuses_a_running_one(
    client: Client, app: Celery, store: CheckpointStore, sent: list[tuple[str, str]]
) -> None:
    # Given a failed task and a running one
    failed = _failed_task(app)
    _running_task(store, "running-3")

    # When both are retried from the list
    response = client.post(
        CHANGELIST,
        {"action": "retry", "_selected_action": [failed, "running-3"]},
        follow=True,
    )

    # Then the failed one is sent again under its id, the running one is not, each reported
    assert sent == [("admin.tests.fails", failed)]
    assert sorted(_messages(response)) == sorted(
        [f"{failed}: sent", "running-3: running; nothing to retry"]
    )


def test_reset_keeps_a_running_task_unless_forced(
    client: Client, app: Celery, store: CheckpointStore
) -> None:
    # Given a failed task and a running one
    failed = _failed_task(app)
    _running_task(store, "running-4")
    selected = [failed, "running-4"]

    # When both are reset
    response = client.post(
        CHANGELIST, {"action": "reset", "_selected_action": selected}, follow=True
    )

    # Then the failed one is reset, the running one kept, each reported
    assert sorted(_messages(response)) == sorted(
        [
            f"{failed}: reset",
            "running-4: running; kept (use the action that resets running tasks too)",
        ]
    )
    assert store.get(failed) is None
    assert store.get("running-4") is not None

    # And the forced reset takes the running one too
    response = client.post(
        CHANGELIST, {"action": "force_reset", "_selected_action": ["running-4"]}, follow=True
    )
    assert _messages(response) == ["running-4: reset"]
    assert store.get("running-4") is None


def test_rows_cannot_be_added_edited_or_deleted_here(
    client: Client, app: Celery, store: CheckpointStore
) -> None:
    _running_task(store, "running-5")

    detail = client.get(f"{CHANGELIST}running-5/change/")
    add = client.get(f"{CHANGELIST}add/")
    post = client.post(f"{CHANGELIST}running-5/change/", {"status": "completed"})
    actions = client.get(CHANGELIST).context["action_form"].fields["action"].choices

    assert detail.status_code == 200
    assert "running-5" in detail.content.decode()
    assert add.status_code == 403
    assert post.status_code == 403
    assert store.get("running-5").status == "running"  # type: ignore[union-attr]
    assert [name for name, _ in actions if name] == ["retry", "reset", "force_reset"]
