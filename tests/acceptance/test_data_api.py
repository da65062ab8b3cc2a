"""``POST /v1/contacts/import`` and ``/v1/doctor/data`` on the real API over loopback."""

from __future__ import annotations

from collections.abc import Iterator

from pushguard.audience.models import TopicIn
from tests.acceptance.conftest import LiveAPI

CSV = {"Content-Type": "text/csv"}
BROKEN = (
    b"external_id,email,phone,consent.news.email\n"
    b"u1,ana@example.com,+14155550100,granted\n"
    b"u2,nope,,\n"
    b"u3,ana@example.com,,\n"
    b"u4,ok@example.com,0612345678,\n"
)


def test_import_answers_with_counts_and_row_errors(live_api: LiveAPI) -> None:
    live_api.app.audience.put_topic(TopicIn(name="news", kind="marketing"))
    with live_api.client() as c:
        r = c.post("/v1/contacts/import", content=BROKEN, headers=CSV,
                   params={"filename": "crm.csv"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert {k: body[k] for k in ("rows", "imported", "created", "updated", "rejected",
                                     "conflicts")} == {
            "rows": 4, "imported": 2, "created": 2, "updated": 0, "rejected": 2,
            "conflicts": 1}
        assert [(e["line"], e["external_id"], e["column"]) for e in body["errors"]] == [
            (3, "u2", "email"), (5, "u4", "phone")]
        assert [(w["line"], w["level"]) for w in body["warnings"]] == [(4, "warning")]
        assert body["consent"]["recorded"] == 1
        ledger = c.get("/v1/contacts/u1").json()["consent"]
        assert ledger[0]["source"] == "import"
        assert live_api.app.audience.ledger("u1")[0]["proof"] == "import crm.csv line 2"

        r = c.post("/v1/contacts/import", content=BROKEN, params={"region": "FR"},
                   headers=CSV)
        assert (r.json()["created"], r.json()["updated"], r.json()["rejected"]) == (1, 2, 1)


def test_the_charset_parameter_names_the_encoding(live_api: LiveAPI) -> None:
    data = "external_id,attr.city\nz,Zürich\n".encode("latin-1")
    with live_api.client() as c:
        r = c.post("/v1/contacts/import", content=data,
                   headers={"Content-Type": "text/csv; charset=latin-1"})
        assert r.json()["created"] == 1 and r.json()["encoding"] == "iso8859-1"
        assert c.get("/v1/contacts/z").json()["attributes"] == {"city": "Zürich"}
        r = c.post("/v1/contacts/import", content=data, headers=CSV)
        assert r.json()["errors"][0]["problem"].startswith("not valid UTF-8 (byte 0xFC)")


def test_import_refuses_other_bodies(live_api: LiveAPI) -> None:
    with live_api.client() as c:
        r = c.post("/v1/contacts/import", json={"external_id": "x"})
        assert r.status_code == 415
        assert r.json()["error"]["fields"] == [{"field": "Content-Type",
                                                "problem": "must be text/csv"}]
        r = c.post("/v1/contacts/import", content=b"external_id,consent.nope.email\n",
                   headers=CSV)
        assert r.status_code == 422
        assert r.json()["error"]["fields"][0]["field"] == "consent.nope.email"

        def chunks() -> Iterator[bytes]:
            yield b"external_id\n"
            yield b"a\n"

        r = c.post("/v1/contacts/import", content=chunks(), headers=CSV)
        assert r.status_code == 411  # a chunked body could be cut short by the size limit
        r = c.post("/v1/contacts/import", content=b"x" * 300_000, headers=CSV)
        assert r.status_code == 413
    with live_api.client(key="pgk_wrong") as c:
        assert c.post("/v1/contacts/import", content=BROKEN, headers=CSV).status_code == 401
    assert live_api.app.audience.contacts() == []


def test_doctor_over_http(live_api: LiveAPI) -> None:
    with live_api.client() as c:
        c.post("/v1/contacts/import", headers=CSV,
               content=b"external_id,email\na,ann@example.com\nb,Ann@example.com\n")
        got = c.get("/v1/doctor/data").json()
        assert got["counts"] == {"duplicate_contacts": 1}
        (f,) = got["findings"]
        assert f["fix"] == {"action": "merge", "description": f["fix"]["description"],
                            "explicit_only": False}

        r = c.post("/v1/doctor/data/fixes", json={"ids": [f["id"], "stale-000000000000"]})
        assert r.status_code == 422
        assert r.json()["error"]["fields"][0]["field"] == "ids[1]"
        assert c.post("/v1/doctor/data/fixes", json={"ids": []}).status_code == 422

        r = c.post("/v1/doctor/data/fixes", json={"ids": [f["id"]]})
        assert r.status_code == 200, r.text
        (done,) = r.json()["applied"]
        assert done["applied"] is True and done["audit"][0]["action"] == "contact.merged"
        assert done["audit"][0]["actor"].startswith("key:")
        assert c.get("/v1/doctor/data").json() == {"findings": [], "counts": {}}
