"""Canonical JSON (RFC 8785) and the SHA-256 digests built on it."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import rfc8785

__all__ = ["canonical_bytes", "is_canonical", "sha256_hex"]


def canonical_bytes(value: Any) -> bytes:
    """Encode ``value`` as RFC 8785 canonical JSON."""
    return rfc8785.dumps(value)


def sha256_hex(data: bytes) -> str:
    """Lower-case hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def is_canonical(data: bytes) -> bool:
    """True when ``data`` is exactly the canonical encoding of the JSON it holds."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return False
    try:
        return canonical_bytes(value) == data
    except (rfc8785.CanonicalizationError, ValueError, TypeError):
        return False
