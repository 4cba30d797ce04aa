"""Settings of celery-resumable, read once from ``app.conf`` and per-task attributes.

Every setting is named ``resumable_<name>`` in ``app.conf``; a task attribute of the
same name (``@app.task(base=ResumableTask, resumable_max_runtime=600)``) overrides it
for that task.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import math
import re
from typing import Any

from celery import Celery

__all__ = ["DEFAULTS", "ResumableConfig", "check_table_name", "config_for", "forget_config"]

DEFAULTS: dict[str, Any] = {
    "resumable_store_url": "sqlite:///celery_resumable.sqlite3",
    "resumable_table_name": "celery_resumable_checkpoints",
    "resumable_checkpoint_interval": 5.0,
    "resumable_max_runtime": None,
    "resumable_lease_seconds": 60.0,
    "resumable_max_interruptions": 100,
    "resumable_keep_completed": None,  # Celery's result_expires, else one day
    "resumable_create_tables": True,
    "resumable_store_wait": 300.0,
    "resumable_track_progress": True,
    "resumable_partitions": False,
}

_CACHE_ATTRIBUTE = "_resumable_config"


@dataclasses.dataclass(frozen=True)
class ResumableConfig:
    """The settings in force for one task."""

    store_url: str
    table_name: str
    checkpoint_interval: float | None
    max_runtime: float | None
    lease_seconds: float
    max_interruptions: int
    keep_completed: float
    create_tables: bool
    store_wait: float
    track_progress: bool
    partitions: bool = False

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> ResumableConfig:
        """Build and validate a config; raise ValueError naming a bad setting."""
        return cls(
            store_url=_text(values, "resumable_store_url"),
            table_name=_table_name(values, "resumable_table_name"),
            checkpoint_interval=_seconds(values, "resumable_checkpoint_interval", True, True),
            max_runtime=_seconds(values, "resumable_max_runtime", True, False),
            lease_seconds=_seconds(values, "resumable_lease_seconds", False, False),  # type: ignore[arg-type]
            max_interruptions=_count(values, "resumable_max_interruptions"),
            keep_completed=_finite(values, "resumable_keep_completed"),
            create_tables=_flag(values, "resumable_create_tables"),
            store_wait=_seconds(values, "resumable_store_wait", False, True),  # type: ignore[arg-type]
            track_progress=_flag(values, "resumable_track_progress"),
            partitions=_flag(values, "resumable_partitions"),
        )


def config_for(app: Celery, task: object | None = None) -> ResumableConfig:
    """Return the settings for ``task`` (or the app's when None), read once and cached."""
    owner: object = task if task is not None else app
    cached = owner.__dict__.get(_CACHE_ATTRIBUTE) if hasattr(owner, "__dict__") else None
    if isinstance(cached, ResumableConfig):
        return cached
    values = {name: app.conf.get(name, default) for name, default in DEFAULTS.items()}
    if task is not None:
        for name in DEFAULTS:
            override = getattr(task, name, _MISSING)
            if override is not _MISSING:
                values[name] = override
    if values["resumable_keep_completed"] is None:
        values["resumable_keep_completed"] = _result_expires(app)
    config = ResumableConfig.from_mapping(values)
    with contextlib.suppress(AttributeError):  # objects without a __dict__ are not cached
        object.__setattr__(owner, _CACHE_ATTRIBUTE, config)
    return config


def forget_config(app: Celery) -> None:
    """Drop the settings cached on ``app`` and its tasks, so the next read sees ``app.conf``."""
    # The registry holds every task object made so far, finalized app or not (reading
    # ``app.tasks`` instead would finalize the app as a side effect).
    owners = [app, *app._tasks.values()]
    for owner in owners:
        if hasattr(owner, "__dict__"):
            owner.__dict__.pop(_CACHE_ATTRIBUTE, None)


_MISSING = object()
_ONE_DAY = 86400.0


def _result_expires(app: Celery) -> float:
    """Celery's ``result_expires`` in seconds; one day when results never expire."""
    expires = app.conf.get("result_expires")
    if isinstance(expires, dt.timedelta):
        expires = expires.total_seconds()
    if isinstance(expires, bool) or not isinstance(expires, int | float):
        return _ONE_DAY
    if not math.isfinite(expires) or expires <= 0:
        return _ONE_DAY
    return float(expires)


def _text(values: dict[str, Any], name: str) -> str:
    value = values[name]
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, not {value!r}")
    return value


def _table_name(values: dict[str, Any], name: str) -> str:
    return check_table_name(_text(values, name))


def _seconds(values: dict[str, Any], name: str, allow_none: bool, allow_zero: bool) -> float | None:
    value = values[name]
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"{name} must be a number of seconds, not {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        limit = "zero or more" if allow_zero else "more than zero"
        raise ValueError(f"{name} must be {limit} seconds, not {value!r}")
    return float(value)


def _finite(values: dict[str, Any], name: str) -> float:
    seconds = _seconds(values, name, False, True)
    if seconds is None or math.isinf(seconds):
        raise ValueError(f"{name} must be a finite number of seconds, not {values[name]!r}")
    return seconds


def _count(values: dict[str, Any], name: str) -> int:
    value = values[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a whole number, zero or more, not {value!r}")
    return value


def _flag(values: dict[str, Any], name: str) -> bool:
    value = values[name]
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, not {value!r}")
    return value


# The longest index name of the table ("ix_<name>_status_updated") must fit PostgreSQL's
# 63-character identifiers (MySQL allows 64).
_MAX_TABLE_NAME = 63 - len("ix__status_updated")
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_table_name(name: str) -> str:
    """Return ``name`` if it can name the checkpoint table everywhere; else raise ValueError."""
    if not isinstance(name, str) or not _TABLE_NAME.fullmatch(name):
        raise ValueError(
            f"resumable_table_name must be letters, digits and underscores, not {name!r}"
        )
    if len(name) > _MAX_TABLE_NAME:
        raise ValueError(
            f"resumable_table_name {name!r} is {len(name)} characters long; at most "
            f"{_MAX_TABLE_NAME} fit the names of its indexes on every database"
        )
    return name
