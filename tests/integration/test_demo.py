"""The README's demo command works on embedded defaults, with no server."""

from __future__ import annotations

import shutil
import subprocess


def test_demo_survives_a_deploy() -> None:
    command = shutil.which("celery-resumable")
    assert command is not None, "the package is not installed (pip install -e .)"

    result = subprocess.run(
        [command, "demo", "--records", "200"], capture_output=True, text=True, timeout=300
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: the task survived the deploy" in result.stdout
    assert "200/200 records processed, 0 twice, 0 missing" in result.stdout
