"""Pytest plugin: write the outcome of every test to a JSON file.

Loaded with ``-p tests.compat.outcomes --compat-outcomes=PATH`` into both runs of
Celery's unit tests. It imports nothing of celery_resumable, so the run without the
injection uses Celery's own task class only.

A test's outcome is the worst of its reports: ``error`` (setup or teardown failed),
``failed`` (the call or one of its subtests failed), ``xfailed``, ``skipped``,
``passed``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

_RANK = {"passed": 0, "skipped": 1, "xfailed": 2, "failed": 3, "error": 4}
_MESSAGE_LIMIT = 400


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--compat-outcomes``."""
    parser.addoption(
        "--compat-outcomes",
        metavar="PATH",
        help="write each test's outcome to this JSON file",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the recorder when an output file is given."""
    path = config.getoption("--compat-outcomes")
    if path:
        config.pluginmanager.register(Recorder(Path(path)), "compat-outcomes-recorder")


def classify(report: pytest.TestReport) -> str | None:
    """The outcome one report says about its test; None when it says nothing."""
    if report.failed:
        return "error" if report.when in ("setup", "teardown") else "failed"
    if report.skipped:
        return "xfailed" if hasattr(report, "wasxfail") else "skipped"
    if report.when == "call":
        return "passed"
    return None


def _message(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The error of a failed report on one line: the exception and assertion details."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = getattr(crash, "message", None) or str(report.longrepr)
    lines = [line.strip() for line in text.splitlines()]
    useful = [line for line in lines if line and not line.startswith("Use -v to get")]
    return " | ".join(useful)[:_MESSAGE_LIMIT]


class Recorder:
    """Collects outcomes while the session runs and writes them when it ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.outcomes: dict[str, str] = {}
        self.messages: dict[str, str] = {}
        self.collection_errors: dict[str, str] = {}

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        """Remember modules that failed to collect."""
        if report.failed:
            self.collection_errors[report.nodeid] = _message(report)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Fold one report (setup, call, teardown or a subtest) into its test's outcome."""
        outcome = classify(report)
        if outcome is None:
            return
        previous = self.outcomes.get(report.nodeid)
        if previous is None or _RANK[outcome] > _RANK[previous]:
            self.outcomes[report.nodeid] = outcome
            if outcome in ("failed", "error"):
                self.messages[report.nodeid] = f"{report.when}: {_message(report)}"

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Write the outcomes, after the injection plugin has judged its evidence."""
        injection = sys.modules.get("tests.compat.plugin")
        celery = sys.modules.get("celery")
        data: dict[str, Any] = {
            "exitstatus": int(session.exitstatus),
            "outcomes": self.outcomes,
            "messages": self.messages,
            "collection_errors": self.collection_errors,
            "celery_file": getattr(celery, "__file__", None),
            "evidence": getattr(injection, "evidence", None),
        }
        # Insertion order is run order: the first failure of a cascade comes first.
        self.path.write_text(json.dumps(data, indent=1), encoding="utf-8")
