"""Owner tokens are unique within a process and across a fork, and short."""

from __future__ import annotations

import os

from celery_resumable.run.owner import new_owner


def test_tokens_are_unique_short_and_hex() -> None:
    tokens = [new_owner() for _ in range(10_000)]
    assert len(set(tokens)) == len(tokens)
    assert all(17 <= len(token) <= 32 for token in tokens)
    assert all(int(token, 16) >= 0 for token in tokens)


def test_a_forked_child_draws_tokens_of_its_own() -> None:
    before = new_owner()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next token and leave at once
        os.close(read)
        os.write(write, new_owner().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    after = new_owner()
    assert child[:16] != before[:16]  # another random prefix
    assert after[:16] == before[:16]  # the parent's own stays
    assert len({before, child, after}) == 3
