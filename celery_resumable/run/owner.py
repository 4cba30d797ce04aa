"""Owner tokens: each run's own name for the lease it holds.

A token is unique across processes and machines without a system call per run: a
random prefix of 64 bits drawn once per process (again in a forked child) and a counter.
It is 17 to 32 characters of hex, shorter than a UUID, so that a row stays small.
"""

from __future__ import annotations

import itertools
import os
import threading

__all__ = ["new_owner"]

_prefix = ""
_counter = itertools.count()
_lock = threading.Lock()
_fork_hook = False


def new_owner() -> str:
    """A token no other run of any process has."""
    prefix = _prefix or _start()
    return f"{prefix}{next(_counter):x}"


def _start() -> str:
    global _prefix, _fork_hook
    with _lock:
        if not _fork_hook:
            _fork_hook = True
            os.register_at_fork(after_in_child=_forget)
        if not _prefix:
            _prefix = os.urandom(8).hex()
        return _prefix


def _forget() -> None:
    # A child must not repeat its parent's tokens: it draws a prefix of its own.
    global _prefix, _counter
    _prefix = ""
    _counter = itertools.count()
