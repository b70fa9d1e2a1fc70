"""The audit hash chain: how an event is sealed and how a chain is checked.

An event is a JSON object encoded canonically (RFC 8785). Its hash is the SHA-256 of
those exact bytes, and each event names the hash of the one before it (``prev``), so
changing, removing or reordering any event breaks every later link. The server seals
events with :func:`seal`; the server's check, the CLI and the offline verifier all use
:func:`verify_chain`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core.canonical import canonical_bytes, is_canonical, sha256_hex

__all__ = [
    "GENESIS_HASH",
    "ChainBreak",
    "ChainReport",
    "SealedEvent",
    "format_time",
    "seal",
    "verify_chain",
]

GENESIS_HASH = "0" * 64


def format_time(moment: datetime) -> str:
    """UTC time as ISO 8601 with microseconds and a ``Z``: one spelling for one instant."""
    if moment.tzinfo is None:
        raise ValueError("audit times must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class SealedEvent:
    """An event's body, its exact canonical bytes and their SHA-256."""

    body: dict[str, Any]
    canonical: bytes
    hash: str


def seal(
    *,
    seq: int,
    time: datetime,
    actor: Mapping[str, Any],
    action: str,
    subject: Mapping[str, Any],
    details: Mapping[str, Any],
    prev: str,
) -> SealedEvent:
    """Build the canonical form of one audit event and hash it."""
    body = {
        "seq": seq,
        "time": format_time(time),
        "actor": dict(actor),
        "action": action,
        "subject": dict(subject),
        "details": dict(details),
        "prev": prev,
    }
    data = canonical_bytes(body)
    return SealedEvent(body=body, canonical=data, hash=sha256_hex(data))


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first event at which a chain stops verifying, and why."""

    seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class ChainReport:
    """What a chain check found: how many events held, the head, the first break."""

    checked: int
    head_seq: int
    head_hash: str
    first_broken: ChainBreak | None

    @property
    def ok(self) -> bool:
        return self.first_broken is None


def verify_chain(
    events: Iterable[tuple[int, bytes, str]],
    *,
    start_seq: int = 1,
    prev_hash: str = GENESIS_HASH,
) -> ChainReport:
    """Check ``(seq, canonical bytes, stored hash)`` triples in order; stop at the first break.

    ``start_seq`` and ``prev_hash`` let a check resume from a trusted point.
    """
    expected = start_seq
    checked = 0
    for seq, data, stored_hash in events:
        reason = _first_fault(seq, data, stored_hash, expected, prev_hash)
        if reason is not None:
            return ChainReport(checked, expected - 1, prev_hash, ChainBreak(expected, reason))
        prev_hash = stored_hash
        expected += 1
        checked += 1
    return ChainReport(checked, expected - 1, prev_hash, None)


def _first_fault(
    seq: int, data: bytes, stored_hash: str, expected: int, prev_hash: str
) -> str | None:
    if seq != expected:
        return f"expected event {expected}, found {seq}: an event is missing or out of order"
    if sha256_hex(data) != stored_hash:
        return "the event's bytes do not match its recorded hash"
    if not is_canonical(data):
        return "the event is not in canonical (RFC 8785) form"
    body = json.loads(data)
    if not isinstance(body, dict) or body.get("seq") != seq:
        return "the event's body names another sequence number"
    if body.get("prev") != prev_hash:
        return "the event does not link to the hash of the event before it"
    return None
