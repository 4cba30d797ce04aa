"""Command line: ``celery -A proj resumable ...`` and ``celery-resumable demo``."""

from __future__ import annotations

import json
import math
from typing import Any

import click
from kombu.exceptions import OperationalError as BrokerError

from celery_resumable.errors import CheckpointBusyError, CheckpointStoreError, ResumableError
from celery_resumable.store.records import STATUSES, Checkpoint, request_of

# Every `celery` command loads this module (the `celery.commands` entry point), so it
# imports nothing heavy: the store (SQLAlchemy) is imported when a command runs.

__all__ = ["main", "resumable"]

# Longer step results, cursors and request fields are shortened by ``show`` unless --full.
SHOWN_CHARACTERS = 200


class _Commands(click.Group):
    """A command group whose errors (store down, broker down) print one line and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CheckpointStoreError as error:
            # The message is about the store, not about the task id it was asked for.
            raise click.ClickException(error.message) from None
        except ResumableError as error:
            raise click.ClickException(str(error)) from None
        except BrokerError as error:
            raise click.ClickException(f"could not send the task to the broker: {error}") from None


@click.group(name="resumable", cls=_Commands)
def resumable() -> None:
    """Inspect and manage the checkpoints of resumable tasks."""


def _app(ctx: click.Context) -> Any:
    app = getattr(ctx.obj, "app", None)
    if app is None:
        raise click.UsageError("run it as `celery -A proj resumable ...`")
    return app


def _store(ctx: click.Context) -> Any:
    from celery_resumable.store.store import checkpoint_store

    return checkpoint_store(_app(ctx))


@resumable.command(name="list")
@click.option("--status", type=click.Choice(STATUSES), multiple=True, help="Filter by status.")
@click.option("--task", "task_name", help="Filter by task name.")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@click.option(
    "--offset", type=click.IntRange(0), default=0, show_default=True,
    help="Skip this many checkpoints first: with --limit, pages through them.",
)  # fmt: skip
@click.pass_context
def list_command(
    ctx: click.Context, status: tuple[str, ...], task_name: str | None, limit: int, offset: int
) -> None:
    """List checkpoints, most recently updated first."""
    rows = _store(ctx).list(
        status=list(status) or None, task_name=task_name, limit=limit, offset=offset
    )
    if not rows:
        click.echo("no checkpoints")
        return
    click.echo(
        f"{'task id':36}  {'status':11}  {'step':16}  {'progress':>13}  {'cursor':24}  "
        f"{'int':>3}  {'updated (UTC)':19}  task"
    )
    for row in rows:
        step = row.current_step or (row.finished_steps[-1].name if row.finished_steps else "-")
        cursor = "-" if row.cursor is None else json.dumps(row.cursor)
        if len(cursor) > 24:
            cursor = cursor[:23] + "…"
        click.echo(
            f"{row.task_id:36}  {row.status:11}  {step[:16]:16}  {_progress(row):>13}  "
            f"{cursor:24}  {row.interruptions:>3}  {row.updated_at:%Y-%m-%d %H:%M:%S}  "
            f"{row.task_name}"
        )


def _progress(row: Checkpoint) -> str:
    """Items done (of the total, when known) in the step in progress."""
    if row.current_step is None or row.done is None:
        return "-"
    return f"{row.done}/{row.total}" if row.total is not None else str(row.done)


@resumable.command(name="show")
@click.argument("task_id")
@click.option(
    "--full", is_flag=True,
    help=f"Print step results, the cursor and the request whole (else cut at "
    f"{SHOWN_CHARACTERS} characters each).",
)  # fmt: skip
@click.pass_context
def show_command(ctx: click.Context, task_id: str, full: bool) -> None:
    """Print one checkpoint as JSON; long values are shortened unless --full."""
    checkpoint = _store(ctx).get(task_id)
    if checkpoint is None:
        raise click.ClickException(f"no checkpoint for task {task_id}")
    record = _as_json(checkpoint)
    if not full:
        record = _shortened(record)
    click.echo(json.dumps(record, indent=2))


def _shortened(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with each step result, the cursor and each request field shortened."""
    steps = [{**step, "result": _short(step["result"])} for step in record["finished_steps"]]
    request = record["request"]
    if isinstance(request, dict):
        request = {name: _short(value) for name, value in request.items()}
    return {
        **record,
        "finished_steps": steps,
        "cursor": _short(record["cursor"]),
        "request": request,
    }


def _short(value: Any) -> Any:
    """``value`` as it is, or, when its JSON is long, the start of its JSON as a string."""
    text = json.dumps(value)
    if len(text) <= SHOWN_CHARACTERS:
        return value
    return f"{text[:SHOWN_CHARACTERS]}… ({len(text)} characters; --full shows all)"


@resumable.command(name="reset")
@click.argument("task_ids", nargs=-1, required=True)
@click.option(
    "--force", is_flag=True,
    help="Reset running tasks too: they stop at their next boundary and start over.",
)  # fmt: skip
@click.pass_context
def reset_command(ctx: click.Context, task_ids: tuple[str, ...], force: bool) -> None:
    """Delete checkpoints so the tasks' next runs start over.

    A task whose run holds a live lease is left alone unless --force is given. Exits 1
    when a task was kept, or had no checkpoint.
    """
    store = _store(ctx)
    busy = []
    missing = []
    for task_id in task_ids:
        try:
            done = store.reset(task_id, force=force)
        except CheckpointBusyError:
            busy.append(task_id)
            click.echo(f"{task_id}: running; kept (use --force to reset it)")
            continue
        if not done:
            missing.append(task_id)
        click.echo(f"{task_id}: {'reset' if done else 'no checkpoint'}")
    if missing:
        click.echo(f"Error: no checkpoint for task {', '.join(missing)}", err=True)
    if busy or missing:
        raise SystemExit(1)


@resumable.command(name="retry")
@click.argument("task_ids", nargs=-1, required=True)
@click.pass_context
def retry_command(ctx: click.Context, task_ids: tuple[str, ...]) -> None:
    """Send failed tasks again under their ids; each resumes from its checkpoint."""
    app = _app(ctx)
    from celery_resumable.store.operator import retry_task
    from celery_resumable.store.store import checkpoint_store

    store = checkpoint_store(app)
    refused = False
    for task_id in task_ids:
        problem = retry_task(app, store, task_id)
        refused = refused or problem is not None
        click.echo(f"{task_id}: {problem or 'sent'}")
    if refused:
        raise SystemExit(1)


def _finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """Refuse nan and infinity, which FloatRange lets through."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value!r} is not a finite number of seconds", ctx, param)
    return value


@resumable.command(name="purge")
@click.option(
    "--older-than", type=click.FloatRange(0), default=None, callback=_finite,
    help="Seconds since the last update (default: resumable_keep_completed).",
)  # fmt: skip
@click.option(
    "--status", type=click.Choice(STATUSES), multiple=True,
    help="Statuses to purge (default: completed).",
)  # fmt: skip
@click.option("--force", is_flag=True, help="Purge rows whose lease is alive too.")
@click.pass_context
def purge_command(
    ctx: click.Context, older_than: float | None, status: tuple[str, ...], force: bool
) -> None:
    """Delete old checkpoints; rows of running tasks are kept unless --force."""
    deleted = _store(ctx).purge(
        older_than=older_than, status=list(status) or "completed", force=force
    )
    click.echo(f"purged {deleted} checkpoints")


def _as_json(checkpoint: Checkpoint) -> dict[str, Any]:
    return {
        "task_id": checkpoint.task_id,
        "task_name": checkpoint.task_name,
        "status": checkpoint.status,
        "finished_steps": [{"name": s.name, "result": s.result} for s in checkpoint.finished_steps],
        "current_step": checkpoint.current_step,
        "cursor": checkpoint.cursor,
        "interruptions": checkpoint.interruptions,
        "owner": checkpoint.owner,
        "lease_expires_at": _time(checkpoint.lease_expires_at),
        "created_at": _time(checkpoint.created_at),
        "updated_at": _time(checkpoint.updated_at),
        "request": request_of(checkpoint),
        "done": checkpoint.done,
        "total": checkpoint.total,
    }


def _time(value: Any) -> str | None:
    return None if value is None else str(value.isoformat())


@click.group()
def main() -> None:
    """celery-resumable: checkpointable Celery tasks."""


@main.command()
@click.option("--records", type=click.IntRange(10), default=400, show_default=True)
def demo(records: int) -> None:
    """Run a task through a deploy: SIGTERM a worker mid-task, finish it on a new one."""
    from celery_resumable.demo import run

    raise SystemExit(run(count=records, stop_after=min(150, records // 3)))
