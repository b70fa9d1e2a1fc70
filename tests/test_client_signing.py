"""Client-side signing: a person signs the exact decision payload with their own key."""

from __future__ import annotations

import pytest

from core.signatures import generate_key, public_jwk, sign_detached, verify_detached
from tests.conftest import ADMIN_TOKEN

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def review(http, agent):
    """Document 'plan.docx' under review by office Legal, whose approver is 'lena'."""
    for body in ({"name": "Legal"},):
        assert http.post("/api/v1/offices", json=body, headers=ADMIN).status_code == 201
    for username in ("lena", "sam"):
        http.post("/api/v1/persons", json={"username": username}, headers=ADMIN)
    http.post("/api/v1/memberships", json={"username": "lena", "office": "Legal",
                                           "role": "approver"}, headers=ADMIN)
    http.post("/api/v1/memberships", json={"username": "sam", "office": "Planning",
                                           "role": "member"}, headers=ADMIN)
    tokens = {
        u: http.post("/api/v1/tokens", json={"username": u}, headers=ADMIN).json()["token"]
        for u in ("lena", "sam")
    }
    document = agent.save("plan.docx", b"the plan")["document_id"]
    response = http.post(
        f"/api/v1/documents/{document}/reviews",
        json={"parties": ["office:Legal"]},
        headers={"Authorization": f"Bearer {tokens['sam']}"},
    )
    assert response.status_code == 201, response.text
    return document, {"Authorization": f"Bearer {tokens['lena']}"}


def _draft(http, document, headers, verdict="approve"):
    response = http.get(
        f"/api/v1/documents/{document}/review/decision-payload",
        params={"verdict": verdict}, headers=headers,
    )
    assert response.status_code == 200, response.text
    return response.json()["payload"]


def test_a_decision_signed_by_the_approver_is_recorded_with_both_signatures(http, review):
    document, lena = review
    key = generate_key()
    registered = http.post("/api/v1/me/keys", json={"jwk": public_jwk(key)}, headers=lena)
    assert registered.status_code == 201, registered.text
    payload = _draft(http, document, lena)
    signature = sign_detached(payload.encode(), key)
    response = http.post(
        f"/api/v1/documents/{document}/review/decisions",
        json={"verdict": "approve", "payload": payload, "signature": signature},
        headers=lena,
    )
    assert response.status_code == 200, response.text
    [decision] = response.json()["decisions"]
    assert decision["payload"] == payload
    assert decision["client_signature"] == signature
    assert verify_detached(decision["client_signature"], payload.encode(), public_jwk(key))
    keys = http.get("/api/v1/keys", headers=lena).json()["keys"]
    server_jwk = next(k["jwk"] for k in keys if k["username"] is None)
    assert verify_detached(decision["signature"], payload.encode(), server_jwk)
    assert http.get(f"/api/v1/documents/{document}", headers=lena).json()["state"] == "approved"


def test_a_bad_client_signature_is_refused_and_nothing_is_recorded(http, review):
    document, lena = review
    http.post("/api/v1/me/keys", json={"jwk": public_jwk(generate_key())}, headers=lena)
    payload = _draft(http, document, lena)
    forged = sign_detached(payload.encode(), generate_key())  # not lena's registered key
    response = http.post(
        f"/api/v1/documents/{document}/review/decisions",
        json={"verdict": "approve", "payload": payload, "signature": forged},
        headers=lena,
    )
    assert response.status_code == 422
    assert "does not verify" in response.json()["detail"]
    status = http.get(f"/api/v1/documents/{document}", headers=lena).json()
    assert status["state"] == "in_review"


def test_a_payload_edited_before_signing_is_refused(http, review):
    document, lena = review
    key = generate_key()
    http.post("/api/v1/me/keys", json={"jwk": public_jwk(key)}, headers=lena)
    payload = _draft(http, document, lena).replace('"version":1', '"version":2')
    response = http.post(
        f"/api/v1/documents/{document}/review/decisions",
        json={"verdict": "approve", "payload": payload,
              "signature": sign_detached(payload.encode(), key)},
        headers=lena,
    )
    assert response.status_code == 422
    assert "not the one this decision would carry" in response.json()["detail"]


def test_signing_without_a_registered_key_is_refused(http, review):
    document, lena = review
    payload = _draft(http, document, lena)
    response = http.post(
        f"/api/v1/documents/{document}/review/decisions",
        json={"verdict": "approve", "payload": payload,
              "signature": sign_detached(payload.encode(), generate_key())},
        headers=lena,
    )
    assert response.status_code == 422
    assert "no registered public key" in response.json()["detail"]


def test_a_private_key_is_never_accepted_as_a_public_key(http, review):
    _, lena = review
    private = generate_key().as_dict(private=True)
    response = http.post("/api/v1/me/keys", json={"jwk": private}, headers=lena)
    assert response.status_code == 422


def test_a_subscriber_is_asked_to_acknowledge_the_final_version(http, review):
    document, lena = review
    outsider = http.post("/api/v1/persons", json={"username": "otto"}, headers=ADMIN)
    assert outsider.status_code == 201
    otto = {"Authorization": "Bearer " + http.post(
        "/api/v1/tokens", json={"username": "otto"}, headers=ADMIN).json()["token"]}
    subscribed = http.post(f"/api/v1/documents/{document}/subscribers", headers=otto)
    assert subscribed.status_code == 201, subscribed.text
    again = http.post(f"/api/v1/documents/{document}/subscribers", headers=otto)
    assert again.status_code == 201  # following twice changes nothing
    decided = http.post(f"/api/v1/documents/{document}/review/decisions",
                        json={"verdict": "approve"}, headers=lena)
    assert decided.status_code == 200, decided.text
    acks = http.get(f"/api/v1/documents/{document}/acknowledgements", headers=otto).json()
    assert "otto" in acks["pending"]
    inbox = http.get("/api/v1/inbox", headers=otto).json()["items"]
    assert [(i["document_id"], i["action"]) for i in inbox] == [
        (document, "acknowledge final v1")]
    http.post(f"/api/v1/documents/{document}/acknowledgements", headers=otto)
    acks = http.get(f"/api/v1/documents/{document}/acknowledgements", headers=otto).json()
    assert "otto" not in acks["pending"]
    assert [a["username"] for a in acks["acknowledged"]] == ["otto"]
    events = http.get(f"/api/v1/documents/{document}/history", headers=otto).json()["events"]
    assert [e["action"] for e in events].count("document.subscribed") == 1
