"""An interrupted task keeps its place in chains and chords."""

from __future__ import annotations

import signal

from celery import chain, chord

from celery_resumable import CheckpointStore
from tests.integration.conftest import DeploymentFactory
from tests.integration.harness import APP, wait_for
from tests.services import REDIS_URL

COUNT = 200
DELAY = 0.02


def test_chain_and_chord_continue_after_an_interrupt(deploy: DeploymentFactory) -> None:
    # Given a chain and a chord whose resumable members will be interrupted mid-cursor
    deployment = deploy("redis", backend=REDIS_URL.rsplit("/", 1)[0] + "/14")
    client = deployment.client
    three_steps = client.signature(f"{APP}.three_steps")
    collect = client.signature(f"{APP}.collect")
    first = deployment.start_worker(concurrency=3)
    chained = chain(three_steps.clone(args=(COUNT, DELAY)), collect.clone(kwargs={"tag": "chain"}))
    chain_id = chained.apply_async().parent.id
    members = [three_steps.clone(args=(COUNT, DELAY)) for _ in range(2)]
    chord_result = chord(members, collect.clone(kwargs={"tag": "chord"})).apply_async()
    member_ids = [child.id for child in chord_result.parent.results]
    for task_id in [chain_id, *member_ids]:
        wait_for(lambda t=task_id: len(deployment.items(t)) >= 20, 30, "the tasks to start")

    # When the worker is stopped and a new one takes over
    first.stop(signal.SIGTERM)
    store = CheckpointStore(deployment.store)
    for task_id in [chain_id, *member_ids]:
        checkpoint = store.get(task_id)
        assert checkpoint is not None and checkpoint.status == "interrupted"
    deployment.start_worker(concurrency=3)

    # Then the chain's next task and the chord's callback run once, with the results
    def collected(tag: str) -> list[int]:
        import sqlalchemy as sa

        from tests.integration.worker_app import events

        with deployment.events_engine.connect() as connection:
            query = sa.select(events.c.item).where(events.c.kind == f"collect-{tag}")
            return list(connection.execute(query).scalars())

    wait_for(lambda: collected("chain") and collected("chord"), 60, "the callbacks")
    assert collected("chain") == [COUNT]
    assert collected("chord") == [2 * COUNT]
    assert chord_result.get(timeout=10) is None
