"""The runnable examples run and report success."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("example", "expected"),
    [
        ("steps.py", "'download' and 'transform' were skipped"),
        ("cursor.py", "resuming after record 103"),
        ("transactional.py", "rows: 500, distinct: 500, expected: 500"),
    ],
)
def test_example_runs(example: str, expected: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / example)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    assert expected in result.stdout
