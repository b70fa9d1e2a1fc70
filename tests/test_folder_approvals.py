"""Approved versions of a folder, with their git commits, for the agent to tag."""

from __future__ import annotations

from tests.conftest import ADMIN_TOKEN

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_approved_versions_are_listed_with_their_commits(http, agent):
    http.post("/api/v1/offices", json={"name": "Legal"}, headers=ADMIN)
    http.post("/api/v1/persons", json={"username": "lena"}, headers=ADMIN)
    http.post("/api/v1/memberships", json={"username": "lena", "office": "Legal",
                                           "role": "approver"}, headers=ADMIN)
    lena = {"Authorization": "Bearer " + http.post(
        "/api/v1/tokens", json={"username": "lena"}, headers=ADMIN).json()["token"]}
    entry = agent.entry("plan.docx", b"approved bytes")
    agent.upload(b"approved bytes")
    document = agent.report(entry)["results"][0]["document_id"]
    assert http.get("/api/v1/folders/plans/approvals", headers=ADMIN).json() == {
        "approvals": [], "next": None}
    http.post(f"/api/v1/documents/{document}/reviews", json={"parties": ["office:Legal"]},
              headers=ADMIN)
    decided = http.post(f"/api/v1/documents/{document}/review/decisions",
                        json={"verdict": "approve"}, headers=lena)
    assert decided.status_code == 200, decided.text
    [approval] = http.get("/api/v1/folders/plans/approvals", headers=ADMIN).json()["approvals"]
    assert (approval["document_id"], approval["number"], approval["commit"]) == (
        document, 1, entry["commit"])
    later = http.get("/api/v1/folders/plans/approvals", params={"after": approval["review_id"]},
                     headers=ADMIN).json()
    assert later["approvals"] == []
    assert http.get("/api/v1/folders/nope/approvals", headers=ADMIN).status_code == 404
