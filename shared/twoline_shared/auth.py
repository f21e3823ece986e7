"""Bearer JWT verification (JWKS, iss, aud, exp) and role/scope requirements declared on routes."""

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from twoline_shared.codes import Agency
from twoline_shared.errors import Forbidden, Unauthorized, Unavailable

MAX_SUB = 200
MAX_SCOPE = 100
ASYMMETRIC = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"}


__all__ = ["Agency", "Principal", "Role", "TokenVerifier", "require"]


class Role(StrEnum):
    NGO_CASEWORKER = "ngo_caseworker"
    NGO_ADMIN = "ngo_admin"
    ICAM_COACH = "icam_coach"
    RETURN_COUNSELLOR = "return_counsellor"
    AUDITOR = "auditor"
    SERVICE = "service"


ROLE_AGENCY = {Role.ICAM_COACH: Agency.IMMIGRATION_OFFICE, Role.RETURN_COUNSELLOR: Agency.FEDASIL}

# The side of the firewall each role works on. A token holding roles of two sides is refused
# everywhere (F1): an ICAM coach who is also an NGO caseworker would otherwise read zone A.
ROLE_ZONE: dict[Role, str] = {
    Role.NGO_CASEWORKER: "first_line",
    Role.NGO_ADMIN: "first_line",
    Role.ICAM_COACH: "second_line",
    Role.RETURN_COUNSELLOR: "second_line",
    Role.AUDITOR: "oversight",
    Role.SERVICE: "service",
}


@dataclass(frozen=True)
class Principal:
    """Who is calling: subject, roles and the scope claims (org for zone A, agency+office for B)."""

    sub: str
    roles: frozenset[str]
    org: str | None = None
    agency: str | None = None
    office: str | None = None

    def has(self, role: Role) -> bool:
        return role.value in self.roles


class TokenVerifier:
    """Verifies bearer JWTs against a JWKS (http(s):// or file path), caching the key set."""

    def __init__(
        self,
        *,
        jwks_url: str,
        issuer: str,
        audience: str,
        algorithms: list[str],
        leeway: int = 30,
        refresh_seconds: float = 300.0,
    ) -> None:
        unsafe = set(algorithms) - ASYMMETRIC
        if unsafe:
            raise ValueError(f"refusing non-asymmetric JWT algorithms: {sorted(unsafe)}")
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.audience = audience
        self.algorithms = list(algorithms)
        self.leeway = leeway
        self.refresh_seconds = refresh_seconds
        self._keys: KeySet | None = None
        self._loaded_at = 0.0
        self._lock = threading.Lock()

    def _fetch(self) -> KeySet:
        try:
            if self.jwks_url.startswith(("http://", "https://")):
                response = httpx.get(self.jwks_url, timeout=5.0)
                response.raise_for_status()
                data = response.json()
            else:
                path = self.jwks_url.removeprefix("file://")
                data = json.loads(Path(path).read_text())
            return KeySet.import_key_set(data)
        except (OSError, ValueError, httpx.HTTPError, JoseError) as exc:
            raise Unavailable("The token issuer's key set cannot be loaded.") from exc

    def keys(self, *, force: bool = False) -> KeySet:
        with self._lock:
            stale = time.monotonic() - self._loaded_at > self.refresh_seconds
            # A forced refresh (unknown kid) at most every 10 s, so bad tokens cannot hammer the issuer.
            forced = force and time.monotonic() - self._loaded_at > 10
            if self._keys is None or stale or forced:
                self._keys = self._fetch()
                self._loaded_at = time.monotonic()
            return self._keys

    def verify(self, token: str) -> Principal:
        """Return the principal of a valid token; raise Unauthorized for anything else."""
        try:
            decoded = self._decode(token)
        except JoseError as exc:
            raise Unauthorized("The bearer token is not valid.") from exc
        except ValueError as exc:
            raise Unauthorized("The bearer token is malformed.") from exc
        claims = decoded.claims
        registry = JWTClaimsRegistry(
            leeway=self.leeway,
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.audience},
            exp={"essential": True},
            sub={"essential": True},
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise Unauthorized("The bearer token's claims are not valid.") from exc
        roles = claims.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise Unauthorized("The bearer token's roles claim is not a list of strings.")
        scope = {name: claims.get(name) for name in ("org", "agency", "office")}
        if any(value is not None and not isinstance(value, str) for value in scope.values()):
            raise Unauthorized("The bearer token's scope claims must be strings.")
        # Bounded like the columns that record them, so an odd token is a 401, never a 500.
        if len(str(claims["sub"])) > MAX_SUB or any(
            value is not None and len(value) > MAX_SCOPE for value in scope.values()
        ):
            raise Unauthorized("The bearer token's claims are too long.")
        if len(roles) > 16 or any(len(role) > MAX_SCOPE for role in roles):
            raise Unauthorized("The bearer token's roles claim is too long.")
        return Principal(sub=str(claims["sub"]), roles=frozenset(roles), **scope)

    def _decode(self, token: str) -> Any:
        try:
            return jwt.decode(token, self.keys(), algorithms=self.algorithms)
        except JoseError:
            # The issuer may have rotated its key: reload (rate-limited) and try once more.
            return jwt.decode(token, self.keys(force=True), algorithms=self.algorithms)


_bearer = HTTPBearer(auto_error=False, description="A JWT from the OIDC issuer (`twoline token`).")


def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Principal:
    """The verified caller; 401 problem+json without a valid bearer token."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("A bearer token is required.")
    verifier: TokenVerifier = request.app.state.runtime.verifier
    principal = verifier.verify(credentials.credentials)
    # For the audit record of a refusal further on (errors._record_refusal).
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def require(*roles: Role) -> Callable[[Principal], Principal]:
    """Dependency: the caller holds one of `roles` and the scope claims that role needs."""
    allowed = frozenset(roles)

    def dependency(principal: CurrentPrincipal) -> Principal:
        if len({zone for role, zone in ROLE_ZONE.items() if principal.has(role)}) > 1:
            raise Forbidden("A token may hold roles of one zone only.", slug="mixed-zones")
        held = [role for role in allowed if principal.has(role)]
        if not held:
            raise Forbidden("Your role may not use this route.")
        for role in held:
            if _scoped(principal, role):
                return principal
        raise Forbidden("Your token lacks the org, agency or office this role needs.")

    dependency.__name__ = "require_" + "_or_".join(sorted(r.value for r in allowed))
    dependency.roles = allowed  # type: ignore[attr-defined]  # read by the route/role matrix
    return dependency


def _scoped(principal: Principal, role: Role) -> bool:
    if role in (Role.NGO_CASEWORKER, Role.NGO_ADMIN):
        return bool(principal.org)
    if role in ROLE_AGENCY:
        return principal.agency == ROLE_AGENCY[role].value and bool(principal.office)
    return True


NgoCaseworker = Annotated[Principal, Depends(require(Role.NGO_CASEWORKER))]
NgoStaff = Annotated[Principal, Depends(require(Role.NGO_CASEWORKER, Role.NGO_ADMIN))]
IcamCoach = Annotated[Principal, Depends(require(Role.ICAM_COACH))]
ReturnCounsellor = Annotated[Principal, Depends(require(Role.RETURN_COUNSELLOR))]
SecondLine = Annotated[Principal, Depends(require(Role.ICAM_COACH, Role.RETURN_COUNSELLOR))]
Auditor = Annotated[Principal, Depends(require(Role.AUDITOR))]
ServiceIdentity = Annotated[Principal, Depends(require(Role.SERVICE))]
