"""The offline verifier: an audit bundle checked with nothing but the auditor's key file.

:func:`verify_bundle` reads a bundle (see core.bundle) as a stream of lines and stops at
the first fault, naming its class (:class:`ExitCode`, the exit code of
``officium audit verify``), where it is (event seq, checkpoint size, document and
version) and why. It trusts only the KEYFILE the auditor kept: checkpoints must be
signed by one of its keys, or by a key that a checkpoint signed with an already-trusted
key announced (``officium-next-key <vkey>``, a key rotation). Everything else the bundle
says is checked against those checkpoints:

* every event is canonical (RFC 8785), hashes to its stored hash, links to the one
  before it, and sits at its place: a full bundle holds seq 1..tree_size without gap,
  and its Merkle root, folded while streaming, equals the root of every checkpoint at
  that checkpoint's size; a filtered bundle carries an inclusion proof per event and a
  consistency proof from each earlier checkpoint to the pinned one;
* a checkpoint the auditor saved earlier (``last_seen``) is a prefix of this log: a
  truncated tail or a history rewritten by whoever holds the signing key shows here;
* decisions: the payload each ``review.decided`` event names (by SHA-256) is signed by
  the server key the event names and, when present, by the signer's registered key, and
  it is for the document, version and bytes the trail recorded;
* versions: the bytes held now (``stored_sha256``, content chunks) are the bytes the
  trail recorded;
* the approval state machine, replayed per document (full bundles and filtered ones with
  complete histories): versions numbered 1..n, reviews of live documents for a recorded
  version and its SHA-256, decisions only on the open review by a party whose turn it
  is, conclusions that follow from core.review's arithmetic, acknowledgements only of
  the final version.

Memory is O(checkpoints + documents + versions + persons' keys): per document a few
fields and 32 bytes per recorded version (a review may pin any earlier version, and the
version and decision records come after the events); per ``review.decided`` event a small
tuple until its decision record is read. Nothing is kept per other event.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any, ClassVar

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from core import review as rules
from core.bundle import (
    BODY_START,
    EVENT_HEAD,
    EVENT_MID,
    EVENT_TAIL,
    FORMAT,
    HASH_END,
    HASH_START,
    KEYS_FORMAT,
    VERSION,
    BundleFormatError,
    access_row_bytes,
    split_event_line,
)
from core.canonical import is_canonical
from core.chain import GENESIS_HASH
from core.errors import Invalid
from core.merkle import EMPTY_ROOT, ProofError, StreamingRoot, verify_consistency, verify_inclusion
from core.note import Checkpoint, NoteError, NoteKey, open_note
from core.signatures import ALGORITHM, key_id, verify_detached

__all__ = [
    "NEXT_KEY_EXTENSION",
    "ExitCode",
    "KeyFile",
    "KeyFileError",
    "Report",
    "TrustedKey",
    "is_canonical_event",
    "verify_bundle",
    "verify_file",
]

NEXT_KEY_EXTENSION = "officium-next-key"


class ExitCode(IntEnum):
    """One code per class of fault: what ``officium audit verify`` exits with."""

    ok = 0
    usage = 2  # typer's own, for a wrong command line
    malformed = 10  # unreadable or malformed bundle, key file or --last-seen file
    cut_off = 11  # the bundle ends early: no (or a wrong) end record
    unknown_key = 12  # a checkpoint signed by a key the key file does not trust
    checkpoint_signature = 13  # a checkpoint whose signature fails: it was edited
    not_canonical = 14  # an event that is not RFC 8785 canonical JSON
    event_hash = 15  # an event whose bytes do not hash to its stored hash: it was edited
    event_missing = 16  # a seq that never appears: an event was deleted
    out_of_order = 17  # a seq that appears later (or twice): events were reordered
    broken_link = 18  # an event whose prev is not the hash of the event before it
    root_mismatch = 19  # the events' Merkle root is not the signed checkpoint's
    last_seen = 20  # not a continuation of the auditor's saved checkpoint
    proof = 21  # an inclusion or consistency proof that fails (or is missing)
    decision = 22  # a decision's signature or binding to its version fails
    content = 23  # a version's bytes are not the bytes the trail recorded
    state_machine = 24  # the trail breaks the approval rules
    access_log = 25  # access-log rows differ from the batch digest their event sealed


# ------------------------------------------------------------------ keys


class KeyFileError(ValueError):
    """A key file that cannot be read, with the reason."""


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """One server key as the auditor keeps it: the note verifier key and the JWK."""

    kid: str
    note_key: NoteKey
    jwk: dict[str, Any]
    valid_from: str | None = None
    valid_until: str | None = None


def _server_key(entry: Any) -> TrustedKey:
    """A key entry (key file or bundle key record) whose note key and JWK are one key."""
    if not isinstance(entry, dict):
        raise KeyFileError("a key entry is a JSON object")
    try:
        note_key = NoteKey.parse(entry["vkey"])
        jwk = entry["jwk"]
        x = base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or "d" in jwk:
            raise KeyFileError("a key's jwk must be a public Ed25519 key (OKP)")
        kid = entry["kid"]
        thumbprint = key_id({"kty": "OKP", "crv": "Ed25519", "x": jwk["x"]})
    except (KeyError, TypeError, AttributeError, binascii.Error, NoteError) as exc:
        raise KeyFileError(f"a key entry needs kid, vkey and jwk ({exc})") from None
    if x != note_key.public_key:
        raise KeyFileError(f"the key {kid}: its vkey and its jwk are different keys")
    if kid != thumbprint:
        raise KeyFileError(f"the key {kid}: its kid is not its jwk's thumbprint ({thumbprint})")
    return TrustedKey(kid, note_key, jwk, entry.get("valid_from"), entry.get("valid_until"))


@dataclass(frozen=True, slots=True)
class KeyFile:
    """What the auditor trusts: the log's origin and the server's public keys."""

    origin: str
    keys: tuple[TrustedKey, ...]

    @classmethod
    def parse(cls, data: bytes | str) -> KeyFile:
        """Read a key file (``officium audit key -o KEYFILE``)."""
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise KeyFileError(f"the key file is not JSON ({exc})") from None
        if not isinstance(value, dict) or value.get("format") != KEYS_FORMAT:
            raise KeyFileError(f"the key file is not an {KEYS_FORMAT} file")
        if value.get("version") != VERSION:
            raise KeyFileError(f"the key file's version is not {VERSION}")
        origin, keys = value.get("origin"), value.get("keys")
        if not isinstance(origin, str) or not origin:
            raise KeyFileError("the key file names no origin")
        if not isinstance(keys, list) or not keys:
            raise KeyFileError("the key file holds no keys")
        return cls(origin, tuple(_server_key(entry) for entry in keys))


# ------------------------------------------------------------------ the report


@dataclass(frozen=True, slots=True)
class Report:
    """What a verification found: the first fault (if any) and what was checked."""

    code: ExitCode
    reason: str | None
    seq: int | None  # the first failing event
    checkpoint_size: int | None
    document: int | None
    version: int | None
    origin: str | None
    scope: str | None
    events: int
    checkpoints: int
    decisions: int
    versions: int
    tree_size: int | None
    root: bytes | None  # the pinned checkpoint's root
    pinned_note: str | None = None  # the pinned checkpoint, as signed: the next --last-seen

    @property
    def ok(self) -> bool:
        return self.code is ExitCode.ok

    @classmethod
    def unreadable(cls, reason: str) -> Report:
        """The report when the bundle, key file or --last-seen file cannot be read at all."""
        return cls(ExitCode.malformed, reason, *[None] * 6, 0, 0, 0, 0, None, None)

    def as_dict(self) -> dict[str, Any]:
        """The report as ``officium audit verify --json`` prints it."""
        return {
            "ok": self.ok,
            "code": int(self.code),
            "failure": None if self.ok else self.code.name,
            "first_failing_seq": self.seq,
            "reason": self.reason,
            "checkpoint_size": self.checkpoint_size,
            "document": self.document,
            "version": self.version,
            "origin": self.origin,
            "scope": self.scope,
            "events": self.events,
            "checkpoints": self.checkpoints,
            "decisions": self.decisions,
            "versions": self.versions,
            "tree_size": self.tree_size,
            "root": base64.b64encode(self.root).decode() if self.root is not None else None,
        }


class _Fault(Exception):
    def __init__(self, code: ExitCode, reason: str, **where: int | None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.where = where


class _Gap(Exception):
    """Seq ``expected`` did not come next: deleted or moved, the rest of the file says."""

    def __init__(self, expected: int, found: int) -> None:
        super().__init__(expected)
        self.expected = expected
        self.found = found


# ------------------------------------------------------------------ canonical form

_NON_BMP = re.compile(rb"[\xf0-\xf4]")  # lead bytes of 4-byte UTF-8: code points > U+FFFF
_ORJSON_CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER


def _holds_float(value: Any) -> bool:
    kind = type(value)
    if kind is dict:
        items: Iterable[Any] = value.values()
    elif kind is list:
        items = value
    else:
        return kind is float
    for item in items:
        kind = type(item)
        if kind is float or ((kind is dict or kind is list) and _holds_float(item)):
            return True
    return False


def is_canonical_event(data: bytes, value: Any) -> bool:
    """True when ``data`` (which parsed as ``value`` with orjson) is RFC 8785 canonical.

    The fast path re-encodes with orjson, which is exactly RFC 8785 for the values it
    takes: no whitespace; strings escaped alike (tests/test_audit_verify.py compares
    every BMP code point); integers printed in decimal, and OPT_STRICT_INTEGER refuses
    the ones beyond +-(2**53 - 1) that RFC 8785 refuses; keys sorted by code point,
    which is RFC 8785's UTF-16 order as long as no key holds a code point above U+FFFF.
    Floats (ECMAScript's number format differs from orjson's: ``1.0`` vs ``1``) and
    code points above U+FFFF (whose UTF-16 order differs) take core.canonical's slow,
    exact path; orjson reads an integer beyond 64 bits as a float, so those do too.
    """
    if (not data.isascii() and _NON_BMP.search(data)) or _holds_float(value):
        return is_canonical(data)
    try:
        return orjson.dumps(value, option=_ORJSON_CANONICAL) == data
    except orjson.JSONEncodeError:
        return is_canonical(data)


# ------------------------------------------------------------------ signatures


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class _DetachedSignatures:
    """Detached Ed25519 JWS checks (RFC 7515 appendix F), each public key read once.

    core.signatures.verify_detached goes through joserfc's general machinery, which
    costs as much again as the Ed25519 check itself; a bundle holds a signature or two
    per decision, so the common header (``alg`` Ed25519, nothing critical) is checked
    here directly and anything else is left to core.signatures.
    """

    def __init__(self) -> None:
        self._keys: dict[str, Ed25519PublicKey | None] = {}

    def verify(self, token: str, payload: bytes, jwk: dict[str, Any]) -> bool:
        """True when ``token`` is a valid detached JWS of ``payload`` by ``jwk``."""
        parts = token.split(".") if isinstance(token, str) else []
        if len(parts) != 3 or parts[1]:
            return False
        try:
            header = orjson.loads(_b64url(parts[0]))
            signature = _b64url(parts[2])
        except (ValueError, orjson.JSONDecodeError):
            return False
        if not isinstance(header, dict) or set(header) - {"alg", "kid", "typ"}:
            return verify_detached(token, payload, jwk)
        if header.get("alg") != ALGORITHM:
            return False
        key = self._public_key(jwk)
        if key is None:
            return False
        encoded = base64.urlsafe_b64encode(payload).rstrip(b"=")
        try:
            key.verify(signature, parts[0].encode("ascii") + b"." + encoded)
        except (InvalidSignature, UnicodeEncodeError):
            return False
        return True

    def _public_key(self, jwk: dict[str, Any]) -> Ed25519PublicKey | None:
        x = jwk.get("x") if isinstance(jwk, dict) else None
        if not isinstance(x, str) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            return None
        if x not in self._keys:
            try:
                self._keys[x] = Ed25519PublicKey.from_public_bytes(_b64url(x))
            except ValueError:
                self._keys[x] = None
        return self._keys[x]


# ------------------------------------------------------------------ replay state


@dataclass(slots=True)
class _Review:
    id: int
    number: int
    sha256: str
    policy: rules.Policy
    submitter: str
    decisions: list[rules.Decision]
    settled: rules.ReviewState | None = None  # the conclusion the decisions call for


class _Document:
    __slots__ = ("closed", "count", "final", "last_review", "latest", "live", "older", "review")

    def __init__(self) -> None:
        self.live = True
        self.count = 0  # versions recorded
        self.latest = ""  # the latest version's SHA-256
        self.review: _Review | None = None
        self.final: tuple[int, str] | None = None
        self.last_review = 0
        self.closed: tuple[int, str] | None = None  # the last review closed, and how
        # SHA-256s that reviews claimed for earlier versions, checked against the version
        # records (which come after the events) so that no version's hash is kept here.
        self.older: dict[int, tuple[str, int]] | None = None

    def close(self, state: rules.ReviewState) -> None:
        if self.review is not None:
            self.closed = (self.review.id, state.value)
        self.review = None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # decision times play no part in the arithmetic


class _Violation(Exception):
    """An event the approval rules do not allow, with the reason."""


def _int(value: Any, what: str) -> int:
    if type(value) is not int:
        raise _Violation(f"{what} is not a number")
    return value


def _open_review(doc: _Document, subject: dict, details: dict, doing: str) -> _Review:
    review_id = _int(subject.get("review"), "the review id")
    review = doc.review
    if review is None or review.id != review_id:
        closed = f" ({doc.closed[1]})" if doc.closed and doc.closed[0] == review_id else ""
        raise _Violation(f"{doing} review #{review_id}, which is not open{closed}")
    if (
        details.get("version", review.number) != review.number
        or details.get("sha256", review.sha256) != review.sha256
    ):
        raise _Violation(
            f"{doing} review #{review_id} for version {details.get('version')}, but it pins "
            f"version {review.number} ({review.sha256})"
        )
    return review


def _version_recorded(doc: _Document, event: dict) -> None:
    details = event["details"]
    number, sha256 = details.get("number"), details.get("sha256")
    if not doc.live:
        raise _Violation("a version is recorded for a deleted document")
    if number != doc.count + 1 or event["subject"].get("version", number) != number:
        raise _Violation(f"version {number} is recorded where version {doc.count + 1} comes next")
    if type(sha256) is not str or len(sha256) != 64:
        raise _Violation("the version's SHA-256 is not 64 hex digits")
    doc.count = number
    doc.latest = sha256


def _must_be_live(doc: _Document, event: dict) -> None:
    if not doc.live:
        raise _Violation(f"{event['action']} on a deleted document")


def _deleted(doc: _Document, event: dict) -> None:
    _must_be_live(doc, event)
    doc.live = False


def _reappeared(doc: _Document, event: dict) -> None:
    if doc.live:
        raise _Violation("a document reappears that was not deleted")
    doc.live = True


def _anything(doc: _Document, event: dict) -> None:
    """Allowed on any recorded document (owner changes, subscriptions)."""


def _submitted(doc: _Document, event: dict) -> None:
    subject, details = event["subject"], event["details"]
    review_id = _int(subject.get("review"), "the review id")
    if not doc.live:
        raise _Violation(f"review #{review_id} is submitted for a deleted document")
    if doc.review is not None:
        raise _Violation(
            f"review #{review_id} is submitted while review #{doc.review.id} is still open"
        )
    if review_id <= doc.last_review:
        raise _Violation(f"review #{review_id} is not newer than review #{doc.last_review}")
    number, pinned = _int(details.get("version"), "the pinned version"), details.get("sha256")
    if not 1 <= number <= doc.count:
        raise _Violation(f"review #{review_id} pins version {number}, which is not recorded")
    if number == doc.count and pinned != doc.latest:
        raise _Violation(
            f"review #{review_id} pins version {number} as {pinned}, but the trail recorded "
            f"{doc.latest}"
        )
    if number < doc.count:
        if doc.older is None:
            doc.older = {}
        earlier = doc.older.setdefault(number, (pinned, review_id))
        if earlier[0] != pinned:
            raise _Violation(
                f"review #{review_id} pins version {number} as {pinned}, review #{earlier[1]} "
                f"as {earlier[0]}"
            )
    try:
        policy = rules.make_policy(
            details["parties"],
            details["mode"],
            separation_of_duties=details.get("separation_of_duties", True),
        )
    except (Invalid, KeyError, TypeError) as exc:
        raise _Violation(f"review #{review_id} has no valid policy ({exc})") from None
    doc.review = _Review(review_id, number, pinned, policy, event["actor"].get("id"), [])
    doc.last_review = review_id


def _relaxed(doc: _Document, event: dict) -> None:
    review = _open_review(doc, event["subject"], {}, "relaxing separation of duties on")
    if review.policy.separation_of_duties:
        raise _Violation(f"review #{review.id} was submitted with separation of duties")


def _decided(doc: _Document, event: dict) -> None:
    details = event["details"]
    review = _open_review(doc, event["subject"], details, "a decision on")
    if review.settled is not None:
        raise _Violation(f"a decision is taken on review #{review.id} after it was settled")
    person = event["actor"].get("id")
    try:
        decision = rules.Decision(
            rules.Party.parse(details["party"]),
            person,
            details["verdict"],
            _EPOCH,
            details.get("comment") or "",
        )
    except (Invalid, KeyError, TypeError, AttributeError) as exc:
        raise _Violation(f"the decision on review #{review.id} is malformed ({exc})") from None
    if decision.verdict is rules.Verdict.reject and not decision.comment.strip():
        raise _Violation(f"a rejection of review #{review.id} gives no reason")
    if any(earlier.person == person for earlier in review.decisions):
        raise _Violation(f"{person} decides twice on review #{review.id}")
    if review.policy.separation_of_duties and person == review.submitter:
        raise _Violation(f"{person} decides on review #{review.id}, which they submitted")
    in_turn = {
        awaited.party
        for awaited in rules.awaiting(
            review.policy, review.decisions, submitted_at=_EPOCH, now=_EPOCH, parents={}
        )
    }
    if str(decision.party) not in in_turn:
        waiting = ", ".join(sorted(in_turn)) or "nobody"
        raise _Violation(
            f"{decision.party} decides on review #{review.id} out of turn (awaited: {waiting})"
        )
    review.decisions.append(decision)
    state = rules.evaluate(review.policy, review.decisions).state
    if state is not rules.ReviewState.open:
        review.settled = state


def _concluded(state: rules.ReviewState) -> Callable[[_Document, dict], None]:
    def conclude(doc: _Document, event: dict) -> None:
        review = _open_review(
            doc, event["subject"], event["details"], f"a conclusion ({state.value}) of"
        )
        if review.settled is not state:
            outcome = review.settled.value if review.settled else "still open"
            raise _Violation(
                f"review #{review.id} is recorded {state.value}, but its decisions under its "
                f"policy leave it {outcome}"
            )
        if state is rules.ReviewState.approved:
            doc.final = (review.number, review.sha256)
        doc.close(state)

    return conclude


def _withdrawn(doc: _Document, event: dict) -> None:
    review = _open_review(doc, event["subject"], event["details"], "a withdrawal of")
    if review.settled is not None:
        raise _Violation(f"review #{review.id} is withdrawn after its decisions settled it")
    doc.close(rules.ReviewState.withdrawn)


def _escalated(doc: _Document, event: dict) -> None:
    _open_review(doc, event["subject"], {}, "an escalation of")


def _acknowledged(doc: _Document, event: dict) -> None:
    details = event["details"]
    if doc.final is None:
        raise _Violation("an acknowledgement of a document with no final version")
    if (details.get("version"), details.get("sha256")) != doc.final:
        raise _Violation(
            f"an acknowledgement of version {details.get('version')}, but the final version "
            f"is {doc.final[0]}"
        )


# What each document event may do, given the document's state: the replay's table. An
# event whose action is not here (persons, offices, tokens, folders...) changes nothing.
_REPLAY: dict[str, Callable[[_Document, dict], None]] = {
    "version.recorded": _version_recorded,
    "document.moved": _must_be_live,
    "document.deleted": _deleted,
    "document.reappeared": _reappeared,
    "document.owner_changed": _anything,
    "document.subscribed": _anything,
    "document.acknowledged": _acknowledged,
    "review.submitted": _submitted,
    "review.separation_of_duties_relaxed": _relaxed,
    "review.decided": _decided,
    "review.approved": _concluded(rules.ReviewState.approved),
    "review.rejected": _concluded(rules.ReviewState.rejected),
    "review.withdrawn": _withdrawn,
    "review.escalated": _escalated,
}


# ------------------------------------------------------------------ the run

# Record kinds and the order they come in (versions and content may interleave).
_PHASES = {
    "manifest": 0,
    "key": 1,
    "checkpoint": 2,
    "consistency": 3,
    "event": 4,
    "inclusion": 4,
    "access": 4,
    "version": 5,
    "content": 5,
    "decision": 6,
    "end": 7,
}
_EVENTS = _PHASES["event"]


@dataclass(slots=True)
class _Decided:
    """What a review.decided event says, kept until its decision record is read."""

    seq: int
    document: int
    review: int
    version: int
    sha256: str
    payload_sha256: str
    party: str
    verdict: str
    actor: str
    signatures: tuple[str, str, str | None]  # kid, server JWS, client JWS


@dataclass(slots=True)
class _AccessBatch:
    """An ``access.logged`` event whose rows are being read, hashed as they come."""

    seq: int
    count: int
    next_id: int
    sha256: str
    seen: int = 0
    digest: Any = dataclasses.field(default_factory=lambda: hashlib.sha256(b"["))


class _Run:
    """One pass over a bundle."""

    __slots__ = (
        "access_due",
        "bundle_keys",
        "canonical",
        "checkpoints",
        "consistent",
        "content",
        "decided",
        "decision_records",
        "docs",
        "ended",
        "events",
        "full",
        "inclusion_due",
        "keys",
        "last_seen",
        "last_seen_note",
        "last_seq",
        "manifest",
        "marks",
        "next_mark",
        "person_keys",
        "phase",
        "pinned_note",
        "prev",
        "records",
        "replaying",
        "roots",
        "server_jwks",
        "settling",
        "signatures",
        "stream",
        "trusted",
        "version",
        "version_list",
        "version_records",
        "version_trail",
    )

    def __init__(self, keys: KeyFile, last_seen: str | None, *, canonical: bool = True) -> None:
        self.keys = keys
        # False when another process checks each event's hash and canonical form.
        self.canonical = canonical
        self.trusted: list[NoteKey] = [key.note_key for key in keys.keys]
        self.server_jwks: dict[str, dict[str, Any]] = {key.kid: key.jwk for key in keys.keys}
        self.bundle_keys: dict[str, TrustedKey] = {}
        self.person_keys: dict[str, tuple[dict[str, Any], str]] = {}
        self.signatures = _DetachedSignatures()
        self.last_seen_note = last_seen
        self.last_seen: Checkpoint | None = None
        if last_seen is not None:
            try:
                self.last_seen = Checkpoint.parse(open_note(last_seen, []).text)
            except NoteError as exc:
                raise _Fault(ExitCode.malformed, f"the --last-seen checkpoint: {exc}") from None
        self.phase = -1
        self.records = 0  # lines that are not events
        self.manifest: dict[str, Any] = {}
        self.full = True
        self.replaying = True
        self.checkpoints: list[Checkpoint] = []
        self.pinned_note: str | None = None
        self.roots: dict[int, bytes] = {}
        self.consistent: set[int] = set()
        self.marks: list[tuple[int, bytes, str]] = []
        self.next_mark = -1
        self.stream = StreamingRoot()
        self.last_seq = 0
        self.prev = GENESIS_HASH
        self.events = 0
        self.inclusion_due: tuple[int, bytes] | None = None
        self.access_due: _AccessBatch | None = None  # rows still to come after access.logged
        self.docs: dict[int, _Document] = {}
        self.settling: dict[int, str] = {}  # documents whose review awaits its conclusion
        # The versions the events record and the version records list, each folded
        # into one digest in order (the exporter lists them in event order): equal
        # digests show every record is its event's, without keeping either list.
        self.version_trail = hashlib.sha256()
        self.version_list = hashlib.sha256()
        self.version: tuple[int, int, str] | None = None  # the last version record
        self.decided: dict[int, _Decided] = {}
        self.decision_records = 0
        self.version_records = 0
        self.content: tuple[int, int, Any, int] | None = None  # document, number, hash, size
        self.ended = False

    # -------------------------------------------------------------- lines

    @property
    def lines(self) -> int:
        """How many lines have been read, a record being read included."""
        return self.records + self.events

    def line(self, line: bytes) -> None:
        """One line that is not an event: a record."""
        if self.ended:
            raise _Fault(ExitCode.malformed, "the bundle goes on after its end record")
        if not line.endswith(b"\n"):
            raise _Fault(ExitCode.cut_off, "the bundle is cut off in the middle of a line")
        self.records += 1
        try:
            record = orjson.loads(line)
            kind = record["record"]
            handler = self._RECORDS[kind]
        except (orjson.JSONDecodeError, TypeError, KeyError):
            raise _Fault(ExitCode.malformed, f"line {self.lines} is not a bundle record") from None
        phase = _PHASES[kind]
        if phase != self.phase:
            self.enter(phase, kind)
        try:
            handler(self, record)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _Fault(
                ExitCode.malformed, f"line {self.lines}: a malformed {kind} record ({exc!r})"
            ) from None

    def enter(self, phase: int, kind: str) -> None:
        if phase == self.phase:
            return
        if phase < self.phase or (self.phase < 0 and phase != 0):
            raise _Fault(ExitCode.malformed, f"line {self.lines}: a {kind} record out of place")
        if self.phase < _PHASES["consistency"] <= phase:
            self.checkpoints_read()
        if self.phase < _EVENTS <= phase:
            self.proofs_read()
        if self.phase <= _EVENTS < phase:
            self.events_read()
        if self.phase <= _PHASES["version"] < phase:
            self.versions_read()
        self.phase = phase

    # -------------------------------------------------------------- records

    def manifest_record(self, record: dict) -> None:
        if self.manifest:
            raise ValueError("a second manifest")
        if record.get("format") != FORMAT or record.get("version") != VERSION:
            raise _Fault(
                ExitCode.malformed,
                f"not an {FORMAT} version {VERSION} file "
                f"(format {record.get('format')!r}, version {record.get('version')!r})",
            )
        if record["origin"] != self.keys.origin:
            raise _Fault(
                ExitCode.unknown_key,
                f"the bundle is of the log '{record['origin']}'; the key file trusts the log "
                f"'{self.keys.origin}'",
            )
        if record["scope"] not in ("full", "filtered") or type(record["tree_size"]) is not int:
            raise ValueError("scope or tree_size")
        self.manifest = record
        self.full = record["scope"] == "full"
        self.replaying = self.full or bool(record.get("complete_histories"))

    def key_record(self, record: dict) -> None:
        try:
            key = _server_key(record)
        except KeyFileError as exc:
            raise _Fault(ExitCode.malformed, f"a key record: {exc}") from None
        self.bundle_keys[key.kid] = key

    def checkpoint_record(self, record: dict) -> None:
        note = record["note"]
        number = len(self.checkpoints) + 1
        try:
            open_note(note, [])
        except NoteError as exc:
            raise _Fault(ExitCode.malformed, f"checkpoint {number}: {exc}") from None
        checkpoint = self.open_checkpoint(note, f"checkpoint {number}")
        if self.checkpoints and checkpoint.size <= self.checkpoints[-1].size:
            raise _Fault(
                ExitCode.malformed,
                f"checkpoint {number} (size {checkpoint.size}) does not grow the tree",
                checkpoint_size=checkpoint.size,
            )
        for line in checkpoint.extensions:
            word, _, vkey = line.partition(" ")
            if word == NEXT_KEY_EXTENSION:
                try:
                    self.trusted.append(NoteKey.parse(vkey))
                except NoteError as exc:
                    raise _Fault(
                        ExitCode.malformed,
                        f"the key announced at size {checkpoint.size}: {exc}",
                        checkpoint_size=checkpoint.size,
                    ) from None
        self.checkpoints.append(checkpoint)
        self.pinned_note = note
        self.roots[checkpoint.size] = checkpoint.root

    def open_checkpoint(self, note: str, what: str) -> Checkpoint:
        """A checkpoint whose note a trusted key signed, of the trusted log."""
        try:
            opened = open_note(note, self.trusted)
        except NoteError as exc:
            raise _Fault(ExitCode.checkpoint_signature, f"{what}: {exc}") from None
        try:
            checkpoint = Checkpoint.parse(opened.text)
        except NoteError as exc:
            raise _Fault(ExitCode.malformed, f"{what}: {exc}") from None
        if not opened.verified:
            names = ", ".join(f"{name} ({kid})" for name, kid in opened.unknown)
            raise _Fault(
                ExitCode.unknown_key,
                f"{what} (size {checkpoint.size}) is signed only by keys the key file does "
                f"not trust, nor any trusted checkpoint announced: {names}",
                checkpoint_size=checkpoint.size,
            )
        if checkpoint.origin != self.keys.origin:
            raise _Fault(
                ExitCode.unknown_key,
                f"{what} is of the log '{checkpoint.origin}', not '{self.keys.origin}'",
                checkpoint_size=checkpoint.size,
            )
        return checkpoint

    def checkpoints_read(self) -> None:
        if not self.checkpoints:
            raise _Fault(ExitCode.malformed, "the bundle holds no checkpoint")
        pinned = self.checkpoints[-1]
        if pinned.size != self.manifest["tree_size"]:
            raise _Fault(
                ExitCode.malformed,
                f"the manifest pins size {self.manifest['tree_size']}, the last checkpoint "
                f"is of size {pinned.size}",
            )
        if self.checkpoints[0].size == 0 and self.checkpoints[0].root != EMPTY_ROOT:
            raise _Fault(
                ExitCode.root_mismatch, "the checkpoint of size 0 has a root", checkpoint_size=0
            )

    def consistency_record(self, record: dict) -> None:
        old, new = record["old_size"], record["new_size"]
        pinned = self.checkpoints[-1]
        proof = [bytes.fromhex(node) for node in record["proof"]]
        if new != pinned.size:
            raise _Fault(
                ExitCode.proof,
                f"a consistency proof to size {new}, not to the pinned size {pinned.size}",
                checkpoint_size=old,
            )
        last = self.last_seen
        for size, root, what in (
            (old, self.roots.get(old), "checkpoint"),
            (old, last.root if last and last.size == old else None, "--last-seen checkpoint"),
        ):
            if root is None:
                continue
            try:
                verify_consistency(size, new, root, pinned.root, proof)
            except ProofError as exc:
                code = ExitCode.last_seen if what.startswith("--") else ExitCode.proof
                raise _Fault(
                    code,
                    f"the {what} of size {size} is not a prefix of the pinned tree: {exc}",
                    checkpoint_size=size,
                ) from None
            self.consistent.add(size)

    def proofs_read(self) -> None:
        """Last checks before the events: the --last-seen checkpoint, proofs' coverage."""
        pinned = self.checkpoints[-1]
        if self.full:
            self.marks = [(cp.size, cp.root, "checkpoint") for cp in self.checkpoints if cp.size]
            self.marks.append((pinned.size + 1, b"", "beyond"))
        else:
            missing = [cp.size for cp in self.checkpoints[:-1] if cp.size not in self.consistent]
            if missing:
                raise _Fault(
                    ExitCode.proof,
                    f"no consistency proof from the checkpoint of size {missing[0]} to the "
                    f"pinned one",
                    checkpoint_size=missing[0],
                )
        if self.last_seen_note is not None:
            self.check_last_seen(pinned)
        self.marks.sort(key=lambda mark: mark[0])
        self.next_mark = self.marks[0][0] if self.marks else -1

    def check_last_seen(self, pinned: Checkpoint) -> None:
        last = self.open_checkpoint(self.last_seen_note or "", "the --last-seen checkpoint")
        where = {"checkpoint_size": last.size}
        if last.size > pinned.size:
            raise _Fault(
                ExitCode.last_seen,
                f"the bundle ends at size {pinned.size}, but you saw the log at size "
                f"{last.size}: its tail was cut off or its history rewritten",
                **where,
            )
        known = self.roots.get(last.size)
        if known is not None or last.size == 0:
            if (known or EMPTY_ROOT) != last.root:
                raise _Fault(
                    ExitCode.last_seen,
                    f"the bundle's checkpoint of size {last.size} differs from the one you "
                    "saw: the history was rewritten",
                    **where,
                )
        elif self.full:
            self.marks.append((last.size, last.root, "last-seen"))
        elif last.size not in self.consistent:
            raise _Fault(
                ExitCode.last_seen,
                f"the bundle has no consistency proof from your --last-seen size {last.size}",
                **where,
            )

    # -------------------------------------------------------------- events

    def event(self, line: bytes) -> None:
        """One event line: the hot path, kept lean (see the module's rate target)."""
        if self.phase != _EVENTS or self.inclusion_due is not None or self.access_due is not None:
            self.before_event()
        if line[HASH_END:BODY_START] != EVENT_MID or line[-2:] != EVENT_TAIL:
            if not line.endswith(b"\n"):
                raise _Fault(ExitCode.cut_off, "the bundle is cut off in the middle of an event")
            raise _Fault(ExitCode.malformed, f"line {self.lines + 1} is not an event record")
        data = line[BODY_START:-2]
        try:
            stored = line[HASH_START:HASH_END].decode("ascii")
            body = orjson.loads(data)
            seq = body["seq"]
        except (UnicodeDecodeError, orjson.JSONDecodeError, TypeError, KeyError):
            body = seq = None
        if type(seq) is not int:
            self.unreadable_event(data, line)
        last = self.last_seq
        if seq != last + 1:
            self.out_of_place(seq)
        if self.canonical and hashlib.sha256(data).hexdigest() != stored:
            raise _Fault(
                ExitCode.event_hash,
                f"event {seq} does not hash to its recorded hash: it was edited",
                seq=seq,
            )
        if self.canonical and not is_canonical_event(data, body):
            raise _Fault(
                ExitCode.not_canonical,
                f"event {seq} is not in canonical (RFC 8785) form",
                seq=seq,
            )
        if seq == last + 1 and body.get("prev") != self.prev:
            raise _Fault(
                ExitCode.broken_link,
                f"event {seq} does not link to the hash of event {last}",
                seq=seq,
            )
        self.prev = stored
        self.last_seq = seq
        self.events += 1
        leaf = hashlib.sha256(b"\x00" + data).digest()
        if self.full:
            self.stream.append(leaf)
            if seq == self.next_mark:
                self.reached_mark(seq)
        else:
            self.inclusion_due = (seq, leaf)
        try:
            self.meaning(seq, body)
        except _Violation as exc:
            raise _Fault(ExitCode.state_machine, f"event {seq}: {exc}", seq=seq) from None
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise _Fault(
                ExitCode.state_machine,
                f"event {seq}: a malformed {body.get('action')} event ({exc!r})",
                seq=seq,
            ) from None

    def before_event(self) -> None:
        if self.phase != _EVENTS:
            self.enter(_EVENTS, "event")
        self.access_complete()
        if self.inclusion_due is not None:
            seq = self.inclusion_due[0]
            raise _Fault(ExitCode.proof, f"event {seq} has no inclusion proof", seq=seq)

    def unreadable_event(self, data: bytes, line: bytes) -> None:
        at = self.last_seq + 1 if self.full else None
        if hashlib.sha256(data).hexdigest().encode() != line[HASH_START:HASH_END]:
            raise _Fault(ExitCode.event_hash, "an event was edited: it hashes otherwise", seq=at)
        if not is_canonical(data):
            raise _Fault(ExitCode.not_canonical, "an event is not canonical JSON", seq=at)
        raise _Fault(ExitCode.malformed, "an event without a seq", seq=at)

    def out_of_place(self, seq: int) -> None:
        """A seq that is not the next one: fine in a filtered bundle if it ascends."""
        last = self.last_seq
        if seq <= last:
            raise _Fault(
                ExitCode.out_of_order,
                f"event {seq} comes again after event {last}"
                if self.full
                else f"event {seq} comes after event {last}",
                seq=seq,
            )
        if self.full:
            raise _Gap(last + 1, seq)
        # Filtered: a gap is expected, and the link to the event before is not checkable.

    def reached_mark(self, size: int) -> None:
        root = self.stream.root()
        while self.marks and self.marks[0][0] == size:
            _, expected, what = self.marks.pop(0)
            if root == expected:
                continue
            if what == "beyond":
                raise _Fault(
                    ExitCode.malformed,
                    f"event {size} lies beyond the pinned checkpoint (size {size - 1})",
                    seq=size,
                )
            if what == "last-seen":
                raise _Fault(
                    ExitCode.last_seen,
                    f"the first {size} events are not the ones you saw (--last-seen): the "
                    "history was rewritten",
                    checkpoint_size=size,
                )
            start = max((cp.size for cp in self.checkpoints if cp.size < size), default=0) + 1
            raise _Fault(
                ExitCode.root_mismatch,
                f"the Merkle root of the first {size} events differs from the signed "
                f"checkpoint's: an event among {start}..{size} was altered",
                checkpoint_size=size,
            )
        self.next_mark = self.marks[0][0] if self.marks else -1

    def inclusion_record(self, record: dict) -> None:
        due = self.inclusion_due
        seq, size = record["seq"], record["tree_size"]
        if due is None or due[0] != seq:
            raise _Fault(ExitCode.proof, f"an inclusion proof for event {seq} out of place")
        self.inclusion_due = None
        root = self.roots.get(size)
        if root is None:
            raise _Fault(
                ExitCode.proof,
                f"event {seq}'s inclusion proof is for size {size}, which no checkpoint signs",
                seq=seq,
            )
        try:
            verify_inclusion(
                seq - 1, size, due[1], [bytes.fromhex(n) for n in record["proof"]], root
            )
        except ProofError as exc:
            raise _Fault(ExitCode.proof, f"event {seq}: {exc}", seq=seq) from None

    def meaning(self, seq: int, event: dict) -> None:
        """What the event does: keys, decisions to bind, and the approval state machine."""
        action = event["action"]
        if action == "access.logged" and self.full:
            self.access_logged(seq, event["details"])
        if action == "key.registered":
            self.key_registered(event)
        elif action == "review.decided":
            self.remember_decision(seq, event)
        doc_id = event["subject"].get("document")
        if doc_id is None:
            return
        if action == "version.recorded":
            details = event["details"]
            self.version_trail.update(
                b"%d %d %s\n" % (doc_id, details["number"], details["sha256"].encode("ascii"))
            )
        if not self.replaying:
            return
        doc = self.docs.get(doc_id)
        if self.settling and doc_id in self.settling:
            if action != f"review.{self.settling[doc_id]}":
                raise _Violation(
                    f"the last decision settled review #{doc.review.id} "  # type: ignore[union-attr]
                    f"({self.settling[doc_id]}), but {action} follows instead of its conclusion"
                )
            del self.settling[doc_id]
        step = _REPLAY.get(action)
        if step is not None:
            if doc is None:
                raise _Violation(f"{action} on document {doc_id}, which was never created")
            step(doc, event)
            if action == "review.decided" and doc.review and doc.review.settled:
                self.settling[doc_id] = doc.review.settled.value
        elif action == "document.created":
            if doc is not None:
                raise _Violation(f"document {doc_id} is created a second time")
            self.docs[doc_id] = _Document()

    def key_registered(self, event: dict) -> None:
        kid, jwk, owner = (
            event["subject"]["key"],
            event["details"]["jwk"],
            event["details"]["owner"],
        )
        if key_id(jwk) != kid:
            raise _Violation(f"the key registered as {kid} has another thumbprint")
        if owner == "server":
            self.server_jwks.setdefault(kid, jwk)
        else:
            self.person_keys[kid] = (jwk, owner)

    def remember_decision(self, seq: int, event: dict) -> None:
        subject, details = event["subject"], event["details"]
        self.decided[subject["decision"]] = _Decided(
            seq,
            subject["document"],
            subject["review"],
            details["version"],
            details["sha256"],
            details["payload_sha256"],
            details["party"],
            details["verdict"],
            event["actor"]["id"],
            (details["kid"], details["signature"], details.get("client_signature")),
        )

    def events_read(self) -> None:
        self.access_complete()
        if self.inclusion_due is not None:
            seq = self.inclusion_due[0]
            raise _Fault(ExitCode.proof, f"event {seq} has no inclusion proof", seq=seq)
        if self.full and self.last_seq < self.manifest["tree_size"]:
            raise _Fault(
                ExitCode.event_missing,
                f"event {self.last_seq + 1} is missing: the bundle stops at event "
                f"{self.last_seq} of {self.manifest['tree_size']}",
                seq=self.last_seq + 1,
            )
        for doc_id, state in self.settling.items():
            raise _Fault(
                ExitCode.state_machine,
                f"a review of document {doc_id} was settled ({state}) by its last decision "
                "but never concluded",
                document=doc_id,
            )

    # -------------------------------------------------------------- access log

    def access_logged(self, seq: int, details: dict) -> None:
        """An ``access.logged`` event: its rows follow it in a full bundle (core.bundle)."""
        count, first = details["count"], details["first_id"]
        if count:
            self.access_due = _AccessBatch(seq, count, first, details["sha256"])

    def access_record(self, record: dict) -> None:
        batch = self.access_due
        if batch is None or record["sealed_by_seq"] != batch.seq:
            raise _Fault(
                ExitCode.access_log,
                f"access-log row {record['id']} is not one of the batch its event "
                f"{record['sealed_by_seq']} sealed",
                seq=record["sealed_by_seq"],
            )
        if record["id"] != batch.next_id:
            raise _Fault(
                ExitCode.access_log,
                f"access-log row {batch.next_id} of the batch event {batch.seq} sealed is "
                f"missing (row {record['id']} came instead)",
                seq=batch.seq,
            )
        batch.digest.update((b"," if batch.seen else b"") + access_row_bytes(record))
        batch.seen += 1
        batch.next_id += 1
        if batch.seen == batch.count:
            batch.digest.update(b"]")
            if batch.digest.hexdigest() != batch.sha256:
                raise _Fault(
                    ExitCode.access_log,
                    f"the access-log rows of the batch event {batch.seq} sealed differ from "
                    "its digest: a row was altered",
                    seq=batch.seq,
                )
            self.access_due = None

    def access_complete(self) -> None:
        batch = self.access_due
        if batch is not None:
            raise _Fault(
                ExitCode.access_log,
                f"the access-log batch event {batch.seq} sealed has {batch.seen} of its "
                f"{batch.count} rows: rows were removed",
                seq=batch.seq,
            )

    # -------------------------------------------------------------- versions

    def version_record(self, record: dict) -> None:
        if self.content is not None:
            self.close_content()
        document, number, sha256 = record["document"], record["number"], record["sha256"]
        self.version_records += 1
        self.version_list.update(b"%d %d %s\n" % (document, number, sha256.encode("ascii")))
        self.version = (document, number, sha256)
        doc = self.docs.get(document)
        claim = doc.older.pop(number, None) if doc is not None and doc.older else None
        if claim is not None and claim[0] != sha256:
            raise _Fault(
                ExitCode.state_machine,
                f"review #{claim[1]} pinned version {number} of document {document} as "
                f"{claim[0]}, but the trail recorded {sha256}",
                document=document,
                version=number,
            )
        stored = record["stored_sha256"]
        if stored is None:
            raise _Fault(
                ExitCode.content,
                f"the content store no longer holds version {number} of document {document}",
                document=document,
                version=number,
            )
        if stored != sha256:
            raise _Fault(
                ExitCode.content,
                f"the content store holds other bytes for version {number} of document "
                f"{document} (SHA-256 {stored}) than the trail recorded ({sha256})",
                document=document,
                version=number,
            )

    def versions_read(self) -> None:
        self.close_content()
        if self.version_trail.digest() != self.version_list.digest():
            raise _Fault(
                ExitCode.content,
                "the version records are not the versions the events recorded (a version's "
                "SHA-256 was changed, or a version left out)",
            )
        for doc_id, doc in self.docs.items():
            for number, (sha256, review) in (doc.older or {}).items():
                raise _Fault(
                    ExitCode.state_machine,
                    f"review #{review} pinned version {number} of document {doc_id} as "
                    f"{sha256}, which no version record confirms",
                    document=doc_id,
                    version=number,
                )

    def content_record(self, record: dict) -> None:
        document, number, offset = record["document"], record["number"], record["offset"]
        where = {"document": document, "version": number}
        if self.version is None or self.version[:2] != (document, number):
            raise _Fault(
                ExitCode.malformed,
                f"content of version {number} of document {document} not after its version record",
                **where,
            )
        if self.content is None:
            self.content = (document, number, hashlib.sha256(), 0)
        digest, size = self.content[2], self.content[3]
        if offset != size:
            raise _Fault(
                ExitCode.malformed,
                f"a content chunk of version {number} of document {document} at offset "
                f"{offset}, where {size} was expected",
                **where,
            )
        data = base64.b64decode(record["data"], validate=True)
        digest.update(data)
        self.content = (document, number, digest, size + len(data))

    def close_content(self) -> None:
        if self.content is None or self.version is None:
            return
        document, number, digest, _ = self.content
        self.content = None
        if digest.hexdigest() != self.version[2]:
            raise _Fault(
                ExitCode.content,
                f"the bytes of version {number} of document {document} hash to "
                f"{digest.hexdigest()}, not to the {self.version[2]} the trail recorded",
                document=document,
                version=number,
            )

    # -------------------------------------------------------------- decisions

    def decision_record(self, record: dict) -> None:
        self.close_content()
        self.decision_records += 1
        payload_text = record["payload"]
        payload = payload_text.encode("utf-8")
        event = self.decided.pop(record["id"], None)
        signatures = (record["kid"], record["signature"], record.get("client_signature"))
        if event is None:
            if self.full:
                raise _Fault(
                    ExitCode.decision,
                    f"decision {record['id']} has no review.decided event in the trail",
                )
            self.check_signatures(payload, signatures, None, seq=None)
            return
        where = {"seq": event.seq, "document": event.document, "version": event.version}

        def fault(reason: str) -> _Fault:
            return _Fault(
                ExitCode.decision, f"the decision of event {event.seq}: {reason}", **where
            )

        if hashlib.sha256(payload).hexdigest() != event.payload_sha256:
            raise fault("its payload is not the one the event recorded (SHA-256 differs)")
        if signatures != event.signatures:
            raise fault("its signatures are not the ones the event recorded")
        try:
            signed = orjson.loads(payload)
            claims = (
                signed["type"],
                signed["review"],
                signed["document"],
                signed["version"],
                signed["sha256"],
                signed["party"],
                signed["verdict"],
                signed["signer"]["id"],
            )
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise fault("its payload is not a decision payload") from None
        if claims[3:5] != (event.version, event.sha256) or claims[2] != event.document:
            raise fault(
                f"it was signed for version {claims[3]} ({claims[4]}) of document {claims[2]}, "
                f"but the trail records it for version {event.version} ({event.sha256}) of "
                f"document {event.document}: the decision was moved"
            )
        expected = (
            "officium.decision",
            event.review,
            event.document,
            event.version,
            event.sha256,
            event.party,
            event.verdict,
            event.actor,
        )
        if claims != expected:
            raise fault("its payload names another review, party, verdict or signer")
        self.check_signatures(payload, signatures, signed, seq=event.seq, where=where)

    def check_signatures(
        self,
        payload: bytes,
        signatures: tuple[str, str, str | None],
        signed: dict | None,
        *,
        seq: int | None,
        where: dict | None = None,
    ) -> None:
        kid, signature, client_signature = signatures
        where = where or {}
        jwk = self.server_jwk(kid)
        if jwk is None:
            raise _Fault(
                ExitCode.decision,
                f"a decision (event {seq}) is signed by the key {kid}, which neither the key "
                "file nor the trail names",
                **where,
            )
        if not self.signatures.verify(signature, payload, jwk):
            raise _Fault(
                ExitCode.decision,
                f"the server's signature of the decision of event {seq} does not verify",
                **where,
            )
        if client_signature is None:
            return
        signer_kid = _jws_kid(client_signature)
        person = self.person_keys.get(signer_kid or "")
        if person is None:
            if self.full:
                raise _Fault(
                    ExitCode.decision,
                    f"the decision of event {seq} is signed by {signer_kid}, a key no "
                    "key.registered event registered",
                    **where,
                )
            return  # a filtered bundle need not hold the key's registration
        username = ((signed or {}).get("signer") or {}).get("username")
        if person[1] != username:
            raise _Fault(
                ExitCode.decision,
                f"the decision of event {seq} is signed with {person[1]}'s key, but its "
                f"signer is {username}",
                **where,
            )
        if not self.signatures.verify(client_signature, payload, person[0]):
            raise _Fault(
                ExitCode.decision,
                f"{username}'s own signature of the decision of event {seq} does not verify",
                **where,
            )

    def server_jwk(self, kid: str) -> dict[str, Any] | None:
        jwk = self.server_jwks.get(kid)
        if jwk is not None:
            return jwk
        key = self.bundle_keys.get(kid)
        if key is not None and key.note_key in self.trusted:
            return key.jwk
        return None

    # -------------------------------------------------------------- the end

    def end_record(self, record: dict) -> None:
        events, records = record["events"], record["records"]
        # ``records`` counts the records before the end one, events not included.
        before = self.records - 1
        if events != self.events or records != before:
            raise _Fault(
                ExitCode.cut_off,
                f"the end record counts {events} events and {records} records; the bundle "
                f"holds {self.events} and {before}",
            )
        if self.full and self.decided:
            event = next(iter(self.decided.values()))
            raise _Fault(
                ExitCode.decision,
                f"the decision of event {event.seq} has no decision record",
                seq=event.seq,
            )
        self.ended = True

    _RECORDS: ClassVar[dict[str, Callable[[_Run, dict], None]]] = {
        "manifest": manifest_record,
        "key": key_record,
        "checkpoint": checkpoint_record,
        "consistency": consistency_record,
        "inclusion": inclusion_record,
        "access": access_record,
        "version": version_record,
        "content": content_record,
        "decision": decision_record,
        "end": end_record,
    }

    # -------------------------------------------------------------- the report

    def report(self, fault: _Fault | None) -> Report:
        where = fault.where if fault else {}
        pinned = self.checkpoints[-1] if self.checkpoints else None
        return Report(
            code=fault.code if fault else ExitCode.ok,
            reason=fault.reason if fault else None,
            seq=where.get("seq"),
            checkpoint_size=where.get("checkpoint_size"),
            document=where.get("document"),
            version=where.get("version"),
            origin=self.manifest.get("origin"),
            scope=self.manifest.get("scope"),
            events=self.events,
            checkpoints=len(self.checkpoints),
            decisions=self.decision_records,
            versions=self.version_records,
            tree_size=pinned.size if pinned else None,
            root=pinned.root if pinned else None,
            pinned_note=self.pinned_note,
        )


def _jws_kid(token: str) -> str | None:
    """The ``kid`` of a compact JWS's protected header."""
    try:
        header = token.split(".", 1)[0]
        value = orjson.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
        kid = value.get("kid")
    except (ValueError, binascii.Error, AttributeError, orjson.JSONDecodeError):
        return None
    return kid if isinstance(kid, str) else None


def _gap_report(gap: _Gap, rest: Iterator[bytes]) -> _Fault:
    """Deleted or reordered: whether the missing seq turns up later in the file."""
    for line in rest:
        if not line.startswith(EVENT_HEAD):
            continue
        try:
            seq = orjson.loads(split_event_line(line)[1])["seq"]
        except (BundleFormatError, orjson.JSONDecodeError, TypeError, KeyError, ValueError):
            continue
        if seq == gap.expected:
            return _Fault(
                ExitCode.out_of_order,
                f"event {gap.expected} comes after later events (event {gap.found} came in "
                "its place): the events were reordered",
                seq=gap.expected,
            )
    return _Fault(
        ExitCode.event_missing,
        f"event {gap.expected} is missing (event {gap.found} follows event "
        f"{gap.expected - 1}): it was deleted",
        seq=gap.expected,
    )


def verify_bundle(lines: Iterable[bytes], keys: KeyFile, last_seen: str | None = None) -> Report:
    """Check an audit bundle, line by line, against the auditor's keys; stop at the first fault.

    ``lines`` are the bundle's lines with their newlines (a file opened in binary mode);
    ``last_seen`` is a checkpoint note the auditor saved earlier, if any.
    """
    return _verify(lines, keys, last_seen, canonical=True)[0]


# Faults an event line raises before its hash and canonical form are checked (see
# _Run.event): on a line whose scan also fails, these are still the first fault.
_BEFORE_SCANNED = frozenset(
    {
        ExitCode.malformed,
        ExitCode.cut_off,
        ExitCode.event_missing,
        ExitCode.out_of_order,
        ExitCode.event_hash,
        ExitCode.not_canonical,
    }
)


def _verify(
    lines: Iterable[bytes], keys: KeyFile, last_seen: str | None, *, canonical: bool
) -> tuple[Report, int | None]:
    """The report, and the number of the line its fault was found on (None when sound)."""
    try:
        run = _Run(keys, last_seen, canonical=canonical)
    except _Fault as fault:
        return _Run(keys, None).report(fault), 0
    stream = iter(lines)
    event, record = run.event, run.line
    number = 0
    try:
        for number, line in enumerate(stream, 1):  # noqa: B007 (the fault's line)
            if line[:HASH_START] == EVENT_HEAD:
                event(line)
            else:
                record(line)
        if not run.ended:
            raise _Fault(
                ExitCode.cut_off,
                "the bundle ends without its end record: it was cut off",
            )
    except _Gap as gap:
        return run.report(_gap_report(gap, stream)), number
    except _Fault as fault:
        return run.report(fault), number
    return run.report(None), None


# ------------------------------------------------------------------ two processes

# Below this size a second process costs more to start than it saves.
_PARALLEL_MIN_BYTES = 8 << 20
_PROGRESS_EVERY = 16384


def _faulty_events(path: str) -> Iterator[tuple[int, int | None, ExitCode] | int]:
    """Scan a bundle's event lines for their stored hash and canonical form, in order.

    Yields ``(line number, seq, code)`` for the first event whose bytes do not hash to
    the hash beside them or are not canonical (and stops), and a bare line number every
    so often to say how far the scan has got.
    """
    with open(path, "rb", buffering=1 << 20) as handle:
        for number, line in enumerate(handle, 1):
            if number % _PROGRESS_EVERY == 0:
                yield number
            if line[:HASH_START] != EVENT_HEAD or line[-2:] != EVENT_TAIL:
                continue
            data = line[BODY_START:-2]
            try:
                body = orjson.loads(data)
                seq = body["seq"]
            except (orjson.JSONDecodeError, TypeError, KeyError):
                continue  # the main pass reports what is wrong with it
            if hashlib.sha256(data).hexdigest().encode() != line[HASH_START:HASH_END]:
                yield number, seq if type(seq) is int else None, ExitCode.event_hash
                return
            if not is_canonical_event(data, body):
                yield number, seq if type(seq) is int else None, ExitCode.not_canonical
                return


def _first_faulty_event(path: str) -> tuple[int, int | None, ExitCode] | None:
    for found in _faulty_events(path):
        if type(found) is tuple:
            return found
    return None


def _scan_main(path: str) -> None:
    """``python -m core.verify --scan BUNDLE``: the second process of :func:`verify_file`.

    Prints ``at N`` as it goes, ``found N SEQ CODE`` for a faulty event, ``done`` at the
    end.
    """
    out = sys.stdout
    for found in _faulty_events(path):
        if type(found) is tuple:
            number, seq, code = found
            out.write(f"found {number} {seq if seq is not None else '-'} {int(code)}\n")
            out.flush()
            return
        out.write(f"at {found}\n")
        out.flush()
    out.write("done\n")
    out.flush()


def _scan_result(scanner: subprocess.Popen, path: str, at: int | None):
    """What the scanning process found before line ``at`` (or anywhere, if None)."""
    for raw in scanner.stdout:
        word, _, rest = raw.decode("ascii", "replace").strip().partition(" ")
        if word == "done":
            return None
        if word == "at" and at is not None and int(rest) > at:
            return None
        if word == "found":
            number, seq, code = rest.split()
            return int(number), None if seq == "-" else int(seq), ExitCode(int(code))
    return _first_faulty_event(path)  # the process died: scan here instead


def verify_file(
    path: str | os.PathLike[str],
    keys: KeyFile,
    last_seen: str | None = None,
    *,
    lines: Iterable[bytes] | None = None,
    processes: int | None = None,
) -> Report:
    """:func:`verify_bundle` over a file, on two cores when there are two.

    Checking each event's bytes against the hash beside them and for canonical form is a
    third of the work and needs no state, so a second process (this module run with
    ``--scan``) does it over the same file while this one does the rest (links, Merkle
    roots, signatures, the state machine) in order. The first fault by position in the
    file is reported, exactly as one pass would report it. ``lines`` may wrap the
    file's lines (for a progress display); it must yield them all, in order.
    """
    path = os.fspath(path)
    processes = processes if processes is not None else min(2, os.cpu_count() or 1)
    if processes < 2 or os.path.getsize(path) < _PARALLEL_MIN_BYTES:
        if lines is not None:
            return verify_bundle(lines, keys, last_seen)
        with open(path, "rb", buffering=1 << 20) as handle:
            return verify_bundle(handle, keys, last_seen)
    # A fresh interpreter, not multiprocessing: fork would copy the caller's threads (a
    # progress display) and spawn would import the caller's whole program again.
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [package_root, *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }
    scanner = subprocess.Popen(
        [sys.executable, "-m", "core.verify", "--scan", path],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        if lines is not None:
            report, at = _verify(lines, keys, last_seen, canonical=False)
        else:
            with open(path, "rb", buffering=1 << 20) as handle:
                report, at = _verify(handle, keys, last_seen, canonical=False)
        found = _scan_result(scanner, path, at)
    finally:
        scanner.kill()
        scanner.wait()
        scanner.stdout.close()
    if found is None:
        return report
    number, seq, code = found
    if at is not None and (at < number or (at == number and report.code in _BEFORE_SCANNED)):
        return report
    reason = (
        f"event {seq} does not hash to its recorded hash: it was edited"
        if code is ExitCode.event_hash
        else f"event {seq} is not in canonical (RFC 8785) form"
    )
    return dataclasses.replace(
        report,
        code=code,
        reason=reason,
        seq=seq,
        checkpoint_size=None,
        document=None,
        version=None,
    )


if __name__ == "__main__" and sys.argv[1:2] == ["--scan"] and len(sys.argv) == 3:
    _scan_main(sys.argv[2])
