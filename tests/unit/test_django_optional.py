"""Django stays optional: nothing imports it unless the Django features are used."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
import sqlalchemy as sa
from celery import Celery
import celery_resumable
import celery_resumable.contrib.django
from celery_resumable import ResumableTask, set_step_cursor_tx, step_cursor

app = Celery("optional", broker="memory://")
app.conf.resumable_store_url = "sqlite:///" + sys.argv[1]
engine = sa.create_engine(app.conf.resumable_store_url)

@app.task(base=ResumableTask)
def job():
    def work(cursor):
        with engine.begin() as connection:
            set_step_cursor_tx(connection, 1)
    step_cursor("work", work)

assert job.apply().state == "SUCCESS"
print(sorted(name for name in sys.modules if name.startswith("django.db")))
"""


def test_the_library_and_a_sqlalchemy_tx_write_do_not_import_django_db(tmp_path: Path) -> None:
    # When a task writes a transactional checkpoint through SQLAlchemy
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "checkpoints.sqlite3")],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    # Then Django's database layer was never imported
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
