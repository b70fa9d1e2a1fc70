"""Reviews through the real app: submission, decisions, policy modes, states, the final
version, separation of duties, escalation with a moved clock, signatures, the inbox,
acknowledgements and ownership hand-overs.

Every test talks HTTP to the app built by ``create_app``. Every state change is checked
by what the API answers afterwards and by the exact audit events it appended (each one
re-hashed from its canonical text); every test that uses ``trail`` ends by asking the
server to recompute the whole chain.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from starlette.testclient import TestClient

from core.canonical import canonical_bytes, is_canonical
from core.chain import format_time, verify_chain
from core.signatures import generate_key, key_id, public_jwk, sign_detached, verify_detached
from server.app import create_app
from tests.conftest import ADMIN_TOKEN, AgentDouble, sha

API = "/api/v1"

V1, V2, V3 = b"plan, first draft", b"plan, second draft", b"plan, third draft"

# Directorate is the parent of Legal and Finance; Works has no parent.
OFFICES = [("Directorate", None), ("Legal", "Directorate"), ("Finance", "Directorate"),
           ("Works", None)]

# username: (printed name, memberships). Planning (the owner of folder 'plans') comes
# from conftest. Alice and Bob are Planning members who also approve for Legal, so that
# separation of duties, not a missing role, is what refuses them.
PEOPLE = {
    "alice": ("Alice Author", [("Planning", "member"), ("Legal", "approver")]),
    "bob": ("Bob Submitter", [("Planning", "member"), ("Legal", "approver")]),
    "carol": ("Carol Legal", [("Legal", "approver")]),
    "lena": ("Lena Legal", [("Legal", "approver")]),
    "dan": ("Dan Finance", [("Finance", "approver")]),
    "erin": ("Erin Works", [("Works", "approver")]),
    "gina": ("Gina Director", [("Directorate", "approver")]),
    "hank": ("Hank Clerk", [("Legal", "member")]),
    "nora": ("Nora Named", []),
}

# The party each decider decides for (when the policy names it).
PARTY_OF = {
    "carol": "office:Legal",
    "lena": "office:Legal",
    "dan": "office:Finance",
    "erin": "office:Works",
    "nora": "person:nora",
}

THREE = ["office:Legal", "office:Finance", "office:Works"]


# ----------------------------------------------------------------- helpers


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def call(http, method: str, path: str, *, token: str = ADMIN_TOKEN, expect: int = 200, **kwargs):
    """One API call that must answer ``expect``; returns the decoded JSON body."""
    response = http.request(method, API + path, headers=bearer(token), **kwargs)
    assert response.status_code == expect, response.text
    if expect >= 400:
        assert response.headers["content-type"].startswith("application/problem+json")
    return response.json() if response.content else None


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def check_event(event: dict) -> None:
    """An event's canonical text re-hashes to its hash and holds exactly its fields."""
    data = event["canonical"].encode("utf-8")
    assert hashlib.sha256(data).hexdigest() == event["hash"]
    assert is_canonical(data)
    body = json.loads(data)
    assert body == {key: event[key] for key in
                    ("seq", "time", "actor", "action", "subject", "details", "prev")}


class Trail:
    """Reads the audit trail over HTTP; ``new`` returns what was appended since last time.

    The server publishes its signing key (``key.registered``) the first time it signs a
    decision in a database; ``new`` leaves that event out unless asked, and
    ``test_the_server_key_is_published_once`` checks it on its own.
    """

    def __init__(self, http) -> None:
        self.http = http
        self.seen = self.head()

    def head(self) -> int:
        return call(self.http, "GET", "/audit/verify")["head_seq"]

    def events(self, after: int = 0) -> list[dict]:
        found = []
        while True:
            page = call(self.http, "GET", "/audit/events", params={"after": after, "limit": 1000})
            found += page["events"]
            if page["next"] is None:
                return found
            after = page["next"]

    def new(self, *, keys: bool = False) -> list[dict]:
        events = self.events(self.seen)
        for event in events:
            check_event(event)
        if events:
            self.seen = events[-1]["seq"]
        return [e for e in events if keys or e["action"] != "key.registered"]

    def new_actions(self) -> list[str]:
        return [event["action"] for event in self.new()]

    def verify(self) -> None:
        check = call(self.http, "GET", "/audit/verify")
        assert check["ok"], check
        events = self.events()
        report = verify_chain((e["seq"], e["canonical"].encode(), e["hash"]) for e in events)
        assert report.ok
        assert (report.head_seq, report.head_hash) == (check["head_seq"], check["head_hash"])


class Desk:
    """The people of the register and the calls they make, over one HTTP client."""

    def __init__(self, http, agent: AgentDouble, tokens: dict[str, str]) -> None:
        self.http = http
        self.agent = agent
        self.tokens = {**tokens, "admin": ADMIN_TOKEN, "agent": agent.token}

    def call(self, who: str, method: str, path: str, *, expect: int = 200, **kwargs):
        return call(self.http, method, path, token=self.tokens[who], expect=expect, **kwargs)

    def save(self, path: str, data: bytes, **more) -> int:
        return self.agent.save(path, data, **more)["document_id"]

    def submit(self, who: str, doc: int, parties: list[str], *, expect: int = 201, **body):
        return self.call(who, "POST", f"/documents/{doc}/reviews", expect=expect,
                         json={"parties": parties, **body})

    def decide(self, who: str, doc: int, verdict: str = "approve", comment: str | None = None,
               *, expect: int = 200, **more):
        return self.call(who, "POST", f"/documents/{doc}/review/decisions", expect=expect,
                         json={"verdict": verdict, "comment": comment, **more})

    def withdraw(self, who: str, doc: int, *, expect: int = 200):
        return self.call(who, "POST", f"/documents/{doc}/review/withdraw", expect=expect)

    def status(self, doc: int) -> dict:
        return self.call("admin", "GET", f"/documents/{doc}")

    def reviews(self, doc: int) -> list[dict]:
        return self.call("admin", "GET", f"/documents/{doc}/reviews")["reviews"]

    def final(self, doc: int, *, expect: int = 200) -> dict:
        return self.call("admin", "GET", f"/documents/{doc}/final", expect=expect)

    def inbox(self, who: str) -> list[dict]:
        return self.call(who, "GET", "/inbox")["items"]

    def inbox_of(self, who: str, doc: int) -> list[str]:
        return [item["action"] for item in self.inbox(who) if item["document_id"] == doc]

    def ack(self, who: str, doc: int, *, expect: int = 201):
        return self.call(who, "POST", f"/documents/{doc}/acknowledgements", expect=expect)

    def acks(self, doc: int) -> dict:
        return self.call("admin", "GET", f"/documents/{doc}/acknowledgements")

    def hand_over(self, who: str, doc: int, office: str, reason: str | None = None):
        return self.call(who, "POST", f"/documents/{doc}/owner",
                         json={"office": office, "reason": reason})

    def content(self, doc: int, number: int):
        response = self.http.get(f"{API}/documents/{doc}/versions/{number}/content",
                                 headers=bearer(ADMIN_TOKEN))
        assert response.status_code == 200, response.text
        return response


def make_team(http) -> dict[str, str]:
    """Offices beside Planning and the people of PEOPLE; returns their tokens."""
    for name, parent in OFFICES:
        call(http, "POST", "/offices", json={"name": name, "parent": parent}, expect=201)
    tokens = {}
    for username, (name, grants) in PEOPLE.items():
        call(http, "POST", "/persons", json={"username": username, "name": name}, expect=201)
        for office, role in grants:
            call(http, "POST", "/memberships", expect=201,
                 json={"username": username, "office": office, "role": role})
        tokens[username] = call(http, "POST", "/tokens", json={"username": username},
                                expect=201)["token"]
    return tokens


def parties_of(items: list[dict]) -> list[str]:
    return [item["party"] for item in items]


@pytest.fixture
def desk(http, agent) -> Desk:
    return Desk(http, agent, make_team(http))


@pytest.fixture
def trail(http, desk) -> Iterator[Trail]:
    trail = Trail(http)
    yield trail
    trail.verify()


@pytest.fixture
def clocked(settings) -> Iterator[tuple[Desk, list[datetime]]]:
    """The app with a clock the test moves (``fake_now[0]``), set up like ``desk``."""
    fake_now = [datetime.now(UTC)]
    app = create_app(settings, clock=lambda: fake_now[0])
    with TestClient(app, base_url="http://testserver") as http:
        call(http, "POST", "/offices", json={"name": "Planning"}, expect=201)
        call(http, "POST", "/folders", expect=201,
             json={"name": "plans", "root": "/srv/share/plans", "default_owner": "Planning"})
        token = call(http, "POST", "/tokens", json={"folder": "plans"}, expect=201)["token"]
        yield Desk(http, AgentDouble(http, token, "plans"), make_team(http)), fake_now


# ----------------------------------------------------------------- 1. submission


def test_a_member_of_the_owner_office_submits_the_latest_version(desk, trail):
    doc = desk.save("plan.docx", V1)
    desk.save("plan.docx", V2)
    assert desk.status(doc)["state"] == "draft"
    trail.new()
    due = "2031-06-30T17:00:00Z"
    review = desk.submit("bob", doc, ["office:Legal", "person:nora"], mode="all", due=due,
                         comment="for the council on 1 July")

    assert review["document_id"] == doc
    assert review["version"] == {"number": 2, "sha256": sha(V2)}
    assert (review["pinned_is_latest"], review["state"], review["mode"]) == (True, "open", "all")
    assert review["parties"] == ["office:Legal", "person:nora"]
    assert (review["submitted_by"], review["comment"]) == ("bob", "for the council on 1 July")
    assert (review["separation_of_duties"], review["decisions"], review["concluded_at"]) == (
        True, [], None)
    assert when(review["due"]) == when(due)
    assert [(a["party"], a["action"], when(a["since"]), when(a["due"]))
            for a in review["awaiting"]] == [
        (party, "decide", when(review["submitted_at"]), when(due))
        for party in ("office:Legal", "person:nora")
    ]
    status = desk.status(doc)
    assert (status["state"], status["review_id"], status["final"]) == ("in_review", review["id"],
                                                                      None)
    assert status["awaiting"] == review["awaiting"]
    assert desk.reviews(doc) == [review]

    [event] = trail.new()
    assert event["action"] == "review.submitted"
    assert event["subject"] == {"document": doc, "folder": event["subject"]["folder"],
                                "review": review["id"]}
    assert event["details"] == {
        "version": 2, "sha256": sha(V2), "mode": "all",
        "parties": ["office:Legal", "person:nora"], "due": format_time(when(due)),
        "separation_of_duties": True, "comment": "for the council on 1 July",
    }
    assert (event["actor"]["name"], event["actor"]["office"], event["actor"]["role"]) == (
        "Bob Submitter", "Planning", "member")


def test_an_explicit_version_is_pinned_by_its_sha256(desk, trail):
    doc = desk.save("plan.docx", V1)
    desk.save("plan.docx", V2)
    trail.new()
    review = desk.submit("alice", doc, ["office:Finance"], version=1)
    assert review["version"] == {"number": 1, "sha256": sha(V1)}
    assert review["pinned_is_latest"] is False
    [event] = trail.new()
    assert (event["action"], event["details"]["version"], event["details"]["sha256"]) == (
        "review.submitted", 1, sha(V1))


def test_a_second_review_while_one_is_open_is_refused(desk, trail):
    doc = desk.save("plan.docx", V1)
    first = desk.submit("bob", doc, ["office:Legal"])
    trail.new()
    for who in ("bob", "alice", "admin"):
        refused = desk.submit(who, doc, ["office:Finance"], expect=409)
        assert f"#{first['id']}" in refused["detail"]
        assert "withdraw it first" in refused["detail"]
    assert [r["id"] for r in desk.reviews(doc)] == [first["id"]]
    assert trail.new() == []


SUBMIT_REFUSALS = {
    "an approver of another office": (
        "carol", {"parties": ["office:Legal"]}, 403,
        "only a member of the owner office 'Planning'"),
    "a member of another office": (
        "hank", {"parties": ["office:Legal"]}, 403, "'hank'"),
    "the folder's agent": ("agent", {"parties": ["office:Legal"]}, 403, "agent"),
    "an unknown office": ("bob", {"parties": ["office:Nowhere"]}, 404,
                          "office:Nowhere is not in the register"),
    "an unknown person": ("bob", {"parties": ["office:Legal", "person:zed"]}, 404,
                          "person:zed is not in the register"),
    "an unknown mode": ("bob", {"parties": ["office:Legal"], "mode": "most"}, 422,
                        "unknown approval mode 'most'"),
    "a quorum above the parties": ("bob", {"parties": THREE, "mode": "quorum:4"}, 422,
                                   "quorum:K needs 1 ≤ K ≤ number of parties"),
    "a quorum of zero": ("bob", {"parties": THREE, "mode": "quorum:0"}, 422, "quorum:K"),
    "a quorum without a count": ("bob", {"parties": THREE, "mode": "quorum"}, 422,
                                 "quorum needs a count"),
    "a quorum that is not a number": ("bob", {"parties": THREE, "mode": "quorum:two"}, 422,
                                      "whole number"),
    "a count on another mode": ("bob", {"parties": THREE, "mode": "any:2"}, 422,
                                "takes no count"),
    "no parties": ("bob", {"parties": []}, 422, "parties"),
    "a party without a kind": ("bob", {"parties": ["Legal"]}, 422, "names no party"),
    "a party of an unknown kind": ("bob", {"parties": ["team:Legal"]}, 422,
                                   "an office or a person"),
    "a party named twice": ("bob", {"parties": ["office:Legal", "office:Legal"]}, 422,
                            "named twice"),
    "a due date without a time zone": (
        "bob", {"parties": ["office:Legal"], "due": "2031-01-01T12:00:00"}, 422, "time zone"),
    "a version that does not exist": ("bob", {"parties": ["office:Legal"], "version": 3}, 404,
                                      "has no version 3"),
    "a relaxation by a non-admin": (
        "bob", {"parties": ["office:Legal"], "separation_of_duties": False}, 403,
        "only an admin may relax separation of duties"),
    "an unknown field": ("bob", {"parties": ["office:Legal"], "approvers": ["carol"]}, 422,
                         "approvers"),
}


@pytest.mark.parametrize("case", list(SUBMIT_REFUSALS), ids=list(SUBMIT_REFUSALS))
def test_a_submission_that_breaks_a_rule_is_refused_and_records_nothing(desk, trail, case):
    who, body, expect, message = SUBMIT_REFUSALS[case]
    doc = desk.save("plan.docx", V1)
    desk.save("plan.docx", V2)
    trail.new()
    refused = desk.call(who, "POST", f"/documents/{doc}/reviews", json=body, expect=expect)
    assert message in refused["detail"]
    assert desk.reviews(doc) == []
    assert desk.status(doc)["state"] == "draft"
    assert trail.new() == []


def test_a_document_without_an_owner_cannot_be_submitted(desk, trail):
    call(desk.http, "POST", "/folders", expect=201,
         json={"name": "scans", "root": "/srv/share/scans", "default_owner": None})
    token = call(desk.http, "POST", "/tokens", json={"folder": "scans"}, expect=201)["token"]
    doc = AgentDouble(desk.http, token, "scans").save("scan.pdf", V1)["document_id"]
    trail.new()
    for who in ("admin", "bob"):
        refused = desk.submit(who, doc, ["office:Legal"], expect=409)
        assert "has no owner office yet" in refused["detail"]
    assert desk.reviews(doc) == []
    assert trail.new() == []


def test_a_deleted_or_unknown_document_cannot_be_submitted(desk, trail):
    doc = desk.save("plan.docx", V1)
    desk.agent.report(desk.agent.entry("plan.docx", None, kind="deleted"))
    trail.new()
    assert "is deleted" in desk.submit("bob", doc, ["office:Legal"], expect=409)["detail"]
    assert "no document" in desk.submit("bob", 999_999, ["office:Legal"], expect=404)["detail"]
    assert trail.new() == []


# ----------------------------------------------------------------- 2. decisions


def test_an_approver_of_a_required_office_and_a_named_person_decide(desk, trail):
    doc = desk.save("plan.docx", V1)
    review = desk.submit("bob", doc, ["office:Legal", "person:nora"])
    trail.new()
    after = desk.decide("carol", doc, "approve", "reads well")
    assert after["state"] == "open"
    [carol] = after["decisions"]
    assert (carol["party"], carol["username"], carol["name"], carol["office"]) == (
        "office:Legal", "carol", "Carol Legal", "Legal")
    assert (carol["verdict"], carol["comment"], carol["client_signature"]) == (
        "approve", "reads well", None)
    assert parties_of(after["awaiting"]) == ["person:nora"]
    done = desk.decide("nora", doc)
    nora = done["decisions"][1]
    assert (nora["party"], nora["username"], nora["office"], nora["comment"]) == (
        "person:nora", "nora", None, None)
    assert (done["state"], done["awaiting"]) == ("approved", [])
    assert when(done["concluded_at"]) == when(nora["decided_at"])

    decided_carol, decided_nora, approved = trail.new()
    assert [e["action"] for e in (decided_carol, decided_nora, approved)] == [
        "review.decided", "review.decided", "review.approved"]
    assert decided_carol["subject"] == {"document": doc, "folder": approved["subject"]["folder"],
                                        "review": review["id"], "decision": carol["id"]}
    details = decided_carol["details"]
    assert {k: details[k] for k in ("party", "verdict", "version", "sha256", "comment")} == {
        "party": "office:Legal", "verdict": "approve", "version": 1, "sha256": sha(V1),
        "comment": "reads well"}
    assert (decided_carol["actor"]["name"], decided_carol["actor"]["office"],
            decided_carol["actor"]["role"]) == ("Carol Legal", "Legal", "approver")
    assert decided_nora["details"]["party"] == "person:nora"
    assert approved["subject"] == {"document": doc, "folder": approved["subject"]["folder"],
                                   "review": review["id"]}
    assert approved["details"] == {"version": 1, "sha256": sha(V1)}
    assert approved["actor"]["id"] == "system"


def test_a_rejection_needs_a_comment(desk, trail):
    doc = desk.save("plan.docx", V1)
    desk.submit("bob", doc, ["office:Legal"])
    trail.new()
    for comment in (None, "", "   \n"):
        refused = desk.decide("carol", doc, "reject", comment, expect=422)
        assert "a rejection needs a comment" in refused["detail"]
    assert desk.reviews(doc)[0]["decisions"] == []
    assert trail.new() == []
    rejected = desk.decide("carol", doc, "reject", "the budget table is missing")
    assert rejected["state"] == "rejected"
    assert rejected["decisions"][0]["comment"] == "the budget table is missing"
    assert trail.new_actions() == ["review.decided", "review.rejected"]


@pytest.mark.parametrize("who", ["hank", "dan", "gina", "nora", "admin"])
def test_someone_who_is_not_an_approver_is_refused_with_the_reason(desk, trail, who):
    doc = desk.save("plan.docx", V1)
    desk.submit("bob", doc, ["office:Legal", "person:carol"])
    trail.new()
    for verdict, comment in (("approve", None), ("reject", "no")):
        refused = desk.decide(who, doc, verdict, comment, expect=403)
        assert "you are not an approver of any office this review requires" in refused["detail"]
        assert "office:Legal, person:carol" in refused["detail"]
    review = desk.reviews(doc)[0]
    assert (review["state"], review["decisions"]) == ("open", [])
    assert trail.new() == []


def test_the_agent_cannot_decide(desk, trail):
    doc = desk.save("plan.docx", V1)
    desk.submit("bob", doc, ["office:Legal"])
    trail.new()
    assert "not a person" in desk.decide("agent", doc, expect=403)["detail"]
    assert trail.new() == []


def test_a_person_and_a_party_decide_once(desk, trail):
    doc = desk.save("plan.docx", V1)
    desk.submit("bob", doc, ["office:Legal", "office:Finance"])
    desk.decide("carol", doc)
    trail.new()
    again = desk.decide("carol", doc, "reject", "changed my mind", expect=409)
    assert "you have already decided on this review" in again["detail"]
    other = desk.decide("lena", doc, expect=409)
    assert "office:Legal has already decided: carol approved" in other["detail"]
    assert len(desk.reviews(doc)[0]["decisions"]) == 1
    assert trail.new() == []


def test_a_decision_needs_an_open_review_and_a_known_verdict(desk, trail):
    doc = desk.save("plan.docx", V1)
    trail.new()
    assert "no open review" in desk.decide("carol", doc, expect=409)["detail"]
    desk.decide("carol", 999_999, expect=404)
    desk.submit("bob", doc, ["office:Legal"])
    trail.new()
    desk.decide("carol", doc, "abstain", "hmm", expect=422)
    desk.call("carol", "POST", f"/documents/{doc}/review/decisions", json={}, expect=422)
    assert desk.reviews(doc)[0]["decisions"] == []
    assert trail.new() == []


def test_a_client_signature_that_does_not_verify_is_never_recorded(desk, trail):
    doc = desk.save("plan.docx", V1)
    desk.submit("bob", doc, ["office:Legal"])
    own = generate_key()
    desk.call("carol", "POST", "/me/keys", json={"jwk": public_jwk(own)}, expect=201)
    trail.new(keys=True)
    draft = desk.call("carol", "GET", f"/documents/{doc}/review/decision-payload",
                      params={"verdict": "approve"})
    payload = draft["payload"]
    forged = sign_detached(payload.encode(), generate_key())  # not carol's registered key
    refused = desk.decide("carol", doc, payload=payload, signature=forged, expect=422)
    assert "does not verify" in refused["detail"]
    assert desk.reviews(doc)[0]["decisions"] == []
    assert trail.new(keys=True) == []


# ----------------------------------------------------------- separation of duties


def test_the_author_and_the_submitter_of_the_pinned_version_may_not_decide(desk, trail):
    doc = desk.save("plan.docx", V1, author="alice")
    desk.submit("bob", doc, ["office:Legal"])
    trail.new()
    for verdict, comment in (("approve", None), ("reject", "I see a typo")):
        author = desk.decide("alice", doc, verdict, comment, expect=403)
        assert author["detail"] == (
            "you are the attributed author of version 1: someone else must decide")
        submitter = desk.decide("bob", doc, verdict, comment, expect=403)
        assert submitter["detail"] == "you submitted version 1 for review: someone else must decide"
    assert desk.reviews(doc)[0]["decisions"] == []
    assert trail.new() == []
    assert desk.decide("carol", doc)["state"] == "approved"
    assert trail.new_actions() == ["review.decided", "review.approved"]


def test_separation_of_duties_binds_the_pinned_version_not_the_latest(desk, trail):
    # Alice wrote v1 only: she may not decide on v1 even once v2 (not hers) is the latest.
    hers = desk.save("hers.docx", V1, author="alice")
    desk.save("hers.docx", V2)
    desk.submit("bob", hers, ["office:Legal"], version=1)
    refused = desk.decide("alice", hers, expect=403)
    assert "attributed author of version 1" in refused["detail"]
    # Alice wrote v2 only: she may decide on v1.
    theirs = desk.save("theirs.docx", V1)
    desk.save("theirs.docx", V2, author="alice")
    desk.submit("bob", theirs, ["office:Legal"], version=1)
    approved = desk.decide("alice", theirs)
    assert (approved["state"], approved["decisions"][0]["username"]) == ("approved", "alice")
    assert desk.final(theirs)["number"] == 1


def test_an_admin_may_relax_separation_of_duties_for_one_review(desk, trail):
    doc = desk.save("plan.docx", V1, author="alice")
    trail.new()
    reason = "a two-person office: the author is its only lawyer"
    review = desk.submit("admin", doc, ["office:Legal", "person:admin"], mode="all",
                         separation_of_duties=False, comment=reason)
    assert (review["separation_of_duties"], review["submitted_by"]) == (False, "admin")
    submitted, relaxed = trail.new()
    assert submitted["action"] == "review.submitted"
    assert submitted["details"]["separation_of_duties"] is False
    assert relaxed["action"] == "review.separation_of_duties_relaxed"
    assert relaxed["subject"] == submitted["subject"]
    assert relaxed["details"] == {"reason": reason}
    assert (relaxed["actor"]["name"], relaxed["actor"]["office"], relaxed["actor"]["role"]) == (
        "Administrator", "Administration", "admin")
    # The author and the submitter may now decide.
    assert desk.decide("alice", doc)["state"] == "open"
    done = desk.decide("admin", doc)
    assert done["state"] == "approved"
    assert [d["username"] for d in done["decisions"]] == ["alice", "admin"]
    assert trail.new_actions() == ["review.decided", "review.decided", "review.approved"]


def test_separation_of_duties_stays_on_for_reviews_an_admin_submits_normally(desk, trail):
    doc = desk.save("plan.docx", V1)
    trail.new()
    desk.submit("admin", doc, ["person:admin"])
    refused = desk.decide("admin", doc, expect=403)
    assert refused["detail"] == "you submitted version 1 for review: someone else must decide"
    assert trail.new_actions() == ["review.submitted"]


# ----------------------------------------------------------------- 3. modes

MODES = {
    "all, every party approves": (
        "all", THREE, [("carol", "approve", "open"), ("dan", "approve", "open"),
                       ("erin", "approve", "approved")]),
    "all, one rejection rejects": (
        "all", THREE, [("carol", "approve", "open"), ("dan", "reject", "rejected")]),
    "any, the first approval approves": ("any", THREE, [("dan", "approve", "approved")]),
    "any, an approval after rejections": (
        "any", THREE, [("carol", "reject", "open"), ("dan", "reject", "open"),
                       ("erin", "approve", "approved")]),
    "any, rejected once nobody is left": (
        "any", THREE, [("carol", "reject", "open"), ("dan", "reject", "open"),
                       ("erin", "reject", "rejected")]),
    "quorum:2 of 3, approved at the second approval": (
        "quorum:2", THREE, [("carol", "approve", "open"), ("dan", "reject", "open"),
                            ("erin", "approve", "approved")]),
    "quorum:2 of 3, rejected at the second rejection": (
        "quorum:2", THREE, [("erin", "reject", "open"), ("carol", "approve", "open"),
                            ("dan", "reject", "rejected")]),
    "quorum:3 of 3 is all": (
        "quorum:3", THREE, [("carol", "approve", "open"), ("dan", "approve", "open"),
                            ("erin", "approve", "approved")]),
    "quorum:1 of 3 is any": ("quorum:1", THREE, [("erin", "approve", "approved")]),
    "sequential, in order": (
        "sequential", ["office:Finance", "office:Legal", "person:nora"],
        [("dan", "approve", "open"), ("carol", "approve", "open"),
         ("nora", "approve", "approved")]),
    "sequential, a rejection stops it": (
        "sequential", ["office:Finance", "office:Legal", "person:nora"],
        [("dan", "approve", "open"), ("carol", "reject", "rejected")]),
}


@pytest.mark.parametrize("case", list(MODES), ids=list(MODES))
def test_each_mode_end_to_end(desk, trail, case):
    mode, parties, steps = MODES[case]
    doc = desk.save("plan.docx", V1)
    trail.new()
    review = desk.submit("bob", doc, parties, mode=mode)
    assert review["mode"] == mode
    assert parties_of(review["awaiting"]) == (parties[:1] if mode == "sequential" else parties)
    decided: list[str] = []
    for who, verdict, state in steps:
        comment = f"{who} says no" if verdict == "reject" else None
        after = desk.decide(who, doc, verdict, comment)
        decided.append(PARTY_OF[who])
        assert after["state"] == state, (who, verdict)
        assert [(d["party"], d["verdict"]) for d in after["decisions"]][-1] == (
            PARTY_OF[who], verdict)
        undecided = [p for p in parties if p not in decided]
        expected = [] if state != "open" else undecided[:1] if mode == "sequential" else undecided
        assert parties_of(after["awaiting"]) == expected
        assert parties_of(desk.status(doc)["awaiting"]) == expected
    final_state = steps[-1][2]
    status = desk.status(doc)
    assert (status["state"], status["review_id"]) == (final_state, None)
    if final_state == "approved":
        assert status["final"] == {"number": 1, "sha256": sha(V1)}
        final = desk.final(doc)
        assert (final["number"], final["sha256"], final["review_id"]) == (1, sha(V1), review["id"])
        assert [a["username"] for a in final["approvers"]] == [
            who for who, verdict, _ in steps if verdict == "approve"]
    else:
        assert status["final"] is None
        assert "no final version" in desk.final(doc, expect=404)["detail"]
    assert trail.new_actions() == [
        "review.submitted", *["review.decided"] * len(steps), f"review.{final_state}"]


def test_sequential_refuses_out_of_turn_then_goes_in_order(desk, trail):
    doc = desk.save("plan.docx", V1)
    desk.submit("bob", doc, ["office:Finance", "office:Legal", "office:Works"], mode="sequential")
    assert (desk.inbox_of("dan", doc), desk.inbox_of("carol", doc)) == (["decide"], [])
    trail.new()
    for who in ("carol", "erin"):
        refused = desk.decide(who, doc, expect=403)
        assert refused["detail"] == "it is not your turn yet: waiting for office:Finance first"
    assert trail.new() == []
    first = desk.decide("dan", doc)
    [awaited] = first["awaiting"]
    assert awaited["party"] == "office:Legal"
    assert when(awaited["since"]) == when(first["decisions"][0]["decided_at"])
    assert (desk.inbox_of("dan", doc), desk.inbox_of("carol", doc)) == ([], ["decide"])
    refused = desk.decide("erin", doc, expect=403)
    assert refused["detail"] == "it is not your turn yet: waiting for office:Legal first"
    assert desk.decide("carol", doc)["state"] == "open"
    assert desk.decide("erin", doc)["state"] == "approved"
    assert trail.new_actions() == ["review.decided"] * 3 + ["review.approved"]


# ----------------------------------------------------------------- 4. states


def _close(desk: Desk, doc: int, state: str) -> None:
    if state == "approved":
        desk.decide("carol", doc)
    elif state == "rejected":
        desk.decide("carol", doc, "reject", "no")
    else:
        desk.withdraw("bob", doc)


@pytest.mark.parametrize("action", ["approve", "reject", "withdraw"])
@pytest.mark.parametrize("state", ["approved", "rejected", "withdrawn"])
def test_a_closed_review_refuses_every_action(desk, trail, state, action):
    doc = desk.save("plan.docx", V1)
    desk.submit("bob", doc, ["office:Legal"])
    _close(desk, doc, state)
    before = desk.reviews(doc)
    document_before = desk.status(doc)
    trail.new()
    if action == "withdraw":
        refused = desk.withdraw("bob", doc, expect=409)
        assert refused["detail"] == f"document {doc} has no open review to withdraw"
    else:
        refused = desk.decide("lena", doc, action, "late", expect=409)
        assert refused["detail"] == f"document {doc} has no open review to decide on"
    assert desk.reviews(doc) == before
    assert desk.status(doc) == document_before
    assert trail.new() == []


@pytest.mark.parametrize("action", ["approve", "reject", "withdraw"])
def test_an_open_review_takes_every_action(desk, trail, action):
    doc = desk.save("plan.docx", V1)
    desk.submit("bob", doc, ["office:Legal"])
    trail.new()
    if action == "withdraw":
        after, state, document_state = desk.withdraw("bob", doc), "withdrawn", "draft"
    else:
        after = desk.decide("carol", doc, action, "why not")
        state = document_state = {"approve": "approved", "reject": "rejected"}[action]
    assert (after["state"], after["awaiting"]) == (state, [])
    assert after["concluded_at"] is not None
    assert desk.status(doc)["state"] == document_state
    expected = ["review.withdrawn"] if action == "withdraw" else ["review.decided",
                                                                   f"review.{state}"]
    assert trail.new_actions() == expected


def test_document_states_follow_its_reviews(desk, trail):
    doc = desk.save("plan.docx", V1)
    states = [desk.status(doc)["state"]]
    desk.submit("bob", doc, ["office:Legal"])
    states.append(desk.status(doc)["state"])
    desk.decide("carol", doc, "reject", "not yet")
    states.append(desk.status(doc)["state"])
    desk.submit("bob", doc, ["office:Legal"])
    states.append(desk.status(doc)["state"])
    desk.withdraw("bob", doc)
    states.append(desk.status(doc)["state"])  # no earlier approval: back to draft
    desk.submit("bob", doc, ["office:Legal"])
    desk.decide("carol", doc)
    states.append(desk.status(doc)["state"])
    desk.save("plan.docx", V2)
    states.append(desk.status(doc)["state"])  # an edit does not undo the approval of v1
    desk.submit("bob", doc, ["office:Legal"])
    states.append(desk.status(doc)["state"])
    desk.withdraw("alice", doc)
    states.append(desk.status(doc)["state"])  # an earlier review approved: back to approved
    assert states == ["draft", "in_review", "rejected", "in_review", "draft", "approved",
                      "approved", "in_review", "approved"]
    assert desk.status(doc)["final"] == {"number": 1, "sha256": sha(V1)}
    assert [r["state"] for r in desk.reviews(doc)] == [
        "withdrawn", "approved", "withdrawn", "rejected"]
    assert [e["action"] for e in trail.new() if e["action"].startswith("review.")] == [
        "review.submitted", "review.decided", "review.rejected",
        "review.submitted", "review.withdrawn",
        "review.submitted", "review.decided", "review.approved",
        "review.submitted", "review.withdrawn",
    ]


def test_the_owner_office_withdraws_and_decisions_stay_on_record(desk, trail):
    doc = desk.save("plan.docx", V1)
    review = desk.submit("bob", doc, ["office:Legal", "office:Finance"])
    desk.decide("carol", doc)
    trail.new()
    for who in ("carol", "dan", "hank"):
        refused = desk.withdraw(who, doc, expect=403)
        assert "only a member of the owner office 'Planning' (or an admin)" in refused["detail"]
    assert trail.new() == []
    withdrawn = desk.withdraw("alice", doc)  # any member of the owner office, not only bob
    assert (withdrawn["id"], withdrawn["state"], withdrawn["awaiting"]) == (
        review["id"], "withdrawn", [])
    assert [d["username"] for d in withdrawn["decisions"]] == ["carol"]
    status = desk.status(doc)
    assert (status["state"], status["review_id"], status["awaiting"], status["final"]) == (
        "draft", None, [], None)
    [event] = trail.new()
    assert event["action"] == "review.withdrawn"
    assert event["details"] == {"version": 1, "sha256": sha(V1)}
    assert (event["actor"]["name"], event["actor"]["office"]) == ("Alice Author", "Planning")
    # An admin may withdraw too.
    desk.submit("bob", doc, ["office:Legal"])
    assert desk.withdraw("admin", doc)["state"] == "withdrawn"
    assert trail.new_actions() == ["review.submitted", "review.withdrawn"]


def test_a_new_version_never_inherits_an_approval(desk, trail):
    doc = desk.save("plan.docx", V1)
    desk.submit("bob", doc, ["office:Legal"])
    desk.decide("carol", doc)
    assert desk.status(doc)["note"] is None
    desk.save("plan.docx", V2)
    status = desk.status(doc)
    assert status["final"] == {"number": 1, "sha256": sha(V1)}
    assert status["latest"] == {"number": 2, "sha256": sha(V2)}
    assert status["note"] == "final v1; working copy v2 differs"
    assert desk.final(doc)["number"] == 1
    verify = {m["number"]: m["is_final"]
              for m in desk.call("hank", "GET", f"/verify/{sha(V1)}")["matches"]}
    assert verify == {1: True}
    [edit] = desk.call("hank", "GET", f"/verify/{sha(V2)}")["matches"]
    assert (edit["number"], edit["is_final"], edit["is_latest"]) == (2, False, True)
    desk.save("plan.docx", V3)
    assert desk.status(doc)["note"] == "final v1; working copy v3 differs"
    # Only a review of the new version makes it final.
    desk.submit("bob", doc, ["office:Legal"])
    desk.decide("carol", doc)
    status = desk.status(doc)
    assert (status["final"], status["note"]) == ({"number": 3, "sha256": sha(V3)}, None)
    assert desk.final(doc)["number"] == 3


def test_a_decision_after_a_new_version_approves_the_pinned_version(desk, trail):
    doc = desk.save("plan.docx", V1)
    review = desk.submit("bob", doc, ["office:Legal"])
    assert review["pinned_is_latest"] is True
    desk.save("plan.docx", V2)  # an edit while the review is open
    [listed] = desk.reviews(doc)
    assert (listed["version"], listed["pinned_is_latest"], listed["state"]) == (
        {"number": 1, "sha256": sha(V1)}, False, "open")
    status = desk.status(doc)
    assert (status["state"], status["review_id"], status["latest"]["number"]) == (
        "in_review", review["id"], 2)
    trail.new()
    approved = desk.decide("carol", doc)
    assert (approved["state"], approved["version"], approved["pinned_is_latest"]) == (
        "approved", {"number": 1, "sha256": sha(V1)}, False)
    payload = json.loads(approved["decisions"][0]["payload"])
    assert (payload["version"], payload["sha256"]) == (1, sha(V1))
    final = desk.final(doc)
    assert (final["number"], final["sha256"]) == (1, sha(V1))
    status = desk.status(doc)
    assert (status["final"]["number"], status["latest"]["number"], status["note"]) == (
        1, 2, "final v1; working copy v2 differs")
    decided, concluded = trail.new()
    assert (decided["details"]["version"], decided["details"]["sha256"]) == (1, sha(V1))
    assert (concluded["action"], concluded["details"]) == (
        "review.approved", {"version": 1, "sha256": sha(V1)})


def test_the_status_says_when_the_pinned_version_is_no_longer_the_latest(desk):
    doc = desk.save("plan.docx", V1)
    desk.submit("bob", doc, ["office:Legal"])
    desk.save("plan.docx", V2)
    note = desk.status(doc)["note"]
    assert note is not None
    assert "v1" in note and "v2" in note


def test_the_final_version_stays_retrievable_after_rename_and_deletion(desk, trail):
    doc = desk.save("drafts/plan.docx", V1)
    desk.submit("bob", doc, ["office:Legal"])
    approved = desk.decide("carol", doc)
    desk.save("drafts/plan.docx", V2)
    expected = desk.final(doc)
    assert (expected["number"], expected["sha256"]) == (1, sha(V1))
    assert [a["signature"] for a in expected["approvers"]] == [
        d["signature"] for d in approved["decisions"]]

    moved = desk.agent.save("final/plan.docx", V2, kind="renamed", from_path="drafts/plan.docx")
    assert (moved["outcome"], moved["document_id"]) == ("moved", doc)
    assert desk.final(doc) == expected
    desk.agent.report(desk.agent.entry("final/plan.docx", None, kind="deleted"))
    status = desk.status(doc)
    assert (status["deleted"], status["path"], status["final"]) == (
        True, "final/plan.docx", {"number": 1, "sha256": sha(V1)})
    assert desk.final(doc) == expected
    found = desk.call("hank", "GET", "/documents/lookup",
                      params={"folder": "plans", "path": "final/plan.docx"})
    assert (found["id"], found["final"]["number"]) == (doc, 1)
    download = desk.content(doc, expected["number"])
    assert download.content == V1
    assert hashlib.sha256(download.content).hexdigest() == expected["sha256"]
    assert download.headers["X-Officium-SHA256"] == expected["sha256"]


def test_status_and_inbox_agree_after_a_deletion_during_a_review(desk):
    doc = desk.save("plan.docx", V1)
    desk.submit("bob", doc, ["office:Legal"])
    desk.agent.report(desk.agent.entry("plan.docx", None, kind="deleted"))
    [listed] = desk.reviews(doc)
    status = desk.status(doc)
    still_open = listed["state"] == "open"
    assert (status["state"] == "in_review") == still_open
    assert status["review_id"] == (listed["id"] if still_open else None)
    assert status["awaiting"] == listed["awaiting"]
    assert (desk.inbox_of("carol", doc) == ["decide"]) == still_open


def test_two_submissions_at_the_same_instant_open_one_review(desk, trail):
    doc = desk.save("plan.docx", V1)
    trail.new()
    barrier = threading.Barrier(2, timeout=60)

    def submit(who: str):
        barrier.wait()
        return desk.http.post(f"{API}/documents/{doc}/reviews", headers=bearer(desk.tokens[who]),
                              json={"parties": ["office:Legal"]})

    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(submit, ["alice", "bob"]))
    assert sorted(a.status_code for a in answers) == [201, 409], [a.text for a in answers]
    [conflict] = [a for a in answers if a.status_code == 409]
    assert "already has an open review" in conflict.json()["detail"]
    assert [r["state"] for r in desk.reviews(doc)] == ["open"]
    assert trail.new_actions() == ["review.submitted"]


# ---------------------------------------------------- 5. two approvers at one instant


@pytest.mark.parametrize("round_", range(3))
def test_two_approvers_at_the_same_instant_under_any(desk, trail, round_):
    doc = desk.save("plan.docx", V1)
    review = desk.submit("bob", doc, ["office:Legal", "office:Finance"], mode="any")
    trail.new()
    barrier = threading.Barrier(2, timeout=60)

    def approve(who: str):
        barrier.wait()
        return who, desk.http.post(f"{API}/documents/{doc}/review/decisions",
                                   headers=bearer(desk.tokens[who]), json={"verdict": "approve"})

    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = dict(pool.map(approve, ["carol", "dan"]))
    codes = {who: response.status_code for who, response in answers.items()}
    assert sorted(codes.values()) == [200, 409], {w: r.text for w, r in answers.items()}
    [winner] = [who for who, code in codes.items() if code == 200]
    [loser] = [who for who, code in codes.items() if code == 409]
    assert answers[loser].json()["detail"] == f"document {doc} has no open review to decide on"
    won = answers[winner].json()
    assert (won["state"], [d["username"] for d in won["decisions"]]) == ("approved", [winner])
    [listed] = desk.reviews(doc)
    assert (listed["id"], listed["state"]) == (review["id"], "approved")
    assert [d["username"] for d in listed["decisions"]] == [winner]
    assert [a["username"] for a in desk.final(doc)["approvers"]] == [winner]
    events = trail.new()
    assert [e["action"] for e in events] == ["review.decided", "review.approved"]
    assert events[0]["details"]["party"] == PARTY_OF[winner]


# --------------------------------------------------- 6. escalation with a moved clock


def test_an_overdue_review_escalates_to_the_parent_office_once(clocked):
    desk, fake_now = clocked
    trail = Trail(desk.http)
    doc = desk.save("plan.docx", V1)
    due = fake_now[0] + timedelta(days=2)
    review = desk.submit("bob", doc, ["office:Legal", "office:Works"], due=due.isoformat())
    trail.new()

    # Not yet due: nothing escalates and the parent office may not decide.
    fake_now[0] = due - timedelta(minutes=1)
    assert desk.call("admin", "POST", "/reviews/escalate") == {"escalated": 0}
    assert parties_of(desk.status(doc)["awaiting"]) == ["office:Legal", "office:Works"]
    assert "not an approver" in desk.decide("gina", doc, expect=403)["detail"]
    assert desk.inbox_of("gina", doc) == []
    assert trail.new() == []

    # Past due: Directorate (Legal's parent) joins; Works has no parent.
    fake_now[0] = due + timedelta(hours=1)
    desk.call("carol", "POST", "/reviews/escalate", expect=403)
    assert desk.call("admin", "POST", "/reviews/escalate") == {"escalated": 1}
    awaiting = desk.status(doc)["awaiting"]
    assert parties_of(awaiting) == ["office:Legal", "office:Works", "office:Directorate"]
    escalated = awaiting[2]
    assert escalated["action"] == (
        f"decide (escalated: overdue since {due.astimezone(UTC):%Y-%m-%d %H:%M} UTC)")
    assert when(escalated["since"]) == when(escalated["due"]) == due
    assert desk.reviews(doc)[0]["awaiting"] == awaiting
    [event] = trail.new()
    assert (event["action"], event["actor"]["id"]) == ("review.escalated", "system")
    assert event["subject"] == {"document": doc, "folder": event["subject"]["folder"],
                                "review": review["id"]}
    assert event["details"] == {"joins": "office:Directorate", "for": ["office:Legal"],
                                "due": format_time(due)}
    assert when(event["time"]) == fake_now[0]

    # Recorded once: later sweeps record nothing.
    assert desk.call("admin", "POST", "/reviews/escalate") == {"escalated": 0}
    fake_now[0] += timedelta(days=3)
    assert desk.call("admin", "POST", "/reviews/escalate") == {"escalated": 0}
    assert trail.new() == []

    # An approver of the parent office now decides in Legal's stead.
    [item] = [i for i in desk.inbox("gina") if i["document_id"] == doc]
    assert (item["action"], item["review_id"]) == (escalated["action"], review["id"])
    stood_in = desk.decide("gina", doc)
    assert [(d["username"], d["party"]) for d in stood_in["decisions"]] == [
        ("gina", "office:Legal")]
    assert parties_of(stood_in["awaiting"]) == ["office:Works"]
    assert "office:Legal has already decided" in desk.decide("carol", doc, expect=409)["detail"]
    assert desk.decide("erin", doc)["state"] == "approved"
    assert trail.new_actions() == ["review.decided", "review.decided", "review.approved"]
    trail.verify()


def test_offices_sharing_a_parent_escalate_in_one_event(clocked):
    desk, fake_now = clocked
    trail = Trail(desk.http)
    doc = desk.save("plan.docx", V1)
    due = fake_now[0] + timedelta(hours=4)
    desk.submit("bob", doc, ["office:Legal", "office:Finance"], mode="any", due=due.isoformat())
    trail.new()
    fake_now[0] = due + timedelta(seconds=1)
    assert desk.call("admin", "POST", "/reviews/escalate") == {"escalated": 1}
    [event] = trail.new()
    assert event["details"]["joins"] == "office:Directorate"
    assert event["details"]["for"] == ["office:Legal", "office:Finance"]
    assert parties_of(desk.status(doc)["awaiting"]) == [
        "office:Legal", "office:Finance", "office:Directorate"]
    trail.verify()


def test_a_concluded_review_does_not_escalate(clocked):
    desk, fake_now = clocked
    trail = Trail(desk.http)
    doc = desk.save("plan.docx", V1)
    due = fake_now[0] + timedelta(days=1)
    desk.submit("bob", doc, ["office:Legal"], due=due.isoformat())
    desk.decide("carol", doc)
    trail.new()
    fake_now[0] = due + timedelta(days=1)
    assert desk.call("admin", "POST", "/reviews/escalate") == {"escalated": 0}
    assert desk.status(doc)["awaiting"] == []
    assert trail.new() == []
    trail.verify()


def test_concurrent_sweeps_record_an_escalation_once(clocked):
    desk, fake_now = clocked
    trail = Trail(desk.http)
    doc = desk.save("plan.docx", V1)
    due = fake_now[0] + timedelta(days=1)
    desk.submit("bob", doc, ["office:Legal"], due=due.isoformat())
    trail.new()
    fake_now[0] = due + timedelta(days=1)
    barrier = threading.Barrier(4, timeout=60)

    def sweep(_):
        barrier.wait()
        return desk.http.post(f"{API}/reviews/escalate", headers=bearer(ADMIN_TOKEN))

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(sweep, range(4)))
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    assert sorted(a.json()["escalated"] for a in answers) == [0, 0, 0, 1]
    assert trail.new_actions() == ["review.escalated"]
    trail.verify()


def test_a_stand_in_decision_names_the_office_the_signer_acts_for(clocked):
    desk, fake_now = clocked
    trail = Trail(desk.http)
    doc = desk.save("plan.docx", V1)
    due = fake_now[0] + timedelta(days=1)
    desk.submit("bob", doc, ["office:Legal"], due=due.isoformat())
    fake_now[0] = due + timedelta(days=1)
    trail.new()
    [decision] = desk.decide("gina", doc)["decisions"]
    payload = json.loads(decision["payload"])
    assert payload["party"] == "office:Legal"
    [event, _] = trail.new()
    assert (event["actor"]["office"], event["actor"]["role"]) == ("Directorate", "approver")
    assert payload["signer"]["office"] == decision["office"] == "Directorate"


# ----------------------------------------------------------------- 7. signatures


def _server_key(desk: Desk) -> dict:
    keys = desk.call("hank", "GET", "/keys")["keys"]  # any person may read them
    [server] = [k for k in keys if k["username"] is None]
    return server


def _header(token: str) -> dict:
    encoded = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))


def test_every_decision_verifies_offline_and_names_what_it_signs(desk, trail):
    doc = desk.save("plan.docx", V1)
    review = desk.submit("bob", doc, ["office:Legal", "person:nora", "office:Finance"],
                         mode="quorum:2")
    desk.decide("dan", doc, "reject", "the figures for 2031 are wrong")
    desk.decide("carol", doc, "approve", "fine by Legal")
    final = desk.decide("nora", doc)
    assert final["state"] == "approved"
    server = _server_key(desk)
    jwk = server["jwk"]
    assert (jwk["kty"], jwk["crv"], server["retired_at"]) == ("OKP", "Ed25519", None)
    assert server["kid"] == key_id(jwk)
    expected = {
        "dan": ("Dan Finance", "Finance", "office:Finance", "reject",
                "the figures for 2031 are wrong", "rejects"),
        "carol": ("Carol Legal", "Legal", "office:Legal", "approve", "fine by Legal",
                  "approves"),
        "nora": ("Nora Named", None, "person:nora", "approve", None, "approves"),
    }
    assert [d["username"] for d in final["decisions"]] == list(expected)
    for decision in final["decisions"]:
        data = decision["payload"].encode("utf-8")
        assert is_canonical(data)
        assert verify_detached(decision["signature"], data, jwk)
        assert _header(decision["signature"]) == {"alg": "Ed25519", "kid": server["kid"]}
        payload = json.loads(data)
        name, office, party, verdict, comment, verb = expected[decision["username"]]
        assert payload == {
            "type": "officium.decision",
            "review": review["id"],
            "document": doc,
            "version": 1,
            "sha256": sha(V1),
            "signer": {"id": payload["signer"]["id"], "username": decision["username"],
                       "name": name, "office": office},
            "party": party,
            "verdict": verdict,
            "meaning": f"{name} {verb} version 1 of plans:plan.docx (SHA-256 {sha(V1)})",
            "comment": comment,
            "time": format_time(when(decision["decided_at"])),
        }
        assert payload["signer"]["id"].startswith("person:")
        assert (decision["name"], decision["office"], decision["party"]) == (name, office, party)
    # The audit trail binds each signature and the hash of its payload.
    decided = [e for e in trail.events() if e["action"] == "review.decided"]
    assert [(e["subject"]["decision"], e["details"]["signature"], e["details"]["kid"],
             e["details"]["payload_sha256"]) for e in decided] == [
        (d["id"], d["signature"], server["kid"], sha(d["payload"].encode()))
        for d in final["decisions"]]
    # The final version lists the approvals with the same signed records.
    assert desk.final(doc)["approvers"] == [
        d for d in final["decisions"] if d["verdict"] == "approve"]


def test_a_tampered_or_moved_decision_fails_verification(desk, trail):
    doc = desk.save("plan.docx", V1)
    desk.submit("bob", doc, ["office:Legal"])
    [first] = desk.decide("carol", doc)["decisions"]
    desk.save("plan.docx", V2)
    desk.submit("bob", doc, ["office:Legal"])
    [second] = desk.decide("carol", doc)["decisions"]
    jwk = _server_key(desk)["jwk"]
    data = first["payload"].encode("utf-8")
    assert verify_detached(first["signature"], data, jwk)

    # Flip one bit of one byte, anywhere in the payload.
    for index in range(len(data)):
        flipped = bytearray(data)
        flipped[index] ^= 0x01
        assert not verify_detached(first["signature"], bytes(flipped), jwk), index

    # Move the decision to another version, or another version's bytes, or another verdict.
    body = json.loads(data)
    for edit in ({"version": 2}, {"sha256": sha(V2)}, {"version": 2, "sha256": sha(V2)},
                 {"verdict": "reject"}, {"document": doc + 1}, {"time": second["decided_at"]}):
        moved = canonical_bytes({**body, **edit})
        assert moved != data
        assert not verify_detached(first["signature"], moved, jwk), edit
    # A signature does not fit another decision's payload, nor another key.
    assert not verify_detached(first["signature"], second["payload"].encode(), jwk)
    assert not verify_detached(second["signature"], data, jwk)
    assert not verify_detached(first["signature"], data, public_jwk(generate_key()))
    assert verify_detached(second["signature"], second["payload"].encode(), jwk)


def test_the_server_key_is_published_before_it_signs_anything(desk):
    keys = desk.call("hank", "GET", "/keys")["keys"]
    assert [k["username"] for k in keys] == [None]


def test_the_server_key_is_published_once(desk, trail):
    for n in range(2):
        doc = desk.save(f"plan-{n}.docx", V1 + bytes([n]))
        desk.submit("bob", doc, ["office:Legal"])
        desk.decide("carol", doc)
    events = trail.events()
    [key_event] = [e for e in events
                   if e["action"] == "key.registered" and e["details"]["owner"] == "server"]
    first_decision = next(e for e in events if e["action"] == "review.decided")
    assert key_event["seq"] < first_decision["seq"]
    server = _server_key(desk)
    assert key_event["details"] == {"jwk": server["jwk"], "owner": "server"}
    assert key_event["subject"] == {"key": server["kid"]}
    assert len(desk.call("admin", "GET", "/keys")["keys"]) == 1


# ------------------------------------------------------ 8. inbox and acknowledgements


def test_the_inbox_lists_the_decisions_awaiting_the_caller(desk, trail):
    doc = desk.save("plans/2031.docx", V1)
    due = "2031-06-30T17:00:00Z"
    review = desk.submit("bob", doc, ["office:Legal", "person:nora"], due=due)
    for who in ("carol", "lena", "nora", "alice"):
        [item] = [i for i in desk.inbox(who) if i["document_id"] == doc]
        assert (item["folder"], item["path"], item["action"], item["review_id"]) == (
            "plans", "plans/2031.docx", "decide", review["id"])
        assert when(item["since"]) == when(review["submitted_at"])
        assert when(item["due"]) == when(due)
    for who in ("dan", "hank", "gina", "admin"):
        assert desk.inbox_of(who, doc) == [], who
    desk.decide("lena", doc)  # Legal has decided: no Legal approver is awaited any more
    for who in ("carol", "lena", "alice"):
        assert desk.inbox_of(who, doc) == [], who
    assert desk.inbox_of("nora", doc) == ["decide"]



def test_the_inbox_does_not_ask_for_a_decision_the_caller_may_not_take(desk):
    doc = desk.save("plan.docx", V1, author="alice")
    desk.submit("bob", doc, ["office:Legal"])  # alice and bob both approve for Legal
    assert desk.inbox_of("carol", doc) == ["decide"]
    desk.decide("bob", doc, expect=403)
    desk.decide("alice", doc, expect=403)
    assert desk.inbox_of("bob", doc) == []
    assert desk.inbox_of("alice", doc) == []

def test_the_owner_office_acknowledges_the_final_version(desk, trail):
    doc = desk.save("plan.docx", V1)
    desk.submit("bob", doc, ["office:Legal"])
    assert "no final version to acknowledge" in desk.ack("bob", doc, expect=409)["detail"]
    assert desk.acks(doc) == {"document_id": doc, "final": None, "acknowledged": [],
                              "pending": []}
    desk.decide("carol", doc)
    trail.new()
    for who in ("alice", "bob"):
        assert desk.inbox_of(who, doc) == ["acknowledge final v1"]
    assert desk.inbox_of("carol", doc) == []  # not in the owner office
    assert desk.acks(doc) == {"document_id": doc, "final": {"number": 1, "sha256": sha(V1)},
                              "acknowledged": [], "pending": ["alice", "bob"]}

    ack = desk.ack("bob", doc)
    assert (ack["document_id"], ack["username"], ack["number"], ack["sha256"]) == (
        doc, "bob", 1, sha(V1))
    [event] = trail.new()
    assert (event["action"], event["details"]) == (
        "document.acknowledged", {"version": 1, "sha256": sha(V1)})
    assert event["subject"]["document"] == doc
    assert event["actor"]["name"] == "Bob Submitter"
    assert desk.ack("bob", doc) == ack  # once is enough; nothing more is recorded
    assert trail.new() == []
    assert (desk.inbox_of("bob", doc), desk.inbox_of("alice", doc)) == (
        [], ["acknowledge final v1"])
    listed = desk.acks(doc)
    assert ([a["username"] for a in listed["acknowledged"]], listed["pending"]) == (
        ["bob"], ["alice"])
    assert listed["acknowledged"] == [ack]

    # A new final version needs a new acknowledgement.
    desk.save("plan.docx", V2)
    desk.submit("bob", doc, ["office:Legal"])
    desk.decide("carol", doc)
    assert desk.inbox_of("bob", doc) == ["acknowledge final v2"]
    assert desk.acks(doc) == {"document_id": doc, "final": {"number": 2, "sha256": sha(V2)},
                              "acknowledged": [], "pending": ["alice", "bob"]}
    again = desk.ack("alice", doc)
    assert (again["number"], again["sha256"]) == (2, sha(V2))
    assert desk.acks(doc)["pending"] == ["bob"]


def test_an_admin_sees_documents_without_an_owner(desk, trail):
    call(desk.http, "POST", "/folders", expect=201,
         json={"name": "scans", "root": "/srv/share/scans", "default_owner": None})
    token = call(desk.http, "POST", "/tokens", json={"folder": "scans"}, expect=201)["token"]
    doc = AgentDouble(desk.http, token, "scans").save("scan.pdf", V1)["document_id"]
    owned = desk.save("plan.docx", V1)
    [item] = [i for i in desk.inbox("admin") if i["document_id"] == doc]
    assert (item["folder"], item["path"], item["action"], item["due"], item["review_id"]) == (
        "scans", "scan.pdf", "assign an owner", None, None)
    assert desk.inbox_of("admin", owned) == []
    for who in ("bob", "carol", "gina"):
        assert desk.inbox_of(who, doc) == []
    desk.hand_over("admin", doc, "Legal", reason="scans are Legal's")
    assert desk.inbox_of("admin", doc) == []


# ---------------------------------------------------- 9. ownership hand-over


def test_an_open_review_moves_with_its_document(desk, trail):
    doc = desk.save("plan.docx", V1)
    review = desk.submit("bob", doc, ["office:Legal"])
    trail.new()
    moved = desk.hand_over("admin", doc, "Finance", reason="Finance leads the budget plan")
    assert (moved["owner_office"], moved["state"], moved["review_id"]) == (
        "Finance", "in_review", review["id"])
    assert parties_of(moved["awaiting"]) == ["office:Legal"]
    [listed] = desk.reviews(doc)
    assert (listed["id"], listed["state"], listed["submitted_by"]) == (review["id"], "open", "bob")
    [event] = trail.new()
    assert event["action"] == "document.owner_changed"
    assert event["details"] == {"from": "Planning", "to": "Finance",
                                "reason": "Finance leads the budget plan",
                                "open_review": review["id"]}
    # The new owner office, not the old one, may withdraw it now.
    assert "owner office 'Finance'" in desk.withdraw("bob", doc, expect=403)["detail"]
    assert trail.new() == []
    assert desk.decide("carol", doc)["state"] == "approved"
    assert trail.new_actions() == ["review.decided", "review.approved"]
    assert desk.inbox_of("dan", doc) == ["acknowledge final v1"]
    assert desk.inbox_of("bob", doc) == []
    assert desk.acks(doc)["pending"] == ["dan"]


def test_a_hand_over_without_an_open_review_says_so(desk, trail):
    doc = desk.save("plan.docx", V1)
    desk.submit("bob", doc, ["office:Legal"])
    desk.decide("carol", doc)
    trail.new()
    desk.hand_over("admin", doc, "Works")
    [event] = trail.new()
    assert event["details"]["open_review"] is None


# ----------------------------------------------------------------- 10. the trail


def test_a_whole_approval_story_is_one_verifiable_chain(desk, trail):
    doc = desk.save("plan.docx", V1, author="alice")
    desk.submit("bob", doc, ["office:Finance", "office:Legal"], mode="sequential")
    desk.decide("dan", doc, "reject", "figures")
    desk.save("plan.docx", V2, author="alice")
    desk.submit("bob", doc, ["office:Legal"])
    desk.withdraw("bob", doc)
    desk.submit("admin", doc, ["office:Legal"], separation_of_duties=False, comment="urgent")
    desk.decide("alice", doc)
    desk.ack("bob", doc)
    desk.hand_over("admin", doc, "Works")
    events = trail.events()
    actions = [e["action"] for e in events if e["subject"].get("document") == doc]
    assert actions == [
        "document.created", "version.recorded",
        "review.submitted", "review.decided", "review.rejected",
        "version.recorded",
        "review.submitted", "review.withdrawn",
        "review.submitted", "review.separation_of_duties_relaxed",
        "review.decided", "review.approved",
        "document.acknowledged",
        "document.owner_changed",
    ]
    history = desk.call("admin", "GET", f"/documents/{doc}/history")["events"]
    assert [e["action"] for e in history] == actions
    for event in events:
        check_event(event)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))

