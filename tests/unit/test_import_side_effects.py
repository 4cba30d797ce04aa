"""Importing the package, or sending a resumable task, changes nothing in Celery."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

_PROBE = textwrap.dedent(
    """
    import json, os, threading
    from celery import Celery, signals

    def receivers():
        found = {}
        for name in dir(signals):
            signal = getattr(signals, name)
            if getattr(signal, "receivers", None):
                found[name] = len(signal.receivers)
        return found

    before = receivers()
    import celery_resumable, celery_resumable.cli, celery_resumable.testing
    from celery_resumable import ResumableTask, step

    app = Celery("web", broker="memory://", set_as_current=False)

    @app.task(base=ResumableTask, bind=True)
    def work(self):
        return step("one", lambda: 1)

    app.finalize()
    work.delay()  # a web process sends the task
    print(json.dumps({
        "before": before,
        "after": receivers(),
        "threads": sorted(t.name for t in threading.enumerate()),
        "steps": sorted(step.__name__ for step in app.steps["worker"]),
    }))
    """
)


def test_importing_and_sending_connect_no_signal_and_start_no_thread() -> None:
    # Given a fresh interpreter, like a web process of the app
    # When it imports the package, declares a resumable task and sends it
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    # Then no Celery signal gained a receiver and no thread was started
    assert seen["after"] == seen["before"]
    assert seen["threads"] == ["MainThread"]
    # And the workers of the app, should one start, get the resumable bootstep
    assert seen["steps"] == ["ResumableWorker"]


_COMMAND_PROBE = textwrap.dedent(
    """
    import json, sys
    import celery.bin.celery  # every `celery` command loads the commands of its plugins
    import celery_resumable.cli
    heavy = [m for m in ("sqlalchemy", "celery_resumable.store.store") if m in sys.modules]
    print(json.dumps({"heavy": heavy, "command": celery_resumable.cli.resumable.name}))
    """
)


def test_the_celery_command_plugin_imports_nothing_heavy() -> None:
    # Given a fresh interpreter running a `celery` command, which loads the
    # `celery.commands` entry points of installed packages
    done = subprocess.run(
        [sys.executable, "-c", _COMMAND_PROBE],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    # Then loading `celery resumable` imports neither SQLAlchemy nor the store
    assert seen == {"heavy": [], "command": "resumable"}
