"""The audit trail's Merkle tree, its signed checkpoints and the server's key rotation.

Everything the server answers is checked against :mod:`core.merkle` and :mod:`core.note`
computed here, over the events fetched from ``/api/v1/audit/events``: the same check an
auditor runs. The trails are longer than 256 events, so stored Merkle nodes are used.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlmodel import select
from starlette.testclient import TestClient
from typer.testing import CliRunner

from clients.cli.main import build_app
from core import merkle as rfc9162
from core.errors import Conflict, Forbidden, Invalid, NotFound
from core.note import Checkpoint as CheckpointBody
from core.note import NoteKey, OpenedNote, open_note
from core.schemas import ReportKind, Role, VersionReport
from core.signatures import generate_key, load_private_key, private_key_text, verify_detached
from server import audit, checkpoints, merkle
from server.app import create_app
from server.audit import SYSTEM
from server.models import Checkpoint, MerkleNode, SigningKey
from server.settings import Settings
from tests.conftest import ADMIN_TOKEN

PEOPLE = {"paula": ("Planning", Role.member), "lena": ("Legal", Role.approver)}


def append_events(app, count: int) -> None:
    """``count`` more events on the trail, through the one module that appends them."""
    with app.state.db.writing() as session:
        for n in range(count):
            audit.append(session, actor=SYSTEM, action="test.filler", subject={"n": n})


def leaves_of(admin) -> list[bytes]:
    """The leaf data of every event, as the API hands the events out."""
    return [event.canonical.encode("utf-8") for event in admin.iter_audit_events()]


def local_subtree(leaves: list[bytes]):
    return rfc9162.subtree_from_leaves([rfc9162.leaf_hash(leaf) for leaf in leaves])


def opened(note: str, keys) -> OpenedNote:
    return open_note(note, [NoteKey.parse(key.vkey) for key in keys])


@pytest.fixture
def trail(app, http, admin) -> list[bytes]:
    """A trail of 700 events (crossing 256, 512), some of them made through the API."""
    for n in range(5):
        admin.create_office(name=f"Office {n}")
    append_events(app, 700 - len(leaves_of(admin)))
    leaves = leaves_of(admin)
    assert len(leaves) == 700
    return leaves


@pytest.fixture
def team(admin, client_for, tmp_path):
    """paula (Planning) submits 'share:plan.txt'; lena (Legal) approves. Returns helpers."""
    for office in ("Planning", "Legal"):
        admin.create_office(name=office)
    tokens = {}
    for username, (office, role) in PEOPLE.items():
        admin.create_person(username=username)
        admin.create_membership(username=username, office=office, role=role)
        tokens[username] = admin.create_token(username=username).token
    root = tmp_path / "share"
    root.mkdir()
    admin.create_folder(name="share", root=str(root), default_owner="Planning")
    agent = client_for(admin.create_token(folder="share").token)

    def approved_document(text: bytes):
        digest = hashlib.sha256(text).hexdigest()
        agent.upload_content(digest, text)
        report = VersionReport(
            path=f"{digest[:8]}.txt",
            kind=ReportKind.modified,
            sha256=digest,
            size=len(text),
            commit=hashlib.sha1(text).hexdigest(),
            observed_at=datetime.now(UTC),
        )
        [result] = agent.report("share", [report]).results
        client_for(tokens["paula"]).submit(result.document_id, parties=["office:Legal"])
        return client_for(tokens["lena"]).approve(result.document_id)

    return {"tokens": tokens, "approved_document": approved_document}


# ------------------------------------------------------------------ tree and proofs


def test_roots_and_proofs_equal_the_ones_computed_over_the_fetched_events(app, admin, trail):
    signed = admin.make_checkpoint()
    assert signed.tree_size == len(trail)
    assert bytes.fromhex(signed.root) == rfc9162.root_from_leaves(trail)
    with app.state.db.reading() as session:
        stored = session.exec(select(MerkleNode.level, MerkleNode.idx)).all()
    assert sorted(stored) == [(8, 0), (8, 1), (9, 0)]

    subtree = local_subtree(trail)
    for size in (1, 255, 256, 257, 511, 512, 513, 700):
        root = rfc9162.tree_root(size, subtree)
        for seq in sorted({1, size // 2 + 1, 256 if size >= 256 else size, size}):
            proof = admin.inclusion_proof(seq, size)
            assert (proof.seq, proof.leaf_index, proof.tree_size) == (seq, seq - 1, size)
            assert bytes.fromhex(proof.leaf_hash) == rfc9162.leaf_hash(trail[seq - 1])
            path = [bytes.fromhex(step) for step in proof.proof]
            assert path == rfc9162.inclusion_proof(seq - 1, size, subtree)
            rfc9162.verify_inclusion(seq - 1, size, rfc9162.leaf_hash(trail[seq - 1]), path, root)

    for old, new in ((1, 700), (255, 256), (256, 700), (300, 513), (512, 700), (700, 700)):
        proof = [bytes.fromhex(step) for step in admin.consistency_proof(old, new).proof]
        assert proof == rfc9162.consistency_proof(old, new, subtree)
        rfc9162.verify_consistency(
            old, new, rfc9162.tree_root(old, subtree), rfc9162.tree_root(new, subtree), proof
        )


def test_the_tree_answers_the_same_before_its_nodes_are_stored(app, trail):
    with app.state.db.reading() as session:
        before = [merkle.root(session, size) for size in (256, 600, 700)]
        path_before = merkle.inclusion_proof(session, 299, 700)
    with app.state.db.writing() as session:
        assert merkle.extend(session) == 3
        assert merkle.extend(session) == 0
    with app.state.db.reading() as session:
        assert [merkle.root(session, size) for size in (256, 600, 700)] == before
        assert merkle.inclusion_proof(session, 299, 700) == path_before
    assert before[-1] == rfc9162.root_from_leaves(trail)


def test_extending_twice_at_once_is_harmless(app, trail):
    """Two processes may hash the same missing nodes; the second insert is skipped."""
    with app.state.db.reading() as session:
        made = merkle.missing_nodes(session)
    with app.state.db.writing() as session:
        merkle.store(session, made)
    with app.state.db.writing() as session:
        merkle.store(session, made)
    assert merkle.extend_database(app.state.db) == 0
    with app.state.db.reading() as session:
        assert merkle.root(session, 700) == rfc9162.root_from_leaves(trail)


# ------------------------------------------------------------------ checkpoints


def test_a_checkpoint_is_a_signed_note_the_published_key_verifies(app, admin, trail):
    signed = admin.make_checkpoint()
    published = admin.audit_keys()
    first = admin.audit_events(limit=1).events[0]
    assert published.origin == f"officium/{first.hash[:16]}"
    [key] = published.keys
    assert key.kid == app.state.signer.kid and key.valid_until is None
    assert NoteKey.parse(key.vkey).name == published.origin
    note = opened(signed.note, published.keys)
    assert [k.vkey for k in note.verified] == [key.vkey] and note.unknown == ()
    body = CheckpointBody.parse(note.text)
    assert (body.origin, body.size, body.root.hex()) == (published.origin, 700, signed.root)
    assert admin.latest_checkpoint() == signed


def test_the_origin_can_be_set(tmp_path, database_url):
    settings = Settings(
        data_dir=tmp_path / "data", database_url=database_url, audit_origin="x.org/a"
    )
    with TestClient(create_app(settings)) as http:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        note = http.post("/api/v1/audit/checkpoints", headers=headers).json()["note"]
        keys = http.get("/api/v1/audit/keys", headers=headers).json()
    assert note.startswith("x.org/a\n") and keys["origin"] == "x.org/a"
    assert open_note(note, [NoteKey.parse(keys["keys"][0]["vkey"])]).verified


def test_nothing_moved_no_new_checkpoint_and_consecutive_ones_are_consistent(app, admin, trail):
    first = admin.make_checkpoint()
    assert admin.make_checkpoint() == first
    append_events(app, 40)
    second = admin.make_checkpoint()
    assert (first.tree_size, second.tree_size) == (700, 740)
    page = admin.checkpoints()
    assert [c.tree_size for c in page.checkpoints] == [700, 740] and page.next is None
    assert [c.tree_size for c in admin.checkpoints(after_size=700).checkpoints] == [740]
    assert admin.checkpoints(limit=1).next == 700
    proof = [bytes.fromhex(step) for step in admin.consistency_proof(700, 740).proof]
    rfc9162.verify_consistency(
        700, 740, bytes.fromhex(first.root), bytes.fromhex(second.root), proof
    )


def test_two_replicas_signing_at_once_never_disagree(app, settings, trail):
    """Two makers race while events keep coming: every checkpoint extends the one before."""
    other = create_app(settings)  # a second replica over the same database and key
    makers = [app, other]
    stop = threading.Event()
    errors: list[BaseException] = []

    def keep_signing(replica) -> None:
        try:
            while not stop.is_set():
                checkpoints.make_checkpoint(
                    replica.state.db,
                    replica.state.signer,
                    replica.state.settings,
                    now=datetime.now(UTC),
                )
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=keep_signing, args=(m,)) for m in makers]
    for thread in threads:
        thread.start()
    try:
        for _ in range(300):  # until the makers have signed several trees between appends
            append_events(app, 7)
            with app.state.db.reading() as session:
                if len(session.exec(select(Checkpoint.id)).all()) >= 4:
                    break
            time.sleep(0.01)  # let the makers' threads take the writer lock too
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        other.state.db.dispose()
    assert errors == []
    with app.state.db.reading() as session:
        rows = list(session.exec(select(Checkpoint).order_by(Checkpoint.tree_size)))
    assert len(rows) >= 4
    with app.state.db.reading() as session:
        for older, newer in itertools.pairwise(rows):
            proof = merkle.consistency_proof(session, older.tree_size, newer.tree_size)
            rfc9162.verify_consistency(
                older.tree_size,
                newer.tree_size,
                bytes.fromhex(older.root),
                bytes.fromhex(newer.root),
                proof,
            )


def test_an_inconsistent_trail_is_never_signed(app, admin, trail):
    """A checkpoint whose root the trail no longer yields blocks the next one."""
    admin.make_checkpoint()
    with app.state.db.engine.begin() as connection:
        connection.execute(
            sa.insert(Checkpoint.__table__).values(
                tree_size=701, root="00" * 32, note="forged", kid="k", created_at=datetime.now(UTC)
            )
        )
    append_events(app, 3)
    with pytest.raises(Conflict, match="not consistent"):
        admin.make_checkpoint()
    assert admin.latest_checkpoint().tree_size == 701


def test_no_checkpoint_yet_is_a_clear_404(admin):
    with pytest.raises(NotFound, match="no checkpoint has been signed yet"):
        admin.latest_checkpoint()


def test_checkpoints_are_made_periodically_and_at_shutdown(tmp_path, database_url):
    settings = Settings(
        data_dir=tmp_path / "data", database_url=database_url, checkpoint_seconds=0.05
    )
    app = create_app(settings)

    def latest_size() -> int | None:
        with app.state.db.reading() as session:
            row = checkpoints.latest(session)
        return row and row.tree_size

    with TestClient(app):
        with app.state.db.reading() as session:
            head = merkle.size(session)
        # The task runs every 0.05 s: wait for its outcome (generously), not for a time.
        deadline = time.monotonic() + 30
        while latest_size() != head:
            assert time.monotonic() < deadline, "no periodic checkpoint was made"
            time.sleep(0.02)
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    app = create_app(settings)
    with TestClient(app):
        append_events(app, 5)
    assert latest_size() == head + 5


def test_making_a_checkpoint_directly_is_idempotent(app, http, trail):
    state = app.state
    made = checkpoints.make_checkpoint(state.db, state.signer, state.settings, now=state.clock())
    again = checkpoints.pin(state.db, state.signer, state.settings, now=state.clock())
    assert made.tree_size == again.tree_size == 700 and made.note == again.note


# ------------------------------------------------------------------ key rotation


def test_a_key_rotation_is_signed_by_both_keys_and_later_by_the_new_one(
    app, admin, settings, trail, team
):
    old_kid = app.state.signer.kid
    before = admin.make_checkpoint()
    rotation = admin.rotate_key()
    assert rotation.retired.kid == old_kid and rotation.retired.valid_until is not None
    assert rotation.current.kid == app.state.signer.kid != old_kid
    assert rotation.current.valid_until is None

    published = admin.audit_keys()
    assert [k.kid for k in published.keys] == [old_kid, rotation.current.kid]
    old_key, new_key = (NoteKey.parse(k.vkey) for k in published.keys)
    note = open_note(rotation.checkpoint.note, [old_key, new_key])
    assert note.verified == (old_key, new_key)
    body = CheckpointBody.parse(note.text)
    assert body.extensions == (f"officium-next-key {new_key.vkey}",)
    assert body.size == rotation.checkpoint.tree_size == before.tree_size + 2
    events = list(admin.iter_audit_events(after=before.tree_size))
    assert [e.action for e in events] == ["key.rotated", "key.registered"]
    assert events[0].details == {
        "old_kid": old_kid,
        "new_kid": rotation.current.kid,
        "jwk": rotation.current.jwk,
        "vkey": new_key.vkey,
    }
    proof = [bytes.fromhex(s) for s in admin.consistency_proof(before.tree_size, body.size).proof]
    rfc9162.verify_consistency(
        before.tree_size, body.size, bytes.fromhex(before.root), body.root, proof
    )

    review = team["approved_document"](b"after the rotation")
    [decision] = review.decisions
    assert verify_detached(decision.signature, decision.payload.encode(), rotation.current.jwk)
    assert not verify_detached(decision.signature, decision.payload.encode(), rotation.retired.jwk)
    later = admin.make_checkpoint()
    assert later.kid == rotation.current.kid
    assert open_note(later.note, [old_key, new_key]).verified == (new_key,)

    # The new key is the one in the key file: a restarted server signs with it.
    with TestClient(create_app(settings)) as restarted:
        assert restarted.app.state.signer.kid == rotation.current.kid
    assert not list(settings.resolved_signing_key_file.parent.glob("*.next-*"))


def test_a_rotation_interrupted_before_its_key_file_was_renamed_is_finished_at_start(
    app, admin, settings, trail
):
    key_file = settings.resolved_signing_key_file
    old_text = key_file.read_text()
    rotation = admin.rotate_key()
    new_text = key_file.read_text()
    # As if the process died after the commit, before renaming the pending file.
    pending = key_file.with_name(f"{key_file.name}.next-{rotation.current.kid}")
    pending.write_text(new_text)
    key_file.write_text(old_text)
    with TestClient(create_app(settings)) as restarted:
        assert restarted.app.state.signer.kid == rotation.current.kid
        signed = restarted.post(
            "/api/v1/audit/checkpoints", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
    assert signed.status_code == 200, signed.text
    assert not pending.exists()
    assert load_private_key(key_file.read_text()).thumbprint() == rotation.current.kid


def test_a_pending_key_never_committed_is_not_adopted(app, settings, trail):
    key_file = settings.resolved_signing_key_file
    stray = key_file.with_name(f"{key_file.name}.next-unused")
    stray.write_text(private_key_text(generate_key()))
    kid = app.state.signer.kid
    with TestClient(create_app(settings)) as restarted:
        assert restarted.app.state.signer.kid == kid
    with app.state.db.reading() as session:
        server_keys = session.exec(select(SigningKey).where(SigningKey.person_id.is_(None))).all()
    assert [key.kid for key in server_keys] == [kid]


# ------------------------------------------------------------------ refusals


BAD_NUMBERS = [
    ("inclusion", {"seq": 0, "tree_size": 5}, "greater than or equal to 1"),
    ("inclusion", {"seq": 6, "tree_size": 5}, "event 6 is not in the tree"),
    ("inclusion", {"seq": 1, "tree_size": 10**6}, "holds 700 events"),
    ("inclusion", {"seq": "x", "tree_size": 5}, "integer"),
    ("inclusion", {"seq": 1, "tree_size": 2**70}, "less than or equal"),
    ("inclusion", {"seq": 1}, "tree_size"),
    ("consistency", {"old_size": 9, "new_size": 5}, "cannot extend"),
    ("consistency", {"old_size": 1, "new_size": 701}, "holds 700 events"),
    ("consistency", {"old_size": -1, "new_size": 5}, "greater than or equal to 0"),
]


def test_bad_numbers_are_refused_with_a_reason(http, trail):
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for path, params, needle in BAD_NUMBERS:
        response = http.get(f"/api/v1/audit/proofs/{path}", params=params, headers=headers)
        assert response.status_code in (400, 422), (params, response.text)
        assert needle in response.text, (params, response.text)


def test_who_may_do_what(client_for, admin, team):
    paula = client_for(team["tokens"]["paula"])
    assert paula.audit_keys().keys  # anyone signed in may fetch the keys
    with pytest.raises(Forbidden):
        paula.make_checkpoint()
    with pytest.raises(Forbidden):
        paula.rotate_key()
    with pytest.raises(Forbidden):
        paula.inclusion_proof(1, 1)
    assert admin.make_checkpoint().tree_size >= 1
    assert paula.latest_checkpoint().tree_size >= 1
    with pytest.raises(Invalid):
        admin.consistency_proof(3, 2)


# ------------------------------------------------------------------ command line


@pytest.fixture
def officium(http):
    runner = CliRunner()
    app = build_app()

    def run(*args: str):
        result = runner.invoke(
            app,
            [*args, "--token", ADMIN_TOKEN],
            obj={"http_client": http},
            env={"COLUMNS": "200", "OFFICIUM_TOKEN": None, "OFFICIUM_URL": None},
        )
        assert result.exit_code == 0, result.output
        return result

    return run


def test_cli_writes_the_keys_and_the_checkpoint_an_auditor_keeps(officium, admin, trail, tmp_path):
    officium("audit", "checkpoint", "--now")
    keys_file, note_file = tmp_path / "keys.json", tmp_path / "last-seen.note"
    officium("audit", "key", "-o", str(keys_file))
    officium("audit", "checkpoint", "-o", str(note_file))
    kept = json.loads(keys_file.read_text())
    assert (kept["format"], kept["version"]) == ("officium-audit-keys", 1)
    assert kept["origin"] == admin.audit_keys().origin
    assert [k["kid"] for k in kept["keys"]] == [admin.audit_keys().keys[0].kid]
    note = note_file.read_bytes().decode("utf-8")
    assert note == admin.latest_checkpoint().note
    assert open_note(note, [NoteKey.parse(k["vkey"]) for k in kept["keys"]]).verified
    assert officium("audit", "checkpoint").stdout == note

    rotated = json.loads(officium("admin", "key", "rotate", "--json").stdout)
    assert rotated["current"]["kid"] != rotated["retired"]["kid"]
    officium("audit", "key", "-o", str(keys_file))
    assert len(json.loads(keys_file.read_text())["keys"]) == 2
    shown = json.loads(officium("audit", "checkpoint", "--json").stdout)
    assert shown["tree_size"] == rotated["checkpoint"]["tree_size"]
