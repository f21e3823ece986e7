"""Every route of every service, called by every kind of caller, held to its service's policy.

The routes come from the apps themselves, and each must be declared in its service's `policy.py`:
a route that is not fails here by name, and so does a declaration whose route is gone. For each
route and caller the policy says what must happen (`twoline_shared.policy.decide`): allowed calls
succeed; every other call gets 401, 403 or 404 problem+json and changes nothing — no row of any
table of the service's database (outbox and inbox included) and no disclosure asked of intake.
F1: second-line, auditor and service callers get 403 from every intake and consent route.
F7: another org, another office or the other agency get 404, or a listing without the owner's rows.

Adding a route: declare it in the service's `policy.py`, and add a recipe below (`@recipe`, or
an entry in RECIPES: a valid request and the owner of the data it reaches) unless it is a GET
without path parameters.

The bridge's disclosure call to intake (NATS request/reply) is answered in-process by a stand-in
here, so that allowed referrals succeed without a broker; tests/e2e covers the call itself.
"""

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import RSAKey
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, select

from tests.conftest import Issuer, assert_problem, running
from twoline.devissuer import DEFAULT_AUDIENCE, DEFAULT_ISSUER, issue
from twoline_audit import policy as audit_policy
from twoline_audit import service as audit_service
from twoline_audit.app import create_app as audit_app
from twoline_audit.config import Settings as AuditSettings
from twoline_case_resolution import policy as case_policy
from twoline_case_resolution import service as case_service
from twoline_case_resolution.app import create_app as case_app
from twoline_case_resolution.config import Settings as CaseSettings
from twoline_case_resolution.models import (
    Case,
    DecisionCreate,
    DisclosureRequestCreate,
    MoveReturnStep,
    SessionCreate,
    TrackRouted,
)
from twoline_consent import policy as consent_policy
from twoline_consent import service as consent_service
from twoline_consent.app import create_app as consent_app
from twoline_consent.config import Settings as ConsentSettings
from twoline_consent.models import ClientRegistered as ConsentClientRegistered
from twoline_consent.models import ConsentCreate
from twoline_consent.routes import get_client_check
from twoline_intake import policy as intake_policy
from twoline_intake import service as intake_service
from twoline_intake.app import create_app as intake_app
from twoline_intake.config import Settings as IntakeSettings
from twoline_intake.domain import disclosure_package
from twoline_intake.models import ClientCreate, ContactCreate
from twoline_referral import policy as referral_policy
from twoline_referral import service as referral_service
from twoline_referral.app import create_app as referral_app
from twoline_referral.config import Settings as ReferralSettings
from twoline_referral.consents import ConsentSource
from twoline_referral.models import (
    ConsentFacts,
    ConsentGranted,
    ConsentsAnswer,
    ConsentView,
    DisclosureRequested,
    ReferralCreate,
)
from twoline_referral.routes import get_consent_source, get_disclosure_fetcher
from twoline_shared.auth import Principal, Role
from twoline_shared.codes import TRACK_AGENCY, Agency, DataCategory, TaskStatus, Track
from twoline_shared.db import normalise_url
from twoline_shared.events import decode, new_event
from twoline_shared.policy import (
    KERNEL,
    ZONE_A_ROLES,
    Access,
    Owner,
    Policy,
    RouteKey,
    Scope,
    Verdict,
    app_routes,
    check,
    decide,
)

# ---------------------------------------------------------------- the five services


@dataclass(frozen=True)
class Service:
    create_app: Callable[[Any], FastAPI]
    settings: type
    policy: Policy


SERVICES: dict[str, Service] = {
    "intake": Service(intake_app, IntakeSettings, intake_policy.POLICY),
    "consent": Service(consent_app, ConsentSettings, consent_policy.POLICY),
    "referral": Service(referral_app, ReferralSettings, referral_policy.POLICY),
    "case-resolution": Service(case_app, CaseSettings, case_policy.POLICY),
    "audit": Service(audit_app, AuditSettings, audit_policy.POLICY),
}


def bare_app(name: str) -> FastAPI:
    """The service's app as it would be served; never started, so it needs no database."""
    service = SERVICES[name]
    return service.create_app(service.settings(database_url="sqlite://", nats_enabled=False))


# Read off the apps at collection: each served route is a row of the matrix.
SERVED: dict[str, list[RouteKey]] = {name: sorted(app_routes(bare_app(name))) for name in SERVICES}


def declared(name: str) -> Policy:
    return {**KERNEL, **SERVICES[name].policy}


# ---------------------------------------------------------------- callers

GHENT, LIEGE = "ngo-ghent", "ngo-liege"
IO, FEDASIL = Agency.IMMIGRATION_OFFICE.value, Agency.FEDASIL.value

# Valid tokens: every role, and every way of standing outside the owner's scope.
TOKEN_CALLERS: dict[str, dict[str, str]] = {
    "ngo_caseworker": {"role": "ngo_caseworker", "org": GHENT},
    "ngo_caseworker_other_org": {"role": "ngo_caseworker", "org": LIEGE},
    "ngo_caseworker_without_org": {"role": "ngo_caseworker"},
    "ngo_admin": {"role": "ngo_admin", "org": GHENT},
    "ngo_admin_other_org": {"role": "ngo_admin", "org": LIEGE},
    "icam_coach": {"role": "icam_coach", "agency": IO, "office": "brussels"},
    "icam_coach_other_office": {"role": "icam_coach", "agency": IO, "office": "antwerp"},
    "icam_coach_claiming_fedasil": {"role": "icam_coach", "agency": FEDASIL, "office": "brussels"},
    "return_counsellor": {"role": "return_counsellor", "agency": FEDASIL, "office": "brussels"},
    "return_counsellor_other_office": {
        "role": "return_counsellor",
        "agency": FEDASIL,
        "office": "antwerp",
    },
    "auditor": {"role": "auditor"},
    "service": {"role": "service"},
}
# Tokens the services must not accept, each carrying claims that would otherwise be allowed.
BAD_TOKENS = (
    "no_token",
    "garbage_token",
    "expired_token",
    "foreign_key_token",
    "wrong_audience_token",
    "wrong_issuer_token",
)
CALLERS = [*TOKEN_CALLERS, *BAD_TOKENS]


def principal_of(caller: str) -> Principal:
    claims = dict(TOKEN_CALLERS[caller])
    role = claims.pop("role")
    return Principal(sub=f"matrix-{caller}", roles=frozenset({role}), **claims)


# ---------------------------------------------------------------- seeds and requests

OWNER_ORG = Owner(org=GHENT)
SEED_CASEWORKER = Principal(sub="seed-caseworker", roles=frozenset({"ngo_caseworker"}), org=GHENT)
SEED_PERFORMER = {
    Track.LEGAL_STAY: Principal(
        sub="seed-coach", roles=frozenset({"icam_coach"}), agency=IO, office="brussels"
    ),
    Track.RETURN: Principal(
        sub="seed-counsellor",
        roles=frozenset({"return_counsellor"}),
        agency=FEDASIL,
        office="brussels",
    ),
}
RECORD = {"display_name": "Matrix Client", "languages": ["fr"], "needs": ["shelter"]}
CONSENTED = ["needs", "intentions"]


@dataclass
class Call:
    """One valid request for a route, and whose data it reaches."""

    path: dict[str, str] = field(default_factory=dict)
    json: Any = None
    params: dict[str, Any] | None = None
    owner: Owner | None = None
    # In a listing: the owner's row that an allowed caller sees and an outsider must not.
    marker: str | None = None


class IntakeStandIn:
    """Answers the bridge's `svc.intake.disclosure` call in-process and remembers every ask."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, list[str]]] = []

    def fetch(self, client_ref: str, org: str, categories: list[str]) -> dict[str, dict]:
        self.calls.append((client_ref, org, list(categories)))
        return disclosure_package(RECORD, [DataCategory(c) for c in categories])


class ConsentStandIn:
    """Answers the bridge's `svc.consent.*` calls in-process from the consents the world seeded
    into the bridge's projection (they are the consent service's own, recorded at once)."""

    def __init__(self) -> None:
        self.engine: Engine | None = None

    def _facts(self) -> list[ConsentFacts]:
        with Session(self.engine) as session:
            rows = session.exec(select(ConsentView)).all()
        return [ConsentFacts.model_validate(row.model_dump(exclude={"updated_at"})) for row in rows]

    def active(self, client_ref: str, org: str) -> ConsentsAnswer:
        facts = [f for f in self._facts() if (f.client_ref, f.org) == (client_ref, org)]
        return ConsentsAnswer(
            checked_at=datetime.now(UTC),
            client_known=bool(facts),
            consents=[f for f in facts if f.status == "active"],
        )

    def status(self, consent_ids: list[str]) -> ConsentsAnswer:
        facts = [f for f in self._facts() if f.consent_id in consent_ids]
        return ConsentsAnswer(checked_at=datetime.now(UTC), consents=facts)

    @property
    def source(self) -> ConsentSource:
        return ConsentSource(active=self.active, status=self.status)


def _intake_holds_nothing(client_ref: str, org: str) -> bool:
    """The consent service's `svc.intake.client` stand-in: seeds reach its projection directly."""
    return False


class World:
    """The five running apps on their own databases, and seeds owned by one NGO or one office."""

    def __init__(
        self,
        clients: dict[str, TestClient],
        intake: IntakeStandIn,
        consents: ConsentStandIn,
        issuer: Issuer,
    ):
        self.clients = clients
        self.intake = intake
        self.consents = consents
        self.issuer = issuer
        self.foreign_key = RSAKey.generate_key(2048, parameters={"kid": issuer.key.kid})
        self.tables = {name: inspect(self.engine(name)).get_table_names() for name in clients}
        self._routed = 0

    def engine(self, name: str) -> Engine:
        return self.clients[name].app.state.runtime.engine

    @contextlib.contextmanager
    def session(self, name: str) -> Iterator[Session]:
        with Session(self.engine(name), expire_on_commit=False) as session:
            yield session
            session.commit()

    # -- zone A: owned by ngo-ghent

    def intake_client(self) -> str:
        with self.session("intake") as session:
            client = intake_service.register_client(
                session, principal=SEED_CASEWORKER, data=ClientCreate(**RECORD)
            )
        return client.client_ref

    def contact(self) -> tuple[str, str]:
        client_ref = self.intake_client()
        with self.session("intake") as session:
            contact = intake_service.log_contact(
                session,
                principal=SEED_CASEWORKER,
                client_ref=client_ref,
                data=ContactCreate(kind="inform", topics=["shelter"], date=date.today()),
            )
        return client_ref, str(contact.id)

    def consent_client(self) -> str:
        client_ref = _client_ref()
        with self.session("consent") as session:
            consent_service.record_client(
                session, data=ConsentClientRegistered(client_ref=client_ref, org=GHENT)
            )
        return client_ref

    def consent(self) -> tuple[str, str]:
        client_ref = self.consent_client()
        with self.session("consent") as session:
            consent = consent_service.grant_consent(
                session,
                principal=SEED_CASEWORKER,
                data=ConsentCreate(**consent_body(client_ref)),
                confirm=_intake_holds_nothing,
            )
        return client_ref, str(consent.consent_id)

    def referable_client(self) -> str:
        """A client the bridge knows, with an active referral consent for each agency."""
        client_ref = _client_ref()
        now = datetime.now(UTC)
        with self.session("referral") as session:
            for agency in Agency:
                referral_service.record_consent_granted(
                    session,
                    data=ConsentGranted(
                        consent_id=f"CNS-{uuid.uuid4().hex[:12]}",
                        client_ref=client_ref,
                        org=GHENT,
                        recipient=agency.value,
                        purposes=["referral", "feedback"],
                        categories=CONSENTED,
                        valid_from=now - timedelta(days=1),
                        valid_until=now + timedelta(days=365),
                    ),
                    fetch_disclosure=self.intake.fetch,
                    consents=self.consents.source,
                )
        return client_ref

    def referral(self) -> tuple[str, str]:
        client_ref = self.referable_client()
        settings = self.clients["referral"].app.state.runtime.settings
        with self.session("referral") as session:
            referral = referral_service.create_referral(
                session,
                principal=SEED_CASEWORKER,
                body=ReferralCreate(client_ref=client_ref, tracks=[Track.LEGAL_STAY, Track.RETURN]),
                offices=settings.routing_offices,
                default_office=settings.routing_default_office,
                fetch_disclosure=self.intake.fetch,
                consents=self.consents.source,
            )
        return client_ref, str(referral.referral_id)

    def disclosure_request(self) -> str:
        """A pending step-up request from zone B for a referral of ngo-ghent's."""
        _, referral_id = self.referral()
        request_id = str(uuid.uuid4())
        with self.session("referral") as session:
            referral = referral_service.read_referral(
                session, principal=SEED_CASEWORKER, referral_id=uuid.UUID(referral_id)
            )
            referral_service.record_disclosure_request(
                session,
                data=DisclosureRequested(
                    request_id=request_id,
                    track_id=referral.tracks[0].track_id,
                    categories=["identity"],
                    reason="identity_verification",
                ),
            )
        return request_id

    # -- zone B: owned by the brussels office of the track's agency

    def case(self, track: Track, *, accepted: bool = False, urgent: bool = False) -> Case:
        # Each seed routed earlier than the last: an urgent seed heads its office queue.
        self._routed += 1
        routed = TrackRouted(
            track_id=f"T-{uuid.uuid4().hex}",
            track=track,
            agency=TRACK_AGENCY[track],
            office="brussels",
            urgency="urgent" if urgent else "normal",
            routed_at=datetime(2020, 1, 1, tzinfo=UTC) - timedelta(minutes=self._routed),
            purposes=["referral", "feedback"],
            # No disclosure: what a case reaches is the point here, not its (sealed) package.
        )
        with self.session("case-resolution") as session:
            case = case_service.open_case(session, routed=routed)
            if accepted:
                case_service.change_status(
                    session,
                    principal=SEED_PERFORMER[track],
                    case=case,
                    track=track,
                    target=TaskStatus.ACCEPTED,
                )
        return case

    def case_call(
        self,
        track: Track = Track.LEGAL_STAY,
        *,
        accepted: bool = False,
        urgent: bool = False,
        **request: Any,
    ) -> Call:
        case = self.case(track, accepted=accepted, urgent=urgent)
        owner = Owner(agency=case.agency, office=case.office, assignee=case.assignee)
        path = {"case_id": str(case.case_id), "track": track.value}
        return Call(path=path, owner=owner, **request)

    # -- callers

    def headers(self, caller: str, access: Access, owner: Owner | None) -> dict[str, str]:
        if caller in TOKEN_CALLERS:
            claims = dict(TOKEN_CALLERS[caller])
            return self.issuer.headers(claims.pop("role"), sub=f"matrix-{caller}", **claims)
        if caller == "no_token":
            return {}
        if caller == "garbage_token":
            return {"Authorization": "Bearer not-a-jwt"}
        claims = dict(TOKEN_CALLERS[_would_be_allowed(access, owner)])
        role = claims.pop("role")
        forged = {
            "expired_token": lambda: issue(
                self.issuer.key, role=role, now=int(time.time()) - 3600, ttl=60, **claims
            ),
            "foreign_key_token": lambda: issue(self.foreign_key, role=role, **claims),
            "wrong_audience_token": lambda: issue(
                self.issuer.key, role=role, audience="not-twoline", **claims
            ),
            "wrong_issuer_token": lambda: issue(
                self.issuer.key, role=role, issuer="https://issuer.example", **claims
            ),
        }[caller]()
        return {"Authorization": f"Bearer {forged}"}

    # -- what a refused call must leave alone

    def snapshot(self, name: str) -> dict[str, list[str]]:
        """Every row of every table of the service's database (and what intake was asked),
        except the audit records of refusals (`refusals`)."""
        rows: dict[str, list[str]] = {}
        with self.engine(name).connect() as connection:
            for table in self.tables[name]:
                if table in _DERIVED:
                    continue
                where = _NOT_REFUSAL.get(table, "")
                result = connection.execute(text(f'SELECT * FROM "{table}" {where}'))
                rows[table] = sorted(repr(tuple(row)) for row in result)
        if name == "referral":
            rows["intake disclosure calls"] = [repr(c) for c in self.intake.calls]
        return rows

    def refusals(self, name: str) -> list[dict[str, Any]]:
        """The audit records of refused requests the service holds: in its outbox, or (the
        audit service, which publishes nothing) appended to its own log."""
        query = (
            "SELECT data FROM audit_entry WHERE type LIKE 'audit.audit.route.%' ORDER BY \"index\""
            if name == "audit"
            else "SELECT payload FROM outbox WHERE subject LIKE 'audit.%.route.%' ORDER BY seq"
        )
        with self.engine(name).connect() as connection:
            found = [row[0] for row in connection.execute(text(query))]
        return [
            (
                decode(raw.encode() if isinstance(raw, str) else raw).data
                if name != "audit"
                else (json.loads(raw) if isinstance(raw, str) else raw)
            )
            for raw in found
        ]


# The audit log's tree-node cache: derived from its entries, so it grows with a refusal's record.
_DERIVED = frozenset({"audit_tree_node"})

# A refused request leaves exactly one row: its audit record (checked on its own).
_NOT_REFUSAL = {
    "outbox": "WHERE subject NOT LIKE 'audit.%.route.%'",
    "audit_entry": "WHERE type NOT LIKE 'audit.audit.route.%'",
}


def _client_ref() -> str:
    return "C-" + uuid.uuid4().hex[:12].upper()


def _would_be_allowed(access: Access, owner: Owner | None) -> str:
    """A caller the route lets through, whose claims a bad token then carries."""
    for caller in TOKEN_CALLERS:
        if decide(access, principal_of(caller), owner) is Verdict.ALLOWED:
            return caller
    return "ngo_caseworker"


def consent_body(client_ref: str, recipient: str = FEDASIL) -> dict[str, Any]:
    return {
        "client_ref": client_ref,
        "recipient": recipient,
        "purposes": ["referral", "feedback"],
        "categories": CONSENTED,
        "method": "verbal",
        "language": "fr",
        "interpreter": False,
        "information_version": "2026-01",
    }


# ---------------------------------------------------------------- one recipe per route

Recipe = Callable[[World], Call]
RECIPES: dict[tuple[str, str, str], Recipe] = {}


def recipe(service: str, method: str, path: str) -> Callable[[Recipe], Recipe]:
    def register(function: Recipe) -> Recipe:
        RECIPES[(service, method, path)] = function
        return function

    return register


def today() -> str:
    return date.today().isoformat()


@recipe("intake", "POST", "/v1/clients")
def _register_client(w: World) -> Call:
    return Call(json={"display_name": "Matrix Client", "needs": ["food"]})


@recipe("intake", "GET", "/v1/clients")
def _list_clients(w: World) -> Call:
    client_ref = w.intake_client()
    return Call(owner=OWNER_ORG, marker=client_ref)


def _on_client(w: World, **request: Any) -> Call:
    return Call(path={"client_ref": w.intake_client()}, owner=OWNER_ORG, **request)


recipe("intake", "GET", "/v1/clients/{client_ref}")(_on_client)
recipe("intake", "GET", "/v1/clients/{client_ref}/contacts")(_on_client)


@recipe("intake", "PATCH", "/v1/clients/{client_ref}")
def _update_client(w: World) -> Call:
    return _on_client(w, json={"needs": ["food"]})


@recipe("intake", "POST", "/v1/clients/{client_ref}/contacts")
def _log_contact(w: World) -> Call:
    return _on_client(w, json={"kind": "inform", "topics": ["shelter"], "date": today()})


@recipe("intake", "GET", "/v1/clients/{client_ref}/contacts/{contact_id}")
def _read_contact(w: World) -> Call:
    client_ref, contact_id = w.contact()
    return Call(path={"client_ref": client_ref, "contact_id": contact_id}, owner=OWNER_ORG)


@recipe("consent", "POST", "/v1/consents")
def _grant_consent(w: World) -> Call:
    return Call(json=consent_body(w.consent_client()), owner=OWNER_ORG)


@recipe("consent", "GET", "/v1/consents")
def _list_consents(w: World) -> Call:
    client_ref, consent_id = w.consent()
    return Call(params={"client_ref": client_ref}, owner=OWNER_ORG, marker=consent_id)


def _on_consent(w: World, **request: Any) -> Call:
    _, consent_id = w.consent()
    return Call(path={"consent_id": consent_id}, owner=OWNER_ORG, **request)


recipe("consent", "GET", "/v1/consents/{consent_id}")(_on_consent)
recipe("consent", "GET", "/v1/consents/{consent_id}/receipt")(_on_consent)


@recipe("consent", "POST", "/v1/consents/{consent_id}/withdraw")
def _withdraw_consent(w: World) -> Call:
    return _on_consent(w, json={"reason": "The client asked."})


@recipe("referral", "POST", "/v1/referrals")
def _create_referral(w: World) -> Call:
    body = {"client_ref": w.referable_client(), "tracks": ["legal_stay", "return"]}
    return Call(json=body, owner=OWNER_ORG)


@recipe("referral", "GET", "/v1/referrals")
def _list_referrals(w: World) -> Call:
    client_ref, referral_id = w.referral()
    return Call(params={"client_ref": client_ref}, owner=OWNER_ORG, marker=referral_id)


def _on_referral(w: World, **request: Any) -> Call:
    _, referral_id = w.referral()
    return Call(path={"referral_id": referral_id}, owner=OWNER_ORG, **request)


recipe("referral", "GET", "/v1/referrals/{referral_id}")(_on_referral)
recipe("referral", "GET", "/v1/referrals/{referral_id}/access-log")(_on_referral)


@recipe("referral", "POST", "/v1/referrals/{referral_id}/cancel")
def _cancel_referral(w: World) -> Call:
    return _on_referral(w, json={"reason": "client_request"})


@recipe("referral", "GET", "/v1/disclosure-requests")
def _list_disclosure_requests(w: World) -> Call:
    request_id = w.disclosure_request()
    return Call(params={"status": "pending", "limit": 200}, owner=OWNER_ORG, marker=request_id)


@recipe("referral", "POST", "/v1/disclosure-requests/{request_id}/refuse")
def _refuse_disclosure_request(w: World) -> Call:
    path = {"request_id": w.disclosure_request()}
    return Call(path=path, json={"reason": "client_declined"}, owner=OWNER_ORG)


CASES = "/v1/cases/{case_id}"
TRACKS = CASES + "/tracks/{track}"
RETURN = Track.RETURN


@recipe("case-resolution", "GET", "/v1/queue")
def _read_queue(w: World) -> Call:
    call = w.case_call(urgent=True, params={"limit": 200})
    call.marker = call.path["case_id"]
    return call


RECIPES.update(
    {
        ("case-resolution", "GET", CASES): lambda w: w.case_call(),
        ("case-resolution", "POST", TRACKS + "/accept"): lambda w: w.case_call(),
        ("case-resolution", "POST", TRACKS + "/reject"): lambda w: w.case_call(
            json={"reason": "no_capacity"}
        ),
        ("case-resolution", "POST", TRACKS + "/status"): lambda w: w.case_call(
            accepted=True, json={"status": "in-progress"}
        ),
        ("case-resolution", "POST", TRACKS + "/complete"): lambda w: w.case_call(
            accepted=True, json={"outcome": "no_solution"}
        ),
        ("case-resolution", "PUT", TRACKS + "/options/{option}"): lambda w: _with_path(
            w.case_call(accepted=True, json={"assessment": "viable"}), option="9bis"
        ),
        ("case-resolution", "POST", TRACKS + "/steps"): lambda w: w.case_call(
            RETURN, accepted=True, json={"step": "informing"}
        ),
        ("case-resolution", "POST", CASES + "/sessions"): lambda w: w.case_call(
            RETURN, accepted=True, json={"date": today(), "mode": "in_person", "interpreter": False}
        ),
        ("case-resolution", "POST", CASES + "/decisions"): lambda w: w.case_call(
            accepted=True, json={"decision": "undecided", "date": today()}
        ),
        ("case-resolution", "POST", CASES + "/disclosure-requests"): lambda w: w.case_call(
            accepted=True, json={"categories": ["identity"], "reason": "identity_verification"}
        ),
    }
)


def _work(w: World, on: Track, record: Callable[..., Any], key: str, **body: Any) -> Call:
    """A call naming one row of track work on an accepted case, recorded by its performer."""
    call = w.case_call(on, accepted=True)
    with w.session("case-resolution") as session:
        case = session.get(Case, uuid.UUID(call.path["case_id"]))
        row = record(session, principal=SEED_PERFORMER[on], case=case, **body)
    row_id = getattr(row, "request_id", None) or row.id
    return _with_path(call, **{key: str(row_id)})


RECIPES.update(
    {
        ("case-resolution", "GET", TRACKS + "/steps/{step_id}"): lambda w: _work(
            w,
            RETURN,
            case_service.move_return_step,
            "step_id",
            track=RETURN,
            body=MoveReturnStep(step="informing"),
        ),
        ("case-resolution", "GET", CASES + "/sessions/{session_id}"): lambda w: _work(
            w,
            Track.LEGAL_STAY,
            case_service.record_session,
            "session_id",
            body=SessionCreate(date=date.today(), mode="in_person", interpreter=False),
        ),
        ("case-resolution", "GET", CASES + "/decisions/{decision_id}"): lambda w: _work(
            w,
            Track.LEGAL_STAY,
            case_service.record_decision,
            "decision_id",
            body=DecisionCreate(decision="undecided", date=date.today()),
        ),
        ("case-resolution", "GET", CASES + "/disclosure-requests/{request_id}"): lambda w: _work(
            w,
            Track.LEGAL_STAY,
            case_service.request_disclosure,
            "request_id",
            body=DisclosureRequestCreate(categories=["identity"], reason="identity_verification"),
        ),
    }
)


def _audit_entry(w: World) -> int:
    """One more record in the audit log; its index."""
    event = new_event(source="twoline/matrix", type="audit.matrix.thing.read", action="read")
    with w.session("audit") as session:
        return audit_service.append(session, event=event).index


@recipe("audit", "GET", "/v1/log/proofs/inclusion/{entry_id}")
def _audit_inclusion_proof(w: World) -> Call:
    return Call(path={"entry_id": str(_audit_entry(w))})


@recipe("audit", "GET", "/v1/log/proofs/consistency")
def _audit_consistency_proof(w: World) -> Call:
    size = _audit_entry(w) + 1
    return Call(params={"first": 1, "second": size})


@recipe("audit", "GET", "/v1/stats")
def _audit_stats(w: World) -> Call:
    _audit_entry(w)
    return Call(params={"from": "2020-01-01", "to": "2100-01-01", "by": "agency"})


@recipe("audit", "GET", "/v1/traces/{referral_id}")
def _audit_trace(w: World) -> Call:
    referral_id = str(uuid.uuid4())
    event = new_event(
        source="twoline/matrix",
        type="audit.matrix.referral.create",
        action="create",
        resource_type="referral",
        resource_id=referral_id,
    )
    with w.session("audit") as session:
        audit_service.append(session, event=event)
    return Call(path={"referral_id": referral_id})


def _with_path(call: Call, **path: str) -> Call:
    call.path.update(path)
    return call


def recipe_for(service: str, key: RouteKey, access: Access) -> Recipe:
    method, path = key
    found = RECIPES.get((service, method, path))
    if found is not None:
        return found
    if method == "GET" and "{" not in path and (access.scope is Scope.NONE or access.public):
        return lambda w: Call()
    pytest.fail(
        f"{service} {method} {path}: no request recipe. Add a @recipe({service!r}, {method!r}, "
        f"{path!r}) in tests/firewall/test_route_policy.py: a valid request, and the owner of "
        "the data it reaches."
    )


# ---------------------------------------------------------------- fixtures


@contextlib.contextmanager
def module_databases(admin_url: str | None, directory: Path) -> Iterator[dict[str, str]]:
    """One fresh database per service for this module (SQLite files, or Postgres databases)."""
    if admin_url is None:
        yield {name: f"sqlite:///{directory / name}.db" for name in SERVICES}
        return
    admin = create_engine(normalise_url(admin_url), isolation_level="AUTOCOMMIT")
    names = {name: f"t_policy_{name.replace('-', '_')}_{uuid.uuid4().hex[:8]}" for name in SERVICES}
    try:
        with admin.connect() as connection:
            for database in names.values():
                connection.execute(text(f'CREATE DATABASE "{database}"'))
        base = make_url(normalise_url(admin_url))
        yield {
            name: base.set(database=database).render_as_string(hide_password=False)
            for name, database in names.items()
        }
    finally:
        with admin.connect() as connection:
            for database in names.values():
                connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def world(
    issuer: Issuer, postgres_admin_url: str | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """All five services, started once for the whole matrix, without NATS (nothing runs behind
    a request: the outbox stays as the request left it)."""
    intake, consents = IntakeStandIn(), ConsentStandIn()
    directory = tmp_path_factory.mktemp("route-policy")
    with (
        module_databases(postgres_admin_url, directory) as urls,
        contextlib.ExitStack() as stack,
    ):
        clients = {}
        for name, service in SERVICES.items():
            app = service.create_app(
                service.settings(
                    database_url=urls[name],
                    auth_jwks_url=str(issuer.jwks_path),
                    auth_issuer=DEFAULT_ISSUER,
                    auth_audience=DEFAULT_AUDIENCE,
                    nats_enabled=False,
                    # Audit's checkpoint key (the other services' settings ignore it).
                    signing_key_path=directory / "audit-signing-key.pem",
                )
            )
            if name == "referral":
                app.dependency_overrides[get_disclosure_fetcher] = lambda: intake.fetch
                app.dependency_overrides[get_consent_source] = lambda: consents.source
                consents.engine = app.state.runtime.engine
            if name == "consent":
                app.dependency_overrides[get_client_check] = lambda: _intake_holds_nothing
            clients[name] = stack.enter_context(running(app))
        yield World(clients, intake, consents, issuer)


# ---------------------------------------------------------------- the policies themselves


@pytest.mark.parametrize("name", SERVICES)
def test_every_route_is_declared_with_the_roles_its_code_requires(name):
    problems = check(bare_app(name), SERVICES[name].policy)
    assert not problems, (
        f"{name}: its routes and twoline_{name.replace('-', '_')}/policy.py disagree:\n  "
        + "\n  ".join(problems)
    )


def test_every_recipe_is_for_a_served_route():
    served = {(name, *key) for name in SERVICES for key in SERVED[name]}
    assert not set(RECIPES) - served, "recipes for routes no app serves"


@pytest.mark.parametrize("name", ["intake", "consent"])
def test_f1_zone_a_routes_answer_second_line_auditor_and_service_with_403(name):
    outsiders = [c for c in TOKEN_CALLERS if Role(TOKEN_CALLERS[c]["role"]) not in ZONE_A_ROLES]
    for key, access in SERVICES[name].policy.items():
        assert not access.public and access.roles <= ZONE_A_ROLES, key
        for caller in outsiders:
            assert decide(access, principal_of(caller), OWNER_ORG) is Verdict.FORBIDDEN


# ---------------------------------------------------------------- the matrix

MATRIX = [(name, key, caller) for name in SERVICES for key in SERVED[name] for caller in CALLERS]


@pytest.mark.parametrize(
    ("name", "key", "caller"),
    MATRIX,
    ids=[f"{name}:{key[0]}:{key[1]}:{caller}" for name, key, caller in MATRIX],
)
def test_route_answers_each_caller_as_its_policy_says(world, name, key, caller):
    access = declared(name).get(key)
    if access is None:
        pytest.fail(
            f"{name} serves {key[0]} {key[1]}, which twoline_{name.replace('-', '_')}/policy.py "
            "does not declare: say which roles may call it and how it is scoped."
        )
    call = recipe_for(name, key, access)(world)
    principal = principal_of(caller) if caller in TOKEN_CALLERS else None
    verdict = decide(access, principal, call.owner)
    headers = world.headers(caller, access, call.owner)
    assert_answer(world, name, key, call, headers, verdict, caller)


# A token holding roles of two sides of the firewall: the IdP should never issue one, and F1 says
# that if it does, it is a second-line or auditor token that zone A refuses.
MIXED_TOKENS: dict[str, dict[str, Any]] = {
    "icam_coach_and_ngo_caseworker": {
        "roles": ["icam_coach", "ngo_caseworker"],
        "org": GHENT,
        "agency": IO,
        "office": "brussels",
    },
    "auditor_and_ngo_caseworker": {"roles": ["auditor", "ngo_caseworker"], "org": GHENT},
}
ZONE_A_ROUTES = [
    (name, key, caller)
    for name in ("intake", "consent")
    for key in sorted(SERVICES[name].policy)
    for caller in MIXED_TOKENS
]


@pytest.mark.parametrize(
    ("name", "key", "caller"),
    ZONE_A_ROUTES,
    ids=[f"{name}:{key[0]}:{key[1]}:{caller}" for name, key, caller in ZONE_A_ROUTES],
)
def test_f1_a_token_mixing_zone_b_or_auditor_roles_with_ngo_roles_gets_403(
    world, name, key, caller
):
    access = SERVICES[name].policy[key]
    call = recipe_for(name, key, access)(world)
    claims = MIXED_TOKENS[caller]
    principal = Principal(
        sub=f"matrix-{caller}",
        roles=frozenset(claims["roles"]),
        **{k: v for k, v in claims.items() if k != "roles"},
    )
    assert decide(access, principal, call.owner) is Verdict.FORBIDDEN
    now = int(time.time())
    token = jwt.encode(
        {"alg": "RS256", "kid": world.issuer.key.kid},
        {
            "iss": DEFAULT_ISSUER,
            "aud": DEFAULT_AUDIENCE,
            "sub": principal.sub,
            "iat": now,
            "exp": now + 600,
            **claims,
        },
        world.issuer.key,
    )
    headers = {"Authorization": f"Bearer {token}"}
    assert_answer(world, name, key, call, headers, Verdict.FORBIDDEN, caller)


def assert_answer(
    world: World,
    name: str,
    key: RouteKey,
    call: Call,
    headers: dict[str, str],
    verdict: Verdict,
    caller: str,
) -> None:
    """Make the call; allowed: 2xx (a listing shows the owner's row, or to an outsider not);
    refused: exactly the verdict's problem+json, and not a row changed."""
    method, path = key
    before = world.snapshot(name) if verdict.status else None
    refused_before = len(world.refusals(name)) if verdict.status else 0

    response = world.clients[name].request(
        method, path.format(**call.path), json=call.json, params=call.params, headers=headers
    )

    where = f"{caller} on {name} {method} {path}"
    if verdict.status is None:
        assert 200 <= response.status_code < 300, (
            f"{where}: the policy allows it ({verdict.value}), the service answered "
            f"{response.status_code}: {response.text}"
        )
        if call.marker is not None:
            shown = call.marker in response.text
            assert shown == (verdict is Verdict.ALLOWED), (
                f"{where}: the owner's row {'leaked' if shown else 'is missing'} ({verdict.value})"
            )
        return
    assert response.status_code == verdict.status, (
        f"{where}: the policy says {verdict.status} ({verdict.value}), the service answered "
        f"{response.status_code}: {response.text}"
    )
    assert_problem(response, verdict.status)
    if verdict is Verdict.UNAUTHENTICATED:
        assert response.headers.get("www-authenticate", "").startswith("Bearer")
    after = world.snapshot(name)
    changed = sorted(t for t in set(before) | set(after) if before.get(t) != after.get(t))
    assert not changed, f"{where}: refused with {response.status_code} but changed {changed}"
    # Every 401 and 403 is an audit record of its own, naming the route template and the
    # reason, never the concrete path (its ids may be anything the caller typed); a 404 (F7:
    # outside the caller's scope, as if there were nothing) is not.
    new = world.refusals(name)[refused_before:]
    if response.status_code in (401, 403):
        assert len(new) == 1, f"{where}: {len(new)} audit records of the refusal"
        [record] = new
        assert (record["outcome"], record["status"], record["route"]) == (
            "denied",
            response.status_code,
            path,
        ), where
        assert record["reason"] == response.json()["type"].rsplit(":", 1)[1], where
        concrete = path.format(**call.path)
        if concrete != path:
            assert concrete not in json.dumps(record), where
    else:
        assert new == [], f"{where}: a {response.status_code} left an audit record"


# ---------------------------------------------------------------- safe retries (Idempotency-Key)

# Every POST of every service: a partner whose answer was lost sends it again.
POSTS = [(name, key) for name in SERVICES for key in SERVED[name] if key[0] == "POST"]


def _counts(world: World, name: str) -> dict[str, int]:
    """Rows per table, but the outbox (a replay's read is audited like any read)."""
    snapshot = world.snapshot(name)
    return {table: len(rows) for table, rows in snapshot.items() if table != "outbox"}


@pytest.mark.parametrize(
    ("name", "key"), POSTS, ids=[f"{name}:{key[0]}:{key[1]}" for name, key in POSTS]
)
def test_every_post_sent_twice_with_one_idempotency_key_is_done_once(world, name, key):
    """The retry gets the same status, Location and body (the resource as it is now), marked as
    a replay, and changes no row; the same key on another request is a 422."""
    access = declared(name)[key]
    call = recipe_for(name, key, access)(world)
    caller = _would_be_allowed(access, call.owner)
    headers = {**world.headers(caller, access, call.owner), "Idempotency-Key": uuid.uuid4().hex}
    method, path = key

    def send(body: Any = call.json) -> Any:
        return world.clients[name].request(
            method, path.format(**call.path), json=body, params=call.params, headers=headers
        )

    first = send()
    assert 200 <= first.status_code < 300, first.text
    assert "idempotent-replayed" not in first.headers
    if first.status_code == 201:
        assert first.headers["location"].startswith("/v1/"), "a 201 names what it created"
        read = world.clients[name].get(first.headers["location"], headers=headers)
        assert read.status_code == 200, f"Location {first.headers['location']}: {read.text}"
    after_first = _counts(world, name)

    again = send()

    assert again.status_code == first.status_code, again.text
    assert again.headers.get("location") == first.headers.get("location")
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert _counts(world, name) == after_first, "the retry stored something"
    # The same key on another valid request of the route (another seed, or another body).
    other = recipe_for(name, key, access)(world)
    if (other.path, other.json) == (call.path, call.json):
        other.json = {**call.json, "display_name": "Another Client"}
    before_reuse = _counts(world, name)
    reused = world.clients[name].request(
        method, path.format(**other.path), json=other.json, params=other.params, headers=headers
    )
    assert_problem(reused, 422, "idempotency-key-reused")
    assert _counts(world, name) == before_reuse, "a refused reuse stored something"


def test_every_post_route_takes_an_idempotency_key():
    """Declared on the route, so it shows in the OpenAPI description too."""
    for name, (method, path) in POSTS:
        parameters = bare_app(name).openapi()["paths"][path][method.lower()].get("parameters", [])
        assert "Idempotency-Key" in {p["name"] for p in parameters if p["in"] == "header"}, (
            f"{name} {method} {path}"
        )
