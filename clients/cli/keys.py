"""A person's own signing key: make one, register its public half, read it to sign.

The key lives in a file as a private JWK (RFC 8037, Ed25519), readable by its owner
only. The server keeps just the public half (``POST /me/keys``); ``officium approve DOC
--sign-with KEYFILE`` then signs the exact decision payload on this side, and the server
refuses a signature that does not verify with one of the caller's registered keys.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from contextlib import suppress
from pathlib import Path
from typing import Annotated

import typer
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey
from rich.text import Text

from clients.cli.session import Session, client_command, fail
from clients.sdk import OfficiumClient
from core.errors import OfficiumError
from core.signatures import (
    ALGORITHM,
    generate_key,
    key_id,
    load_private_key,
    private_key_text,
    public_jwk,
    sign_detached,
    verify_detached,
)

__all__ = [
    "KeyFileOption",
    "load_key_file",
    "new_key",
    "readable_by_others",
    "register_key",
    "unregistered_hint",
]

# A JWK is a few hundred bytes; anything much larger is not one.
_MAX_KEY_FILE = 64 * 1024
_PROBE = b"officium key check"

KeyFileArgument = Annotated[
    Path,
    typer.Argument(
        metavar="KEYFILE",
        help="A private key file written by 'officium key new' (a JWK).",
        show_default=False,
    ),
]
KeyFileOption = Annotated[
    Path | None,
    typer.Option(
        "--sign-with",
        metavar="KEYFILE",
        help="Also sign the decision with your own key (a private key file written by "
        "'officium key new' and registered with 'officium key register').",
        show_default=False,
    ),
]


def load_key_file(path: Path, *, private: bool = True) -> OKPKey:
    """The Ed25519 key in ``path`` (a JWK), or a failure that says what is wrong with it.

    ``private=False`` also accepts a file holding only the public half.
    """
    try:
        with open(path, "rb") as source:
            data = source.read(_MAX_KEY_FILE + 1)
    except OSError as exc:
        raise fail(f"cannot read the key file {path}: {exc.strerror or exc}") from None
    wanted = "an Ed25519 private key" if private else "an Ed25519 key"
    if len(data) > _MAX_KEY_FILE:
        raise fail(f"{path} is not {wanted}: a JWK key file is a few hundred bytes")
    try:
        jwk = json.loads(data.decode("utf-8"))
    except ValueError:
        raise fail(
            f"{path} is not {wanted}: it is not a JWK (JSON) as 'officium key new' writes"
        ) from None
    if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != ALGORITHM:
        kind = (
            f"a {jwk.get('kty')}/{jwk.get('crv')} JWK"
            if isinstance(jwk, dict) and "kty" in jwk
            else "not a JWK"
        )
        raise fail(f"{path} is not {wanted}: it is {kind}, not kty OKP with crv {ALGORITHM}")
    try:
        key = load_private_key(json.dumps(jwk))
    except (JoseError, ValueError, TypeError) as exc:
        raise fail(f"{path} is not {wanted}: {exc}") from None
    if not key.is_private:
        if private:
            raise fail(
                f"{path} holds only a public key; --sign-with needs the private key file "
                "written by 'officium key new'"
            )
        return key
    # A private part that does not belong to the public part it is filed with would
    # sign under another key's name.
    if not verify_detached(sign_detached(_PROBE, key), _PROBE, public_jwk(key)):
        raise fail(f"{path} is not {wanted}: its public part 'x' does not match its private 'd'")
    return key


def readable_by_others(path: Path) -> bool:
    """True when the file's mode lets its group or anyone else read or change it."""
    try:
        return bool(path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))
    except OSError:
        return False


def unregistered_hint(client: OfficiumClient, key: OKPKey, path: Path) -> str | None:
    """Why the server may not know ``key`` as the caller's, or None when it does (or can't tell)."""
    kid = key_id(public_jwk(key))
    with suppress(OfficiumError):
        keys = {registered.kid: registered for registered in client.public_keys()}
        registered = keys.get(kid)
        if registered is None:
            return (
                f"the key in {path} ({kid}) is not registered: "
                f"run 'officium key register {path}' first"
            )
        if registered.retired_at is not None:
            return f"the key in {path} ({kid}) was retired; make a new one with 'officium key new'"
        if registered.username != client.me().username:
            return f"the key in {path} ({kid}) is registered to {registered.username!r}, not you"
    return None


def _write_private(path: Path, text: str, *, force: bool) -> None:
    """Write ``text`` to a new file readable by its owner only (replacing one if ``force``)."""
    data = text.encode("utf-8") + b"\n"
    # With --force, write beside the old file and rename, so it is never half overwritten.
    target = path.with_name(f".{path.name}.{secrets.token_hex(4)}.new") if force else path
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise fail(
            f"{path} exists already; give --force to replace it (the key in it is then lost)"
        ) from None
    try:
        with os.fdopen(fd, "wb") as out:
            if hasattr(os, "fchmod"):
                os.fchmod(out.fileno(), 0o600)  # whatever the umask
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if force:
            os.replace(target, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(target)
        raise


@client_command
def new_key(
    session: Session,
    output: Annotated[
        Path,
        typer.Option(
            "-o",
            "--output",
            metavar="KEYFILE",
            help="Where to write the private key (mode 0600).",
            show_default=False,
        ),
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Replace KEYFILE if it exists (its key is lost).")
    ] = False,
) -> None:
    """Make an Ed25519 key pair to sign your decisions with; print its public half.

    The private key goes to KEYFILE, readable by you only; register its public half
    with 'officium key register KEYFILE', then sign with 'officium approve DOC
    --sign-with KEYFILE'.
    """
    key = generate_key()
    jwk = public_jwk(key)
    kid = key_id(jwk)
    _write_private(output, private_key_text(key), force=force)
    payload = {"kid": kid, "jwk": jwk, "file": os.fspath(output)}
    if session.as_json:
        session.emit_json(payload)
        return
    lines = (
        f"new Ed25519 key {kid}",
        f"private key written to {output} (mode 0600): keep it to yourself",
        "public key (JWK):",
        json.dumps(jwk, sort_keys=True),
        f"register it with: officium key register {output}",
    )
    for line in lines:
        # Unwrapped, so the key can be copied whole whatever the terminal's width.
        session.out.print(Text(line), soft_wrap=True)


@client_command
def register_key(session: Session, keyfile: KeyFileArgument) -> None:
    """Register the public half of KEYFILE as yours, to sign decisions with it."""
    key = load_key_file(keyfile, private=False)
    registered = session.client.register_key(public_jwk(key))
    session.show(
        registered,
        lambda: Text(
            f"key {registered.kid} registered for {registered.username}: "
            f"sign with 'officium approve DOC --sign-with {keyfile}'"
        ),
    )
