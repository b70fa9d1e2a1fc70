"""The offline verifier against bundles built from the core pieces, and the tamper suite.

Every way of altering an exported trail is caught, each with its own exit code; a clean
bundle, a key rotation announced by the old key and a filtered bundle with inclusion
proofs verify.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
import pytest
import rfc8785
from typer.testing import CliRunner

from clients.cli.main import build_app
from core import verify
from core.bundle import record_line, split_event_line
from core.canonical import canonical_bytes, is_canonical
from core.note import Checkpoint, open_note
from core.signatures import generate_key, sign_detached, verify_detached
from core.verify import (
    ExitCode,
    KeyFile,
    KeyFileError,
    Report,
    _DetachedSignatures,
    is_canonical_event,
    verify_bundle,
    verify_file,
)
from tests.bundles import (
    ALICE,
    BOB,
    CheckpointSpec,
    ServerKey,
    Trail,
    bundle_lines,
    keyfile,
    next_key,
    seal_all,
    story,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def trail() -> Trail:
    return story()


def sizes(trail: Trail) -> list[int]:
    return [10, 20, len(trail.bodies)]


def check(lines, trail: Trail, *, keys: bytes | None = None, last_seen: str | None = None):
    """The report of one pass, after checking that two processes report the same fault."""
    keys_ = KeyFile.parse(keys or keyfile(trail.server))
    lines = list(lines)
    single = verify_bundle(lines, keys_, last_seen)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "bundle.jsonl"
        path.write_bytes(b"".join(lines))
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(verify, "_PARALLEL_MIN_BYTES", 0)
            double = verify_file(path, keys_, last_seen, processes=2)
    fault = ("code", "reason", "seq", "checkpoint_size", "document", "version")
    assert [getattr(double, f) for f in fault] == [getattr(single, f) for f in fault]
    return single


def event_index(lines: list[bytes], seq: int) -> int:
    for index, line in enumerate(lines):
        if line.startswith(b'{"hash":"') and orjson.loads(split_event_line(line)[1])["seq"] == seq:
            return index
    raise LookupError(seq)


def seq_of(trail: Trail, action: str, nth: int = 0) -> int:
    return [i for i, body in enumerate(trail.bodies, 1) if body["action"] == action][nth]


def edited_trail(trail: Trail, seq: int, edit) -> Trail:
    """A copy of the trail whose event ``seq`` went through ``edit(body)``."""
    copy = Trail(trail.server)
    copy.contents, copy.decisions = dict(trail.contents), list(trail.decisions)
    copy.bodies = [json.loads(json.dumps(b, default=str)) for b in trail.bodies]
    for original, body in zip(trail.bodies, copy.bodies, strict=True):
        body["time"] = original["time"]
    edit(copy.bodies[seq - 1])
    return copy


# ---------------------------------------------------------------- clean bundles


def test_a_clean_full_bundle_verifies(trail):
    bundle = bundle_lines(trail, checkpoints=sizes(trail), with_content=True)
    report = check(bundle.lines, trail)
    assert report.ok, report.reason
    assert (report.events, report.checkpoints, report.decisions, report.versions) == (
        len(trail.bodies),
        3,
        3,
        5,
    )
    assert report.tree_size == len(trail.bodies)
    assert report.root == bundle.roots[len(trail.bodies)]
    assert report.as_dict()["failure"] is None


def test_a_key_rotation_announced_by_the_old_key_is_followed(trail):
    old, new = trail.server, ServerKey()
    checkpoints = [
        CheckpointSpec(10),
        CheckpointSpec(20, signers=(old, new), extensions=(next_key(new),)),
        CheckpointSpec(len(trail.bodies), signers=(new,)),
    ]
    bundle = bundle_lines(trail, checkpoints=checkpoints, keys=[old, new])
    assert check(bundle.lines, trail, keys=keyfile(old)).ok
    # The same new key, never announced: the old key file cannot trust it.
    unannounced = [*checkpoints[:1], CheckpointSpec(20), checkpoints[2]]
    bundle = bundle_lines(trail, checkpoints=unannounced, keys=[old, new])
    report = check(bundle.lines, trail, keys=keyfile(old))
    assert report.code is ExitCode.unknown_key
    assert report.checkpoint_size == len(trail.bodies)


def test_a_filtered_bundle_verifies_by_its_proofs(trail):
    bundle = bundle_lines(trail, checkpoints=sizes(trail), documents={1})
    report = check(bundle.lines, trail)
    assert report.ok, report.reason
    expected = sum(1 for b in trail.bodies if b["subject"].get("document") == 1)
    assert (report.events, report.decisions, report.scope) == (expected, 2, "filtered")


def test_a_bad_inclusion_proof_fails(trail):
    lines = bundle_lines(trail, checkpoints=sizes(trail), documents={1}).lines
    index = next(i for i, line in enumerate(lines) if b'"record":"inclusion"' in line)
    record = orjson.loads(lines[index])
    record["proof"][0] = "00" * 32
    lines[index] = record_line(record)
    report = check(lines, trail)
    assert report.code is ExitCode.proof
    assert report.seq == record["seq"]


def test_a_missing_consistency_proof_fails(trail):
    lines = [
        line
        for line in bundle_lines(trail, checkpoints=sizes(trail), documents={2}).lines
        if b'"record":"consistency","old_size":10' not in line
    ]
    assert check(lines, trail).code is ExitCode.proof


# ---------------------------------------------------------------- the tamper suite


def test_an_edited_event_fails_its_hash(trail):
    lines = bundle_lines(trail, checkpoints=sizes(trail)).lines
    seq = seq_of(trail, "review.decided", 1)
    index = event_index(lines, seq)
    lines[index] = lines[index].replace(b'"verdict":"approve"', b'"verdict":"reject"')
    report = check(lines, trail)
    assert (report.code, report.seq) == (ExitCode.event_hash, seq)


def test_an_edit_with_every_hash_recomputed_is_caught_by_the_signed_checkpoint(trail):
    seq = seq_of(trail, "document.created", 1)  # 23: between the checkpoints 20 and 34
    original = bundle_lines(trail, checkpoints=sizes(trail))
    forged = edited_trail(trail, seq, lambda body: body["details"].update(path="elsewhere.odt"))
    lines = bundle_lines(forged, checkpoints=sizes(trail)).lines
    signed = {i: line for i, line in enumerate(original.lines) if b'"checkpoint"' in line}
    for index, line in signed.items():  # the attacker cannot sign: the old notes stay
        lines[index] = line
    report = check(lines, trail)
    assert report.code is ExitCode.root_mismatch
    assert report.checkpoint_size == len(trail.bodies) and "21.." in report.reason


def test_a_deleted_event_is_missing(trail):
    lines = bundle_lines(trail, checkpoints=sizes(trail)).lines
    del lines[event_index(lines, 15)]
    report = check(lines, trail)
    assert (report.code, report.seq) == (ExitCode.event_missing, 15)


def test_reordered_events_are_out_of_order(trail):
    lines = bundle_lines(trail, checkpoints=sizes(trail)).lines
    first, second = event_index(lines, 15), event_index(lines, 16)
    lines[first], lines[second] = lines[second], lines[first]
    report = check(lines, trail)
    assert (report.code, report.seq) == (ExitCode.out_of_order, 15)


def test_a_broken_link_is_caught(trail):
    def unlinked(seq, body):
        if seq == 12:
            return canonical_bytes({**body, "prev": "ab" * 32})
        return None

    lines = bundle_lines(
        trail, checkpoints=sizes(trail), events=seal_all(trail.bodies, encode=unlinked)
    ).lines
    report = check(lines, trail)
    assert (report.code, report.seq) == (ExitCode.broken_link, 12)


def test_a_truncated_tail_re_signed_by_the_key_holder_is_caught_only_with_last_seen(trail):
    saved = bundle_lines(trail, checkpoints=sizes(trail)).notes[len(trail.bodies)]
    truncated = bundle_lines(trail, checkpoints=[10, 20, 30]).lines
    assert check(truncated, trail).ok  # consistent in itself: the key holder re-signed it
    report = check(truncated, trail, last_seen=saved)
    assert report.code is ExitCode.last_seen
    assert report.checkpoint_size == len(trail.bodies)


def test_history_rewritten_and_re_signed_differs_from_the_last_seen_checkpoint(trail):
    saved = bundle_lines(trail, checkpoints=[10, 25, len(trail.bodies)]).notes[25]
    forged = edited_trail(trail, 22, lambda body: body["details"].update(path="x.odt"))
    lines = bundle_lines(forged, checkpoints=sizes(trail)).lines
    assert check(lines, trail).ok
    report = check(lines, trail, last_seen=saved)
    assert (report.code, report.checkpoint_size) == (ExitCode.last_seen, 25)
    # A filtered bundle needs the consistency proof from the saved size to show it.
    filtered = bundle_lines(trail, checkpoints=[10, 25, len(trail.bodies)], documents={1})
    assert check(filtered.lines, trail, last_seen=saved).ok
    forged_filtered = bundle_lines(forged, checkpoints=[10, 25, 34], documents={1}).lines
    assert check(forged_filtered, trail, last_seen=saved).code is ExitCode.last_seen


def test_an_edited_checkpoint_fails_its_signature(trail):
    lines = bundle_lines(trail, checkpoints=sizes(trail)).lines
    index = next(i for i, line in enumerate(lines) if b'"record":"checkpoint"' in line)
    note = orjson.loads(lines[index])["note"]
    body = Checkpoint.parse(open_note(note, []).text)
    lines[index] = record_line({"record": "checkpoint", "note": note.replace("\n10\n", "\n11\n")})
    assert body.size == 10
    assert check(lines, trail).code is ExitCode.checkpoint_signature


def test_a_decision_moved_to_another_version_fails_its_binding():
    trail = Trail(ServerKey())
    trail.bootstrap()
    trail.create_document(1, "plans/doc-1.odt")
    trail.record_version(1, b"the version that was approved\n")
    trail.record_version(1, b"the version someone wants approved\n")
    trail.submit(1, 1, version=2, parties=["office:Legal"])
    trail.decide(1, 1, version=2, payload_version=1, person=BOB, party="office:Legal")
    trail.conclude(1, 1, "approved", version=2)
    report = check(bundle_lines(trail).lines, trail)
    assert report.code is ExitCode.decision
    assert (report.seq, report.document, report.version) == (len(trail.bodies) - 1, 1, 2)
    assert "moved" in report.reason


def test_a_forged_decision_signature_fails(trail):
    lines = bundle_lines(trail, checkpoints=sizes(trail)).lines
    index = next(i for i, line in enumerate(lines) if b'"record":"decision"' in line)
    record = orjson.loads(lines[index])
    payload = record["payload"].replace("Bob Durand", "Robert Durand").encode()
    record["payload"] = payload.decode()
    lines[index] = record_line(record)
    assert check(lines, trail).code is ExitCode.decision


def test_content_swapped_in_the_store_after_approval(trail):
    bundle = bundle_lines(trail, checkpoints=sizes(trail), store={(1, 2): b"not what was approved"})
    report = check(bundle.lines, trail)
    assert (report.code, report.document, report.version) == (ExitCode.content, 1, 2)


def test_content_chunks_that_differ_from_the_recorded_hash(trail):
    lines = bundle_lines(trail, checkpoints=sizes(trail), with_content=True).lines
    index = next(
        i
        for i, line in enumerate(lines)
        if b'"record":"content","document":1,"number":2,"offset":256' in line
    )
    record = orjson.loads(lines[index])
    data = bytearray(base64.b64decode(record["data"]))
    data[0] ^= 1
    record["data"] = base64.b64encode(bytes(data)).decode()
    lines[index] = record_line(record)
    report = check(lines, trail)
    assert (report.code, report.document, report.version) == (ExitCode.content, 1, 2)


def test_a_version_record_that_is_not_its_event(trail):
    lines = bundle_lines(trail, checkpoints=sizes(trail)).lines
    index = next(i for i, line in enumerate(lines) if b'"record":"version"' in line)
    record = orjson.loads(lines[index])
    record["sha256"] = record["stored_sha256"] = "ab" * 32
    lines[index] = record_line(record)
    assert check(lines, trail).code is ExitCode.content


def test_a_non_canonical_event_with_hashes_recomputed(trail):
    def spaced(seq, body):
        return json.dumps(body, sort_keys=True).encode() if seq == 12 else None

    events = seal_all(trail.bodies, encode=spaced)
    report = check(bundle_lines(trail, checkpoints=sizes(trail), events=events).lines, trail)
    assert (report.code, report.seq) == (ExitCode.not_canonical, 12)


def test_a_bundle_signed_by_an_unknown_key(trail):
    bundle = bundle_lines(trail, checkpoints=sizes(trail))
    report = check(bundle.lines, trail, keys=keyfile(ServerKey()))
    assert (report.code, report.checkpoint_size) == (ExitCode.unknown_key, 10)


@pytest.mark.parametrize("cut", ["end record", "mid-line", "records"])
def test_a_cut_off_bundle(trail, cut):
    lines = bundle_lines(trail, checkpoints=sizes(trail)).lines
    if cut == "end record":
        lines = lines[:-1]
    elif cut == "mid-line":
        index = event_index(lines, 20)
        lines = [*lines[:index], lines[index][:50]]
    else:
        lines = [*lines[:-2], lines[-1]]  # a decision record lost, the end record kept
    assert check(lines, trail).code is ExitCode.cut_off


def test_a_decision_after_withdrawal_breaks_the_state_machine():
    trail = Trail(ServerKey())
    trail.bootstrap()
    trail.create_document(1, "plans/doc-1.odt")
    trail.record_version(1, b"a plan\n")
    trail.submit(1, 1, version=1, parties=["office:Legal"])
    trail.withdraw(1, 1, version=1)
    trail.decide(1, 1, version=1, person=BOB, party="office:Legal")  # re-hashed, re-signed
    report = check(bundle_lines(trail).lines, trail)
    assert (report.code, report.seq) == (ExitCode.state_machine, len(trail.bodies))
    assert "withdrawn" in report.reason


@pytest.mark.parametrize(
    "case",
    [
        "approved without enough approvals",
        "acknowledged before approval",
        "version skipped",
        "submitter decides",
        "review of a deleted document",
    ],
)
def test_the_state_machine_refuses(case):
    trail = Trail(ServerKey())
    trail.bootstrap()
    trail.create_document(1, "plans/doc-1.odt")
    trail.record_version(1, b"a plan\n")
    if case == "approved without enough approvals":
        trail.submit(1, 1, version=1, parties=["office:Legal", "office:Finance"])
        trail.decide(1, 1, version=1, person=BOB, party="office:Legal")
        trail.conclude(1, 1, "approved", version=1)
    elif case == "acknowledged before approval":
        trail.acknowledge(1, ALICE, version=1)
    elif case == "version skipped":
        trail._latest[1] += 1
        trail.record_version(1, b"a plan, v3\n")
    elif case == "submitter decides":
        trail.submit(1, 1, version=1, parties=["office:Legal"], by=BOB)
        trail.decide(1, 1, version=1, person=BOB, party="office:Legal")
    else:
        trail.delete(1)
        trail.submit(1, 1, version=1, parties=["office:Legal"])
    trail.decisions.clear()  # the trail's events alone are at fault
    report = check(bundle_lines(trail, decisions=[]).lines, trail)
    assert (report.code, report.seq) == (ExitCode.state_machine, len(trail.bodies))


def test_an_unreadable_key_file_is_refused():
    with pytest.raises(KeyFileError):
        KeyFile.parse(b'{"format": "something else"}')
    assert Report.unreadable("x").code is ExitCode.malformed


# ---------------------------------------------------------------- the fast paths are exact

_TRICKY = [
    b'{"a":1}',
    b'{"a":1.0}',
    b'{"a":1.5}',
    b'{"a":1e21}',
    b'{"a":[1,2.5]}',
    b'{"a":-0}',
    b'{"a":9007199254740991}',
    b'{"a":9007199254740992}',
    b'{"a":18446744073709551616}',
    b'{"b":1,"a":2}',
    b'{"a":"\\u00e9"}',
    '{"a":"é"}'.encode(),
    b'{"a":"\\u001f"}',
    b'{"a":"\\u001F"}',
    b'{"a":"\\/"}',
    b'{"a" :1}',
    b'{"a":1,"a":1}',
    b'{"\xef\xbf\xbf":1,"\xf0\x9f\x98\x80":2}',
    b'{"\xf0\x9f\x98\x80":2,"\xef\xbf\xbf":1}',
    b'{"a":"\\ud83d\\ude00"}',
    b'{"a":true,"b":null}',
    b'{"a":{"c":[{"d":0.1}]}}',
    b'{"a":100}',
    b'{"a":1E2}',
]


@pytest.mark.parametrize("data", _TRICKY)
def test_the_fast_canonical_check_agrees_with_rfc8785(data):
    assert is_canonical_event(data, orjson.loads(data)) == is_canonical(data)


def test_orjson_escapes_every_bmp_character_as_rfc8785_does():
    # The fast path's premise: for strings without code points above U+FFFF the two
    # encoders write the same bytes (keys are strings too).
    different = [
        hex(point)
        for point in range(0x10000)
        if not 0xD800 <= point <= 0xDFFF and orjson.dumps(chr(point)) != rfc8785.dumps(chr(point))
    ]
    assert different == []


def test_orjson_sorts_bmp_keys_as_rfc8785_does():
    keys = ["a", "B", "é", "\u00ff", "\u0100", "\uffff", "\ue000", "z", "aa", "", "\u0080"]
    value = {key: index for index, key in enumerate(keys)}
    assert orjson.dumps(value, option=orjson.OPT_SORT_KEYS) == rfc8785.dumps(value)


def test_the_lean_jws_check_agrees_with_core_signatures():
    key, other = generate_key(), generate_key()
    from core.signatures import public_jwk

    payload = canonical_bytes({"type": "officium.decision", "version": 2})
    token = sign_detached(payload, key)
    checker = _DetachedSignatures()
    cases = [
        (token, payload, public_jwk(key)),
        (token, payload + b" ", public_jwk(key)),
        (token, payload, public_jwk(other)),
        (token.replace("..", ".x."), payload, public_jwk(key)),
        (token[:-4] + "AAAA", payload, public_jwk(key)),
        ("not a token", payload, public_jwk(key)),
    ]
    assert [checker.verify(*case) for case in cases] == [verify_detached(*case) for case in cases]
    assert checker.verify(token, payload, public_jwk(key))


# ---------------------------------------------------------------- the command and its shape


def test_the_command_verifies_a_bundle_file_offline(tmp_path, trail):
    bundle, keys = tmp_path / "trail.jsonl", tmp_path / "keys.json"
    bundle.write_bytes(b"".join(bundle_lines(trail, checkpoints=sizes(trail)).lines))
    keys.write_bytes(keyfile(trail.server))
    runner = CliRunner()
    app = build_app()
    result = runner.invoke(app, ["audit", "verify", str(bundle), "--key", str(keys), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["events"] == len(trail.bodies)
    lines = bundle.read_bytes().splitlines(keepends=True)
    del lines[event_index(lines, 15)]
    bundle.write_bytes(b"".join(lines))
    result = runner.invoke(app, ["audit", "verify", str(bundle), "--key", str(keys)])
    assert result.exit_code == ExitCode.event_missing == 16
    assert "event 15" in result.stdout
    result = runner.invoke(app, ["audit", "verify", str(bundle), "--key", str(tmp_path / "none")])
    assert result.exit_code == ExitCode.malformed


def test_the_command_saves_the_verified_checkpoint_for_next_time(tmp_path, trail):
    """--save-checkpoint keeps the pinned checkpoint; as --last-seen it catches a cut tail."""
    full, cut = tmp_path / "full.jsonl", tmp_path / "cut.jsonl"
    keys, saved = tmp_path / "keys.json", tmp_path / "last-seen.txt"
    full.write_bytes(b"".join(bundle_lines(trail, checkpoints=sizes(trail)).lines))
    cut.write_bytes(b"".join(bundle_lines(trail, checkpoints=[10, 20, 30]).lines))
    keys.write_bytes(keyfile(trail.server))
    runner, app = CliRunner(), build_app()
    verify_full = ["audit", "verify", str(full), "--key", str(keys)]
    result = runner.invoke(app, [*verify_full, "--save-checkpoint", str(saved)])
    assert result.exit_code == 0, result.output
    assert Checkpoint.parse(open_note(saved.read_text(), []).text).size == len(trail.bodies)
    result = runner.invoke(app, ["audit", "verify", str(cut), "--key", str(keys)])
    assert result.exit_code == 0  # consistent in itself: the key holder re-signed it
    result = runner.invoke(
        app, ["audit", "verify", str(cut), "--key", str(keys), "--last-seen", str(saved)]
    )
    assert result.exit_code == ExitCode.last_seen == 20
    # A bundle that does not verify saves nothing.
    saved.unlink()
    tampered = full.read_bytes().replace(
        b'"action":"document.created"', b'"action":"document.made"'
    )
    full.write_bytes(tampered)
    result = runner.invoke(app, [*verify_full, "--save-checkpoint", str(saved)])
    assert result.exit_code != 0 and not saved.exists()


def test_the_verifier_loads_no_server_code():
    code = (
        "import sys, core.verify, clients.cli.audit, clients.cli.main\n"
        "print(sorted(m for m in sys.modules if m == 'server' or m.startswith('server.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_every_exit_code_is_distinct_and_documented():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Verifying an audit export offline") :]
    codes = [code for code in ExitCode if code is not ExitCode.usage]
    assert len({int(code) for code in ExitCode}) == len(ExitCode)
    for code in codes:
        assert f"| {int(code)} |" in section, code


# ---------------------------------------------------------------- end to end, with the server


def _live_world(live_server: str):
    """The export tests' world (a review, a decision, a deletion) on a live server."""
    import httpx

    from tests.conftest import AgentDouble
    from tests.test_export import build_world, call

    with httpx.Client(base_url=live_server) as http:
        call(http, "POST", "/offices", json={"name": "Planning"}, expect=201)
        folder = {"name": "plans", "root": "/srv/share/plans", "default_owner": "Planning"}
        call(http, "POST", "/folders", expect=201, json=folder)
        token = call(http, "POST", "/tokens", json={"folder": "plans"}, expect=201)["token"]
        return build_world(http, AgentDouble(http, token, "plans"))


def _export_and_verify(live_server: str, bundle: Path) -> tuple[int, dict]:
    """`audit export` and `audit key` from the live server, then `audit verify` offline."""
    from tests.conftest import ADMIN_TOKEN

    runner, app_cli = CliRunner(), build_app()
    server = ["--server", live_server, "--token", ADMIN_TOKEN]
    keys = bundle.with_name("keys.json")
    for command in (["audit", "export", "-o", str(bundle)], ["audit", "key", "-o", str(keys)]):
        done = runner.invoke(app_cli, [*command, *server], env={"OFFICIUM_URL": None})
        assert done.exit_code == 0, done.output
    done = runner.invoke(app_cli, ["audit", "verify", str(bundle), "--key", str(keys), "--json"])
    return done.exit_code, json.loads(done.stdout)


def test_a_bundle_spanning_a_key_rotation_verifies_with_the_keys_saved_before_it(
    live_server, tmp_path
):
    """The old key vouches for the new one; decisions signed with either key verify."""
    import httpx

    from tests.conftest import ADMIN_TOKEN
    from tests.test_export import call

    world = _live_world(live_server)
    runner, app_cli = CliRunner(), build_app()
    server = ["--server", live_server, "--token", ADMIN_TOKEN]
    bundle, old_keys = tmp_path / "trail.jsonl", tmp_path / "keys-before.json"

    def cli(*command: str):
        done = runner.invoke(app_cli, [*command, *server], env={"OFFICIUM_URL": None})
        assert done.exit_code == 0, done.output
        return done

    cli("audit", "key", "-o", str(old_keys))
    cli("admin", "key", "rotate")
    with httpx.Client(base_url=live_server) as http:  # a decision under the new key
        review = {"parties": ["office:Legal"]}
        path = f"/documents/{world.budget}"
        call(http, "POST", f"{path}/reviews", token=world.tokens["bob"], expect=201, json=review)
        call(
            http,
            "POST",
            f"{path}/review/decisions",
            token=world.tokens["carol"],
            json={"verdict": "approve"},
        )
    cli("audit", "export", "-o", str(bundle))
    done = runner.invoke(
        app_cli, ["audit", "verify", str(bundle), "--key", str(old_keys), "--json"]
    )
    report = json.loads(done.stdout)
    assert done.exit_code == 0, report
    assert report["decisions"] == 2 and report["checkpoints"] >= 2
    kids = {
        line.get("kid")
        for line in map(orjson.loads, bundle.read_bytes().splitlines())
        if line.get("record") == "decision"
    }
    assert len(kids) == 2  # one decision under each key


def test_a_full_bundle_carries_the_access_log_and_an_altered_row_is_found(
    live_server, app, tmp_path
):
    import httpx
    import sqlalchemy as sa

    from server.models import AccessEntry
    from tests.conftest import ADMIN_TOKEN, sha
    from tests.tamper import lift_append_only_guards
    from tests.test_export import V1

    world = _live_world(live_server)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=f"{live_server}/api/v1", headers=headers) as http:
        assert http.get(f"/documents/{world.plan}/versions/1/content").content == V1
        assert http.get(f"/verify/{sha(V1)}").status_code == 200
    app.state.access_log.flush()
    bundle = tmp_path / "trail.jsonl"

    def export_and_verify() -> tuple[int, dict]:
        return _export_and_verify(live_server, bundle)

    code, report = export_and_verify()
    assert code == 0, report
    records = [orjson.loads(line) for line in bundle.read_bytes().splitlines()]
    accesses = [r for r in records if r.get("record") == "access"]
    assert {r["action"] for r in accesses} >= {"content.download", "verify.lookup"}

    with app.state.db.engine.begin() as connection:
        lift_append_only_guards(connection)
        connection.execute(
            sa.update(AccessEntry)
            .where(AccessEntry.action == "content.download")
            .values(actor_name="Someone Else")
        )
    code, report = export_and_verify()
    assert (code, report["first_failing_seq"]) == (
        ExitCode.access_log,
        accesses[0]["sealed_by_seq"],
    )
    assert "altered" in report["reason"]

    with app.state.db.engine.begin() as connection:
        lift_append_only_guards(connection)
        connection.execute(sa.delete(AccessEntry).where(AccessEntry.action == "verify.lookup"))
    code, report = export_and_verify()
    assert code == ExitCode.access_log, report


def test_a_real_export_verifies_offline_and_a_tampered_row_is_found(live_server, app, tmp_path):
    import sqlalchemy as sa

    from server.models import AuditEvent
    from tests.conftest import sha
    from tests.tamper import lift_append_only_guards
    from tests.test_export import V1

    _live_world(live_server)
    bundle = tmp_path / "trail.jsonl"

    def export_and_verify() -> tuple[int, dict]:
        return _export_and_verify(live_server, bundle)

    code, report = export_and_verify()
    assert code == 0, report
    assert report["events"] > 20 and report["decisions"] == 1 and report["scope"] == "full"

    target = next(
        orjson.loads(line[83:-2])["seq"]
        for line in bundle.read_bytes().splitlines(keepends=True)
        if line.startswith(b'{"hash":"') and b'"version.recorded"' in line
    )
    with app.state.db.engine.begin() as connection:
        row = connection.execute(
            sa.select(AuditEvent.canonical).where(AuditEvent.seq == target)
        ).one()
        forged = bytes(row[0]).replace(sha(V1).encode(), sha(b"another plan").encode())
        assert forged != bytes(row[0])
        lift_append_only_guards(connection)
        connection.execute(
            sa.update(AuditEvent).where(AuditEvent.seq == target).values(canonical=forged)
        )
    code, report = export_and_verify()
    assert (code, report["first_failing_seq"]) == (ExitCode.event_hash, target)
