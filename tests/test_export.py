"""Exports for auditors: the bundle, the CSV sheet, the PDF certificate and the CLI.

Everything runs against the real app: a few documents with versions, a review approved
with a signed decision, a hand-over, an acknowledgement and a deletion. Each bundle is
read back the way an offline verifier would: event lines split into their exact
canonical bytes, checkpoints opened with the keys the bundle carries, inclusion and
consistency proofs checked against the pinned root with core.merkle.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from pypdf import PdfReader
from typer.testing import CliRunner

from clients.cli.main import build_app
from core import merkle
from core.bundle import FORMAT, is_event_line, split_event_line
from core.note import Checkpoint, NoteKey, open_note
from core.signatures import verify_detached
from server import certificate as certificate_module
from server import checkpoints
from server.certificate import certificate_id, printable
from tests.conftest import ADMIN_TOKEN, AgentDouble, sha

API = "/api/v1"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
V1, V2 = b"plan, first draft", b"plan, second draft"
NOTES = b"meeting notes"
BUDGET = b"budget 2025" * 100_000  # > 1 MiB: content comes in several records


def call(http, method: str, path: str, *, token: str = ADMIN_TOKEN, expect: int = 200, **kw):
    response = http.request(method, API + path, headers={"Authorization": f"Bearer {token}"}, **kw)
    assert response.status_code == expect, response.text
    return response.json() if response.content else None


@dataclass
class World:
    """The register the tests export: who did what to which document."""

    plan: int
    notes: int
    budget: int
    tokens: dict[str, str] = field(default_factory=dict)


def build_world(http, agent: AgentDouble) -> World:
    for office in ("Legal", "Works"):
        call(http, "POST", "/offices", json={"name": office}, expect=201)
    tokens = {}
    for username, name, office, role in (
        ("bob", "Bob Submitter", "Planning", "member"),
        ("carol", "Carol Jürgens", "Legal", "approver"),
        ("hank", "Hank Clerk", "Works", "member"),
    ):
        call(http, "POST", "/persons", json={"username": username, "name": name}, expect=201)
        call(
            http,
            "POST",
            "/memberships",
            json={"username": username, "office": office, "role": role},
            expect=201,
        )
        tokens[username] = call(http, "POST", "/tokens", json={"username": username}, expect=201)[
            "token"
        ]
    plan = agent.save("plan.docx", V1)["document_id"]
    agent.save("plan.docx", V2)
    call(
        http,
        "POST",
        f"/documents/{plan}/reviews",
        token=tokens["bob"],
        expect=201,
        json={"parties": ["office:Legal"]},
    )
    call(
        http,
        "POST",
        f"/documents/{plan}/review/decisions",
        token=tokens["carol"],
        json={"verdict": "approve", "comment": "good to go"},
    )
    call(http, "POST", f"/documents/{plan}/acknowledgements", token=tokens["bob"], expect=201)
    call(http, "POST", f"/documents/{plan}/owner", json={"office": "Works", "reason": "built"})
    notes = agent.save("notes.txt", NOTES)["document_id"]
    agent.report(agent.entry("notes.txt", None, kind="deleted"))
    budget = agent.save("budget.xlsx", BUDGET)["document_id"]
    return World(plan=plan, notes=notes, budget=budget, tokens=tokens)


@pytest.fixture
def world(http, agent) -> World:
    return build_world(http, agent)


def all_events(http) -> list[dict]:
    found, after = [], 0
    while True:
        page = call(http, "GET", "/audit/events", params={"after": after, "limit": 1000})
        found += page["events"]
        if page["next"] is None:
            return found
        after = page["next"]


@dataclass
class Bundle:
    """A bundle read back: its records by kind, its events' bytes, its pinned checkpoint."""

    lines: list[bytes]
    records: dict[str, list[dict]]
    events: list[tuple[str, bytes]]  # (hash, canonical), in order
    inclusions: dict[int, dict]  # seq -> inclusion record, each right after its event
    pinned: Checkpoint
    checkpoints: list[Checkpoint]


def read_bundle(data: bytes) -> Bundle:
    lines = data.splitlines(keepends=True)
    records: dict[str, list[dict]] = {}
    events: list[tuple[str, bytes]] = []
    inclusions: dict[int, dict] = {}
    previous_seq = None
    for line in lines:
        if is_event_line(line):
            digest, canonical = split_event_line(line)
            events.append((digest, canonical))
            previous_seq = orjson.loads(canonical)["seq"]
            continue
        record = orjson.loads(line)
        records.setdefault(record["record"], []).append(record)
        if record["record"] == "inclusion":
            assert record["seq"] == previous_seq, "an inclusion record follows its event"
            inclusions[record["seq"]] = record
        previous_seq = None
    keys = [NoteKey.parse(key["vkey"]) for key in records["key"]]
    opened = [open_note(record["note"], keys) for record in records["checkpoint"]]
    assert all(note.verified for note in opened)
    checkpoints = [Checkpoint.parse(note.text) for note in opened]
    return Bundle(lines, records, events, inclusions, checkpoints[-1], checkpoints)


def export(http, expect: int = 200, token: str = ADMIN_TOKEN, **params) -> httpx.Response:
    response = http.get(
        f"{API}/audit/export", params=params, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == expect, response.text
    return response


# ---------------------------------------------------------------------- bundle


def test_a_full_bundle_holds_every_event_as_stored_and_the_records_around_them(http, world):
    response = export(http)
    assert response.headers["content-type"] == "application/x-ndjson"
    assert "officium-audit-" in response.headers["content-disposition"]
    bundle = read_bundle(response.content)

    [manifest] = bundle.records["manifest"]
    assert bundle.lines[0].startswith(b'{"record":"manifest"')
    tree_size = int(response.headers["x-officium-tree-size"])
    assert (manifest["format"], manifest["scope"], manifest["filters"]) == (FORMAT, "full", {})
    assert manifest["tree_size"] == tree_size == bundle.pinned.size
    assert manifest["complete_histories"] is True
    assert manifest["origin"] == bundle.pinned.origin

    # Every event 1..tree_size, byte for byte what the server stores, nothing else.
    stored = all_events(http)[:tree_size]
    assert [(e["hash"], e["canonical"].encode()) for e in stored] == bundle.events
    assert all(hashlib.sha256(data).hexdigest() == digest for digest, data in bundle.events)
    assert merkle.root_from_leaves(data for _, data in bundle.events) == bundle.pinned.root
    assert "inclusion" not in bundle.records and "consistency" not in bundle.records

    # Versions: every one, with the bytes the store holds hashed at export time.
    versions = {(v["document"], v["number"]): v for v in bundle.records["version"]}
    assert versions.keys() == {
        (world.plan, 1),
        (world.plan, 2),
        (world.notes, 1),
        (world.budget, 1),
    }
    assert versions[world.plan, 2]["sha256"] == versions[world.plan, 2]["stored_sha256"] == sha(V2)
    assert versions[world.budget, 1]["size"] == len(BUDGET)
    assert "content" not in bundle.records

    # The decision: its payload, the server's signature over it, the key that made it.
    [decision] = bundle.records["decision"]
    payload = json.loads(decision["payload"])
    assert (decision["document"], payload["verdict"]) == (world.plan, "approve")
    assert payload["signer"]["name"] == "Carol Jürgens"
    assert "approves version 2" in payload["meaning"]
    [key] = [k for k in bundle.records["key"] if k["kid"] == decision["kid"]]
    assert verify_detached(decision["signature"], decision["payload"].encode(), key["jwk"])

    [end] = bundle.records["end"]
    assert bundle.lines[-1].startswith(b'{"record":"end"')
    assert end["events"] == len(bundle.events) == tree_size
    assert end["records"] == len(bundle.lines) - len(bundle.events) - 1


def test_a_document_bundle_proves_each_event_against_the_pinned_checkpoint(http, world, agent):
    export(http)  # pins a first checkpoint
    agent.save("plan.docx", b"plan, third draft")
    response = export(http, document=world.plan)
    bundle = read_bundle(response.content)
    [manifest] = bundle.records["manifest"]
    assert manifest["scope"] == "filtered"
    assert manifest["filters"] == {"document": world.plan}
    assert manifest["complete_histories"] is True

    expected = [e for e in all_events(http) if e["subject"].get("document") == world.plan]
    expected = [e for e in expected if e["seq"] <= bundle.pinned.size]
    assert [data for _, data in bundle.events] == [e["canonical"].encode() for e in expected]
    assert set(bundle.inclusions) == {e["seq"] for e in expected}
    for _, data in bundle.events:
        seq = orjson.loads(data)["seq"]
        proof = [bytes.fromhex(node) for node in bundle.inclusions[seq]["proof"]]
        merkle.verify_inclusion(
            seq - 1, bundle.pinned.size, merkle.leaf_hash(data), proof, bundle.pinned.root
        )

    # Each earlier checkpoint is proven a prefix of the pinned one.
    assert len(bundle.checkpoints) >= 2
    consistency = {r["old_size"]: r for r in bundle.records["consistency"]}
    for earlier in bundle.checkpoints[:-1]:
        record = consistency[earlier.size]
        merkle.verify_consistency(
            earlier.size,
            bundle.pinned.size,
            earlier.root,
            bundle.pinned.root,
            [bytes.fromhex(node) for node in record["proof"]],
        )

    assert [v["number"] for v in bundle.records["version"]] == [1, 2, 3]
    assert [d["document"] for d in bundle.records["decision"]] == [world.plan]
    [end] = bundle.records["end"]
    assert end["events"] == len(expected)


def test_an_office_bundle_holds_the_documents_it_ever_owned(http, world):
    works = read_bundle(export(http, office="Works").content)
    documents = {orjson.loads(data)["subject"]["document"] for _, data in works.events}
    assert documents == {world.plan}  # handed over to Works
    planning = read_bundle(export(http, office="Planning").content)
    documents = {orjson.loads(data)["subject"]["document"] for _, data in planning.events}
    assert documents == {world.plan, world.notes, world.budget}  # plan was Planning's before
    assert {v["document"] for v in planning.records["version"]} == documents
    assert planning.records["manifest"][0]["filters"] == {"office": "Planning"}


def test_a_time_range_cuts_histories_and_keeps_proofs(http, world, clock):
    before = datetime.now(UTC) + clock.offset
    clock.advance(hours=2)
    middle = datetime.now(UTC) + clock.offset
    call(http, "POST", f"/documents/{world.plan}/owner", json={"office": "Legal"})
    bundle = read_bundle(
        export(
            http, since=middle.isoformat(), until=(middle + timedelta(hours=1)).isoformat()
        ).content
    )
    [manifest] = bundle.records["manifest"]
    assert manifest["complete_histories"] is False
    assert set(manifest["filters"]) == {"since", "until"}
    actions = [orjson.loads(data)["action"] for _, data in bundle.events]
    # (reads of evidence are sealed by access.logged events, at whatever time they flush)
    assert [action for action in actions if action != "access.logged"] == ["document.owner_changed"]
    assert len(bundle.inclusions) == len(bundle.events)
    old = read_bundle(export(http, until=before.isoformat()).content)
    handovers = [orjson.loads(d) for _, d in old.events]
    handovers = [e["details"]["to"] for e in handovers if e["action"] == "document.owner_changed"]
    assert handovers == ["Works"]  # the one to Legal came two hours later


def test_content_records_carry_each_versions_bytes(http, world):
    bundle = read_bundle(export(http, document=world.budget, content="true").content)
    records = bundle.records["content"]
    assert len(records) > 1
    assert all(len(record["data"]) <= 1024 * 1024 for record in records)
    assert [r["offset"] for r in records] == sorted(r["offset"] for r in records)
    assert b"".join(base64.b64decode(record["data"]) for record in records) == BUDGET


def test_a_missing_or_altered_stored_object_shows_in_the_bundle(http, world, app):
    store = app.state.store
    store.path_for(sha(V1)).unlink()
    store.path_for(sha(NOTES)).write_bytes(b"tampered")
    versions = read_bundle(export(http).content).records["version"]
    by_sha = {v["sha256"]: v["stored_sha256"] for v in versions}
    assert by_sha[sha(V1)] is None
    assert by_sha[sha(NOTES)] == sha(b"tampered")
    assert by_sha[sha(V2)] == sha(V2)


# ------------------------------------------------------------------------- CSV


def test_the_csv_sheet_has_one_row_per_event(http, world):
    response = export(http, format="csv")
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8"))))
    tree_size = int(response.headers["x-officium-tree-size"])
    events = all_events(http)[:tree_size]
    assert [int(row["seq"]) for row in rows] == [e["seq"] for e in events]
    assert [row["hash"] for row in rows] == [e["hash"] for e in events]
    decided = next(row for row in rows if row["action"] == "review.decided")
    assert (decided["actor_name"], decided["actor_office"]) == ("Carol Jürgens", "Legal")
    assert json.loads(decided["details"])["verdict"] == "approve"
    recorded = [row for row in rows if row["action"] == "version.recorded"]
    assert [(r["path"], r["version"], r["sha256"]) for r in recorded[:2]] == [
        ("plan.docx", "1", sha(V1)),
        ("plan.docx", "2", sha(V2)),
    ]
    only_plan = list(
        csv.DictReader(
            io.StringIO(export(http, format="csv", document=world.plan).content.decode())
        )
    )
    assert {row["document_id"] for row in only_plan} == {str(world.plan)}


# ------------------------------------------------------------------- certificate


def pdf_text(data: bytes) -> str:
    """The PDF's text with line breaks folded to spaces (a long line wraps at a space)."""
    pages = PdfReader(io.BytesIO(data)).pages
    return " ".join(" ".join(page.extract_text() for page in pages).split())


def test_the_certificate_prints_what_it_rests_on(http, world):
    response = http.get(f"{API}/documents/{world.plan}/certificate", headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    checkpoint = call(http, "GET", "/audit/checkpoint")
    text = pdf_text(response.content)
    assert "Certificate of completion" in text
    assert f"Certificate ID: {certificate_id(world.plan, checkpoint['root'])}" in text
    assert f"Verified against checkpoint {checkpoint['tree_size']}" in text
    assert f"Tree size: {checkpoint['tree_size']}" in text
    assert checkpoint["root"] in text
    for data in (V1, V2):
        assert sha(data) in text
    assert "Approved by Carol Jürgens, Legal" in text
    assert "Carol Jürgens approves version 2 of plans:plan.docx" in text
    assert "Works" in text and "Planning" in text  # owners over time
    assert "Bob Submitter acknowledged version 2" in text
    assert f"officium audit export --document {world.plan} --format bundle" in text


def test_a_deleted_documents_certificate_says_so(client_for, world):
    reader = client_for(world.tokens["hank"])  # anyone who may read the document
    text = pdf_text(reader.certificate(world.notes))
    assert sha(NOTES) in text
    assert "deleted" in text and "No review was submitted." in text


def test_text_outside_the_core_fonts_is_transliterated_not_refused():
    assert printable("Jürgens Straße café") == "Jürgens Straße café"
    assert printable("Łódź Dvořák 東京") == "?ódz Dvorák ??"


def _unicode_font() -> Path | None:
    """A TrueType font of this machine with Latin Extended letters, found by fontconfig."""
    try:
        found = subprocess.run(
            ["fc-match", "-f", "%{file}", "DejaVu Sans:style=Book"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    except OSError:
        return None
    return Path(found) if found.endswith(".ttf") and Path(found).is_file() else None


def test_with_a_truetype_font_names_print_as_written(app, world):
    font = _unicode_font()
    if font is None:
        pytest.skip("no TrueType font on this machine (fontconfig's DejaVu Sans)")
    state = app.state
    pinned = checkpoints.pin(state.db, state.signer, state.settings, now=datetime.now(UTC))
    with state.db.reading() as session:
        data = certificate_module.certificate_pdf(
            session,
            document_id=world.plan,
            checkpoint=pinned,
            origin="officium/test",
            now=datetime.now(UTC),
            font=font,
        )
        text = pdf_text(data)
    assert "Carol Jürgens" in text and pinned.root in text
    page = certificate_module._Page("footer", font=font, bold=None)
    assert page.shown("Łódź: Dvořák, 東京") == "Łódź: Dvořák, ??"


def test_a_font_that_cannot_be_read_falls_back_to_the_core_fonts(tmp_path):
    broken = tmp_path / "broken.ttf"
    broken.write_bytes(b"not a font")
    page = certificate_module._Page("footer", font=broken, bold=None)
    assert page.body == "Helvetica"
    assert page.shown("Łódź") == "?ódz"


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    ("params", "status", "says"),
    [
        ({"document": 999_999}, 404, "no document with id 999999"),
        ({"office": "Nowhere"}, 404, "no office named 'Nowhere'"),
        ({"since": "2030-01-02T00:00:00Z", "until": "2030-01-01T00:00:00Z"}, 422, "before"),
        ({"format": "xml"}, 422, "format"),
        ({"since": "yesterday"}, 422, "since"),
        ({"document": "abc"}, 422, "document"),
    ],
)
def test_bad_filters_are_refused_with_a_reason(http, world, params, status, says):
    response = export(http, expect=status, **params)
    assert response.headers["content-type"].startswith("application/problem+json")
    assert says in response.json()["detail"]


def test_only_auditors_export_and_unknown_documents_have_no_certificate(http, world):
    response = export(http, expect=403, token=world.tokens["hank"])
    assert "auditor" in response.json()["detail"]
    missing = http.get(f"{API}/documents/999999/certificate", headers=ADMIN)
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")


# -------------------------------------------------------------------------- CLI


@pytest.fixture
def live_world(live_server) -> World:
    with httpx.Client(base_url=live_server) as http:
        call(http, "POST", "/offices", json={"name": "Planning"}, expect=201)
        call(
            http,
            "POST",
            "/folders",
            expect=201,
            json={"name": "plans", "root": "/srv/share/plans", "default_owner": "Planning"},
        )
        token = call(http, "POST", "/tokens", json={"folder": "plans"}, expect=201)["token"]
        yield build_world(http, AgentDouble(http, token, "plans"))


def officium(live_server, *args: str):
    return CliRunner().invoke(
        build_app(),
        [*args, "--server", live_server, "--token", ADMIN_TOKEN],
        env={"OFFICIUM_TOKEN": None, "OFFICIUM_URL": None, "COLUMNS": "200"},
    )


def test_the_cli_writes_each_format(live_server, live_world, tmp_path):
    bundle_file, csv_file, pdf_file = (tmp_path / name for name in ("t.jsonl", "t.csv", "c.pdf"))
    done = officium(live_server, "audit", "export", "-o", str(bundle_file), "--json")
    assert done.exit_code == 0, done.output
    written = json.loads(done.stdout)
    data = bundle_file.read_bytes()
    assert (written["size"], written["sha256"]) == (len(data), sha(data))
    bundle = read_bundle(data)
    assert bundle.records["end"][0]["events"] == bundle.pinned.size

    done = officium(
        live_server,
        "audit",
        "export",
        "--format",
        "csv",
        "-o",
        str(csv_file),
        "--document",
        "plans:plan.docx",
    )
    assert done.exit_code == 0, done.output
    assert "audit csv written to" in done.stdout
    rows = list(csv.DictReader(io.StringIO(csv_file.read_text(encoding="utf-8"))))
    assert rows and {row["document_id"] for row in rows} == {str(live_world.plan)}

    done = officium(
        live_server,
        "audit",
        "export",
        "--format",
        "pdf",
        "-o",
        str(pdf_file),
        "--document",
        str(live_world.plan),
    )
    assert done.exit_code == 0, done.output
    assert sha(V2) in pdf_text(pdf_file.read_bytes())

    since = officium(
        live_server,
        "audit",
        "export",
        "-o",
        str(tmp_path / "day.jsonl"),
        "--since",
        "2000-01-01",
        "--until",
        "2000-01-31",
        "--with-content",
    )
    assert since.exit_code == 0, since.output
    empty = read_bundle((tmp_path / "day.jsonl").read_bytes())
    assert empty.events == [] and empty.records["end"][0]["events"] == 0
    assert empty.records["manifest"][0]["filters"]["until"].startswith("2000-02-01")


def test_the_cli_refuses_bad_requests_and_leaves_no_file(live_server, live_world, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    target = out / "out.pdf"
    done = officium(live_server, "audit", "export", "--format", "pdf", "-o", str(target))
    assert done.exit_code == 1
    assert "--document" in done.stderr
    done = officium(live_server, "audit", "export", "-o", str(target), "--office", "Nowhere")
    assert done.exit_code == 1
    assert "no office named 'Nowhere'" in done.stderr
    done = officium(live_server, "audit", "export", "-o", str(target), "--since", "soon")
    assert done.exit_code == 1
    assert "--since 'soon'" in done.stderr
    assert list(out.iterdir()) == []
