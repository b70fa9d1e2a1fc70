from tests.conftest import ADMIN_TOKEN, sha
H = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

def test_smoke(http, agent):
    r = agent.save("a/plan.docx", b"v1")
    assert r["outcome"] == "recorded", r
    r = agent.save("a/plan.docx", b"v2")
    assert r["version"]["number"] == 2
    r = agent.save("a/plan.docx", b"v2")
    assert r["outcome"] == "unchanged"
    s = http.get(f"/api/v1/documents/{r['document_id']}", headers=H).json()
    print(s)
    assert s["owner_office"] == "Planning"
    v = http.get(f"/api/v1/verify/{sha(b'v1')}", headers=H).json()
    print(v)
    assert v["matches"][0]["superseded_by"] == 2
    c = http.get("/api/v1/audit/verify", headers=H).json()
    print(c)
    assert c["ok"]
    h = http.get(f"/api/v1/documents/{r['document_id']}/history", headers=H).json()
    assert len(h["events"]) == 3
    bad = http.get("/api/v1/documents/lookup", params={"folder": "plans", "path": "../x"}, headers=H)
    print(bad.status_code, bad.json())
    assert bad.status_code == 422
