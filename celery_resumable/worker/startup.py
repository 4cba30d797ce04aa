"""Warnings a worker logs once when it starts: settings it will not read, the default store.

A misspelled setting (``resumable_store_uri``) would otherwise leave the default in force
without a word, and the default store is a SQLite file that only the workers of one
host share. The warnings are logged from a worker bootstep, once the worker's logging
is set up, so they reach its log file.
"""

from __future__ import annotations

import difflib
import logging
import os

from celery import Celery

from celery_resumable.config import DEFAULTS, config_for

__all__ = ["log_startup_warnings", "startup_warnings"]

logger = logging.getLogger("celery_resumable")

_PREFIX = "resumable_"
_KNOWN = [name.removeprefix(_PREFIX) for name in DEFAULTS]
_DEFAULT_STORE_URL: str = DEFAULTS["resumable_store_url"]
_DEFAULT_STORE_FILE = _DEFAULT_STORE_URL.removeprefix("sqlite:///")


def log_startup_warnings(app: Celery) -> None:
    """Log the warnings of a worker of ``app`` that starts."""
    for warning in startup_warnings(app):
        logger.warning("%s", warning)


def startup_warnings(app: Celery) -> list[str]:
    """The warnings a worker of ``app`` logs when it starts."""
    return [*_unknown_settings(app), *_default_store(app)]


def _unknown_settings(app: Celery) -> list[str]:
    namespace = f"{app.namespace}_" if app.namespace else ""
    warnings = []
    for key in sorted(str(name) for name in app.conf.keys()):  # noqa: SIM118 - a ChainMap view
        prefix, name = _split(key, namespace)
        if not name.startswith(_PREFIX) or name in DEFAULTS:
            continue
        # Compared without the common prefix, which would make every name look close.
        close = difflib.get_close_matches(name.removeprefix(_PREFIX), _KNOWN, n=1)
        meant = _spelled_as(prefix + _PREFIX + close[0], key) if close else ""
        hint = f"; did you mean {meant}?" if close else ""
        warnings.append(
            f"unknown setting {key} is ignored: celery-resumable reads "
            f"only the settings listed in its documentation{hint}"
        )
    return warnings


def _split(key: str, namespace: str) -> tuple[str, str]:
    """``key`` as (namespace prefix as written, setting name in lower case)."""
    if namespace and key.upper().startswith(namespace.upper()):
        return key[: len(namespace)], key[len(namespace) :].lower()
    return "", key.lower()


def _spelled_as(name: str, key: str) -> str:
    """``name`` in the case ``key`` is written in (Django-style settings are upper case)."""
    return name.upper() if key.isupper() else name


def _default_store(app: Celery) -> list[str]:
    if not _uses_default_store(app):
        return []
    path = os.path.abspath(_DEFAULT_STORE_FILE)
    return [
        f"checkpoints are stored in the default SQLite file {path}: only the workers on "
        "this host share it, and workers on another host resume none of these tasks; "
        "set resumable_store_url to a database every worker reaches"
    ]


def _uses_default_store(app: Celery) -> bool:
    try:
        urls = {config_for(app).store_url}
        # A resumable task is one with settings of its own (ResumableTask's property).
        urls.update(
            config_for(app, task).store_url
            for task in app.tasks.values()
            if hasattr(type(task), "resumable_config")
        )
    except ValueError:
        return False  # a bad setting fails the task with its own clear error
    return _DEFAULT_STORE_URL in urls
