"""Command line: ``celery resumable ...`` and ``celery-resumable demo``."""

from __future__ import annotations


def main() -> None:
    """Entry point of ``celery-resumable``."""


def resumable() -> None:
    """Entry point of ``celery resumable``."""
