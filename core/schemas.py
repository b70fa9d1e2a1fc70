"""Wire schemas: the JSON that crosses HTTP between server, agent and clients.

These pydantic models are the contract. The server's tables are separate (they stay
inside the server); the agent and the clients import only this module.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from core.errors import Invalid
from core.paths import check_text, normalise_path

__all__ = [
    "MAX_REPORTS_PER_BATCH",
    "AccessLogPage",
    "AccessRecord",
    "AuditEvent",
    "AuditEventPage",
    "Awaiting",
    "ChainCheck",
    "ContentStored",
    "DocumentPage",
    "DocumentState",
    "DocumentStatus",
    "Folder",
    "FolderCreate",
    "FolderList",
    "History",
    "Me",
    "Membership",
    "MembershipCreate",
    "MembershipList",
    "Office",
    "OfficeCreate",
    "OfficeList",
    "OwnerChange",
    "Person",
    "PersonCreate",
    "PersonList",
    "Removal",
    "ReportBatch",
    "ReportBatchResult",
    "ReportKind",
    "ReportOutcome",
    "ReportResult",
    "Role",
    "TokenCreate",
    "TokenCreated",
    "TokenInfo",
    "TokenList",
    "VerifyMatch",
    "VerifyResult",
    "Version",
    "VersionList",
    "VersionRef",
    "VersionReport",
]

MAX_REPORTS_PER_BATCH = 1000
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class Role(StrEnum):
    """What a person may do for an office."""

    member = "member"
    approver = "approver"
    auditor = "auditor"
    admin = "admin"


class DocumentState(StrEnum):
    """Where a document stands in its approval life."""

    draft = "draft"
    in_review = "in_review"
    approved = "approved"
    rejected = "rejected"


class ReportKind(StrEnum):
    """What an agent saw happen to a path."""

    created = "created"
    modified = "modified"
    renamed = "renamed"
    deleted = "deleted"


class ReportOutcome(StrEnum):
    """What the register did with a version report."""

    recorded = "recorded"  # a new version
    unchanged = "unchanged"  # same bytes as the latest version: nothing new
    moved = "moved"  # path changed, bytes unchanged
    deleted = "deleted"
    ignored = "ignored"  # nothing recorded at that path: nothing to do


# Validators raise ValueError so that pydantic turns them into 422s with a message.
def _value_error(check, value: str, **kwargs: Any) -> str:
    try:
        return check(value, **kwargs)
    except Invalid as exc:
        raise ValueError(exc.detail) from None


def _sha256(value: str) -> str:
    if not _SHA256.match(value):
        raise ValueError("must be 64 hexadecimal digits (a SHA-256)")
    return value.lower()


def _commit(value: str) -> str:
    if not _COMMIT.match(value):
        raise ValueError("must be a full git commit id (40 or 64 lower-case hex digits)")
    return value


def _username(value: str) -> str:
    if not _USERNAME.match(value):
        raise ValueError(
            "must be 1-64 characters: lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def _text(value: str) -> str:
    return _value_error(check_text, value, what="text")


def _name(value: str) -> str:
    value = _text(value).strip()
    if not value:
        raise ValueError("must not be blank")
    if any(ord(ch) < 32 for ch in value):
        raise ValueError("must not contain control characters")
    return value


def _path(value: str) -> str:
    return _value_error(normalise_path, value)


Sha256 = Annotated[str, AfterValidator(_sha256)]
CommitId = Annotated[str, AfterValidator(_commit)]
Username = Annotated[str, AfterValidator(_username)]
Name = Annotated[str, Field(max_length=200), AfterValidator(_name)]
Text = Annotated[str, Field(max_length=2000), AfterValidator(_text)]
RelPath = Annotated[str, Field(max_length=4096), AfterValidator(_path)]
PathPrefix = Annotated[str, Field(max_length=4096), AfterValidator(_text)]
Id = Annotated[int, Field(ge=1, le=2**31 - 1)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ----------------------------------------------------------------- directory


class OfficeCreate(_Wire):
    """A new office, optionally under a parent office."""

    name: Name
    parent: Name | None = None


class Office(_Wire):
    id: int
    name: str
    parent: str | None


class PersonCreate(_Wire):
    """A new person; ``name`` is how they are printed (defaults to the username)."""

    username: Username
    name: Name | None = None


class Person(_Wire):
    id: int
    username: str
    name: str


class MembershipCreate(_Wire):
    """A person acting for an office with a role."""

    username: Username
    office: Name
    role: Role


class Membership(_Wire):
    id: int
    username: str
    office: str
    role: Role


class TokenCreate(_Wire):
    """A token for a person (``username``) or for the agent of a folder (``folder``)."""

    username: Username | None = None
    folder: Name | None = None
    label: Name | None = None

    @model_validator(mode="after")
    def _one_owner(self) -> TokenCreate:
        if (self.username is None) == (self.folder is None):
            raise ValueError("give exactly one of 'username' (a person) or 'folder' (an agent)")
        return self


class TokenCreated(_Wire):
    """A new token; the secret is shown here once and never again."""

    id: int
    token: str
    username: str | None
    folder: str | None


class TokenInfo(_Wire):
    id: int
    username: str | None
    folder: str | None
    label: str | None
    created_at: datetime
    revoked_at: datetime | None


class OfficeList(_Wire):
    offices: list[Office]


class PersonList(_Wire):
    persons: list[Person]


class MembershipList(_Wire):
    memberships: list[Membership]


class TokenList(_Wire):
    tokens: list[TokenInfo]


class Me(_Wire):
    """Who the presented token speaks for."""

    kind: str  # "person" or "agent"
    username: str | None
    name: str
    folder: str | None
    memberships: list[Membership]


# ------------------------------------------------------------------- folders


class FolderCreate(_Wire):
    """A watched shared folder, named once, with the root path its agent sees."""

    name: Name
    root: Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_text)]
    default_owner: Name | None = None


class Folder(_Wire):
    id: int
    name: str
    root: str
    default_owner: str | None


class FolderList(_Wire):
    folders: list[Folder]


# ----------------------------------------------------------------- documents


class VersionRef(_Wire):
    number: int
    sha256: str


class Awaiting(_Wire):
    """One party whose move it is: who, to do what, since when, by when."""

    party: str
    action: str
    since: datetime
    due: datetime | None


class CopyOf(_Wire):
    """The recorded version a document's first bytes were copied from."""

    document_id: int
    folder: str
    path: str
    number: int
    is_final: bool
    is_latest: bool


class Removal(_Wire):
    """Who removed a deleted document's file, and when, as the trail recorded it."""

    at: datetime  # when the deletion was recorded
    by: str  # the actor's name: "agent of plans", or a person's name
    actor: str  # the actor's id: "agent:<token id>", "person:<id>"
    author_hint: str | None  # the agent's best guess at who removed it (lock file, owner)
    reason: str | None = None  # e.g. "'draft.docx' was renamed over it"
    observed_at: datetime | None = None  # when the agent saw the file gone
    seq: int  # the document.deleted event


class DocumentStatus(_Wire):
    """A document as the register knows it now."""

    id: int
    folder: str
    path: str
    owner_office: str | None
    state: DocumentState
    deleted: bool
    latest: VersionRef
    final: VersionRef | None
    awaiting: list[Awaiting]
    created_at: datetime
    updated_at: datetime
    note: str | None = None  # e.g. "final v3; working copy v4 differs"
    review_id: int | None = None  # the open review, if any
    pinned: VersionRef | None = None  # the version the open review is about
    copy_of: CopyOf | None = None
    removed: Removal | None = None  # set when the document is deleted


class DocumentPage(_Wire):
    """One page of documents; pass ``next`` back as ``after`` for the following page."""

    documents: list[DocumentStatus]
    next: int | None


class Version(_Wire):
    number: int
    sha256: str
    size: int
    author: str  # a username, or "unknown"
    author_hint: str | None
    commit: str
    observed_at: datetime
    recorded_at: datetime


class VersionList(_Wire):
    document_id: int
    versions: list[Version]


class OwnerChange(_Wire):
    """Hand a document to another office."""

    office: Name
    reason: Text | None = None


class VerifyMatch(_Wire):
    """One recorded (document, version) whose bytes are the ones asked about."""

    document_id: int
    folder: str
    path: str
    deleted: bool
    number: int
    is_latest: bool
    is_final: bool
    superseded_by: int | None
    note: str | None = None  # e.g. "exact copy of plans:plan.docx v3 (final)"


class VerifyResult(_Wire):
    sha256: str
    matches: list[VerifyMatch]


# ------------------------------------------------------------------- reports


class VersionReport(_Wire):
    """What an agent saw at one path of its folder, committed in one git commit."""

    path: RelPath
    kind: ReportKind
    from_path: RelPath | None = None
    sha256: Sha256 | None = None
    size: Annotated[int, Field(ge=0, le=2**62)] | None = None
    commit: CommitId
    author: Username | None = None
    author_hint: Text | None = None
    observed_at: datetime

    @model_validator(mode="after")
    def _shape(self) -> VersionReport:
        has_content = self.kind is not ReportKind.deleted
        if has_content and (self.sha256 is None or self.size is None):
            raise ValueError(f"a '{self.kind}' report needs 'sha256' and 'size'")
        if self.kind is ReportKind.renamed and self.from_path is None:
            raise ValueError("a 'renamed' report needs 'from_path'")
        if self.kind is not ReportKind.renamed and self.from_path is not None:
            raise ValueError("'from_path' only goes with a 'renamed' report")
        if self.from_path is not None and self.from_path == self.path:
            raise ValueError("'from_path' and 'path' are the same")
        if self.observed_at.tzinfo is None:
            raise ValueError("'observed_at' needs a time zone (use UTC)")
        return self


class ReportBatch(_Wire):
    """Reports from one or more commits, applied in order, all or none."""

    reports: Annotated[list[VersionReport], Field(min_length=1, max_length=MAX_REPORTS_PER_BATCH)]


class ReportResult(_Wire):
    path: str
    kind: ReportKind
    outcome: ReportOutcome
    document_id: int | None
    version: VersionRef | None
    replayed: bool
    message: str


class ReportBatchResult(_Wire):
    results: list[ReportResult]


class ContentStored(_Wire):
    sha256: str
    size: int
    created: bool


# --------------------------------------------------------------------- audit


class AuditEvent(_Wire):
    """One event of the trail, with the exact canonical text its hash covers."""

    seq: int
    hash: str
    canonical: str
    time: str
    action: str
    actor: dict[str, Any]
    subject: dict[str, Any]
    details: dict[str, Any]
    prev: str


class AuditEventPage(_Wire):
    events: list[AuditEvent]
    next: int | None


class ChainCheck(_Wire):
    """The result of recomputing the whole chain."""

    ok: bool
    checked: int
    head_seq: int
    head_hash: str
    first_broken_seq: int | None
    reason: str | None


class AuditKey(_Wire):
    """A key the server signs checkpoints with, and the time it was (or is) in use."""

    kid: str  # RFC 7638 thumbprint of the JWK
    vkey: str  # the C2SP note verifier key: name+keyid+base64(0x01 || key)
    jwk: dict[str, Any]
    valid_from: datetime
    valid_until: datetime | None  # None: the current key


class AuditKeyList(_Wire):
    """The audit log's name (its checkpoints' origin) and every key it was signed with."""

    origin: str
    keys: list[AuditKey]


class SignedCheckpoint(_Wire):
    """A signed note committing to the Merkle root of the first ``tree_size`` events."""

    tree_size: int
    root: str  # hex
    note: str  # the C2SP signed note, exactly as signed
    kid: str
    created_at: datetime


class CheckpointPage(_Wire):
    checkpoints: list[SignedCheckpoint]
    next: int | None  # pass as after_size for the next page


class InclusionProof(_Wire):
    """RFC 9162 audit path of one event (leaf ``seq - 1``) in the tree of ``tree_size``."""

    seq: int
    leaf_index: int
    tree_size: int
    leaf_hash: str  # hex
    proof: list[str]  # hex, from the leaf upwards


class ConsistencyProof(_Wire):
    """RFC 9162 proof that the tree of ``old_size`` events is a prefix of ``new_size``'s."""

    old_size: int
    new_size: int
    proof: list[str]  # hex


class KeyRotation(_Wire):
    """The retired key, the new one, and the checkpoint both signed."""

    retired: AuditKey
    current: AuditKey
    checkpoint: SignedCheckpoint


class History(_Wire):
    """Every version and every event of one document."""

    document: DocumentStatus
    versions: list[Version]
    events: list[AuditEvent]


# ------------------------------------------------------------------- reviews


class ReviewCreate(_Wire):
    """Ask for approval of one version (default: the latest) under a policy."""

    parties: Annotated[
        list[Annotated[str, Field(max_length=300), AfterValidator(_text)]],
        Field(min_length=1, max_length=50),
    ]
    mode: Annotated[str, Field(max_length=32)] = "all"
    due: datetime | None = None
    comment: Text | None = None
    version: Id | None = None
    separation_of_duties: bool = True

    @model_validator(mode="after")
    def _aware(self) -> ReviewCreate:
        if self.due is not None and self.due.tzinfo is None:
            raise ValueError("'due' needs a time zone (use UTC)")
        return self


class DecisionCreate(_Wire):
    """Approve or reject the open review (a rejection needs a comment)."""

    verdict: Annotated[str, Field(pattern="^(approve|reject)$")]
    comment: Text | None = None
    # Client-side signing: the payload from GET .../review/decision-payload, and the
    # signer's detached JWS over it (made with a key registered at POST /me/keys).
    payload: Annotated[str, Field(max_length=20_000)] | None = None
    signature: Annotated[str, Field(max_length=1000)] | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> DecisionCreate:
        if (self.payload is None) != (self.signature is None):
            raise ValueError("a client-side signature needs both 'payload' and 'signature'")
        return self


class DecisionDraft(_Wire):
    """The exact payload a decision will carry, for the decider to sign on their side."""

    payload: str
    party: str


class DecisionView(_Wire):
    id: int
    party: str
    username: str
    name: str
    office: str | None
    verdict: str
    comment: str | None
    decided_at: datetime
    payload: str  # the canonical JSON both signatures cover
    signature: str  # the server's detached JWS
    client_signature: str | None


class ReviewView(_Wire):
    """A review: what is pinned, under which policy, who decided, whose move it is."""

    id: int
    document_id: int
    version: VersionRef
    pinned_is_latest: bool
    state: str
    mode: str
    parties: list[str]
    due: datetime | None
    separation_of_duties: bool
    comment: str | None
    submitted_by: str
    submitted_at: datetime
    concluded_at: datetime | None
    decisions: list[DecisionView]
    awaiting: list[Awaiting]


class ReviewList(_Wire):
    reviews: list[ReviewView]


class FinalVersion(_Wire):
    """Which version is final: the pinned version of the latest approved review."""

    document_id: int
    number: int
    sha256: str
    approved_at: datetime
    review_id: int
    approvers: list[DecisionView]


class InboxItem(_Wire):
    document_id: int
    folder: str
    path: str
    action: str
    since: datetime
    due: datetime | None
    review_id: int | None = None


class Inbox(_Wire):
    items: list[InboxItem]


class Acknowledgement(_Wire):
    document_id: int
    username: str
    number: int
    sha256: str
    acknowledged_at: datetime


class AcknowledgementList(_Wire):
    """Who in the owner office and among subscribers has seen the current final version."""

    document_id: int
    final: VersionRef | None
    acknowledged: list[Acknowledgement]
    pending: list[str]


class PublicKey(_Wire):
    kid: str
    username: str | None  # None: the server's own key
    jwk: dict[str, Any]
    created_at: datetime
    retired_at: datetime | None


class PublicKeyList(_Wire):
    keys: list[PublicKey]


class PublicKeyCreate(_Wire):
    """Register a person's own Ed25519 public key (a JWK) for client-side signing."""

    jwk: dict[str, str]


class Approval(_Wire):
    """An approved version and the git commit that holds it (for the agent to tag)."""

    review_id: int
    document_id: int
    path: str
    number: int
    sha256: str
    commit: str
    approved_at: datetime


class ApprovalList(_Wire):
    approvals: list[Approval]
    next: int | None


# ------------------------------------------------------------------- access log


class AccessRecord(_Wire):
    """One recorded read of evidence; ``sealed_by_seq`` is the event sealing its batch."""

    id: int
    at: datetime
    actor: str  # "person:<id>", "agent:<token id>"
    actor_name: str
    action: str  # content.download, verify.lookup, audit.export, certificate.download
    document_id: int | None
    version_number: int | None
    detail: str | None
    sealed_by_seq: int


class AccessLogPage(_Wire):
    """One page of the access log; pass ``next`` back as ``after`` for the following page."""

    entries: list[AccessRecord]
    next: int | None
