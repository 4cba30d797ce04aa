"""A killed worker's temporary files go to the test run's own folder, not the machine's.

A prefork worker makes its shutdown notice file and the ``pymp-*`` folder of its pool in
the temporary directory, and a SIGKILL leaves them there. The run's ``TMPDIR`` (set by
tests/conftest.py for the run and every process it starts) keeps them with the run,
which removes its folder when it ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.integration.harness import ROOT, wait_for
from tests.services import REDIS_URL, require

pytestmark = pytest.mark.redis

OWN_FILES = ("celery-resumable-notice-", "pymp-")


def own_files(directory: str | Path) -> set[str]:
    return {name for name in os.listdir(directory) if name.startswith(OWN_FILES)}


def test_a_killed_prefork_worker_leaves_its_files_in_the_runs_folder(
    tmp_path: Path, run_temporary_directory: Path
) -> None:
    require("redis")
    # Given a prefork worker started with the test process's environment
    assert os.environ["TMPDIR"] == tempfile.gettempdir() == str(run_temporary_directory)
    before = own_files(run_temporary_directory)
    log_path = tmp_path / "worker.log"
    queue = f"resumable-test-{uuid.uuid4().hex[:12]}"
    command = [
        sys.executable, "-m", "celery", "-A", "tests.integration.worker_app", "worker",
        "-P", "prefork", "-c", "1", "-Q", queue, "-n", f"{queue}@%h", "--loglevel=INFO",
        "--without-mingle", "--without-gossip", "--without-heartbeat",
    ]  # fmt: skip
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "RESUMABLE_TEST_BROKER": REDIS_URL,
        "RESUMABLE_TEST_QUEUE": queue,
        "RESUMABLE_TEST_STORE": f"sqlite:///{tmp_path / 'store.sqlite3'}",
    }
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for(
            lambda: b" ready." in log_path.read_bytes() or worker.poll() is not None,
            60,
            "the worker to start",
        )
        assert worker.poll() is None, log_path.read_text(errors="replace")

        # When it is killed with its pool, as a machine loses it
        pool = subprocess.run(["pgrep", "-P", str(worker.pid)], capture_output=True, text=True)
        for pid in [worker.pid, *map(int, pool.stdout.split())]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        worker.wait(30)

        # Then its notice file and its pool's folder are in the run's folder, which the
        # run removes at its end
        left = own_files(run_temporary_directory) - before
        made = {prefix for prefix in OWN_FILES if any(name.startswith(prefix) for name in left)}
        assert made == set(OWN_FILES), left
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(30)
