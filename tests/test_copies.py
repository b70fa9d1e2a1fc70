"""Parallel copies: a new document whose bytes are already recorded is linked to them."""

from __future__ import annotations

from tests.conftest import ADMIN_TOKEN, sha

HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _status(http, document_id):
    return http.get(f"/api/v1/documents/{document_id}", headers=HEADERS).json()


def test_a_copy_of_a_superseded_version_says_so(http, agent):
    original = agent.save("plans/plan.docx", b"v1")["document_id"]
    agent.save("plans/plan.docx", b"v2")
    copy = agent.save("mail/plan (1).docx", b"v1")["document_id"]
    status = _status(http, copy)
    assert status["copy_of"] == {
        "document_id": original, "folder": "plans", "path": "plans/plan.docx",
        "number": 1, "is_final": False, "is_latest": False,
    }
    assert status["note"] == "copy of superseded v1 of plans:plans/plan.docx"


def test_a_copy_of_the_latest_version_is_an_exact_copy(http, agent):
    original = agent.save("plans/plan.docx", b"v1")["document_id"]
    copy = agent.save("desk/plan.docx", b"v1")["document_id"]
    assert _status(http, copy)["note"] == "exact copy of plans:plans/plan.docx v1 (latest)"
    matches = http.get(f"/api/v1/verify/{sha(b'v1')}", headers=HEADERS).json()["matches"]
    by_document = {m["document_id"]: m for m in matches}
    assert by_document[original]["note"] is None
    assert by_document[copy]["note"] == "exact copy of plans:plans/plan.docx v1 (latest)"
    history = http.get(f"/api/v1/documents/{copy}/history", headers=HEADERS).json()
    created = next(e for e in history["events"] if e["action"] == "document.created")
    assert created["details"]["copy_of"] == {"document": original, "version": 1}


def test_a_new_document_with_new_bytes_is_no_copy(http, agent):
    agent.save("plans/plan.docx", b"v1")
    other = agent.save("plans/other.docx", b"something else")["document_id"]
    status = _status(http, other)
    assert status["copy_of"] is None
    assert status["note"] is None


def test_once_the_copy_is_edited_it_is_described_by_its_own_versions(http, agent):
    agent.save("plans/plan.docx", b"v1")
    copy = agent.save("desk/plan.docx", b"v1")["document_id"]
    agent.save("desk/plan.docx", b"my own edit")
    status = _status(http, copy)
    assert status["copy_of"]["number"] == 1  # the link stays on record
    assert status["note"] is None
