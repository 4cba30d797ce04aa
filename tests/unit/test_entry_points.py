"""The entry points an installed package registers: the commands and the pytest plugin.

They exist only in the installed package's metadata, so each test skips on a checkout
that is not installed, and fails under CI=true (where the README's test command installs
the package first).
"""

from __future__ import annotations

import importlib

import pytest

from tests.services import require_entry_point


@pytest.mark.parametrize(
    ("group", "name", "value"),
    [
        ("console_scripts", "celery-resumable", "celery_resumable.cli:main"),
        ("celery.commands", "resumable", "celery_resumable.cli:resumable"),
    ],
)
def test_command_is_registered(group: str, name: str, value: str) -> None:
    require_entry_point(group, name, value)

    module, _, attribute = value.partition(":")
    assert callable(getattr(importlib.import_module(module), attribute))
