"""The Python blocks of README.md and docs/*.md run as written (see conftest.py)."""

from __future__ import annotations

from pathlib import Path

from tests.docs.conftest import Block, DocumentRun


def test_block(block: Block, documents: dict[Path, DocumentRun]) -> None:
    # Given the document's project and the blocks above this one
    run = documents.get(block.path)
    if run is None or run.closed:
        run = documents[block.path] = DocumentRun(block.path)
    # When the block runs, Then it raises nothing (its hidden checks included)
    run.run_through(block.index)
