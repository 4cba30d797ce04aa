"""The README's demo command works on embedded defaults, with no server, and cleans up.

The demo runs in a child process from this checkout (``PYTHONPATH``), in an empty
working directory and with ``TMPDIR`` pointing at a folder of the test, so the test sees
every file it writes. That the ``celery-resumable`` command itself is installed is
checked in ``tests/unit/test_entry_points.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLI = "import sys; from celery_resumable.cli import main; sys.exit(main())"


def run_python(code: str, *args: str, cwd: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd, env={**os.environ, "PYTHONPATH": python_path, "TMPDIR": str(tmp)},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """An empty working directory and an empty temporary folder."""
    work, tmp = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    tmp.mkdir()
    return work, tmp


def test_demo_survives_a_deploy(folders: tuple[Path, Path]) -> None:
    # Given an empty working directory
    work, tmp = folders

    # When the demo runs there
    result = run_python(CLI, "demo", "--records", "200", cwd=work, tmp=tmp)

    # Then the task survived the deploy
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: the task survived the deploy" in result.stdout
    assert "200/200 records processed, 0 twice, 0 missing" in result.stdout
    # And it wrote nothing but its own temporary folder
    assert list(work.iterdir()) == []
    (demo_folder,) = tmp.iterdir()
    assert demo_folder.name.startswith("celery-resumable-demo-")
    assert f"in {demo_folder}" in result.stdout
    # And its workers are gone
    for pid in started_workers(result.stdout):
        assert live_processes_in_group(pid) == []


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_demo_stops_its_workers_on_a_timeout(folders: tuple[Path, Path]) -> None:
    # Given a demo whose task cannot reach its first stop within the timeout
    work, tmp = folders
    code = (
        "from celery_resumable.demo import run; "
        "run(count=5000, seconds_per_record=0.01, stop_after=4000, timeout=3.0)"
    )

    # When it times out
    result = run_python(code, cwd=work, tmp=tmp)

    # Then it says what it was waiting for
    assert result.returncode == 1, result.stdout + result.stderr
    assert "timed out waiting for the first worker to get going" in result.stderr
    # And the worker, busy with the task in its pool process, is gone with that process
    (pid,) = started_workers(result.stdout)
    (demo_folder,) = tmp.iterdir()
    assert "import_records[" in (demo_folder / "worker-1.log").read_text()
    assert live_processes_in_group(pid) == []
    assert list(work.iterdir()) == []


def started_workers(output: str) -> list[int]:
    """The process ids of the workers the demo says it started."""
    pids = [int(pid) for pid in re.findall(r"worker-\d started \(pid (\d+)\)", output)]
    assert pids, output
    return pids


def live_processes_in_group(group: int) -> list[int]:
    """Processes of process group ``group`` that are not zombies (the demo's workers
    run in sessions of their own, so each worker and its pool processes form a group)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended meanwhile
            continue
        # Fields after the command name (which may hold spaces): state, ppid, pgrp, ...
        state, _ppid, pgrp = text.rpartition(")")[2].split()[:3]
        if int(pgrp) == group and state != "Z":
            found.append(int(stat.parent.name))
    return found
