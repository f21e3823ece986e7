"""Intake service: client records under a pseudonym, org scoping (F7), the wall against zone B
and auditors (F1), validation without echo, id-only events and audit records (F8), and the
disclosure call only the bridge may make, answering exactly the asked categories (F2)."""

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func
from sqlmodel import Session, select

from tests.conftest import (
    AUDITOR,
    FEDASIL_BRUSSELS,
    ICAM_BRUSSELS,
    NGO_GHENT,
    assert_problem,
    eventually,
    is_refusal_record,
    running,
)
from twoline.natsserver import credential
from twoline_intake.app import create_app
from twoline_intake.calls import CLIENT, DISCLOSURE
from twoline_intake.config import Settings
from twoline_intake.domain import CATEGORY_FIELDS, FIELD_CATEGORY, disclosure_package
from twoline_intake.models import Client
from twoline_shared.broker import connect
from twoline_shared.calls import call
from twoline_shared.codes import DataCategory
from twoline_shared.errors import Invalid, NotFound, Unavailable
from twoline_shared.outbox import OutboxMessage

NGO_ANTWERP = {"role": "ngo_caseworker", "org": "ngo-antwerp"}
CANARY = "CANARY-7f3a"
FULL_RECORD = {
    "display_name": f"{CANARY} name",
    "birth_year": 1991,
    "nationality": "GN",
    "languages": ["fr", "ff"],
    "municipality": f"{CANARY} town",
    "phone": f"{CANARY} phone",
    "household": [{"relation": "child", "birth_year": 2016}],
    "migration_history": {"note": f"{CANARY} history", "order_to_leave": "2024-05-02"},
    "needs": ["shelter", "medical"],
    "health": {"note": f"{CANARY} health"},
    "vulnerabilities": ["medical"],
    "intentions": {"plans": f"{CANARY} plans"},
    "case_notes": f"{CANARY} notes",
}


@pytest.fixture
def intake(service_settings) -> Iterator[TestClient]:
    with running(create_app(service_settings(Settings, "intake"))) as client:
        yield client


def count_clients(client: TestClient) -> int:
    with Session(client.app.state.runtime.engine) as session:
        return session.exec(select(func.count()).select_from(Client)).one()


def outbox(client: TestClient) -> list[OutboxMessage]:
    """The outbox rows, without the audit records of refused requests."""
    with Session(client.app.state.runtime.engine) as session:
        rows = session.exec(select(OutboxMessage).order_by(OutboxMessage.seq)).all()
        return [r for r in rows if not is_refusal_record(r.subject)]


def test_caseworker_registers_a_full_record_and_reads_it_back(intake, issuer):
    ngo = issuer.headers(**NGO_GHENT)
    created = intake.post("/v1/clients", json=FULL_RECORD, headers=ngo)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["client_ref"].startswith("C-") and body["org"] == "ngo-ghent"
    assert {k: body[k] for k in FULL_RECORD} == FULL_RECORD
    read = intake.get(f"/v1/clients/{body['client_ref']}", headers=ngo)
    assert read.status_code == 200 and read.json() == body


def test_only_display_name_is_required(intake, issuer):
    created = intake.post(
        "/v1/clients", json={"display_name": "X"}, headers=issuer.headers(**NGO_GHENT)
    )
    assert created.status_code == 201
    assert created.json()["languages"] == [] and created.json()["birth_year"] is None


def test_each_client_gets_its_own_pseudonym(intake, issuer):
    ngo = issuer.headers(**NGO_GHENT)
    refs = {
        intake.post("/v1/clients", json={"display_name": "X"}, headers=ngo).json()["client_ref"]
        for _ in range(5)
    }
    assert len(refs) == 5


def test_list_is_own_org_only_newest_first_and_paginated(intake, issuer):
    ghent, antwerp = issuer.headers(**NGO_GHENT), issuer.headers(**NGO_ANTWERP)
    ghent_refs = [
        intake.post("/v1/clients", json={"display_name": f"G{i}"}, headers=ghent).json()[
            "client_ref"
        ]
        for i in range(3)
    ]
    intake.post("/v1/clients", json={"display_name": "A"}, headers=antwerp)
    page = intake.get("/v1/clients?limit=2", headers=ghent).json()
    assert page["count"] == 3
    assert [c["client_ref"] for c in page["data"]] == ghent_refs[::-1][:2]
    rest = intake.get("/v1/clients?limit=2&offset=2", headers=ghent).json()
    assert [c["client_ref"] for c in rest["data"]] == [ghent_refs[0]]
    assert intake.get("/v1/clients", headers=antwerp).json()["count"] == 1


def test_listing_clients_is_an_audited_read_for_caseworkers_only(intake, issuer):
    ghent = issuer.headers(**NGO_GHENT)
    ref = intake.post("/v1/clients", json={"display_name": "Listed"}, headers=ghent).json()[
        "client_ref"
    ]
    assert intake.get("/v1/clients", headers=ghent).status_code == 200
    searches = [
        json.loads(m.payload)["data"]
        for m in outbox(intake)
        if m.subject == "audit.intake.client.search"
    ]
    assert [s["client_refs"] for s in searches] == [[ref]]
    assert "Listed" not in json.dumps(searches)
    admin = issuer.headers(role="ngo_admin", org=NGO_GHENT["org"])
    assert_problem(intake.get("/v1/clients", headers=admin), 403, "forbidden")


def test_another_orgs_client_is_indistinguishable_from_an_unknown_one(intake, issuer):
    ref = intake.post(
        "/v1/clients", json={"display_name": "X"}, headers=issuer.headers(**NGO_GHENT)
    ).json()["client_ref"]
    other = assert_problem(
        intake.get(f"/v1/clients/{ref}", headers=issuer.headers(**NGO_ANTWERP)), 404, "not-found"
    )
    unknown = assert_problem(
        intake.get("/v1/clients/C-000000000000", headers=issuer.headers(**NGO_ANTWERP)),
        404,
        "not-found",
    )
    assert other["title"] == unknown["title"]


@pytest.mark.parametrize("caller", [ICAM_BRUSSELS, FEDASIL_BRUSSELS, AUDITOR, {"role": "service"}])
def test_second_line_auditor_and_service_tokens_get_403_on_every_route(intake, issuer, caller):
    ref = intake.post(
        "/v1/clients", json={"display_name": "X"}, headers=issuer.headers(**NGO_GHENT)
    ).json()["client_ref"]
    headers = issuer.headers(**caller)
    assert_problem(intake.get("/v1/clients", headers=headers), 403, "forbidden")
    assert_problem(intake.get(f"/v1/clients/{ref}", headers=headers), 403, "forbidden")
    assert_problem(
        intake.post("/v1/clients", json={"display_name": "Y"}, headers=headers), 403, "forbidden"
    )
    assert count_clients(intake) == 1


def test_without_a_token_every_route_is_401(intake):
    assert_problem(intake.get("/v1/clients"), 401)
    assert_problem(intake.get("/v1/clients/C-1"), 401)
    assert_problem(intake.post("/v1/clients", json={"display_name": "Y"}), 401)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"display_name": ""},
        {"display_name": "X", "nationality": "gn"},
        {"display_name": "X", "nationality": "GIN"},
        {"display_name": "X", "languages": ["french"]},
        {"display_name": "X", "languages": "fr"},
        {"display_name": "X", "birth_year": "nineteen"},
        {"display_name": "X", "household": [{"birth_year": 2010}]},
        {"display_name": "X", "needs": "shelter"},
        [],
    ],
)
def test_invalid_records_are_422_and_nothing_is_stored(intake, issuer, body):
    response = intake.post("/v1/clients", json=body, headers=issuer.headers(**NGO_GHENT))
    assert_problem(response, 422, "validation")
    assert count_clients(intake) == 0 and outbox(intake) == []


def test_malformed_json_is_422_and_rejected_values_are_not_echoed(intake, issuer):
    headers = {**issuer.headers(**NGO_GHENT), "content-type": "application/json"}
    assert_problem(intake.post("/v1/clients", content=b'{"display_name": ', headers=headers), 422)
    echoed = intake.post(
        "/v1/clients", json={"display_name": "X", "nationality": CANARY}, headers=headers
    )
    assert_problem(echoed, 422)
    assert CANARY not in echoed.text


def test_events_and_audit_records_carry_ids_and_categories_never_personal_data(intake, issuer):
    ngo = issuer.headers(sub="cw-1", **NGO_GHENT)
    ref = intake.post("/v1/clients", json=FULL_RECORD, headers=ngo).json()["client_ref"]
    intake.get(f"/v1/clients/{ref}", headers=ngo)
    rows = outbox(intake)
    assert [r.subject for r in rows] == [
        "firstline.intake.client.registered",
        "audit.intake.client.create",
        "audit.intake.client.read",
    ]
    for row in rows:
        assert CANARY.encode() not in row.payload
        assert "GN" not in json.loads(row.payload)["data"].values()
    registered = json.loads(rows[0].payload)["data"]
    assert registered == {"client_ref": ref, "org": "ngo-ghent"}
    created = json.loads(rows[1].payload)["data"]
    assert created["actor"] == "cw-1" and created["resource_id"] == ref
    assert created["categories"] == sorted(
        [
            "identity",
            "contact",
            "household",
            "migration_history",
            "needs",
            "health",
            "vulnerabilities",
            "intentions",
            "case_notes",
        ]
    )


# ---------------------------------------------------------------- updates


def register(intake, issuer, caller=NGO_GHENT, **fields) -> str:
    body = {"display_name": "X", **fields}
    response = intake.post("/v1/clients", json=body, headers=issuer.headers(**caller))
    assert response.status_code == 201, response.text
    return response.json()["client_ref"]


def test_patch_changes_only_the_fields_sent(intake, issuer):
    ngo = issuer.headers(**NGO_GHENT)
    ref = register(intake, issuer, phone="+32 1", needs=["shelter"], birth_year=1990)
    before = intake.get(f"/v1/clients/{ref}", headers=ngo).json()
    patched = intake.patch(
        f"/v1/clients/{ref}", json={"needs": ["shelter", "legal"], "phone": None}, headers=ngo
    )
    assert patched.status_code == 200, patched.text
    after = patched.json()
    assert after["needs"] == ["shelter", "legal"] and after["phone"] is None
    assert after["birth_year"] == 1990 and after["display_name"] == "X"
    assert after["updated_at"] > before["updated_at"]
    assert intake.get(f"/v1/clients/{ref}", headers=ngo).json() == after


def test_patch_announces_changed_categories_never_values(intake, issuer):
    ref = register(intake, issuer)
    intake.patch(
        f"/v1/clients/{ref}",
        json={"health": {"note": CANARY}, "phone": CANARY},
        headers=issuer.headers(**NGO_GHENT),
    )
    updated = [r for r in outbox(intake) if r.subject == "firstline.intake.client.updated"]
    assert len(updated) == 1
    assert json.loads(updated[0].payload)["data"] == {
        "client_ref": ref,
        "org": "ngo-ghent",
        "categories": ["contact", "health"],
    }
    assert all(CANARY.encode() not in r.payload for r in outbox(intake))


def test_empty_patch_changes_nothing_and_emits_nothing(intake, issuer):
    ref = register(intake, issuer)
    before = len(outbox(intake))
    response = intake.patch(f"/v1/clients/{ref}", json={}, headers=issuer.headers(**NGO_GHENT))
    assert response.status_code == 200
    assert len(outbox(intake)) == before


@pytest.mark.parametrize(
    "body",
    [
        {"display_name": None},
        {"display_name": ""},
        {"nationality": "guinea"},
        {"languages": ["xx"]},
        {"org": "ngo-antwerp"},  # the owner is not a field a caller may set
        {"client_ref": "C-OTHER"},
        {"birth_year": 1800},
    ],
)
def test_invalid_patch_is_422_and_the_record_is_untouched(intake, issuer, body):
    ngo = issuer.headers(**NGO_GHENT)
    ref = register(intake, issuer, nationality="GN")
    before = intake.get(f"/v1/clients/{ref}", headers=ngo).json()
    assert_problem(intake.patch(f"/v1/clients/{ref}", json=body, headers=ngo), 422)
    assert intake.get(f"/v1/clients/{ref}", headers=ngo).json() == before


def test_another_org_cannot_patch_or_log_contacts(intake, issuer):
    ref = register(intake, issuer)
    antwerp = issuer.headers(**NGO_ANTWERP)
    assert_problem(intake.patch(f"/v1/clients/{ref}", json={"phone": "1"}, headers=antwerp), 404)
    contact = {"kind": "contact", "date": "2026-11-01"}
    assert_problem(intake.post(f"/v1/clients/{ref}/contacts", json=contact, headers=antwerp), 404)
    assert_problem(intake.get(f"/v1/clients/{ref}/contacts", headers=antwerp), 404)


@pytest.mark.parametrize("caller", [ICAM_BRUSSELS, FEDASIL_BRUSSELS, AUDITOR])
def test_zone_b_and_auditors_cannot_patch_or_touch_contacts(intake, issuer, caller):
    ref = register(intake, issuer)
    headers = issuer.headers(**caller)
    assert_problem(intake.patch(f"/v1/clients/{ref}", json={"phone": "1"}, headers=headers), 403)
    contact = {"kind": "contact", "date": "2026-11-01"}
    assert_problem(intake.post(f"/v1/clients/{ref}/contacts", json=contact, headers=headers), 403)
    assert_problem(intake.get(f"/v1/clients/{ref}/contacts", headers=headers), 403)


# ---------------------------------------------------------------- outreach contacts


def test_contacts_are_logged_and_listed_most_recent_first(intake, issuer):
    ngo = issuer.headers(sub="cw-2", **NGO_GHENT)
    ref = register(intake, issuer)
    for kind, date in [
        ("contact", "2026-10-01"),
        ("inform", "2026-10-15"),
        ("refer", "2026-11-02"),
    ]:
        response = intake.post(
            f"/v1/clients/{ref}/contacts",
            json={"kind": kind, "topics": ["legal_stay", "return"], "language": "fr", "date": date},
            headers=ngo,
        )
        assert response.status_code == 201, response.text
        assert response.json()["client_ref"] == ref and response.json()["logged_by"] == "cw-2"
    listed = intake.get(f"/v1/clients/{ref}/contacts", headers=ngo).json()
    assert listed["count"] == 3
    assert [c["kind"] for c in listed["data"]] == ["refer", "inform", "contact"]
    page = intake.get(f"/v1/clients/{ref}/contacts?limit=1&offset=1", headers=ngo).json()
    assert [c["kind"] for c in page["data"]] == ["inform"]


def test_contact_event_carries_the_kind_only(intake, issuer):
    ref = register(intake, issuer)
    intake.post(
        f"/v1/clients/{ref}/contacts",
        json={"kind": "inform", "topics": ["return"], "date": "2026-11-01"},
        headers=issuer.headers(**NGO_GHENT),
    )
    logged = [r for r in outbox(intake) if r.subject == "firstline.intake.contact.logged"]
    data = json.loads(logged[0].payload)["data"]
    assert set(data) == {"client_ref", "org", "contact_id", "kind"} and data["kind"] == "inform"


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "visit", "date": "2026-11-01"},
        {"kind": "contact"},
        {"kind": "contact", "date": "not-a-date"},
        {"kind": "contact", "date": "2999-01-01"},
        {"kind": "contact", "date": "2026-11-01", "language": "french"},
        {"kind": "contact", "date": "2026-11-01", "topics": ["Legal Stay!"]},
        {"kind": "contact", "date": "2026-11-01", "note": "free text"},
    ],
)
def test_invalid_contact_is_422_and_nothing_is_stored(intake, issuer, body):
    ngo = issuer.headers(**NGO_GHENT)
    ref = register(intake, issuer)
    assert_problem(intake.post(f"/v1/clients/{ref}/contacts", json=body, headers=ngo), 422)
    assert intake.get(f"/v1/clients/{ref}/contacts", headers=ngo).json()["count"] == 0


def test_contact_for_an_unknown_client_is_404(intake, issuer):
    response = intake.post(
        "/v1/clients/C-000000000000/contacts",
        json={"kind": "contact", "date": "2026-11-01"},
        headers=issuer.headers(**NGO_GHENT),
    )
    assert_problem(response, 404, "not-found")


@pytest.mark.parametrize("query", ["limit=0", "limit=201", "offset=-1", "limit=ten"])
def test_out_of_range_paging_is_422_on_list_routes(intake, issuer, query):
    ngo = issuer.headers(**NGO_GHENT)
    ref = register(intake, issuer)
    assert_problem(intake.get(f"/v1/clients?{query}", headers=ngo), 422, "validation")
    assert_problem(
        intake.get(f"/v1/clients/{ref}/contacts?{query}", headers=ngo), 422, "validation"
    )


# ---------------------------------------------------------------- the disclosure call (F2)


@pytest.fixture
def intake_on_nats(service_settings, nats_server) -> Iterator[TestClient]:
    """Intake answering `svc.intake.disclosure` on the project's own nats-server."""
    with running(create_app(service_settings(Settings, "intake"))) as client:
        eventually(lambda: client.get("/readyz").status_code == 200, "intake's NATS link")
        yield client


def ask(
    nats_server,
    payload: Any,
    *,
    user: str = "referral-fl",
    wait: float = 5,
    subject: str = DISCLOSURE,
) -> dict[str, Any]:
    """Ask intake over NATS as the bridge's first-line user (or `user`) would."""

    async def go() -> dict[str, Any]:
        nc = await connect(nats_server.url, credential(user, nats_server.passwords), name=user)
        try:
            return await call(nc, subject, payload, wait=wait)
        finally:
            await nc.close()

    return asyncio.run(go())


def audit_rows(client: TestClient, action: str) -> list[dict[str, Any]]:
    return [
        json.loads(r.payload)["data"]
        for r in outbox(client)
        if r.subject == f"audit.intake.client.{action}"
    ]


@pytest.mark.nats
def test_disclosure_call_answers_exactly_the_asked_categories_and_audits_them(
    intake_on_nats, issuer, nats_server
):
    ref = register(intake_on_nats, issuer, **{**FULL_RECORD, "display_name": "X"})

    data = ask(
        nats_server, {"client_ref": ref, "org": "ngo-ghent", "categories": ["needs", "contact"]}
    )

    assert data == {
        "client_ref": ref,
        "categories": {
            "contact": {
                "municipality": FULL_RECORD["municipality"],
                "phone": FULL_RECORD["phone"],
            },
            "needs": {"languages": FULL_RECORD["languages"], "needs": FULL_RECORD["needs"]},
        },
    }
    audits = audit_rows(intake_on_nats, "disclose")
    assert len(audits) == 1
    assert (audits[0]["resource_id"], audits[0]["categories"]) == (ref, ["contact", "needs"])
    assert audits[0]["org"] == "ngo-ghent"
    assert all(CANARY.encode() not in r.payload for r in outbox(intake_on_nats))


@pytest.mark.nats
def test_health_is_disclosed_only_when_asked_for_by_name(intake_on_nats, issuer, nats_server):
    ref = register(intake_on_nats, issuer, **FULL_RECORD)
    every_other = [c.value for c in DataCategory if c is not DataCategory.HEALTH]

    data = ask(nats_server, {"client_ref": ref, "org": "ngo-ghent", "categories": every_other})
    health = ask(nats_server, {"client_ref": ref, "org": "ngo-ghent", "categories": ["health"]})

    assert sorted(data["categories"]) == sorted(every_other)
    assert "health" not in data["categories"] and f"{CANARY} health" not in json.dumps(data)
    assert health["categories"] == {"health": {"health": FULL_RECORD["health"]}}


@pytest.mark.nats
def test_disclosure_call_refuses_another_orgs_client_and_an_unknown_one_with_404(
    intake_on_nats, issuer, nats_server
):
    ref = register(intake_on_nats, issuer, **FULL_RECORD)

    for payload in (
        {"client_ref": ref, "org": "ngo-antwerp", "categories": ["identity"]},
        {"client_ref": "C-000000000000", "org": "ngo-ghent", "categories": ["identity"]},
    ):
        with pytest.raises(NotFound) as raised:
            ask(nats_server, payload)
        assert CANARY not in raised.value.detail
    assert audit_rows(intake_on_nats, "disclose") == []


MALFORMED_DISCLOSURE_REQUESTS = [
    {"categories": ["criminal_record"]},
    {"categories": ["needs", "everything"]},
    {"categories": []},
    {"categories": "needs"},
    {"categories": ["needs"], "fields": ["phone"]},
    {"categories": ["needs"], "org": ""},
    {"categories": ["needs"], "client_ref": None},
]


@pytest.mark.nats
def test_disclosure_call_refuses_unknown_categories_and_malformed_requests_with_422(
    intake_on_nats, issuer, nats_server
):
    ref = register(intake_on_nats, issuer, **FULL_RECORD)

    for payload in MALFORMED_DISCLOSURE_REQUESTS:
        with pytest.raises(Invalid):
            ask(nats_server, {"client_ref": ref, "org": "ngo-ghent", **payload})
    assert audit_rows(intake_on_nats, "disclose") == []


@pytest.mark.nats
def test_only_the_bridge_may_ask_for_a_disclosure(intake_on_nats, issuer, nats_server):
    ref = register(intake_on_nats, issuer, **FULL_RECORD)
    payload = {"client_ref": ref, "org": "ngo-ghent", "categories": ["identity"]}

    # consent lives in the same zone account, but the broker lets only referral-fl ask.
    with pytest.raises(Unavailable):
        ask(nats_server, payload, user="consent", wait=1)
    assert audit_rows(intake_on_nats, "disclose") == []


@pytest.mark.nats
def test_the_client_call_tells_the_consent_service_only_whether_the_org_holds_the_client(
    intake_on_nats, issuer, nats_server
):
    """`svc.intake.client`: ids only, for a consent recorded right after the registration."""
    ref = register(intake_on_nats, issuer, **FULL_RECORD)

    reply = ask(
        nats_server, {"client_ref": ref, "org": "ngo-ghent"}, user="consent", subject=CLIENT
    )

    assert reply == {"client_ref": ref, "org": "ngo-ghent"}
    for payload in ({"client_ref": ref, "org": "ngo-antwerp"}, {"client_ref": "C-0", "org": "x"}):
        with pytest.raises(NotFound):
            ask(nats_server, payload, user="consent", subject=CLIENT)
    for payload in ({"client_ref": ref}, {"client_ref": ref, "org": "o", "categories": []}):
        with pytest.raises(Invalid):
            ask(nats_server, payload, user="consent", subject=CLIENT)
    # Only the consent service may ask: not the bridge, which asks the consent service.
    with pytest.raises(Unavailable):
        ask(nats_server, {"client_ref": ref, "org": "ngo-ghent"}, subject=CLIENT, wait=1)


def test_every_category_has_a_package_shape_built_from_its_own_fields():
    assert set(CATEGORY_FIELDS) == set(DataCategory)
    for category, fields in CATEGORY_FIELDS.items():
        assert {FIELD_CATEGORY[f] for f in fields} == {category}, category
    assert sorted(f for fields in CATEGORY_FIELDS.values() for f in fields) == sorted(
        FIELD_CATEGORY
    )
    package = disclosure_package({"phone": "1", "health": {"a": 1}}, [DataCategory.CONTACT])
    assert package == {"contact": {"municipality": None, "phone": "1"}}
