"""A real worker process warns at start about a misspelled setting and the default store."""

from __future__ import annotations

import pytest

from tests.integration.conftest import DeploymentFactory
from tests.integration.harness import ROOT

pytestmark = pytest.mark.redis

DEFAULT_STORE = "sqlite:///celery_resumable.sqlite3"


def test_a_worker_names_a_misspelled_setting_and_the_default_store(
    deploy: DeploymentFactory,
) -> None:
    # Given a deployment whose store setting is misspelled, so the default store is used
    existed = (ROOT / "celery_resumable.sqlite3").exists()
    deployment = deploy(
        "redis",
        settings={
            "resumable_store_uri": "postgresql://db/app",
            "resumable_store_url": DEFAULT_STORE,
        },
    )

    # When a worker starts
    worker = deployment.start_worker()
    worker.stop()

    # Then its log names the setting meant, and the default file with its path
    log = worker.output()
    assert "resumable_store_uri" in log
    assert "did you mean resumable_store_url?" in log
    assert str(ROOT / "celery_resumable.sqlite3") in log
    assert "this host" in log
    assert (ROOT / "celery_resumable.sqlite3").exists() == existed
