"""The admin page of the checkpoint table: list, filters, search, ``retry`` and ``reset``.

The rows are read through Django (the unmanaged ``Checkpoint`` model); the actions go
through the checkpoint store of the project's Celery app, with the command line's
rules: ``retry`` sends a failed task again under its id, ``reset`` leaves a task whose
run holds a live lease alone unless forced. Nothing edits or deletes a row directly.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, current_app
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from celery_resumable.config import config_for
from celery_resumable.contrib.django.database import alias_of
from celery_resumable.errors import CheckpointBusyError, CheckpointStoreError
from celery_resumable.store.engines import is_django_url
from celery_resumable.store.operator import retry_task
from celery_resumable.store.store import CheckpointStore, checkpoint_store

from .models import Checkpoint

__all__ = ["CheckpointAdmin"]


@admin.register(Checkpoint)
class CheckpointAdmin(admin.ModelAdmin):  # type: ignore[misc]
    """Checkpoints, most recently updated first; read-only, acted on by the actions."""

    list_display = ("task_id", "task_name", "status", "step", "progress", "updated_at")
    list_filter = ("status", "task_name")
    search_fields = ("task_id",)
    ordering = ("-updated_at", "task_id")
    actions = ("retry", "reset", "force_reset")
    readonly_fields = (
        "task_id", "task_name", "status", "current_step", "cursor", "done", "total",
        "finished_steps", "interruptions", "owner", "lease_expires_at", "created_at",
        "updated_at", "request",
    )  # fmt: skip

    #: The Celery app whose checkpoint store the actions use; Celery's current app
    #: (the project's, once ``proj/celery.py`` is imported) when None.
    celery_app: Celery | None = None

    def app(self) -> Celery:
        """The Celery app of the actions."""
        return self.celery_app or current_app._get_current_object()

    def store(self) -> CheckpointStore:
        """The checkpoint store of the actions."""
        return checkpoint_store(self.app())

    def get_queryset(self, request: HttpRequest) -> QuerySet[Checkpoint]:
        queryset: QuerySet[Checkpoint] = super().get_queryset(request)
        url = config_for(self.app()).store_url
        # The database of a "django://ALIAS" store; else the one the routers choose.
        return queryset.using(alias_of(url)) if is_django_url(url) else queryset

    @admin.display(description="step")  # type: ignore[untyped-decorator]
    def step(self, checkpoint: Checkpoint) -> str:
        """The step in progress, else the last step finished."""
        if checkpoint.current_step:
            return str(checkpoint.current_step)
        finished: list[Any] = checkpoint.finished_steps or []
        return str(finished[-1]["name"]) if finished else "-"

    @admin.display(description="progress")  # type: ignore[untyped-decorator]
    def progress(self, checkpoint: Checkpoint) -> str:
        """Items done, of the total when known, in the step in progress."""
        if checkpoint.current_step is None or checkpoint.done is None:
            return "-"
        if checkpoint.total is None:
            return str(checkpoint.done)
        return f"{checkpoint.done}/{checkpoint.total}"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Checkpoint | None = None) -> bool:
        # Deleting a row would skip the lease check: ``reset`` does it safely.
        return False

    def has_change_permission(self, request: HttpRequest, obj: Checkpoint | None = None) -> bool:
        # Rows are never edited here (the store owns them); the actions need the
        # change permission on the list.
        return obj is None and bool(super().has_change_permission(request))

    @admin.action(description="Retry the selected failed tasks", permissions=["change"])  # type: ignore[untyped-decorator]
    def retry(self, request: HttpRequest, queryset: QuerySet[Checkpoint]) -> None:
        """Send each selected task again under its id; it resumes from its checkpoint."""
        app = self.app()
        store = self.store()
        for task_id in _ids(queryset):
            try:
                problem = retry_task(app, store, task_id)
            except CheckpointStoreError as exc:
                self.message_user(request, f"{task_id}: {exc}", messages.ERROR)
                continue
            if problem is None:
                self.message_user(request, f"{task_id}: sent", messages.SUCCESS)
            else:
                self.message_user(request, f"{task_id}: {problem}", messages.WARNING)

    @admin.action(description="Reset the selected checkpoints", permissions=["change"])  # type: ignore[untyped-decorator]
    def reset(self, request: HttpRequest, queryset: QuerySet[Checkpoint]) -> None:
        """Delete the checkpoints so the next runs start over; running tasks are kept."""
        self._reset(request, queryset, force=False)

    @admin.action(  # type: ignore[untyped-decorator]
        description="Reset the selected checkpoints, running tasks too", permissions=["change"]
    )
    def force_reset(self, request: HttpRequest, queryset: QuerySet[Checkpoint]) -> None:
        """Reset running tasks too: they stop at their next boundary and start over."""
        self._reset(request, queryset, force=True)

    def _reset(self, request: HttpRequest, queryset: QuerySet[Checkpoint], force: bool) -> None:
        store = self.store()
        for task_id in _ids(queryset):
            try:
                done = store.reset(task_id, force=force)
            except CheckpointBusyError:
                self.message_user(
                    request,
                    f"{task_id}: running; kept (use the action that resets running tasks too)",
                    messages.WARNING,
                )
            except CheckpointStoreError as exc:
                self.message_user(request, f"{task_id}: {exc}", messages.ERROR)
            else:
                level = messages.SUCCESS if done else messages.WARNING
                self.message_user(
                    request, f"{task_id}: {'reset' if done else 'no checkpoint'}", level
                )


def _ids(queryset: QuerySet[Checkpoint]) -> list[str]:
    return [str(task_id) for task_id in queryset.values_list("task_id", flat=True)]
