"""`officium subscribe` and `officium acks`: who has seen the final version, and who not."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from clients.cli.main import build_app
from tests.conftest import ADMIN_TOKEN

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _token(http, username: str) -> str:
    http.post("/api/v1/persons", json={"username": username}, headers=ADMIN)
    return http.post("/api/v1/tokens", json={"username": username}, headers=ADMIN).json()["token"]


def _cli(http, token: str, *args: str):
    return CliRunner().invoke(
        build_app(), [*args, "--token", token, "--json"], obj={"http_client": http}
    )


def test_subscribers_and_members_are_listed_until_they_acknowledge(http, agent):
    http.post("/api/v1/offices", json={"name": "Legal"}, headers=ADMIN)
    lena, paul, otto = (_token(http, name) for name in ("lena", "paul", "otto"))
    http.post(
        "/api/v1/memberships",
        json={"username": "lena", "office": "Legal", "role": "approver"},
        headers=ADMIN,
    )
    http.post(
        "/api/v1/memberships",
        json={"username": "paul", "office": "Planning", "role": "member"},
        headers=ADMIN,
    )
    document = agent.save("plan.docx", b"v1")["document_id"]

    before = _cli(http, otto, "acks", str(document))
    assert before.exit_code == 0, before.output
    assert json.loads(before.stdout)["final"] is None

    followed = _cli(http, otto, "subscribe", str(document))
    assert followed.exit_code == 0, followed.output

    submitted = _cli(http, paul, "submit", str(document), "--to", "Legal")
    assert submitted.exit_code == 0, submitted.output
    approved = _cli(http, lena, "approve", str(document))
    assert approved.exit_code == 0, approved.output

    listing = json.loads(_cli(http, paul, "acks", str(document)).stdout)
    assert listing["final"]["number"] == 1
    assert {"otto", "paul"} <= set(listing["pending"])
    assert _cli(http, otto, "ack", str(document)).exit_code == 0
    listing = json.loads(_cli(http, paul, "acks", str(document)).stdout)
    assert "otto" not in listing["pending"]
    assert [a["username"] for a in listing["acknowledged"]] == ["otto"]
