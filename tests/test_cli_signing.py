"""Client-side signing from the command line: ``officium key new|register`` and
``officium approve|reject DOC --sign-with KEYFILE``, against the real app in-process.

Planning owns the folder 'share' and paula, its member, submits; lena and larry are
Legal's approvers.
"""

from __future__ import annotations

import hashlib
import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clients.cli.main import build_app
from core.schemas import ReportKind, Role, VersionReport
from core.signatures import generate_key, private_key_text, public_jwk, verify_detached

PEOPLE = {
    "paula": ("Planning", Role.member),
    "lena": ("Legal", Role.approver),
    "larry": ("Legal", Role.approver),
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def office(admin, client_for, tmp_path):
    """Everyone's tokens and 'share:plan.txt' under review by Legal (any one approver)."""
    admin.create_office(name="Planning")
    admin.create_office(name="Legal")
    tokens = {}
    for username, (name, role) in PEOPLE.items():
        admin.create_person(username=username)
        admin.create_membership(username=username, office=name, role=role)
        tokens[username] = admin.create_token(username=username).token
    root = tmp_path / "share"
    root.mkdir()
    admin.create_folder(name="share", root=str(root), default_owner="Planning")
    agent = client_for(admin.create_token(folder="share").token)
    data = b"the plan"
    (root / "plan.txt").write_bytes(data)
    agent.upload_content(sha(data), data)
    report = VersionReport(
        path="plan.txt",
        kind=ReportKind.modified,
        sha256=sha(data),
        size=len(data),
        commit=hashlib.sha1(b"commit 1").hexdigest(),
        observed_at=datetime.now(UTC),
    )
    [result] = agent.report("share", [report]).results
    client_for(tokens["paula"]).submit(result.document_id, parties=["office:Legal"], mode="any")
    return {"tokens": tokens, "document": result.document_id, "admin": admin}


@pytest.fixture
def officium(http, office):
    """Run ``officium ARGS...`` as one of the people (``as_``); return the click Result."""
    runner = CliRunner()
    app = build_app()

    def run(*args: str, as_: str = "lena"):
        return runner.invoke(
            app,
            [*args, "--token", office["tokens"][as_]],
            obj={"http_client": http},
            env={"COLUMNS": "200", "OFFICIUM_TOKEN": None, "OFFICIUM_URL": None},
        )

    return run


@pytest.fixture
def keys(tmp_path) -> Path:
    """A directory of its own for key files."""
    where = tmp_path / "keys"
    where.mkdir()
    return where


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _refused(result, *needles: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("officium: ")
    for needle in needles:
        assert needle in result.stderr, result.stderr


def _decisions(office) -> list:
    [review] = office["admin"].reviews(office["document"])
    return review.decisions


# ------------------------------------------------------------------ key new, register


def test_key_new_writes_a_private_key_only_its_owner_can_read(officium, keys):
    keyfile = keys / "lena.jwk"
    made = _json(officium("key", "new", "-o", str(keyfile), "--json"))
    assert set(made) == {"kid", "jwk", "file"}
    assert made["file"] == str(keyfile)
    assert set(made["jwk"]) == {"kty", "crv", "x"}  # the public half only
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    private = json.loads(keyfile.read_text())
    assert (private["kty"], private["crv"], private["x"]) == ("OKP", "Ed25519", made["jwk"]["x"])
    assert "d" in private

    shown = officium("key", "new", "-o", str(keys / "other.jwk"))
    assert shown.exit_code == 0, shown.output
    other = json.loads((keys / "other.jwk").read_text())
    assert other["x"] in shown.stdout and "officium key register" in shown.stdout
    assert other["d"] not in shown.stdout


def test_key_new_refuses_to_overwrite_unless_forced(officium, keys):
    keyfile = keys / "lena.jwk"
    first = _json(officium("key", "new", "-o", str(keyfile), "--json"))
    before = keyfile.read_text()
    _refused(officium("key", "new", "-o", str(keyfile)), str(keyfile), "--force")
    assert keyfile.read_text() == before

    forced = _json(officium("key", "new", "-o", str(keyfile), "--force", "--json"))
    assert forced["kid"] != first["kid"]
    assert json.loads(keyfile.read_text())["x"] == forced["jwk"]["x"]
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    assert sorted(p.name for p in keys.iterdir()) == ["lena.jwk"]  # no temporary left


def test_key_register_registers_the_public_half(officium, office, keys):
    keyfile = keys / "lena.jwk"
    made = _json(officium("key", "new", "-o", str(keyfile), "--json"))
    registered = _json(officium("key", "register", str(keyfile), "--json"))
    assert (registered["kid"], registered["username"]) == (made["kid"], "lena")
    assert registered["jwk"] == made["jwk"]
    assert registered["retired_at"] is None
    listed = {key.kid: key.username for key in office["admin"].public_keys()}
    assert listed[made["kid"]] == "lena"
    # The same key twice is refused by the server, said plainly.
    _refused(officium("key", "register", str(keyfile)), "already registered")


# ------------------------------------------------------------------ signed decisions


def test_approve_sign_with_records_a_decision_both_signatures_verify(officium, office, keys):
    keyfile = keys / "lena.jwk"
    made = _json(officium("key", "new", "-o", str(keyfile), "--json"))
    assert officium("key", "register", str(keyfile)).exit_code == 0

    shown = officium("approve", "share:plan.txt", "-m", "sound", "--sign-with", str(keyfile))
    assert shown.exit_code == 0, shown.output
    assert "is approved" in shown.stdout
    assert f"signed with your key {made['kid']}" in shown.stdout

    [decision] = _decisions(office)
    assert (decision.username, decision.verdict, decision.comment) == ("lena", "approve", "sound")
    payload = decision.payload.encode()
    assert decision.client_signature is not None
    assert verify_detached(decision.client_signature, payload, made["jwk"])
    keys = office["admin"].public_keys()
    server_jwk = next(key.jwk for key in keys if key.username is None)
    assert verify_detached(decision.signature, payload, server_jwk)
    assert not verify_detached(decision.client_signature, payload, server_jwk)
    assert office["admin"].document(office["document"]).state == "approved"


def test_reject_sign_with_carries_the_signature_too(officium, office, keys):
    keyfile = keys / "larry.jwk"
    made = _json(officium("key", "new", "-o", str(keyfile), "--json", as_="larry"))
    assert officium("key", "register", str(keyfile), as_="larry").exit_code == 0
    _refused(
        officium("reject", "share:plan.txt", "--sign-with", str(keyfile), as_="larry"),
        "needs a comment",
    )
    rejected = _json(
        officium(
            "reject", "share:plan.txt", "-m", "no budget", "--sign-with", str(keyfile),
            "--json", as_="larry",
        )
    )  # fmt: skip
    assert rejected["state"] == "rejected"
    [decision] = rejected["decisions"]
    assert decision["verdict"] == "reject" and decision["comment"] == "no budget"
    assert verify_detached(decision["client_signature"], decision["payload"].encode(), made["jwk"])


def test_an_unsigned_approval_still_works_and_carries_no_client_signature(officium, office):
    assert officium("approve", "share:plan.txt").exit_code == 0
    [decision] = _decisions(office)
    assert decision.client_signature is None


def test_an_unregistered_key_is_refused_and_nothing_is_recorded(officium, office, keys):
    keyfile = keys / "lena.jwk"
    made = _json(officium("key", "new", "-o", str(keyfile), "--json"))
    _refused(
        officium("approve", "share:plan.txt", "--sign-with", str(keyfile)),
        "no registered public key",
        made["kid"],
        f"officium key register {keyfile}",
    )
    # With another key of hers registered, the signature does not verify: refused too.
    other = keys / "other.jwk"
    _json(officium("key", "new", "-o", str(other), "--json"))
    assert officium("key", "register", str(other)).exit_code == 0
    _refused(
        officium("approve", "share:plan.txt", "--sign-with", str(keyfile)),
        "does not verify",
        made["kid"],
    )
    assert _decisions(office) == []
    assert office["admin"].document(office["document"]).state == "in_review"


def test_a_key_registered_by_someone_else_is_refused(officium, office, keys):
    keyfile = keys / "larry.jwk"
    _json(officium("key", "new", "-o", str(keyfile), "--json", as_="larry"))
    assert officium("key", "register", str(keyfile), as_="larry").exit_code == 0
    _refused(
        officium("approve", "share:plan.txt", "--sign-with", str(keyfile), as_="lena"),
        "registered to 'larry'",
    )
    assert _decisions(office) == []


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("", "not a JWK"),
        ("-----BEGIN PRIVATE KEY-----\nMC4CAQA=\n", "not a JWK"),
        ("[1, 2]", "not a JWK"),
        ('{"kty": "RSA", "n": "AQAB", "e": "AQAB"}', "not kty OKP with crv Ed25519"),
        ('{"kty": "OKP", "crv": "X25519", "x": "AAAA"}', "not kty OKP with crv Ed25519"),
        ('{"kty": "OKP", "crv": "Ed25519", "x": "!!", "d": "??"}', "not an Ed25519 private key"),
        (json.dumps(public_jwk(generate_key())), "only a public key"),
    ],
    ids=["empty", "pem", "list", "rsa", "x25519", "garbled", "public-only"],
)
def test_a_broken_key_file_is_refused_before_anything_is_asked(
    officium, office, keys, content, needle
):
    keyfile = _write(keys / "broken.jwk", content)
    _refused(officium("approve", "share:plan.txt", "--sign-with", str(keyfile)), needle)
    assert _decisions(office) == []


def test_a_key_file_whose_halves_do_not_match_is_refused(officium, office, keys):
    mixed = json.loads(private_key_text(generate_key()))
    mixed["x"] = public_jwk(generate_key())["x"]
    keyfile = _write(keys / "mixed.jwk", json.dumps(mixed))
    _refused(officium("approve", "share:plan.txt", "--sign-with", str(keyfile)), "does not match")
    _refused(officium("key", "register", str(keyfile)), "does not match")


def test_a_missing_or_unreadable_key_file_is_refused(officium, office, keys):
    missing = keys / "nowhere.jwk"
    _refused(
        officium("approve", "share:plan.txt", "--sign-with", str(missing)),
        f"cannot read the key file {missing}",
        "No such file",
    )
    _refused(officium("key", "register", str(keys)), f"cannot read the key file {keys}")
    assert _decisions(office) == []


def test_a_key_file_others_can_read_is_used_with_a_warning(officium, office, keys):
    keyfile = keys / "lena.jwk"
    _json(officium("key", "new", "-o", str(keyfile), "--json"))
    assert officium("key", "register", str(keyfile)).exit_code == 0
    keyfile.chmod(0o644)
    approved = officium("approve", "share:plan.txt", "--sign-with", str(keyfile), "--json")
    assert json.loads(approved.stdout)["state"] == "approved"
    assert "chmod 600" in approved.stderr


# ------------------------------------------------------------------ the SDK under it


def test_sdk_register_key_payload_and_signed_approve(office, client_for):
    lena = client_for(office["tokens"]["lena"])
    key = generate_key()
    registered = lena.register_key(public_jwk(key))
    assert (registered.username, registered.jwk) == ("lena", public_jwk(key))
    draft = lena.decision_payload(office["document"], verdict="approve", comment="ok")
    assert draft.party == "office:Legal"
    assert json.loads(draft.payload)["verdict"] == "approve"
    review = lena.approve(office["document"], comment="ok", sign_with=key)
    [decision] = review.decisions
    assert verify_detached(decision.client_signature, decision.payload.encode(), public_jwk(key))
