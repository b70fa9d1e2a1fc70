"""The audit bundle: the trail as a file an auditor verifies on their own machine.

A bundle is UTF-8 JSON Lines, one record per line, written and read as a stream so
that a million events need constant memory at both ends. Records come in this order:

``manifest``
    ``{"record": "manifest", "format": "officium-audit-bundle", "version": 1,
    "origin", "created_at", "tree_size", "scope": "full" | "filtered", "filters",
    "complete_histories"}``. ``tree_size`` is the size of the checkpoint the bundle is
    pinned to (the last checkpoint record). A ``full`` bundle holds every event
    1..tree_size; a ``filtered`` one holds the events of some documents, offices or a
    time range, each with an inclusion proof. ``complete_histories`` says whether every
    document's events are all present (filters by document or office) so the approval
    state machine can be replayed.
``key`` (one per server key)
    ``{"record": "key", "kid", "vkey", "jwk", "valid_from", "valid_until"}``; ``vkey``
    is the signed-note verifier key (core.note), ``kid`` the JWS key id (RFC 7638).
``checkpoint`` (ascending tree size, the last one pinned)
    ``{"record": "checkpoint", "note"}``: the signed note exactly as the server made it.
``consistency`` (filtered bundles)
    ``{"record": "consistency", "old_size", "new_size", "proof": [hex]}`` from each
    earlier checkpoint to the pinned one.
event
    ``{"hash":"<64 hex>","event":<canonical bytes>}`` with the event's exact canonical
    bytes spliced in, so the bytes on the line *are* the bytes hashed: see
    :func:`event_line` and :func:`split_event_line`. Ascending seq.
``inclusion`` (filtered bundles, right after its event)
    ``{"record": "inclusion", "seq", "tree_size", "proof": [hex]}``.
``access`` (full bundles, right after the ``access.logged`` event that sealed them)
    ``{"record": "access", "id", "at", "actor", "actor_name", "action", "document_id",
    "version_number", "detail", "sealed_by_seq"}``: the access-log rows of that batch,
    in id order; :func:`access_digest` of them is the event's ``details.sha256``.
``version``
    ``{"record": "version", "document", "number", "sha256", "size", "stored_sha256"}``;
    ``stored_sha256`` is what the content store holds now, hashed at export time
    (``null`` when the bytes are missing).
``content`` (only with ``--with-content``)
    ``{"record": "content", "document", "number", "offset", "data": base64}`` in order.
``decision``
    ``{"record": "decision", "id", "review", "document", "payload", "signature",
    "kid", "client_signature"}``: the canonical payload a decision's signatures cover.
``end``
    ``{"record": "end", "events", "records"}``: counts, so a cut-off file is noticed.
"""

from __future__ import annotations

from typing import Any

import orjson

from core.canonical import canonical_bytes, sha256_hex

__all__ = [
    "ACCESS_KEYS",
    "BODY_START",
    "EVENT_HEAD",
    "EVENT_MID",
    "EVENT_TAIL",
    "FORMAT",
    "HASH_END",
    "HASH_START",
    "KEYS_FORMAT",
    "VERSION",
    "BundleFormatError",
    "access_digest",
    "access_row_bytes",
    "event_line",
    "is_event_line",
    "record_line",
    "split_event_line",
]

FORMAT = "officium-audit-bundle"
KEYS_FORMAT = "officium-audit-keys"
VERSION = 1

# An event line's fixed layout: EVENT_HEAD, 64 hex digits, EVENT_MID, the canonical
# bytes, EVENT_TAIL; readers slice it at these offsets.
EVENT_HEAD = b'{"hash":"'
EVENT_MID = b'","event":'
EVENT_TAIL = b"}\n"
HASH_START = len(EVENT_HEAD)
HASH_END = HASH_START + 64
BODY_START = HASH_END + len(EVENT_MID)


# The fields of an access-log row that its batch's digest covers (``sealed_by_seq`` names
# the event holding the digest, so it is not hashed).
ACCESS_KEYS = (
    "id",
    "at",
    "actor",
    "actor_name",
    "action",
    "document_id",
    "version_number",
    "detail",
)


def access_row_bytes(row: Any) -> bytes:
    """One access-log row as its batch digest hashes it (``at`` already a chain time)."""
    return canonical_bytes({key: row[key] for key in ACCESS_KEYS})


def access_digest(rows: Any) -> str:
    """SHA-256 of the canonical JSON list of a batch's rows, in id order.

    Equal to ``sha256_hex(canonical_bytes([...rows...]))``: an RFC 8785 array is its
    members' canonical forms joined by commas in brackets, so a reader can hash a batch
    one row at a time.
    """
    return sha256_hex(b"[" + b",".join(access_row_bytes(row) for row in rows) + b"]")


class BundleFormatError(ValueError):
    """A line that is not a bundle record."""


def record_line(record: dict[str, Any]) -> bytes:
    """One non-event record as a line (``record`` names its kind)."""
    return orjson.dumps(record) + b"\n"


def event_line(canonical: bytes, digest: str) -> bytes:
    """The line for one event: its stored hash and its exact canonical bytes."""
    return b"".join((EVENT_HEAD, digest.encode("ascii"), EVENT_MID, canonical, EVENT_TAIL))


def is_event_line(line: bytes) -> bool:
    return line.startswith(EVENT_HEAD)


def split_event_line(line: bytes) -> tuple[str, bytes]:
    """The stored hash and the exact canonical bytes of an event line."""
    if (
        not line.startswith(EVENT_HEAD)
        or line[HASH_END:BODY_START] != EVENT_MID
        or not line.endswith(EVENT_TAIL)
    ):
        raise BundleFormatError("the line is not an event record")
    return line[HASH_START:HASH_END].decode("ascii"), line[BODY_START:-2]
