"""Run every Python block of README.md and docs/*.md as a test, with Sybil.

Why Sybil (sybil 10, checked with pytest 9 here): of the maintained tools it is the one
with set-up written in the document but hidden from readers (``<!-- invisible-code-block:
python -->``), one namespace per document (a block sees what the blocks before it
defined), a skip whose reason pytest reports (``<!-- skip: next "why" -->``) and ``>>>``
sessions checked as doctests. pytest-markdown-docs has no hidden set-up (its options go
in the fence's info string) and pytest-examples runs each block alone, in a module of
its own. Sybil's own pytest hook only collects files under the ``conftest.py`` that
installs it, and the documents are outside tests/, so this file parses them with Sybil
and ``test_docs.py`` evaluates one block per test: ``pytest`` with no arguments runs them
once, through ``testpaths = ["tests"]``.
"""

from __future__ import annotations

import doctest
import unittest
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from celery.exceptions import DuplicateTaskNameWarning
from sybil import Example, Sybil
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser

from tests.docs.project import DocumentProject

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

SYBIL = Sybil(
    parsers=[
        PythonCodeBlockParser(doctest_optionflags=doctest.NORMALIZE_WHITESPACE),
        SkipParser(),
    ]
)


@dataclass(frozen=True)
class Block:
    """One block of a document (a code block, a hidden block or a skip), by position."""

    path: Path
    index: int
    line: int

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test per block, in document order."""
    if "block" in metafunc.fixturenames:
        blocks = [
            Block(path, index, example.line)
            for path in DOCUMENTS
            for index, example in enumerate(SYBIL.parse(path).examples())
        ]
        metafunc.parametrize("block", blocks, ids=str)


class DocumentRun:
    """The blocks of one document, run in order in one namespace and one project."""

    def __init__(self, path: Path) -> None:
        self.document = SYBIL.parse(path)
        self.examples: list[Example] = list(self.document.examples())
        self.project = DocumentProject(path.stem.lower())
        self.document.namespace.update(self.project.namespace())
        self.done = 0
        self.closed = False

    def run_through(self, index: int) -> None:
        """Run block ``index``, after the blocks before it that have not run yet.

        A test selected alone (``-k``) still gets the set-up of the blocks above it.
        """
        while self.done < index:
            example = self.examples[self.done]
            self.done += 1
            try:
                evaluate(example)
            except unittest.SkipTest:
                pass
            except Exception as error:
                raise RuntimeError(f"the block at line {example.line} failed first") from error
        self.done = index + 1
        try:
            evaluate(self.examples[index])
        finally:
            if self.done == len(self.examples):
                self.close()

    def close(self) -> None:
        """Undo the document's project."""
        if not self.closed:
            self.closed = True
            self.project.close(self.document.namespace)


def evaluate(example: Example) -> None:
    """Run one block.

    Finalizing a block's app registers every shared task defined so far in the test
    session, and the unit tests define several under one name: Celery's warning about
    that is not the block's doing.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DuplicateTaskNameWarning)
        example.evaluate()


@pytest.fixture(scope="module")
def documents() -> Iterator[dict[Path, DocumentRun]]:
    """The documents being run, each closed once its last block ran (or at the end)."""
    runs: dict[Path, DocumentRun] = {}
    yield runs
    for run in runs.values():
        run.close()
