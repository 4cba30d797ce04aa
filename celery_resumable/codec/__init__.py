"""Typed JSON for cursors and step results: encode, decode, the classes a value names.

``encode`` checks that a value comes back equal and of the same type before it is
stored; ``decode`` reads it back by its tag or its annotation. The fast path skips that
check for plain JSON read back as plain JSON.
"""

from __future__ import annotations

from celery_resumable.codec.encode import Scope, decode, encode, first_parameter_type, return_type

__all__ = ["Scope", "decode", "encode", "first_parameter_type", "return_type"]
