"""Signed checkpoints of the audit trail, and the server keys that sign them.

A checkpoint is a C2SP signed note naming the log (its *origin*), a tree size and the
Merkle root of that many events (see :mod:`core.note`), signed with the server's
Ed25519 key under the origin's name. Checkpoints are append-only, and each is proven
consistent with the one before it before it is signed, so the server never publishes
two views of the trail that disagree: an auditor who kept an older one can ask for a
consistency proof and know nothing before it was changed.

The server's key can be rotated: the rotation is recorded in the trail and sealed by a
checkpoint that both the old and the new key sign, carrying an ``officium-next-key``
line, so a verifier who trusts the old key learns the new one from the log itself.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from joserfc.jwk import OKPKey
from sqlmodel import Session, select

from core import schemas
from core.errors import Conflict, NotFound
from core.files import write_atomically
from core.merkle import ProofError, verify_consistency
from core.note import Checkpoint as CheckpointBody
from core.note import NoteKey, sign_note
from core.signatures import generate_key, key_id, load_private_key, private_key_text, public_jwk
from server import audit, merkle
from server.audit import SYSTEM, Actor
from server.db import Database
from server.models import Checkpoint, SigningKey
from server.settings import Settings
from server.signing import ServerSigner

__all__ = [
    "NEXT_KEY",
    "Rotation",
    "current_signer",
    "latest",
    "make_checkpoint",
    "origin",
    "page",
    "pin",
    "published_keys",
    "rotate_key",
    "server_keys",
    "to_wire",
]

NEXT_KEY = "officium-next-key"

log = logging.getLogger("officium.checkpoints")

# One rotation at a time in this process, and no adoption of a pending key file while
# a rotation is between its commit and its rename.
_key_file_lock = threading.Lock()


# ------------------------------------------------------------------ the log's name


def origin(session: Session, settings: Settings) -> str:
    """The log's name in its checkpoints (and its keys' name): stable for one register."""
    if settings.audit_origin:
        return settings.audit_origin
    first = audit.list_events(session, after=0, limit=1)
    if not first:
        raise NotFound("the audit trail is empty: it has no checkpoints and no origin yet")
    return f"officium/{first[0].hash[:16]}"


def _vkey(name: str, jwk: dict[str, str]) -> str:
    raw = base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
    return NoteKey(name, raw).vkey


def server_keys(session: Session, settings: Settings) -> list[schemas.AuditKey]:
    """Every key the server has signed with, oldest first, with the time it was in use."""
    name = origin(session, settings)
    rows = session.exec(
        select(SigningKey)
        .where(SigningKey.person_id.is_(None))
        .order_by(SigningKey.created_at, SigningKey.kid)
    ).all()
    keys = []
    for row in rows:
        jwk = json.loads(row.public_jwk)
        keys.append(
            schemas.AuditKey(
                kid=row.kid,
                vkey=_vkey(name, jwk),
                jwk=jwk,
                valid_from=row.created_at,
                valid_until=row.retired_at,
            )
        )
    return keys


def published_keys(session: Session, settings: Settings) -> schemas.AuditKeyList:
    """The origin and the server's keys, as ``GET /audit/keys`` publishes them."""
    return schemas.AuditKeyList(
        origin=origin(session, settings), keys=server_keys(session, settings)
    )


# ---------------------------------------------------------------- checkpoints


def to_wire(row: Checkpoint) -> schemas.SignedCheckpoint:
    """The wire form of a stored checkpoint."""
    return schemas.SignedCheckpoint(
        tree_size=row.tree_size,
        root=row.root,
        note=row.note,
        kid=row.kid,
        created_at=row.created_at,
    )


def latest(session: Session) -> Checkpoint | None:
    """The checkpoint of the largest tree, or None before the first."""
    query = select(Checkpoint).order_by(Checkpoint.tree_size.desc()).limit(1)
    return session.exec(query).first()


def page(session: Session, *, after_size: int, limit: int) -> list[Checkpoint]:
    """Checkpoints of trees larger than ``after_size``, smallest first."""
    query = (
        select(Checkpoint)
        .where(Checkpoint.tree_size > after_size)
        .order_by(Checkpoint.tree_size)
        .limit(limit)
    )
    return list(session.exec(query))


def _seal(
    session: Session,
    settings: Settings,
    *,
    signers: list[ServerSigner],
    now: datetime,
    extensions: tuple[str, ...] = (),
) -> Checkpoint:
    """Sign and store a checkpoint of every event this writing transaction sees.

    The caller holds the chain's write lock, so no other checkpoint can land meanwhile.
    """
    current = signers[-1]
    current.register(session)
    key_row = session.get(SigningKey, current.kid)
    if key_row is not None and key_row.retired_at is not None:
        raise Conflict(
            f"the server key {current.kid} was retired; a checkpoint is signed with the current "
            "key only (this process picks it up from the key file)"
        )
    size = merkle.size(session)
    previous = latest(session)
    if previous is not None and previous.tree_size >= size:
        return previous
    root = merkle.root(session, size)
    if previous is not None:
        proof = merkle.consistency_proof(session, previous.tree_size, size)
        try:
            verify_consistency(previous.tree_size, size, bytes.fromhex(previous.root), root, proof)
        except ProofError as exc:
            # The trail (or its stored tree) changed under a published checkpoint. Signing
            # now would publish a second, contradicting view: refuse, and make noise.
            log.critical(
                "REFUSING to sign a checkpoint: the audit trail of %d events is not consistent "
                "with the checkpoint of %d events signed %s (%s). The trail or its Merkle "
                "nodes were altered; investigate before anything else.",
                size,
                previous.tree_size,
                previous.created_at.isoformat(),
                exc,
            )
            raise Conflict(
                f"the audit trail is not consistent with the checkpoint of {previous.tree_size} "
                f"events ({exc}); no new checkpoint is signed"
            ) from None
    name = origin(session, settings)
    text = CheckpointBody(name, size, root, extensions).text()
    note = sign_note(text, [(name, signer.key.private_key) for signer in signers])
    row = Checkpoint(tree_size=size, root=root.hex(), note=note, kid=current.kid, created_at=now)
    session.add(row)
    session.flush()
    return row


def make_checkpoint(
    db: Database, signer: ServerSigner, settings: Settings, *, now: datetime
) -> Checkpoint | None:
    """A signed checkpoint at the current head; the latest one if the head has not moved.

    None only while the trail is empty. The Merkle nodes are extended first, outside the
    write lock; the transaction that signs then reads O(log n) nodes.
    """
    with db.reading() as session:
        head = merkle.size(session)
        previous = latest(session)
    if head == 0:
        return None
    if previous is not None and previous.tree_size >= head:
        return previous
    merkle.extend_database(db)
    try:
        with db.writing() as session:
            return _seal(session, settings, signers=[signer], now=now)
    except sa.exc.IntegrityError:
        # Someone stored this tree size outside the chain's lock: theirs stands.
        with db.reading() as session:
            return latest(session)


def pin(db: Database, signer: ServerSigner, settings: Settings, *, now: datetime) -> Checkpoint:
    """A checkpoint covering the trail up to now (made if needed), for an export to rest on."""
    made = make_checkpoint(db, signer, settings, now=now)
    if made is None:
        raise NotFound("the audit trail is empty: there is nothing to checkpoint")
    return made


# ------------------------------------------------------------------ key rotation
#
# The new private key must outlive the process, yet the database and the key file
# cannot change in one atomic step. The order chosen:
#
#   1. write the new key to "<keyfile>.next-<kid>" (0600, fsync), beside the key file;
#   2. commit the rotation (events, retired_at, the checkpoint both keys sign);
#   3. rename the pending file over the key file (atomic on one file system).
#
# A crash before 2 leaves a pending file for a key nobody knows: it is never adopted.
# A crash between 2 and 3 leaves the old key in the file while the register names the
# new one current: at start (and at every checkpoint tick) :func:`current_signer` finds
# the pending file whose key is the register's current server key and renames it into
# place, so the server never goes back to signing with the retired key. Writing the
# file after the commit instead would lose the new key on such a crash, and the
# register would name a current key whose private half is gone.


@dataclass(frozen=True, slots=True)
class Rotation:
    """What a rotation produced: the signer to use from now on and the checkpoint."""

    signer: ServerSigner
    retired: schemas.AuditKey
    current: schemas.AuditKey
    checkpoint: Checkpoint


def _pending_path(path: Path, kid: str) -> Path:
    return path.with_name(f"{path.name}.next-{kid}")


def _write_key_file(path: Path, key: OKPKey) -> None:
    """Write a private key to ``path`` atomically, readable by its owner only."""
    write_atomically(path, private_key_text(key).encode("utf-8"), mode=0o600)


def _install(pending: Path, path: Path) -> None:
    """Rename a committed rotation's key over the key file (another process may have)."""
    with suppress(FileNotFoundError):
        os.replace(pending, path)
    with suppress(OSError):  # make the rename itself durable
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def rotate_key(
    db: Database,
    signer: ServerSigner,
    settings: Settings,
    *,
    now: datetime,
    actor: Actor = SYSTEM,
) -> Rotation:
    """Replace the server's key: record it, retire the old one, seal it with both keys."""
    path = settings.resolved_signing_key_file
    with _key_file_lock:
        new = ServerSigner(generate_key())
        pending = _pending_path(path, new.kid)
        _write_key_file(pending, new.key)
        try:
            merkle.extend_database(db)
            with db.writing() as session:
                checkpoint = _rotate(session, settings, old=signer, new=new, now=now, actor=actor)
                keys = {key.kid: key for key in server_keys(session, settings)}
        except BaseException:
            with suppress(OSError):
                pending.unlink()
            raise
        _install(pending, path)
    log.warning("the server's signing key was rotated: %s retired, %s current", signer.kid, new.kid)
    return Rotation(new, keys[signer.kid], keys[new.kid], checkpoint)


def _rotate(
    session: Session,
    settings: Settings,
    *,
    old: ServerSigner,
    new: ServerSigner,
    now: datetime,
    actor: Actor,
) -> Checkpoint:
    old.register(session)
    old_row = session.get(SigningKey, old.kid)
    if old_row is None or old_row.retired_at is not None:
        raise Conflict(
            f"the server key {old.kid} was retired already (by another replica?); this "
            "process picks up the current key at its next checkpoint or restart"
        )
    name = origin(session, settings)
    vkey = NoteKey.of(name, new.key.private_key).vkey
    audit.append(
        session,
        actor=actor,
        action="key.rotated",
        subject={"key": old.kid},
        details={"old_kid": old.kid, "new_kid": new.kid, "jwk": new.jwk, "vkey": vkey},
        time=now,
    )
    new.register(session)
    new_row = session.get(SigningKey, new.kid)
    assert new_row is not None
    new_row.created_at = now
    old_row.retired_at = now
    session.flush()
    return _seal(session, settings, signers=[old, new], now=now, extensions=(f"{NEXT_KEY} {vkey}",))


def current_signer(db: Database, settings: Settings, signer: ServerSigner) -> ServerSigner:
    """The signer this process should use now.

    Finishes a rotation a crash left between its commit and its rename (see above), and
    picks up a key another replica sharing the key file rotated to.
    """
    path = settings.resolved_signing_key_file
    with _key_file_lock:
        with db.reading() as session:
            current = set(
                session.exec(
                    select(SigningKey.kid).where(
                        SigningKey.person_id.is_(None),
                        SigningKey.retired_at.is_(None),
                    )
                )
            )
        for pending in sorted(path.parent.glob(f"{path.name}.next-*")):
            key = _read_key(pending)
            if key is not None and key_id(public_jwk(key)) in current:
                log.warning("finishing an interrupted key rotation: %s is the key now", pending)
                _install(pending, path)
        key = _read_key(path)
    if key is None:
        return signer
    kid = key_id(public_jwk(key))
    if kid == signer.kid or kid not in current:
        return signer
    log.warning("the server's signing key changed to %s (rotated by another process)", kid)
    return ServerSigner(key)


def _read_key(path: Path) -> OKPKey | None:
    try:
        return load_private_key(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.error("cannot read the signing key file %s: %s", path, exc)
        return None
