"""The register's tables. They stay inside the server: the wire speaks core.schemas."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

__all__ = [
    "AccessEntry",
    "Acknowledgement",
    "ApiToken",
    "AuditEvent",
    "AuditHead",
    "Checkpoint",
    "Decision",
    "Document",
    "Folder",
    "Membership",
    "MerkleNode",
    "Office",
    "Person",
    "Report",
    "Review",
    "SigningKey",
    "Subscription",
    "UTCDateTime",
    "Version",
    "Webhook",
    "WebhookDelivery",
    "utcnow",
]


def utcnow() -> datetime:
    """Now, in UTC, timezone-aware."""
    return datetime.now(UTC)


class UTCDateTime(sa.types.TypeDecorator):
    """Aware UTC datetimes on both engines (SQLite would otherwise drop the zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _time(**kwargs) -> datetime:
    return Field(default_factory=utcnow, sa_type=UTCDateTime, **kwargs)


class Office(SQLModel, table=True):
    """A unit of the organisation; documents belong to offices, not persons."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, unique=True)
    parent_id: int | None = Field(default=None, foreign_key="office.id")
    created_at: datetime = _time()


class Person(SQLModel, table=True):
    """Someone who acts for offices through memberships."""

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=64, unique=True)
    name: str = Field(max_length=200)
    created_at: datetime = _time()


class Membership(SQLModel, table=True):
    """A person acting for an office with a role."""

    __table_args__ = (sa.UniqueConstraint("person_id", "office_id", "role"),)

    id: int | None = Field(default=None, primary_key=True)
    person_id: int = Field(foreign_key="person.id", index=True)
    office_id: int = Field(foreign_key="office.id", index=True)
    role: str = Field(max_length=16)
    created_at: datetime = _time()


class Folder(SQLModel, table=True):
    """A watched shared folder and the root path its agent sees."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, unique=True)
    root: str = Field(max_length=4096)
    default_owner_id: int | None = Field(default=None, foreign_key="office.id")
    created_at: datetime = _time()


class ApiToken(SQLModel, table=True):
    """A bearer token, stored as its SHA-256; it speaks for a person or a folder's agent."""

    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)
    person_id: int | None = Field(default=None, foreign_key="person.id", index=True)
    folder_id: int | None = Field(default=None, foreign_key="folder.id", index=True)
    label: str | None = Field(default=None, max_length=200)
    created_at: datetime = _time()
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Document(SQLModel, table=True):
    """One file of a folder, with a stable identity across edits, renames and deletion."""

    __table_args__ = (
        # At most one live document per path; deleted ones keep their last path.
        sa.Index(
            "uq_document_live_path",
            "folder_id",
            "path",
            unique=True,
            sqlite_where=sa.text("deleted = 0"),
            postgresql_where=sa.text("deleted = false"),
        ),
        sa.Index("ix_document_folder_path", "folder_id", "path"),
    )

    id: int | None = Field(default=None, primary_key=True)
    folder_id: int = Field(foreign_key="folder.id")
    path: str = Field(max_length=4096)
    owner_office_id: int | None = Field(default=None, foreign_key="office.id", index=True)
    state: str = Field(default="draft", max_length=16)
    deleted: bool = Field(default=False)
    latest_number: int
    latest_sha256: str = Field(max_length=64)
    final_number: int | None = None
    final_sha256: str | None = Field(default=None, max_length=64)
    # A new document whose first bytes were already recorded elsewhere (a copy).
    copy_of_document_id: int | None = Field(default=None, foreign_key="document.id")
    copy_of_number: int | None = None
    created_at: datetime = _time()
    updated_at: datetime = _time()


class Version(SQLModel, table=True):
    """The exact bytes of a document at one save, numbered 1..n without gaps."""

    __table_args__ = (sa.UniqueConstraint("document_id", "number"),)

    id: int | None = Field(default=None, primary_key=True)
    document_id: int = Field(foreign_key="document.id")
    number: int
    sha256: str = Field(max_length=64, index=True)
    size: int = Field(sa_type=sa.BigInteger)
    commit: str = Field(max_length=64)
    author_person_id: int | None = Field(default=None, foreign_key="person.id")
    author_hint: str | None = Field(default=None, max_length=2000)
    observed_at: datetime = Field(sa_type=UTCDateTime)
    recorded_at: datetime = _time()


class Report(SQLModel, table=True):
    """Every version report received, keyed for idempotent replay by (folder, commit, path)."""

    __table_args__ = (sa.UniqueConstraint("folder_id", "commit", "path"),)

    id: int | None = Field(default=None, primary_key=True)
    folder_id: int = Field(foreign_key="folder.id")
    commit: str = Field(max_length=64)
    path: str = Field(max_length=4096)
    kind: str = Field(max_length=16)
    from_path: str | None = Field(default=None, max_length=4096)
    sha256: str | None = Field(default=None, max_length=64)
    size: int | None = Field(default=None, sa_type=sa.BigInteger)
    author_hint: str | None = Field(default=None, max_length=2000)
    observed_at: datetime = Field(sa_type=UTCDateTime)
    received_at: datetime = _time()
    outcome: str = Field(max_length=16)
    message: str = Field(sa_type=sa.Text)
    document_id: int | None = Field(default=None, foreign_key="document.id")
    version_number: int | None = None


class AuditEvent(SQLModel, table=True):
    """One link of the audit chain: its exact canonical bytes and their SHA-256.

    The indexed columns repeat what the canonical bytes say, for queries; the bytes are
    the record.
    """

    __tablename__ = "audit_event"

    seq: int = Field(
        primary_key=True, sa_type=sa.BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    time: datetime = Field(sa_type=UTCDateTime)
    action: str = Field(max_length=64)
    actor: str = Field(max_length=64)
    document_id: int | None = Field(default=None, index=True)
    folder_id: int | None = Field(default=None, index=True)
    canonical: bytes = Field(sa_type=sa.LargeBinary)
    hash: str = Field(max_length=64)


class AuditHead(SQLModel, table=True):
    """The chain's head: one row, locked by every writer so appends are serial."""

    __tablename__ = "audit_head"

    id: int = Field(default=1, primary_key=True, sa_column_kwargs={"autoincrement": False})
    seq: int = Field(sa_type=sa.BigInteger)
    hash: str = Field(max_length=64)


class Checkpoint(SQLModel, table=True):
    """A signed note committing to the Merkle root of the first ``tree_size`` events.

    Append-only: each one is consistent with the one before it, and none is ever changed.
    """

    id: int | None = Field(default=None, primary_key=True)
    tree_size: int = Field(sa_type=sa.BigInteger, unique=True)
    root: str = Field(max_length=64)  # hex
    note: str = Field(sa_type=sa.Text)  # the signed note, exactly as published
    kid: str = Field(max_length=64)  # the server key that signed it (RFC 7638 thumbprint)
    created_at: datetime = _time()


class MerkleNode(SQLModel, table=True):
    """The hash of a perfect subtree of the audit events' Merkle tree.

    Only subtrees of 2**8 leaves and more are kept (``level >= 8``); smaller ones are
    hashed from the events when a proof needs them. Derived data, append-only.
    """

    __tablename__ = "merkle_node"

    level: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    idx: int = Field(
        primary_key=True, sa_type=sa.BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    hash: bytes = Field(sa_type=sa.LargeBinary)


class AccessEntry(SQLModel, table=True):
    """Someone read evidence: downloaded version bytes, exported the trail, looked up a copy.

    Entries are buffered in memory and written in batches; each batch is sealed by one
    ``access.logged`` audit event carrying the batch's digest (see server/access.py).
    """

    __tablename__ = "access_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_type=UTCDateTime)
    actor: str = Field(max_length=64)
    actor_name: str = Field(max_length=200)
    action: str = Field(max_length=32)
    document_id: int | None = Field(default=None, index=True)
    version_number: int | None = None
    detail: str | None = Field(default=None, max_length=2000)
    sealed_by_seq: int = Field(sa_type=sa.BigInteger)


class Review(SQLModel, table=True):
    """A request to approve one version (pinned by its SHA-256) under a policy."""

    id: int | None = Field(default=None, primary_key=True)
    document_id: int = Field(foreign_key="document.id", index=True)
    version_number: int
    sha256: str = Field(max_length=64)
    submitter_person_id: int = Field(foreign_key="person.id")
    submitter_office: str = Field(max_length=200)
    mode: str = Field(max_length=32)  # "all", "any", "quorum:2", "sequential"
    parties: str = Field(sa_type=sa.Text)  # JSON list of "office:NAME" / "person:USERNAME"
    due: datetime | None = Field(default=None, sa_type=UTCDateTime)
    separation_of_duties: bool = Field(default=True)
    comment: str | None = Field(default=None, sa_type=sa.Text)
    state: str = Field(default="open", max_length=16, index=True)
    submitted_at: datetime = _time()
    concluded_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    escalated: str = Field(default="[]", sa_type=sa.Text)  # JSON list of parent offices


class Decision(SQLModel, table=True):
    """One party's signed decision on a review."""

    id: int | None = Field(default=None, primary_key=True)
    review_id: int = Field(foreign_key="review.id", index=True)
    party: str = Field(max_length=300)
    person_id: int = Field(foreign_key="person.id")
    verdict: str = Field(max_length=16)
    comment: str | None = Field(default=None, sa_type=sa.Text)
    decided_at: datetime = Field(sa_type=UTCDateTime)
    payload: bytes = Field(sa_type=sa.LargeBinary)  # canonical JSON the signatures cover
    signature: str = Field(sa_type=sa.Text)  # the server's detached JWS
    client_signature: str | None = Field(default=None, sa_type=sa.Text)


class Acknowledgement(SQLModel, table=True):
    """A person has seen one final version of a document."""

    __table_args__ = (sa.UniqueConstraint("document_id", "person_id", "version_number"),)

    id: int | None = Field(default=None, primary_key=True)
    document_id: int = Field(foreign_key="document.id", index=True)
    person_id: int = Field(foreign_key="person.id")
    version_number: int
    sha256: str = Field(max_length=64)
    acknowledged_at: datetime = _time()


class Subscription(SQLModel, table=True):
    """A person outside the owner office who wants to see a document's final versions."""

    document_id: int = Field(foreign_key="document.id", primary_key=True)
    person_id: int = Field(foreign_key="person.id", primary_key=True)
    created_at: datetime = _time()


class SigningKey(SQLModel, table=True):
    """A public key of the server (or of a person) that signatures can be checked with."""

    __tablename__ = "signing_key"

    kid: str = Field(primary_key=True, max_length=64)
    person_id: int | None = Field(default=None, foreign_key="person.id", index=True)
    public_jwk: str = Field(sa_type=sa.Text)
    created_at: datetime = _time()
    retired_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Webhook(SQLModel, table=True):
    """A receiver of audit events by signed HTTP POST, and how far it has been served.

    Delivery state (cursor, failures, lease) is operational, not part of the record:
    it is updated in place, and only creation and removal are audit events.
    """

    id: int | None = Field(default=None, primary_key=True)
    url: str = Field(max_length=2000)
    secret: str = Field(max_length=200)  # the HMAC key; must stay readable to sign
    document_id: int | None = Field(default=None, foreign_key="document.id")
    folder_id: int | None = Field(default=None, foreign_key="folder.id")
    office_id: int | None = Field(default=None, foreign_key="office.id")
    active: bool = Field(default=True)
    created_at: datetime = _time()
    deactivated_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Every event up to this seq has been delivered (or did not match the filters).
    delivered_seq: int = Field(sa_type=sa.BigInteger)
    # Failed attempts at the event after delivered_seq, and when to try it again.
    failures: int = Field(default=0)
    next_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Which dispatcher pass holds the webhook, until when (several replicas share it).
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)


class WebhookDelivery(SQLModel, table=True):
    """One attempt to deliver one event to one webhook: the delivery log."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (sa.Index("ix_webhook_delivery_webhook_id_id", "webhook_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    webhook_id: int = Field(foreign_key="webhook.id")
    seq: int = Field(sa_type=sa.BigInteger)
    attempt: int
    ok: bool
    status_code: int | None = None
    error: str | None = Field(default=None, max_length=2000)
    at: datetime = Field(sa_type=UTCDateTime)
    next_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
