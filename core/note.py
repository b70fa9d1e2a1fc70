"""Signed notes and checkpoints: the C2SP ``signed-note`` and ``tlog-checkpoint`` formats.

A checkpoint is a short text naming the log (its *origin*), the tree size and the
Merkle root, optionally followed by extension lines; it is signed as a note::

    officium/6f1c0e9a8b7d4c21
    1204
    6q1VZQ7U2Q2n1wqg7yZk8fN1m3c0H4wq8d1aQ7rVJdU=

    — officium/6f1c0e9a8b7d4c21 pT6n2k...base64...==

Each signature line is an em dash, the key's name, and base64 of the 4-byte key id
followed by the Ed25519 signature over the text above the blank line. The key id is the
first four bytes of SHA-256(name || 0x0A || 0x01 || public key), and a verifier key is
written ``name+<key id in hex>+<base64(0x01 || public key)>``. These are the formats
transparency logs and their witnesses share (Go's ``golang.org/x/mod/sumdb/note``), so a
checkpoint Officium signs can be checked by their tools as well as by ours.

No maintained Python package implements signed notes; the format is small enough to
write here against the Go reference vectors (see tests/test_note.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "ED25519",
    "Checkpoint",
    "NoteError",
    "NoteKey",
    "OpenedNote",
    "open_note",
    "sign_note",
]

ED25519 = 0x01
_DASH = "\u2014 "
_MAX_NOTE = 64 * 1024


class NoteError(ValueError):
    """A note, key or checkpoint that cannot be read, with the reason."""


def _valid_name(name: str) -> bool:
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


@dataclass(frozen=True, slots=True)
class NoteKey:
    """The public half of a note-signing key: a name and a raw Ed25519 key."""

    name: str
    public_key: bytes  # 32 raw bytes

    def __post_init__(self) -> None:
        if not _valid_name(self.name):
            raise NoteError(f"'{self.name}' cannot name a key (no spaces or '+')")
        if len(self.public_key) != 32:
            raise NoteError("an Ed25519 public key is 32 bytes")

    @classmethod
    def of(cls, name: str, key: Ed25519PrivateKey | Ed25519PublicKey) -> NoteKey:
        public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
        return cls(name, public.public_bytes(Encoding.Raw, PublicFormat.Raw))

    @property
    def key_id(self) -> bytes:
        """The 4-byte id that signature lines carry."""
        digest = hashlib.sha256(self.name.encode() + b"\n" + bytes([ED25519]) + self.public_key)
        return digest.digest()[:4]

    @property
    def vkey(self) -> str:
        """The verifier key text: ``name+keyid+base64(0x01 || key)``."""
        material = base64.b64encode(bytes([ED25519]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{material}"

    @classmethod
    def parse(cls, vkey: str) -> NoteKey:
        """Read a verifier key text; its id must match the key it names."""
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3:
            raise NoteError("a verifier key reads name+keyid+key")
        name, hex_id, material = parts
        try:
            raw = base64.b64decode(material, validate=True)
        except binascii.Error:
            raise NoteError("the verifier key's key material is not base64") from None
        if len(raw) != 33 or raw[0] != ED25519:
            raise NoteError("the verifier key is not an Ed25519 key")
        key = cls(name, raw[1:])
        if hex_id != key.key_id.hex():
            raise NoteError("the verifier key's id does not match its key")
        return key

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


def _check_text(text: str) -> None:
    if not text.endswith("\n") or "\n\n" in text or text.startswith("\n"):
        raise NoteError("a note's text is non-empty lines, each ending in a newline")
    if "\r" in text:
        raise NoteError("a note's text holds no carriage returns")


def sign_note(text: str, signers: list[tuple[str, Ed25519PrivateKey]]) -> str:
    """The signed note: ``text``, a blank line, and one signature line per signer."""
    _check_text(text)
    lines = [text, "\n"]
    for name, private in signers:
        key = NoteKey.of(name, private)
        signature = private.sign(text.encode("utf-8"))
        blob = base64.b64encode(key.key_id + signature).decode()
        lines.append(f"{_DASH}{name} {blob}\n")
    return "".join(lines)


@dataclass(frozen=True, slots=True)
class OpenedNote:
    """A note's text with the keys whose signatures verified and those it did not know."""

    text: str
    verified: tuple[NoteKey, ...]
    unknown: tuple[tuple[str, str], ...]  # (name, key id hex) of signatures no key matched


def open_note(note: str, keys: list[NoteKey]) -> OpenedNote:
    """Split a signed note and check its signatures against ``keys``.

    A signature by a known key that does not verify raises :class:`NoteError`: the
    note was altered. Signatures by keys not given are reported in ``unknown``.
    """
    if len(note) > _MAX_NOTE:
        raise NoteError("the note is too long")
    cut = note.rfind("\n\n")
    if cut < 0 or not note.endswith("\n"):
        raise NoteError("the note has no signature block")
    text, block = note[: cut + 1], note[cut + 2 :]
    _check_text(text)
    by_id = {(key.name, key.key_id): key for key in keys}
    verified: list[NoteKey] = []
    unknown: list[tuple[str, str]] = []
    message = text.encode("utf-8")
    for line in block.splitlines():
        if not line.startswith(_DASH):
            raise NoteError("a signature line must start with an em dash")
        try:
            name, blob = line[len(_DASH) :].split(" ")
            raw = base64.b64decode(blob, validate=True)
        except (ValueError, binascii.Error):
            raise NoteError("a signature line reads '— name base64'") from None
        if len(raw) != 68:
            raise NoteError("an Ed25519 note signature is a 4-byte id and 64 bytes")
        key = by_id.get((name, raw[:4]))
        if key is None:
            unknown.append((name, raw[:4].hex()))
        elif key.verify(message, raw[4:]):
            verified.append(key)
        else:
            raise NoteError(f"the signature by '{name}' does not match the note's text")
    if not verified and not unknown:
        raise NoteError("the note carries no signature")
    return OpenedNote(text, tuple(verified), tuple(unknown))


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The body of a checkpoint: which log, how many leaves, which root, and extensions."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = field(default=())

    def text(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode()]
        return "".join(f"{line}\n" for line in (*lines, *self.extensions))

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise NoteError("a checkpoint has an origin, a size and a root, one per line")
        origin, size_text, root_text, *extensions = lines[:-1]
        if not origin or not size_text.isdigit() or (size_text != "0" and size_text[0] == "0"):
            raise NoteError("the checkpoint's origin or size is malformed")
        try:
            root = base64.b64decode(root_text, validate=True)
        except binascii.Error:
            raise NoteError("the checkpoint's root is not base64") from None
        if len(root) != 32:
            raise NoteError("the checkpoint's root is not a SHA-256 hash")
        if any(not line for line in extensions):
            raise NoteError("a checkpoint's extension lines are not empty")
        return cls(origin, int(size_text), root, tuple(extensions))
