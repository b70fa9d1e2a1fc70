"""Signed notes and checkpoints against the Go sumdb/note reference vectors."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.note import Checkpoint, NoteError, NoteKey, open_note, sign_note

# golang.org/x/mod/sumdb/note's example key, text and signature.
VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
SIGNED = (
    TEXT + "\n\u2014 PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def _go_private_key() -> Ed25519PrivateKey:
    material = base64.b64decode(SKEY.split("+", 4)[4])
    assert material[0] == 1
    return Ed25519PrivateKey.from_private_bytes(material[1:])


def test_the_reference_verifier_key_parses_and_writes_back():
    key = NoteKey.parse(VKEY)
    assert key.name == "PeterNeumann"
    assert key.key_id.hex() == "c74f20a3"
    assert key.vkey == VKEY
    assert NoteKey.of("PeterNeumann", _go_private_key()) == key


def test_signing_reproduces_the_reference_note_byte_for_byte():
    assert sign_note(TEXT, [("PeterNeumann", _go_private_key())]) == SIGNED


def test_the_reference_note_opens_with_its_key():
    opened = open_note(SIGNED, [NoteKey.parse(VKEY)])
    assert opened.text == TEXT
    assert [k.name for k in opened.verified] == ["PeterNeumann"]
    assert opened.unknown == ()


def test_an_unknown_key_is_reported_not_trusted():
    other = NoteKey.of("PeterNeumann", Ed25519PrivateKey.generate())
    opened = open_note(SIGNED, [other])
    assert opened.verified == ()
    assert opened.unknown == (("PeterNeumann", "c74f20a3"),)


def test_an_altered_text_fails_its_signature():
    with pytest.raises(NoteError, match="does not match"):
        open_note(SIGNED.replace("cryptography", "Cryptography"), [NoteKey.parse(VKEY)])


@pytest.mark.parametrize(
    "bad",
    [
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3",
        "PeterNeumann+c74f20a3+!!!!",
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
    ],
)
def test_malformed_verifier_keys_are_refused(bad):
    with pytest.raises(NoteError):
        NoteKey.parse(bad)


def test_a_checkpoint_round_trips_and_signs_with_two_keys():
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    body = Checkpoint("officium/abc", 12, bytes(range(32)), ("officium-key x+00000000+AA==",))
    note = sign_note(body.text(), [("officium/abc", old), ("officium/abc", new)])
    opened = open_note(note, [NoteKey.of("officium/abc", old), NoteKey.of("officium/abc", new)])
    assert len(opened.verified) == 2
    assert Checkpoint.parse(opened.text) == body


@pytest.mark.parametrize(
    "text",
    ["origin\n12\n", "origin\n012\nAAAA\n", "origin\nx\nAAAA\n", "origin\n1\nnot base64!\n"],
)
def test_malformed_checkpoints_are_refused(text):
    with pytest.raises(NoteError):
        Checkpoint.parse(text)
