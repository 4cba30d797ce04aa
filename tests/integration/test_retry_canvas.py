"""``celery resumable retry`` sends a task again as Celery sent it: chain, links, headers."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from celery import Celery, chain
from celery.app.task import Context
from kombu import Message

from celery_resumable import CheckpointStore
from celery_resumable.delivery import request_record
from celery_resumable.store.operator import retry_task
from celery_resumable.store.records import State, request_json
from tests.integration.conftest import DeploymentFactory
from tests.integration.harness import APP, ROOT, Deployment, wait_for
from tests.integration.worker_app import events
from tests.services import REDIS_BACKEND_URL

# Finalizing an app of this module registers every shared task defined so far in the
# session (the unit tests define several under the same names).
pytestmark = pytest.mark.filterwarnings("ignore::celery.exceptions.DuplicateTaskNameWarning")

BACKEND = REDIS_BACKEND_URL


def retry(deployment: Deployment, task_id: str) -> subprocess.CompletedProcess[str]:
    """``celery -A APP resumable retry TASK_ID``, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", APP, "resumable", "retry", task_id],
        cwd=ROOT, env={**os.environ, **deployment.env}, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def collected(deployment: Deployment, tag: str) -> list[int]:
    """The results the ``collect`` tasks tagged ``tag`` received, in order."""
    query = sa.select(events.c.item).where(events.c.kind == f"collect-{tag}").order_by(events.c.id)
    with deployment.events_engine.connect() as connection:
        return list(connection.execute(query).scalars())


def failed(store: CheckpointStore, task_id: str) -> bool:
    checkpoint = store.get(task_id)
    return checkpoint is not None and checkpoint.status == "failed"


@pytest.mark.redis
@pytest.mark.parametrize("broker", ["redis", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def test_retry_of_a_failed_chain_member_runs_the_rest_of_the_chain(
    deploy: DeploymentFactory, tmp_path: Path, broker: str
) -> None:
    # Given chain(fails_until_fixed, collect) whose first task failed for good mid-cursor
    deployment = deploy(broker, settings={"resumable_checkpoint_interval": None}, backend=BACKEND)
    deployment.start_worker()
    flag = tmp_path / "fixed"
    first_id = str(uuid.uuid4())
    client = deployment.client
    chain(
        client.signature(
            f"{APP}.fails_until_fixed", args=(20, 10, str(flag)), queue=deployment.queue
        ).set(task_id=first_id),
        client.signature(f"{APP}.collect", kwargs={"tag": "chain"}, queue=deployment.queue),
    ).apply_async()
    store = CheckpointStore(deployment.store)
    wait_for(lambda: failed(store, first_id), 30, "the first task to fail")
    checkpoint = store.get(first_id)
    assert checkpoint is not None and checkpoint.request is not None
    stored = json.loads(checkpoint.request)
    assert [link["task"] for link in stored["chain"]] == [f"{APP}.collect"]
    assert collected(deployment, "chain") == []

    # When the cause is fixed and an operator retries the failed task
    flag.touch()
    sent = retry(deployment, first_id)

    # Then it resumes, finishes, and the rest of the chain runs with its result
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.strip() == f"{first_id}: sent"
    wait_for(lambda: collected(deployment, "chain"), 30, "the chain's next task")
    assert collected(deployment, "chain") == [20]
    assert sorted(deployment.items(first_id)) == list(range(20))
    assert len(deployment.events(first_id, "prepare")) == 1


@pytest.mark.redis
def test_retry_keeps_the_error_callback(deploy: DeploymentFactory, tmp_path: Path) -> None:
    # Given a task with an error callback that failed, and whose callback ran once
    deployment = deploy("redis", settings={"resumable_checkpoint_interval": None}, backend=BACKEND)
    deployment.start_worker()
    task_id = str(uuid.uuid4())
    client = deployment.client
    errback = client.signature(f"{APP}.collect", args=([7], "errback"), immutable=True)
    client.signature(
        f"{APP}.fails_until_fixed",
        args=(20, 10, str(tmp_path / "never")),
        queue=deployment.queue,
        task_id=task_id,
    ).apply_async(link_error=errback.set(queue=deployment.queue))
    store = CheckpointStore(deployment.store)
    wait_for(lambda: collected(deployment, "errback"), 30, "the error callback")
    wait_for(lambda: failed(store, task_id), 30, "the failure to be saved")

    # When an operator retries it and it fails again
    sent = retry(deployment, task_id)
    assert sent.returncode == 0, sent.stderr

    # Then the error callback runs again
    wait_for(lambda: len(collected(deployment, "errback")) == 2, 30, "the error callback again")
    assert collected(deployment, "errback") == [7, 7]


@pytest.fixture
def memory_app(tmp_path: Path) -> Iterator[Celery]:
    """A client app on kombu's in-memory broker, with a checkpoint store of its own."""
    app = Celery(f"resend-{uuid.uuid4().hex[:8]}", broker="memory://")
    app.conf.update(
        task_default_queue=f"resend-{uuid.uuid4().hex[:8]}",
        resumable_store_url=f"sqlite:///{tmp_path / 'store.sqlite3'}",
    )
    yield app
    app.close()


def take_message(app: Celery) -> Message:
    with app.connection_for_read() as connection:
        queue = app.amqp.queues[app.conf.task_default_queue](connection.default_channel)
        message = queue.get(no_ack=True)
    assert message is not None
    return message


def worker_request(message: Message) -> Context:
    """The request a worker builds from ``message`` (``Task.request`` in the task body)."""
    args, kwargs, embed = message.decode()
    delivery_info = {
        "exchange": message.delivery_info.get("exchange"),
        "routing_key": message.delivery_info.get("routing_key"),
        "priority": message.properties.get("priority"),
        "redelivered": False,
    }
    return Context(
        {**message.headers, **embed, "delivery_info": delivery_info},
        args=args,
        kwargs=kwargs,
        called_directly=False,
        reply_to=message.properties.get("reply_to"),
    )


def test_the_stored_request_is_json_and_resends_the_message_celery_sent(
    memory_app: Celery,
) -> None:
    # Given a task sent as the first of a chain, in a group, with an error callback,
    # custom headers, a priority and time limits, and the request its worker sees
    app = memory_app
    group_id = str(uuid.uuid4())
    task_id = str(uuid.uuid4())
    first = app.signature(
        "proj.fragile",
        args=[1, {"when": "now"}],
        kwargs={"mode": "full"},
        task_id=task_id,
        group_id=group_id,
        group_index=0,
        headers={"tenant": "acme"},
        priority=5,
        time_limit=30,
        soft_time_limit=20,
        link_error=app.signature("proj.alert", args=("fragile",), immutable=True),
        root_id="the-root",
        parent_id="the-parent",
    )
    chain(first, app.signature("proj.record"), app.signature("proj.notify")).apply_async()
    original = take_message(app)
    request = worker_request(original)

    # When its first run records the request, the run fails, and the task is retried
    store = CheckpointStore(app.conf.resumable_store_url)
    store.claim(task_id, "proj.fragile", "owner", 60, request_record(request))
    store.save(task_id, "owner", State((), None, None, 0), status="failed", lease_seconds=0)
    assert retry_task(app, store, task_id) is None
    resent = take_message(app)

    # Then the stored request is plain JSON holding the chain, with no empty fields
    checkpoint = store.get(task_id)
    assert checkpoint is not None and checkpoint.request is not None
    stored = json.loads(checkpoint.request)
    assert [link["task"] for link in stored["chain"]] == ["proj.notify", "proj.record"]
    assert all(value not in (None, [], {}, "") for value in stored.values())

    # And the message sent again is the one Celery sent: headers, chain, links, limits
    assert resent.decode() == original.decode()
    # (args come back from JSON as a list, as in Celery's own retry: only their repr differs)
    assert {**resent.headers, "argsrepr": ""} == {**original.headers, "argsrepr": ""}
    assert resent.headers["timelimit"] == [30, 20]
    assert resent.headers["tenant"] == "acme"
    assert resent.properties.get("priority") == 5
    assert resent.properties.get("reply_to") == original.properties.get("reply_to")


def test_a_request_json_cannot_hold_is_not_stored_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a request whose error callback holds a value JSON cannot hold
    request = {"args": [1], "link_error": [{"task": "proj.alert", "args": [object()]}]}

    # When it is encoded for the checkpoint table
    with caplog.at_level(logging.WARNING, logger="celery_resumable"):
        text = request_json(request)

    # Then nothing is stored (no pickle), and a warning names the field
    assert text is None
    assert "link_error" in caplog.text
