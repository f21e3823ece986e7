"""The declared route policy: its type, what it promises a caller, and how it is held to an app."""

from pathlib import Path
from typing import Annotated

import pytest
from fastapi import APIRouter, Depends, FastAPI

from twoline_shared.auth import (
    CurrentPrincipal,
    NgoCaseworker,
    NgoStaff,
    Principal,
    Role,
    SecondLine,
    require,
)
from twoline_shared.policy import (
    KERNEL,
    PUBLIC,
    Access,
    Owner,
    Reach,
    Scope,
    Verdict,
    allow,
    app_routes,
    check,
    decide,
    openapi_routes,
    required_roles,
)
from twoline_shared.runtime import ServiceSpec, create_service_app
from twoline_shared.settings import ServiceSettings

IO, FEDASIL = "immigration_office", "fedasil"


def who(role: str, *, sub: str = "someone", **claims: str) -> Principal:
    return Principal(sub=sub, roles=frozenset({role}), **claims)


CASEWORKER = who("ngo_caseworker", org="ngo-ghent")
COACH = who("icam_coach", agency=IO, office="brussels")
GHENT = Owner(org="ngo-ghent")
IO_BRUSSELS = Owner(agency=IO, office="brussels")


# ---------------------------------------------------------------- the type


def test_an_access_says_roles_and_scope_that_fit_together():
    assert allow(Role.NGO_CASEWORKER, scope=Scope.ORG).roles == {Role.NGO_CASEWORKER}
    assert PUBLIC.public and not PUBLIC.roles
    assert KERNEL == {("GET", "/healthz"): PUBLIC, ("GET", "/readyz"): PUBLIC}


@pytest.mark.parametrize(
    "make",
    [
        lambda: Access(roles=frozenset({Role.AUDITOR}), public=True),
        lambda: Access(public=True, scope=Scope.ORG),
        lambda: allow(),
        lambda: allow(Role.ICAM_COACH, scope=Scope.ORG),
        lambda: allow(Role.NGO_CASEWORKER, Role.AUDITOR, scope=Scope.ORG),
        lambda: allow(Role.NGO_ADMIN, scope=Scope.AGENCY_OFFICE),
        lambda: allow(Role.AUDITOR, scope=Scope.OWN_TRACK),
    ],
    ids=[
        "public-with-roles",
        "public-with-scope",
        "no-roles",
        "org-scope-for-coach",
        "org-scope-for-auditor",
        "office-scope-for-ngo",
        "track-scope-for-auditor",
    ],
)
def test_an_access_that_cannot_mean_anything_is_refused_where_it_is_declared(make):
    with pytest.raises(ValueError):
        make()


# ---------------------------------------------------------------- what it promises


def test_public_routes_answer_anyone_and_others_need_a_valid_token():
    assert decide(PUBLIC, None) is Verdict.ALLOWED
    assert decide(allow(Role.AUDITOR), None) is Verdict.UNAUTHENTICATED
    assert Verdict.UNAUTHENTICATED.status == 401
    assert Verdict.ALLOWED.status is None and Verdict.OWN_ROWS_ONLY.status is None


@pytest.mark.parametrize(
    "principal",
    [
        who("auditor"),
        who("service"),
        COACH,
        who("ngo_admin", org="ngo-ghent"),
        who("ngo_caseworker"),  # a role without the org it needs
        Principal(sub="x", roles=frozenset({"root"}), org="ngo-ghent"),
    ],
    ids=["auditor", "service", "coach", "admin", "no-org", "unknown-role"],
)
def test_a_caller_without_an_allowed_role_and_its_claims_is_forbidden(principal):
    access = allow(Role.NGO_CASEWORKER, scope=Scope.ORG)
    assert decide(access, principal, GHENT) is Verdict.FORBIDDEN


def test_second_line_roles_need_their_own_agency_and_an_office():
    access = allow(Role.ICAM_COACH, Role.RETURN_COUNSELLOR, scope=Scope.AGENCY_OFFICE)
    claiming_fedasil = who("icam_coach", agency=FEDASIL, office="brussels")
    without_office = who("icam_coach", agency=IO)
    assert decide(access, claiming_fedasil, IO_BRUSSELS) is Verdict.FORBIDDEN
    assert decide(access, without_office, IO_BRUSSELS) is Verdict.FORBIDDEN
    assert decide(access, COACH, IO_BRUSSELS) is Verdict.ALLOWED


@pytest.mark.parametrize(
    ("reach", "outsider"),
    [
        (Reach.ONE, Verdict.NOT_FOUND),
        (Reach.LIST, Verdict.OWN_ROWS_ONLY),
        (Reach.NEW, Verdict.ALLOWED),
    ],
)
def test_another_org_gets_what_the_reach_says(reach, outsider):
    access = allow(Role.NGO_CASEWORKER, scope=Scope.ORG, reach=reach)
    other = who("ngo_caseworker", org="ngo-liege")
    assert decide(access, CASEWORKER, GHENT) is Verdict.ALLOWED
    assert decide(access, other, GHENT) is outsider


@pytest.mark.parametrize("scope", [Scope.AGENCY_OFFICE, Scope.OWN_TRACK])
def test_another_office_or_the_other_agency_finds_nothing_unless_it_is_the_assignee(scope):
    access = allow(Role.ICAM_COACH, Role.RETURN_COUNSELLOR, scope=scope)
    antwerp = who("icam_coach", sub="coach-7", agency=IO, office="antwerp")
    counsellor = who("return_counsellor", sub="coach-7", agency=FEDASIL, office="brussels")
    assigned = Owner(agency=IO, office="brussels", assignee="coach-7")
    assert decide(access, COACH, IO_BRUSSELS) is Verdict.ALLOWED
    assert decide(access, antwerp, IO_BRUSSELS) is Verdict.NOT_FOUND
    assert decide(access, counsellor, IO_BRUSSELS) is Verdict.NOT_FOUND
    assert decide(access, antwerp, assigned) is Verdict.ALLOWED
    # The assignee's sub counts only inside the case's own agency.
    assert decide(access, counsellor, assigned) is Verdict.NOT_FOUND


def test_unscoped_routes_need_the_role_only():
    assert decide(allow(Role.AUDITOR), who("auditor")) is Verdict.ALLOWED


def test_a_scoped_route_must_be_told_whose_data_it_reaches():
    with pytest.raises(ValueError, match="owner"):
        decide(allow(Role.NGO_CASEWORKER, scope=Scope.ORG), CASEWORKER)


@pytest.mark.parametrize(
    "roles",
    [
        {"icam_coach", "ngo_caseworker"},
        {"auditor", "ngo_admin"},
        {"service", "ngo_caseworker"},
        {"auditor", "return_counsellor"},
    ],
    ids=lambda roles: "+".join(sorted(roles)),
)
def test_f1_a_token_holding_roles_of_two_zones_reaches_no_route(roles):
    principal = Principal(
        sub="x", roles=frozenset(roles), org="ngo-ghent", agency=FEDASIL, office="brussels"
    )
    for access, owner in [
        (allow(Role.NGO_CASEWORKER, Role.NGO_ADMIN, scope=Scope.ORG), GHENT),
        (allow(Role.RETURN_COUNSELLOR, scope=Scope.AGENCY_OFFICE), Owner(agency=FEDASIL)),
        (allow(Role.AUDITOR), None),
    ]:
        assert decide(access, principal, owner) is Verdict.FORBIDDEN
    assert decide(PUBLIC, principal) is Verdict.ALLOWED


def test_two_roles_of_one_zone_are_one_zone():
    principal = Principal(sub="x", roles=frozenset({"ngo_caseworker", "ngo_admin"}), org="ngo-a")
    access = allow(Role.NGO_ADMIN, scope=Scope.ORG, reach=Reach.LIST)
    assert decide(access, principal, Owner(org="ngo-a")) is Verdict.ALLOWED


# ---------------------------------------------------------------- held to an app


def load_thing(thing_id: str, principal: SecondLine) -> str:
    return thing_id


Thing = Annotated[str, Depends(load_thing)]
IcamOnly = Annotated[Principal, Depends(require(Role.ICAM_COACH))]

router = APIRouter(prefix="/things")


@router.get("")
def list_things(principal: NgoStaff) -> list[str]:
    return []


@router.post("/{thing_id}/poke")
def poke_thing(thing: Thing, principal: IcamOnly) -> str:
    return thing


@router.get("/{thing_id}/anyone")
def any_token(thing_id: str, principal: CurrentPrincipal) -> str:
    return thing_id


@router.delete("/{thing_id}", include_in_schema=False)
def hidden_delete(thing_id: str, principal: NgoCaseworker) -> None:
    return None


@router.get("/open/door")
def open_door() -> str:
    return "open"


def service_app() -> FastAPI:
    spec = ServiceSpec(
        name="policy-test",
        title="policy test",
        description="A service shaped like the five, with one router under /v1.",
        routers=[router],
        migrations=Path("."),
        publishes={},
    )
    return create_service_app(spec, ServiceSettings(database_url="sqlite://", nats_enabled=False))


POLICY = {
    ("GET", "/v1/things"): allow(
        Role.NGO_CASEWORKER, Role.NGO_ADMIN, scope=Scope.ORG, reach=Reach.LIST
    ),
    ("POST", "/v1/things/{thing_id}/poke"): allow(Role.ICAM_COACH, scope=Scope.AGENCY_OFFICE),
    ("GET", "/v1/things/{thing_id}/anyone"): allow(*Role),
    ("DELETE", "/v1/things/{thing_id}"): allow(Role.NGO_CASEWORKER, scope=Scope.ORG),
    ("GET", "/v1/things/open/door"): PUBLIC,
}


def test_app_routes_lists_every_api_route_under_its_prefix_hidden_ones_too():
    app = service_app()
    served = set(app_routes(app))
    assert served == set(POLICY) | set(KERNEL)
    # The OpenAPI document misses the hidden route; the docs routes are not API routes.
    assert openapi_routes(app) == served - {("DELETE", "/v1/things/{thing_id}")}
    assert not any(path.startswith(("/docs", "/redoc", "/openapi")) for _, path in served)


def test_required_roles_are_read_off_the_route_dependencies():
    routes = app_routes(service_app())
    assert required_roles(routes[("GET", "/v1/things")]) == {Role.NGO_CASEWORKER, Role.NGO_ADMIN}
    # A loader that needs SecondLine and a route that needs IcamCoach: only coaches get through.
    assert required_roles(routes[("POST", "/v1/things/{thing_id}/poke")]) == {Role.ICAM_COACH}
    assert required_roles(routes[("GET", "/v1/things/{thing_id}/anyone")]) == frozenset(Role)
    assert required_roles(routes[("GET", "/v1/things/open/door")]) is None
    assert required_roles(routes[("GET", "/healthz")]) is None


def test_a_policy_that_matches_its_app_has_no_problems():
    assert check(service_app(), POLICY) == []


def test_check_names_every_disagreement():
    policy = dict(POLICY)
    del policy[("DELETE", "/v1/things/{thing_id}")]
    policy[("GET", "/v1/things/{thing_id}")] = allow(Role.NGO_CASEWORKER, scope=Scope.ORG)
    policy[("GET", "/v1/things")] = allow(Role.NGO_CASEWORKER, scope=Scope.ORG, reach=Reach.LIST)
    policy[("GET", "/v1/things/open/door")] = allow(Role.AUDITOR)
    policy[("GET", "/v1/things/{thing_id}/anyone")] = PUBLIC
    policy[("GET", "/healthz")] = PUBLIC

    assert check(service_app(), policy) == [
        "GET /healthz: kernel-public (twoline_shared.policy.KERNEL); do not declare it again",
        "DELETE /v1/things/{thing_id}: served but not declared in the service's policy",
        "GET /v1/things/{thing_id}: declared in the policy but not served",
        "GET /v1/things: declared for {ngo_caseworker} but the route lets "
        "{ngo_admin, ngo_caseworker} through",
        "GET /v1/things/open/door: declared for roles but its route asks no token",
        "GET /v1/things/{thing_id}/anyone: declared public but its route asks for a token",
    ]
