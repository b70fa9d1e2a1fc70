"""The server's Ed25519 key: made once, kept in a file only the server can read, and
published (its public half) in the register so that anyone can check its signatures."""

from __future__ import annotations

import json
import os
from pathlib import Path

from joserfc.jwk import OKPKey
from sqlmodel import Session, select

from core.signatures import (
    generate_key,
    key_id,
    load_private_key,
    private_key_text,
    public_jwk,
    sign_detached,
)
from server import audit
from server.audit import SYSTEM
from server.models import SigningKey

__all__ = ["ServerSigner", "load_or_create_key"]


def load_or_create_key(path: Path) -> OKPKey:
    """The key in ``path``, made (mode 0600) if the file does not exist yet."""
    if path.exists():
        return load_private_key(path.read_text(encoding="utf-8"))
    path.parent.mkdir(parents=True, exist_ok=True)
    key = generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(private_key_text(key))
    except FileExistsError:  # another replica made it first
        return load_private_key(path.read_text(encoding="utf-8"))
    return key


class ServerSigner:
    """Signs canonical payloads with the server's key, registering the key on first use."""

    def __init__(self, key: OKPKey) -> None:
        self.key = key
        self.jwk = public_jwk(key)
        self.kid = key_id(self.jwk)

    def sign(self, session: Session, payload: bytes) -> str:
        """A detached JWS over ``payload``; the public key is in the register by then."""
        self.register(session)
        return sign_detached(payload, self.key)

    def register(self, session: Session) -> None:
        """Publish the public key in the register (once, with an audit event)."""
        known = session.exec(select(SigningKey.kid).where(SigningKey.kid == self.kid)).first()
        if known is not None:
            return
        session.add(SigningKey(kid=self.kid, public_jwk=json.dumps(self.jwk, sort_keys=True)))
        session.flush()
        audit.append(
            session,
            actor=SYSTEM,
            action="key.registered",
            subject={"key": self.kid},
            details={"jwk": self.jwk, "owner": "server"},
        )
