"""Cursors: a loop over records resumes after the last record it finished.

Run it: ``python examples/cursor.py``. The cursor is a dataclass; the resumed run gets
it back as the same type and skips the records already done.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tempfile
from pathlib import Path
from typing import Any

from celery import Celery

from celery_resumable import ResumableTask, iterate, set_cursor, step, step_cursor
from celery_resumable.testing import interrupt_at_cursor

app = Celery("examples.cursor", broker="memory://")
app.conf.resumable_store_url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'checkpoints.sqlite3'}"

RECORDS = list(range(100, 110))


@dataclasses.dataclass(frozen=True)
class ImportCursor:
    last_id: int
    at: dt.datetime


@app.task(base=ResumableTask, bind=True)
def import_records(self: Any) -> int:
    ids = step("list", lambda: RECORDS)

    def process(cursor: ImportCursor | None) -> int:
        if cursor:
            print(f"  resuming after record {cursor.last_id} (saved {cursor.at:%H:%M:%S})")
        done = 0
        for record_id in ids:
            if cursor and record_id <= cursor.last_id:
                continue
            print(f"  process record {record_id}")
            done += 1
            set_cursor(ImportCursor(last_id=record_id, at=dt.datetime.now(dt.UTC)))
        return done

    processed = step_cursor("process", process)
    # The same loop written with iterate(): the cursor is the count of items done.
    for record_id in iterate("audit", ids):
        print(f"  audit record {record_id}")
    return processed


def main() -> None:
    print("run 1 (interrupted at the fourth record):")
    with interrupt_at_cursor("process", 4):
        first = import_records.apply()
    print(f"  -> {first.state}")
    print("run 2 (interrupted at the third audit):")
    with interrupt_at_cursor("audit", 3):
        second = import_records.apply(task_id=first.id)
    print(f"  -> {second.state}")
    print("run 3:")
    third = import_records.apply(task_id=first.id)
    print(f"  -> {third.state}; result of the process step, stored by run 2: {third.result}")


if __name__ == "__main__":
    main()
