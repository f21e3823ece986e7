"""Who may call which route: one declared access policy per service, held against its app.

Each service's `policy.py` declares, for every route its app serves, the roles that may call it and
how the data the route reaches is scoped to the caller (F1, F7). `check` compares a policy with
the app's routes and their auth dependencies; `decide` is what the policy promises a caller.
tests/firewall/test_route_policy.py calls every route with every kind of caller against it, so a
route nobody declared fails there by name instead of slipping through.
"""

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from twoline_shared.auth import ROLE_AGENCY, Principal, Role, get_principal

# (HTTP method, path template exactly as the app serves it), e.g. ("POST", "/v1/clients").
RouteKey = tuple[str, str]

ZONE_A_ROLES = frozenset({Role.NGO_CASEWORKER, Role.NGO_ADMIN})
ZONE_B_ROLES = frozenset({Role.ICAM_COACH, Role.RETURN_COUNSELLOR})
# Each role belongs to one side of the firewall (DESIGN.md, actors and zones).
ZONES = (ZONE_A_ROLES, ZONE_B_ROLES, frozenset({Role.AUDITOR}), frozenset({Role.SERVICE}))


class Scope(StrEnum):
    """Whose data a route reaches, matched against the caller's token claims (F7)."""

    NONE = "none"  # no one's in particular: the audit log, health
    ORG = "org"  # one NGO's (zone A): the caller's `org` must be the owner's
    # One office of one agency (zone B): the caller's agency and office, or the caller is the
    # assignee (a case follows the coach who accepted it).
    AGENCY_OFFICE = "agency_office"
    # AGENCY_OFFICE, and only the track's performer acts on it. A caller reaches only their own
    # agency's cases, so the other agency's is a 404; a path naming the track the caller does
    # not perform is the route's own 403 (`not-your-track`).
    OWN_TRACK = "own_track"


class Reach(StrEnum):
    """What a scoped route does with its scope, and so what a caller outside it gets."""

    ONE = "one"  # names one resource (path or body): outside the scope, 404 as if there were none
    LIST = "list"  # lists the caller's own scope: outside it, 200 without the owner's rows
    NEW = "new"  # creates in the caller's own scope, naming nothing of anyone else's


@dataclass(frozen=True)
class Access:
    """Who may call one route, and how far their claims let them reach."""

    roles: frozenset[Role] = frozenset()
    scope: Scope = Scope.NONE
    reach: Reach = Reach.ONE
    public: bool = False

    def __post_init__(self) -> None:
        if self.public:
            if self.roles or self.scope is not Scope.NONE:
                raise ValueError("a public route names no roles and no scope")
            return
        if not self.roles:
            raise ValueError("a route that is not public names at least one role")
        # A scope is matched against claims that only some roles carry: say so where it is declared.
        if self.scope is Scope.ORG and not self.roles <= ZONE_A_ROLES:
            raise ValueError("an org scope is for NGO roles only")
        if self.scope in (Scope.AGENCY_OFFICE, Scope.OWN_TRACK) and not self.roles <= ZONE_B_ROLES:
            raise ValueError("an agency/office scope is for second-line roles only")


def allow(*roles: Role, scope: Scope = Scope.NONE, reach: Reach = Reach.ONE) -> Access:
    """The access of a route that callers holding one of `roles` may use, within `scope`."""
    return Access(roles=frozenset(roles), scope=scope, reach=reach)


PUBLIC = Access(public=True)

Policy = Mapping[RouteKey, Access]

# Kernel-public: every service app serves these, without a token and without data. They are
# declared here once; a service policy that declares them again is a mistake `check` reports.
KERNEL: Policy = {("GET", "/healthz"): PUBLIC, ("GET", "/readyz"): PUBLIC}


# ---------------------------------------------------------------- what the policy promises


@dataclass(frozen=True)
class Owner:
    """Whose a resource is: the claims a caller needs to reach it."""

    org: str | None = None
    agency: str | None = None
    office: str | None = None
    assignee: str | None = None


class Verdict(StrEnum):
    ALLOWED = "allowed"  # 2xx
    OWN_ROWS_ONLY = "own_rows_only"  # 200, and none of the owner's rows
    UNAUTHENTICATED = "unauthenticated"  # 401
    FORBIDDEN = "forbidden"  # 403
    NOT_FOUND = "not_found"  # 404

    @property
    def status(self) -> int | None:
        """The exact status of a refusal; None for the 2xx of an allowed call."""
        return {"unauthenticated": 401, "forbidden": 403, "not_found": 404}.get(self.value)


def decide(access: Access, principal: Principal | None, owner: Owner | None = None) -> Verdict:
    """What `principal` (None: no valid token) gets from a route with `access`, reaching `owner`.

    Written from the design, not from `auth.require`, so that the two can be held against each
    other: a role needs its scope claims (org; or its own agency and an office), and a token
    holding roles of two sides of the firewall is a second-line or auditor token on either
    side (F1), so it reaches no route.
    """
    if access.public:
        return Verdict.ALLOWED
    if principal is None:
        return Verdict.UNAUTHENTICATED
    if sum(1 for zone in ZONES if any(principal.has(role) for role in zone)) > 1:
        return Verdict.FORBIDDEN
    if not any(principal.has(role) and _has_claims(principal, role) for role in access.roles):
        return Verdict.FORBIDDEN
    if access.scope is Scope.NONE or access.reach is Reach.NEW:
        return Verdict.ALLOWED
    if owner is None:
        raise ValueError(f"a {access.scope.value}-scoped route needs the owner of what it reaches")
    if not _in_scope(access.scope, principal, owner):
        return Verdict.OWN_ROWS_ONLY if access.reach is Reach.LIST else Verdict.NOT_FOUND
    return Verdict.ALLOWED


def _has_claims(principal: Principal, role: Role) -> bool:
    if role in ZONE_A_ROLES:
        return bool(principal.org)
    if role in ROLE_AGENCY:
        return principal.agency == ROLE_AGENCY[role].value and bool(principal.office)
    return True


def _in_scope(scope: Scope, principal: Principal, owner: Owner) -> bool:
    if scope is Scope.ORG:
        return owner.org is not None and principal.org == owner.org
    if owner.agency is None or principal.agency != owner.agency:
        return False
    return principal.office == owner.office or (
        owner.assignee is not None and principal.sub == owner.assignee
    )


# ---------------------------------------------------------------- what the app serves


def app_routes(app: FastAPI) -> dict[RouteKey, APIRoute]:
    """Every API route `app` serves, by method and path template; hidden ones included.

    The docs routes (`/openapi.json`, `/docs`, `/redoc`) are not API routes and are left out.
    """
    routes: dict[RouteKey, APIRoute] = {}
    for path, route in _served(app):
        for method in sorted(route.methods or ()):
            routes[(method, path)] = route
    return routes


def _served(app: FastAPI) -> Iterator[tuple[str, APIRoute]]:
    try:  # FastAPI >= 0.16x keeps included routers as branches; this walks them with prefixes.
        from fastapi.routing import iter_route_contexts
    except ImportError:  # pragma: no cover - older FastAPI copies included routes into app.routes
        for route in app.routes:
            if isinstance(route, APIRoute):
                yield route.path, route
        return
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute) and context.path is not None:
            yield context.path, route


def openapi_routes(app: FastAPI) -> set[RouteKey]:
    """The operations the app's OpenAPI document shows (routes hidden from it are missing)."""
    methods = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
    paths: dict[str, dict[str, Any]] = app.openapi()["paths"]
    return {(m.upper(), path) for path, ops in paths.items() for m in ops if m in methods}


def required_roles(route: APIRoute) -> frozenset[Role] | None:
    """The roles a route's auth dependencies let through.

    None when no dependency asks for a token; every role when one only verifies the token; else
    the roles every `require(...)` on the route (nested ones included) lets through.
    """
    found: list[frozenset[Role]] = []
    verifies = False
    for dependant in _walk(route.dependant):
        call = dependant.call
        roles = getattr(call, "roles", None)
        if roles is not None:
            found.append(frozenset(Role(r) for r in roles))
        if call is get_principal:
            verifies = True
    if found:
        return frozenset.intersection(*found)
    return frozenset(Role) if verifies else None


def _walk(dependant: Dependant) -> Iterator[Dependant]:
    for child in dependant.dependencies:
        yield child
        yield from _walk(child)


def check(app: FastAPI, policy: Policy) -> list[str]:
    """Where `policy` (with the kernel-public routes) and `app` disagree; empty when they agree."""
    problems = [
        f"{m} {p}: kernel-public (twoline_shared.policy.KERNEL); do not declare it again"
        for m, p in sorted(set(policy) & set(KERNEL))
    ]
    declared = {**KERNEL, **policy}
    served = app_routes(app)
    for key in sorted(set(served) - set(declared)):
        problems.append(f"{key[0]} {key[1]}: served but not declared in the service's policy")
    for key in sorted(set(declared) - set(served)):
        problems.append(f"{key[0]} {key[1]}: declared in the policy but not served")
    for key in sorted(set(served) & set(declared)):
        access, required = declared[key], required_roles(served[key])
        if access.public and required is not None:
            problems.append(f"{key[0]} {key[1]}: declared public but its route asks for a token")
        elif not access.public and required is None:
            problems.append(f"{key[0]} {key[1]}: declared for roles but its route asks no token")
        elif not access.public and required != access.roles:
            problems.append(
                f"{key[0]} {key[1]}: declared for {_names(access.roles)} but the route lets "
                f"{_names(required or frozenset())} through"
            )
    return problems


def _names(roles: frozenset[Role]) -> str:
    return "{" + ", ".join(sorted(r.value for r in roles)) + "}"
