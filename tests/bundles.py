"""Audit bundles built without the server, from the core pieces, for the verifier's tests.

A :class:`Trail` records events the way the server's services would (same actions,
subjects and details, decisions signed as detached JWS over their canonical payloads);
:func:`bundle_lines` seals them into a hash chain, signs checkpoints as C2SP notes and
writes the records core.bundle describes. Tamper tests change the trail, the sealed
events or the lines, then re-seal and re-sign as an attacker holding the key would.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from joserfc.jwk import OKPKey

from core.bundle import FORMAT, KEYS_FORMAT, VERSION, event_line, record_line
from core.canonical import canonical_bytes, sha256_hex
from core.chain import GENESIS_HASH, format_time, seal
from core.merkle import (
    StreamingRoot,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    subtree_from_leaves,
)
from core.note import Checkpoint, NoteKey, sign_note
from core.signatures import generate_key, key_id, public_jwk, sign_detached
from core.verify import NEXT_KEY_EXTENSION

__all__ = [
    "ORIGIN",
    "CheckpointSpec",
    "Person",
    "ServerKey",
    "Trail",
    "bundle_lines",
    "keyfile",
    "seal_all",
    "story",
]

ORIGIN = "officium.test/audit"
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SYSTEM = {"id": "system", "name": "Officium", "office": None, "role": None}
AGENT = {"id": "agent:1", "name": "agent of share", "office": None, "role": "agent"}


class ServerKey:
    """The server's Ed25519 key: it signs checkpoints (as notes) and decisions (as JWS)."""

    def __init__(self, name: str = ORIGIN) -> None:
        self.okp: OKPKey = generate_key()
        self.jwk = public_jwk(self.okp)
        self.kid = key_id(self.jwk)
        self.name = name
        self.note_key = NoteKey.of(name, self.okp.private_key)

    def entry(self) -> dict[str, Any]:
        """The key as a key file or a bundle key record lists it."""
        return {
            "kid": self.kid,
            "vkey": self.note_key.vkey,
            "jwk": self.jwk,
            "valid_from": format_time(START),
            "valid_until": None,
        }


def keyfile(*keys: ServerKey, origin: str = ORIGIN) -> bytes:
    """A KEYFILE trusting ``keys``."""
    document = {
        "format": KEYS_FORMAT,
        "version": VERSION,
        "origin": origin,
        "keys": [key.entry() for key in keys],
    }
    return json.dumps(document).encode()


@dataclass(frozen=True)
class Person:
    id: int
    username: str
    name: str
    office: str | None = None
    role: str | None = None

    def actor(self, *, office: str | None = None, role: str | None = None) -> dict[str, Any]:
        return {
            "id": f"person:{self.id}",
            "name": self.name,
            "office": office or self.office,
            "role": role or self.role,
        }


ADMIN = Person(1, "admin", "Administrator", "Administration", "admin")
ALICE = Person(2, "alice", "Alice Martin", "Planning", "member")
BOB = Person(3, "bob", "Bob Durand", "Legal", "approver")
CAROL = Person(4, "carol", "Carol Petit", "Finance", "approver")


class Trail:
    """Events as the server would record them, with the decisions' payloads and the bytes."""

    def __init__(self, server: ServerKey) -> None:
        self.server = server
        self.bodies: list[dict[str, Any]] = []
        self.contents: dict[tuple[int, int], bytes] = {}
        self.decisions: list[dict[str, Any]] = []
        self.person_keys: dict[str, OKPKey] = {}
        self._time = START
        self._decision = 0
        self._latest: dict[int, int] = {}

    def add(
        self,
        action: str,
        subject: dict[str, Any],
        details: dict[str, Any] | None = None,
        actor: dict[str, Any] = SYSTEM,
    ) -> dict[str, Any]:
        self._time += timedelta(seconds=37)
        body = {
            "time": self._time,
            "actor": dict(actor),
            "action": action,
            "subject": subject,
            "details": details or {},
        }
        self.bodies.append(body)
        return body

    def sha256(self, document: int, number: int) -> str:
        return sha256_hex(self.contents[(document, number)])

    # ------------------------------------------------------------ the register

    def bootstrap(self) -> None:
        self.add(
            "register.bootstrapped",
            {"office": 1, "person": 1, "token": 1},
            {
                "office": "Administration",
                "username": "admin",
                "role": "admin",
                "token_from": "environment",
            },
        )
        for office_id, name in enumerate(("Planning", "Legal", "Finance"), start=2):
            self.add(
                "office.created",
                {"office": office_id},
                {"name": name, "parent": None},
                ADMIN.actor(),
            )
        offices = {"Planning": 2, "Legal": 3, "Finance": 4}
        for person in (ALICE, BOB, CAROL):
            self.add(
                "person.created",
                {"person": person.id},
                {"username": person.username, "name": person.name},
                ADMIN.actor(),
            )
            self.add(
                "membership.granted",
                {"person": person.id, "office": offices[person.office]},
                {"username": person.username, "office": person.office, "role": person.role},
                ADMIN.actor(),
            )
        self.add(
            "folder.created",
            {"folder": 1},
            {"name": "share", "root": "/srv/share", "default_owner": "Planning"},
            ADMIN.actor(),
        )
        self.add(
            "key.registered", {"key": self.server.kid}, {"jwk": self.server.jwk, "owner": "server"}
        )

    def register_key(self, person: Person) -> OKPKey:
        key = generate_key()
        jwk = public_jwk(key)
        self.person_keys[person.username] = key
        self.add(
            "key.registered",
            {"key": key_id(jwk), "person": person.id},
            {"jwk": jwk, "owner": person.username},
            person.actor(),
        )
        return key

    # ------------------------------------------------------------ documents

    def create_document(self, document: int, path: str) -> None:
        self.add(
            "document.created",
            {"document": document, "folder": 1},
            {"path": path, "owner_office_id": 2},
            AGENT,
        )
        self._latest[document] = 0

    def record_version(self, document: int, data: bytes, *, author: Person | None = ALICE) -> int:
        number = self._latest[document] + 1
        self._latest[document] = number
        self.contents[(document, number)] = data
        self.add(
            "version.recorded",
            {"document": document, "folder": 1, "version": number},
            {
                "path": f"plans/doc-{document}.odt",
                "number": number,
                "sha256": sha256_hex(data),
                "size": len(data),
                "commit": hashlib.sha1(data).hexdigest(),
                "kind": "modified" if number > 1 else "created",
                "author": author.username if author else None,
                "author_hint": None,
                "observed_at": (self._time + timedelta(seconds=1)).isoformat(),
                "same_bytes_as_version": None,
            },
            AGENT,
        )
        return number

    def move(self, document: int, old: str, new: str) -> None:
        self.add(
            "document.moved",
            {"document": document, "folder": 1},
            {"from": old, "to": new, "commit": "c" * 40},
            AGENT,
        )

    def delete(self, document: int) -> None:
        self.add(
            "document.deleted",
            {"document": document, "folder": 1},
            {
                "path": f"plans/doc-{document}.odt",
                "commit": "d" * 40,
                "observed_at": self._time.isoformat(),
                "author_hint": None,
            },
            AGENT,
        )

    # ------------------------------------------------------------ reviews

    def submit(
        self,
        document: int,
        review: int,
        *,
        version: int,
        parties: Sequence[str],
        mode: str = "all",
        by: Person = ALICE,
        sha256: str | None = None,
    ) -> None:
        self.add(
            "review.submitted",
            {"document": document, "folder": 1, "review": review},
            {
                "version": version,
                "sha256": sha256 or self.sha256(document, version),
                "mode": mode,
                "parties": list(parties),
                "due": None,
                "separation_of_duties": True,
                "comment": None,
            },
            by.actor(office="Planning", role="member"),
        )

    def decide(
        self,
        document: int,
        review: int,
        *,
        version: int,
        person: Person,
        party: str,
        verdict: str = "approve",
        comment: str | None = None,
        client_signed: bool = False,
        payload_version: int | None = None,
        event_version: int | None = None,
    ) -> dict[str, Any]:
        """A decision: its payload signed by the server (and the person), its event."""
        self._decision += 1
        at = self._time + timedelta(seconds=37)
        signed_version = payload_version or version
        sha = self.sha256(document, signed_version)
        word = "approves" if verdict == "approve" else "rejects"
        payload = canonical_bytes(
            {
                "type": "officium.decision",
                "review": review,
                "document": document,
                "version": signed_version,
                "sha256": sha,
                "signer": {
                    "id": f"person:{person.id}",
                    "username": person.username,
                    "name": person.name,
                    "office": person.office,
                },
                "party": party,
                "verdict": verdict,
                "meaning": f"{person.name} {word} version {signed_version} of "
                f"share:plans/doc-{document}.odt (SHA-256 {sha})",
                "comment": comment,
                "time": format_time(at),
            }
        )
        signature = sign_detached(payload, self.server.okp)
        client = person.username in self.person_keys and client_signed
        client_signature = (
            sign_detached(payload, self.person_keys[person.username]) if client else None
        )
        recorded_version = event_version or version
        self.add(
            "review.decided",
            {"document": document, "folder": 1, "review": review, "decision": self._decision},
            {
                "party": party,
                "verdict": verdict,
                "version": recorded_version,
                "sha256": self.sha256(document, recorded_version),
                "payload_sha256": sha256_hex(payload),
                "signature": signature,
                "kid": self.server.kid,
                "client_signature": client_signature,
                "comment": comment,
            },
            person.actor(office=person.office, role="approver"),
        )
        record = {
            "record": "decision",
            "id": self._decision,
            "review": review,
            "document": document,
            "payload": payload.decode(),
            "signature": signature,
            "kid": self.server.kid,
            "client_signature": client_signature,
        }
        self.decisions.append(record)
        return record

    def conclude(self, document: int, review: int, state: str, *, version: int) -> None:
        self.add(
            f"review.{state}",
            {"document": document, "folder": 1, "review": review},
            {"version": version, "sha256": self.sha256(document, version)},
        )

    def withdraw(self, document: int, review: int, *, version: int, by: Person = ALICE) -> None:
        self.add(
            "review.withdrawn",
            {"document": document, "folder": 1, "review": review},
            {"version": version, "sha256": self.sha256(document, version)},
            by.actor(office="Planning", role="member"),
        )

    def acknowledge(self, document: int, person: Person, *, version: int) -> None:
        self.add(
            "document.acknowledged",
            {"document": document, "folder": 1},
            {"version": version, "sha256": self.sha256(document, version)},
            person.actor(),
        )


def story(server: ServerKey | None = None) -> Trail:
    """A realistic trail: a register, two documents, approvals, a rejection, a withdrawal."""
    trail = Trail(server or ServerKey())
    trail.bootstrap()
    trail.register_key(BOB)
    trail.create_document(1, "plans/doc-1.odt")
    trail.record_version(1, b"budget plan, first draft\n")
    trail.record_version(1, b"budget plan, second draft\n" * 40)
    trail.submit(1, 1, version=2, parties=["office:Legal", "office:Finance"])
    trail.decide(1, 1, version=2, person=BOB, party="office:Legal", client_signed=True)
    trail.decide(1, 1, version=2, person=CAROL, party="office:Finance")
    trail.conclude(1, 1, "approved", version=2)
    trail.acknowledge(1, ALICE, version=2)
    trail.create_document(2, "plans/doc-2.odt")
    trail.record_version(2, b"staffing note\n")
    trail.submit(2, 2, version=1, parties=["office:Legal"])
    trail.withdraw(2, 2, version=1)
    trail.record_version(1, b"budget plan, third draft\n" * 50)
    trail.record_version(2, b"staffing note, revised\n")
    trail.submit(2, 3, version=2, parties=["person:bob", "office:Finance"], mode="sequential")
    trail.decide(
        2,
        3,
        version=2,
        person=BOB,
        party="person:bob",
        verdict="reject",
        comment="the figures in table 2 do not add up",
    )
    trail.conclude(2, 3, "rejected", version=2)
    trail.add(
        "document.subscribed", {"document": 1, "folder": 1}, {"username": "carol"}, CAROL.actor()
    )
    trail.add(
        "document.owner_changed",
        {"document": 2, "folder": 1},
        {"from": "Planning", "to": "Legal", "reason": None, "open_review": None},
        ADMIN.actor(),
    )
    trail.move(2, "plans/doc-2.odt", "archive/doc-2.odt")
    trail.delete(2)
    return trail


# ---------------------------------------------------------------- sealing and writing


def seal_all(
    bodies: Iterable[dict[str, Any]],
    *,
    encode: Callable[[int, dict[str, Any]], bytes] | None = None,
) -> list[tuple[bytes, str]]:
    """The events' canonical bytes and hashes, seq 1..n, each linked to the one before.

    ``encode(seq, body)`` may replace an event's bytes (a non-canonical encoding, say);
    the chain is re-linked over whatever bytes come out.
    """
    sealed: list[tuple[bytes, str]] = []
    prev = GENESIS_HASH
    for seq, body in enumerate(bodies, start=1):
        event = seal(
            seq=seq,
            time=body["time"],
            actor=body["actor"],
            action=body["action"],
            subject=body["subject"],
            details=body["details"],
            prev=prev,
        )
        data = encode(seq, event.body) if encode else None
        data = data if data is not None else event.canonical
        prev = sha256_hex(data)
        sealed.append((data, prev))
    return sealed


@dataclass
class CheckpointSpec:
    """One checkpoint to sign: its size, its signers (default: the trail's key), extensions."""

    size: int
    signers: tuple[ServerKey, ...] = ()
    extensions: tuple[str, ...] = ()


def next_key(key: ServerKey) -> str:
    """The extension line that announces ``key`` as the next signing key."""
    return f"{NEXT_KEY_EXTENSION} {key.note_key.vkey}"


@dataclass
class Bundle:
    lines: list[bytes]
    roots: dict[int, bytes] = field(default_factory=dict)
    notes: dict[int, str] = field(default_factory=dict)


def bundle_lines(
    trail: Trail,
    *,
    checkpoints: Sequence[int | CheckpointSpec] | None = None,
    events: list[tuple[bytes, str]] | None = None,
    keys: Sequence[ServerKey] | None = None,
    documents: set[int] | None = None,
    with_content: bool = False,
    store: dict[tuple[int, int], bytes | None] | None = None,
    decisions: list[dict[str, Any]] | None = None,
) -> Bundle:
    """Write a bundle: full, or filtered to ``documents`` with inclusion proofs."""
    sealed = events if events is not None else seal_all(trail.bodies)
    specs = [
        spec if isinstance(spec, CheckpointSpec) else CheckpointSpec(spec)
        for spec in (checkpoints or [len(sealed)])
    ]
    tree_size = specs[-1].size
    leaves = [leaf_hash(data) for data, _ in sealed[:tree_size]]
    stream, roots = StreamingRoot(), {}
    wanted = {spec.size for spec in specs}
    if 0 in wanted:
        roots[0] = stream.root()
    for leaf in leaves:
        stream.append(leaf)
        if stream.size in wanted:
            roots[stream.size] = stream.root()
    out = Bundle([])
    filtered = documents is not None
    out.lines.append(
        record_line(
            {
                "record": "manifest",
                "format": FORMAT,
                "version": VERSION,
                "origin": ORIGIN,
                "created_at": format_time(START + timedelta(days=30)),
                "tree_size": tree_size,
                "scope": "filtered" if filtered else "full",
                "filters": {"documents": sorted(documents)} if filtered else {},
                "complete_histories": filtered,
            }
        )
    )
    for key in keys or [trail.server]:
        out.lines.append(record_line({"record": "key", **key.entry()}))
    for spec in specs:
        text = Checkpoint(ORIGIN, spec.size, roots[spec.size], spec.extensions).text()
        signers = spec.signers or (trail.server,)
        note = sign_note(text, [(key.name, key.okp.private_key) for key in signers])
        out.notes[spec.size] = note
        out.lines.append(record_line({"record": "checkpoint", "note": note}))
    out.roots = roots
    subtree = subtree_from_leaves(leaves)
    if filtered:
        for spec in specs[:-1]:
            proof = consistency_proof(spec.size, tree_size, subtree)
            out.lines.append(
                record_line(
                    {
                        "record": "consistency",
                        "old_size": spec.size,
                        "new_size": tree_size,
                        "proof": [node.hex() for node in proof],
                    }
                )
            )
    count = 0
    for index, (data, digest) in enumerate(sealed[:tree_size]):
        if filtered and json.loads(data)["subject"].get("document") not in documents:
            continue
        count += 1
        out.lines.append(event_line(data, digest))
        if filtered:
            proof = inclusion_proof(index, tree_size, subtree)
            out.lines.append(
                record_line(
                    {
                        "record": "inclusion",
                        "seq": index + 1,
                        "tree_size": tree_size,
                        "proof": [node.hex() for node in proof],
                    }
                )
            )
    store = {**trail.contents, **(store or {})}
    for (document, number), data in trail.contents.items():
        if filtered and document not in documents:
            continue
        held = store[(document, number)]
        out.lines.append(
            record_line(
                {
                    "record": "version",
                    "document": document,
                    "number": number,
                    "sha256": sha256_hex(data),
                    "size": len(data),
                    "stored_sha256": sha256_hex(held) if held is not None else None,
                }
            )
        )
        for offset in range(0, len(held or b"") if with_content else 0, 256):
            out.lines.append(
                record_line(
                    {
                        "record": "content",
                        "document": document,
                        "number": number,
                        "offset": offset,
                        "data": base64.b64encode(held[offset : offset + 256]).decode(),
                    }
                )
            )
    for record in decisions if decisions is not None else trail.decisions:
        if filtered and record["document"] not in documents:
            continue
        out.lines.append(record_line(record))
    records = len(out.lines) - count
    out.lines.append(record_line({"record": "end", "events": count, "records": records}))
    return out
