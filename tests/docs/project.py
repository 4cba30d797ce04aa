"""The temporary project that the Python blocks of one document run in.

Each document gets a fresh :class:`DocumentProject`: a temporary folder, a Celery app
whose checkpoints go to a SQLite file in it (broker ``memory://``, result backend
``cache+memory://``), an ``engine`` for the user's own tables, and the functions the
examples call as if the user had written them (``download_ids``, ``import_user``,
``index_user``...). ``use_project()`` and ``use_django()``, called by the hidden blocks
of the documents that need them, add a ``proj`` package and a configured Django
(``use_django_admin()``: with its admin).
``close()`` undoes all of it.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import tempfile
import types
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from celery import Celery, current_app
from celery import _state as celery_state

from celery_resumable import ResumableTask, checkpoint_store, set_cursor, step, step_cursor
from celery_resumable.testing import interrupt_after_step, interrupt_at_cursor, interrupt_when


class DocumentProject:
    """The temporary project one document's blocks run in; ``close()`` undoes it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.folder = Path(tempfile.mkdtemp(prefix="resumable-docs-"))
        self.store_url = f"sqlite:///{self.folder / 'checkpoints.sqlite3'}"
        self.previous_app = current_app._get_current_object()
        # Every @app.task and @shared_task of a block is also registered on the apps
        # created after it; the test session's later apps must not get them.
        self.finalizers = set(celery_state._on_app_finalizers)
        self.modules = set(sys.modules)
        self.undo: list[Callable[[], None]] = []
        self.app = Celery(f"docs_{name}", broker="memory://", backend="cache+memory://")
        self.app.conf.update(
            resumable_store_url=self.store_url,
            worker_hijack_root_logger=False,
            broker_transport_options={"polling_interval": 0.05},
        )
        self.app.set_current()
        self.engine = sa.create_engine(f"sqlite:///{self.folder / 'app.sqlite3'}")

    def namespace(self) -> dict[str, Any]:
        """The names the document's blocks find without importing them."""
        imported: list[int] = []
        reports: list[int] = []
        indexed: list[Any] = []
        notified: list[Any] = []

        def download_ids(source_url: str) -> list[int]:
            return [1, 2, 3, 4, 5]

        return {
            "__name__": f"docs_{self.name}",
            "project": self,
            "app": self.app,
            "store_url": self.store_url,
            "engine": self.engine,
            "download_ids": download_ids,
            "import_user": imported.append,
            "imported": imported,
            "send_report": reports.append,
            "reports": reports,
            "index_user": indexed.append,
            "indexed": indexed,
            "notify": notified.append,
            "notified": notified,
            "checkpoint_store": checkpoint_store,
            "interrupt_after_step": interrupt_after_step,
            "interrupt_at_cursor": interrupt_at_cursor,
            "interrupt_when": interrupt_when,
            "use_project": self.use_project,
            "use_django": self.use_django,
            "use_django_admin": self.use_django_admin,
            "start_worker": self.start_worker,
            "plugin_fixtures": self.plugin_fixtures,
        }

    def use_project(self) -> types.SimpleNamespace:
        """A ``proj`` package as in the documents: ``proj.celery.app``, ``proj.tasks``.

        ``proj.tasks.import_users`` is the task of DESIGN.md: a ``download`` step, a
        ``process`` cursor step over the ids, a ``notify`` step.
        """
        app = self.app

        @app.task(base=ResumableTask, bind=True, name="proj.tasks.import_users", shared=False)
        def import_users(self: Any, ids: list[int]) -> int:
            batch = step("download", list, ids)

            def process(cursor: int | None) -> None:
                for uid in batch:
                    if cursor is not None and uid <= cursor:
                        continue
                    set_cursor(uid)

            step_cursor("process", process)
            return step("notify", len, batch)

        package = types.ModuleType("proj")
        package.__path__ = []
        celery_module = types.ModuleType("proj.celery")
        celery_module.app = app  # type: ignore[attr-defined]
        tasks = types.ModuleType("proj.tasks")
        tasks.import_users = import_users  # type: ignore[attr-defined]
        package.celery = celery_module  # type: ignore[attr-defined]
        package.tasks = tasks  # type: ignore[attr-defined]
        sys.modules.update({"proj": package, "proj.celery": celery_module, "proj.tasks": tasks})
        return types.SimpleNamespace(app=app, import_users=import_users)

    def use_django(self) -> dict[str, Any]:
        """Django with ``Order`` and ``Customer`` models, their tables and this app on it.

        Django's settings are configured once per process: when the test session has
        configured them already (tests/unit/django_app), the tables go to its
        ``default`` database, else to a SQLite file of this document. The models live in
        an isolated registry, so the project's own apps and migrations never see them.
        The checkpoint table has a name of its own and is dropped afterwards.
        """
        import django
        from django.conf import settings
        from django.db import connections, models
        from django.test.utils import isolate_apps

        if not settings.configured:
            settings.configure(
                DATABASES={
                    "default": {
                        "ENGINE": "django.db.backends.sqlite3",
                        "NAME": str(self.folder / "django.sqlite3"),
                    }
                },
                INSTALLED_APPS=["celery_resumable.contrib.django"],
                USE_TZ=True,
                DEFAULT_AUTO_FIELD="django.db.models.AutoField",
                LOGGING_CONFIG=None,
            )
            django.setup()

        with isolate_apps("docs"):

            class Customer(models.Model):  # type: ignore[misc]
                name = models.CharField(max_length=100)

                class Meta:
                    app_label = "docs"
                    db_table = f"docs_customer_{uuid.uuid4().hex[:8]}"

            class Order(models.Model):  # type: ignore[misc]
                number = models.IntegerField(unique=True)
                paid = models.BooleanField(default=False)
                marks = models.IntegerField(default=0)
                customer = models.ForeignKey(Customer, on_delete=models.CASCADE)

                class Meta:
                    app_label = "docs"
                    db_table = f"docs_order_{uuid.uuid4().hex[:8]}"

        connection = connections["default"]
        with connection.schema_editor() as editor:
            editor.create_model(Customer)
            editor.create_model(Order)
        table_name = f"docs_checkpoints_{uuid.uuid4().hex[:8]}"
        self.app.conf.update(resumable_store_url="django", resumable_table_name=table_name)

        def drop() -> None:
            with contextlib.suppress(Exception):
                checkpoint_store(self.app).engine.dispose()
            with connection.schema_editor() as editor:
                editor.delete_model(Order)
                editor.delete_model(Customer)
                editor.execute(f"DROP TABLE IF EXISTS {connection.ops.quote_name(table_name)}")
            connections.close_all()

        self.undo.append(drop)
        customer = Customer.objects.create(name="Ada")
        Order.objects.bulk_create(
            Order(number=n, paid=n % 2 == 0, customer=customer) for n in range(1, 31)
        )
        package = types.ModuleType("orders")
        package.__path__ = []
        models_module = types.ModuleType("orders.models")
        models_module.Order = Order  # type: ignore[attr-defined]
        models_module.Customer = Customer  # type: ignore[attr-defined]
        package.models = models_module  # type: ignore[attr-defined]
        sys.modules.update({"orders": package, "orders.models": models_module})
        return {"Order": Order, "Customer": Customer}

    def use_django_admin(self) -> None:
        """Django's admin installed (after ``use_django()``) until the document ends.

        The admin page of the checkpoint table is registered on ``admin.site`` when its
        module is first imported; what a block registers instead is undone.
        """
        from django.test import override_settings

        installed = ["django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes"]
        override = override_settings(INSTALLED_APPS=[*installed, "celery_resumable.contrib.django"])
        override.enable()
        from django.contrib import admin

        from celery_resumable.contrib.django.admin import CheckpointAdmin
        from celery_resumable.contrib.django.models import Checkpoint

        def restore() -> None:
            if admin.site.is_registered(Checkpoint):
                admin.site.unregister(Checkpoint)
            admin.site.register(Checkpoint, CheckpointAdmin)
            override.disable()

        self.undo.append(restore)

    @contextlib.contextmanager
    def plugin_fixtures(self) -> Iterator[dict[str, Any]]:
        """What the pytest plugin's ``resumable_store`` and ``resumable_interrupt`` give."""
        with contextlib.ExitStack() as stack:
            yield {
                "resumable_store": checkpoint_store(self.app),
                "resumable_interrupt": Interrupts(stack),
            }

    @contextlib.contextmanager
    def start_worker(self, app: Celery) -> Iterator[Any]:
        """An in-process Celery worker (thread pool) on ``app``, as ``celery_worker`` runs."""
        from celery.contrib.testing.worker import start_worker

        # Stopped here rather than by start_worker's exit, which waits for the consumer
        # loop's 2-second poll to notice: a second or two saved. The worker sets the root
        # logger's level to its own (ERROR); the tests after this one get theirs back.
        root = logging.getLogger()
        level = root.level
        try:
            with start_worker(
                app, pool="threads", concurrency=1, perform_ping_check=False
            ) as worker:
                try:
                    yield worker
                finally:
                    worker.stop(in_sighandler=False)
        finally:
            root.setLevel(level)

    def close(self, namespace: dict[str, Any]) -> None:
        """Close what the document opened and remove what it made."""
        try:
            for undo in reversed(self.undo):
                undo()
            for value in list(namespace.values()):
                if isinstance(value, sa.Engine):
                    value.dispose()
                elif isinstance(value, Celery):
                    url = str(value.conf.get("resumable_store_url") or "")
                    if url.startswith(f"sqlite:///{self.folder}"):
                        checkpoint_store(value).engine.dispose()
                    value.close()
        finally:
            for name in set(sys.modules) - self.modules:
                if name.partition(".")[0] in ("proj", "orders"):
                    del sys.modules[name]
            celery_state._on_app_finalizers.intersection_update(self.finalizers)
            self.previous_app.set_current()
            shutil.rmtree(self.folder, ignore_errors=True)


class Interrupts:
    """The pytest plugin's ``resumable_interrupt``: helpers armed until ``stack`` closes."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self._stack = stack

    def after_step(self, name: str) -> None:
        self._stack.enter_context(interrupt_after_step(name))

    def at_cursor(self, name: str, when: Any) -> None:
        self._stack.enter_context(interrupt_at_cursor(name, when))

    def when(self, predicate: Any) -> None:
        self._stack.enter_context(interrupt_when(predicate))
