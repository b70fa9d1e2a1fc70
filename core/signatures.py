"""Ed25519 signatures as detached JWS (RFC 7515 appendix F), algorithm "Ed25519" (RFC 9864).

The signed bytes are canonical JSON (RFC 8785) kept beside the signature, so anyone with
the public key can check a decision offline: the server, the CLI and the auditor's
verifier run this same module. JWS handling is joserfc's; keys are JWKs (RFC 8037).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

__all__ = [
    "ALGORITHM",
    "generate_key",
    "key_id",
    "load_private_key",
    "private_key_text",
    "public_jwk",
    "sign_detached",
    "verify_detached",
]

ALGORITHM = "Ed25519"
_REGISTRY = jws.JWSRegistry(algorithms=[ALGORITHM])


def generate_key() -> OKPKey:
    """A new Ed25519 key pair."""
    return OKPKey.generate_key("Ed25519")


def private_key_text(key: OKPKey) -> str:
    """The private key as a JWK (JSON text), for a file only its owner can read."""
    return json.dumps(key.as_dict(private=True), sort_keys=True)


def load_private_key(text: str) -> OKPKey:
    """A private key from its JWK text."""
    return OKPKey.import_key(json.loads(text))


def public_jwk(key: OKPKey) -> dict[str, Any]:
    """The public half as a JWK dict (kty, crv, x)."""
    data = key.as_dict(private=False)
    return {name: data[name] for name in ("kty", "crv", "x")}


def key_id(jwk: dict[str, Any]) -> str:
    """The key's RFC 7638 thumbprint: a name that cannot point at another key."""
    return OKPKey.import_key(jwk).thumbprint()


def sign_detached(payload: bytes, key: OKPKey) -> str:
    """A compact JWS over ``payload`` with the payload left out (``header..signature``)."""
    header = {"alg": ALGORITHM, "kid": key_id(public_jwk(key))}
    token = jws.serialize_compact(header, payload, key, registry=_REGISTRY)
    return jws.detach_content(token)


def verify_detached(token: str, payload: bytes, jwk: dict[str, Any]) -> bool:
    """True when ``token`` is a valid detached signature of ``payload`` by ``jwk``."""
    parts = token.split(".")
    if len(parts) != 3 or parts[1]:
        return False
    encoded = base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")
    try:
        key = OKPKey.import_key(jwk)
        result = jws.deserialize_compact(
            f"{parts[0]}.{encoded}.{parts[2]}", key, registry=_REGISTRY
        )
    except (JoseError, ValueError, TypeError):
        return False
    return result.headers().get("alg") == ALGORITHM
