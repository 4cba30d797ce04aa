"""Sends a chain and a chord for the canvas test, from a process of its own.

Celery's Redis result backend opens pub/sub connections from AsyncResult finalizers;
keeping those objects out of the test process keeps its sockets accounted for.
Usage: python -m tests.integration.canvas_client BROKER BACKEND QUEUE COUNT DELAY;
prints the ids of the chain's first task and of the chord's members as JSON.
"""

from __future__ import annotations

import json
import sys

from celery import Celery, chain, chord

APP = "tests.integration.worker_app"


def main(broker: str, backend: str, queue: str, count: int, delay: float) -> None:
    client = Celery("resumable_canvas_client", broker=broker, backend=backend)
    client.conf.task_default_queue = queue
    three_steps = client.signature(f"{APP}.three_steps", args=(count, delay))
    collect = client.signature(f"{APP}.collect")
    chained = chain(three_steps.clone(), collect.clone(kwargs={"tag": "chain"})).apply_async()
    members = [three_steps.clone() for _ in range(2)]
    joined = chord(members, collect.clone(kwargs={"tag": "chord"})).apply_async()
    ids = {"chain": chained.parent.id, "chord": [r.id for r in joined.parent.results]}
    print(json.dumps(ids))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
