"""Bearer token checks: signature via JWKS, iss, aud, exp; forged tokens get 401 problem+json."""

import base64
import hashlib
import hmac
import json
import time

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.conftest import AUDITOR, FEDASIL_BRUSSELS, ICAM_BRUSSELS, NGO_GHENT, assert_problem
from twoline.devissuer import DEFAULT_AUDIENCE, DEFAULT_ISSUER, issue
from twoline_shared.auth import (
    CurrentPrincipal,
    IcamCoach,
    NgoCaseworker,
    Principal,
    SecondLine,
    TokenVerifier,
)
from twoline_shared.errors import Unauthorized, install_error_handlers


class _Runtime:
    def __init__(self, verifier: TokenVerifier) -> None:
        self.verifier = verifier


router = APIRouter()


@router.get("/whoami")
def whoami(principal: CurrentPrincipal) -> dict:
    return {"sub": principal.sub, "roles": sorted(principal.roles), "org": principal.org}


@router.get("/ngo")
def ngo_only(principal: NgoCaseworker) -> dict:
    return {"org": principal.org}


@router.get("/icam")
def icam_only(principal: IcamCoach) -> dict:
    return {"office": principal.office}


@router.get("/second-line")
def second_line(principal: SecondLine) -> dict:
    return {"agency": principal.agency}


@pytest.fixture
def verifier(issuer) -> TokenVerifier:
    return TokenVerifier(
        jwks_url=str(issuer.jwks_path),
        issuer=DEFAULT_ISSUER,
        audience=DEFAULT_AUDIENCE,
        algorithms=["RS256", "ES256"],
    )


@pytest.fixture
def client(verifier) -> TestClient:
    app = FastAPI()
    app.state.runtime = _Runtime(verifier)
    install_error_handlers(app)
    app.include_router(router)
    return TestClient(app)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims(**overrides) -> dict:
    now = int(time.time())
    base = {
        "iss": DEFAULT_ISSUER,
        "aud": DEFAULT_AUDIENCE,
        "sub": "u1",
        "exp": now + 600,
        "iat": now,
        "roles": ["ngo_caseworker"],
        "org": "ngo-ghent",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def test_valid_token_yields_the_principal(client, issuer):
    response = client.get("/whoami", headers=issuer.headers(sub="cw-7", **NGO_GHENT))
    assert response.status_code == 200
    assert response.json() == {"sub": "cw-7", "roles": ["ngo_caseworker"], "org": "ngo-ghent"}


def test_missing_token_is_401_with_bearer_challenge(client):
    response = client.get("/whoami")
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("value", ["Basic dTpw", "Bearer", "Bearer not-a-jwt", "Bearer a.b.c"])
def test_malformed_authorization_is_401(client, value):
    assert_problem(client.get("/whoami", headers={"Authorization": value}), 401)


def test_alg_none_unsigned_token_is_rejected(client):
    token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}."
    assert_problem(client.get("/whoami", headers=bearer(token)), 401, "unauthorized")


def test_hs256_token_signed_with_the_public_key_is_rejected(client, issuer):
    # Algorithm confusion: an attacker HMAC-signs with the issuer's *public* key material.
    public_pem = issuer.key.as_pem(private=False)
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT', 'kid': issuer.key.kid})}.{b64(claims())}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    forged = signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    assert_problem(client.get("/whoami", headers=bearer(forged)), 401, "unauthorized")


def test_token_signed_by_another_key_is_rejected(client, issuer):
    other = RSAKey.generate_key(2048, parameters={"kid": issuer.key.kid})
    forged = jwt.encode({"alg": "RS256", "kid": issuer.key.kid}, claims(), other)
    assert_problem(client.get("/whoami", headers=bearer(forged)), 401, "unauthorized")


def test_expired_token_is_rejected(client, issuer):
    token = issue(issuer.key, role="ngo_caseworker", org="o", now=int(time.time()) - 3600, ttl=60)
    assert_problem(client.get("/whoami", headers=bearer(token)), 401, "unauthorized")


def test_wrong_audience_is_rejected(client, issuer):
    token = issue(issuer.key, role="ngo_caseworker", org="o", audience="another-api")
    assert_problem(client.get("/whoami", headers=bearer(token)), 401, "unauthorized")


def test_wrong_issuer_is_rejected(client, issuer):
    token = issue(issuer.key, role="ngo_caseworker", org="o", issuer="https://evil.example")
    assert_problem(client.get("/whoami", headers=bearer(token)), 401, "unauthorized")


@pytest.mark.parametrize("missing", ["exp", "sub", "aud", "iss"])
def test_token_without_an_essential_claim_is_rejected(client, issuer, missing):
    token = jwt.encode(
        {"alg": "RS256", "kid": issuer.key.kid}, claims(**{missing: None}), issuer.key
    )
    assert_problem(client.get("/whoami", headers=bearer(token)), 401, "unauthorized")


def test_roles_claim_must_be_a_list_of_strings(client, issuer):
    token = jwt.encode(
        {"alg": "RS256", "kid": issuer.key.kid}, claims(roles="ngo_caseworker"), issuer.key
    )
    assert_problem(client.get("/whoami", headers=bearer(token)), 401)


def test_symmetric_algorithms_cannot_be_configured():
    with pytest.raises(ValueError, match="HS256"):
        TokenVerifier(jwks_url="x", issuer="i", audience="a", algorithms=["RS256", "HS256"])


def test_unreachable_jwks_is_503_not_500(issuer):
    verifier = TokenVerifier(
        jwks_url="http://127.0.0.1:9/jwks.json",
        issuer=DEFAULT_ISSUER,
        audience=DEFAULT_AUDIENCE,
        algorithms=["RS256"],
    )
    app = FastAPI()
    app.state.runtime = _Runtime(verifier)
    install_error_handlers(app)
    app.include_router(router)
    response = TestClient(app).get("/whoami", headers=issuer.headers(**NGO_GHENT))
    assert_problem(response, 503, "unavailable")


def test_rotated_issuer_key_is_picked_up_from_the_jwks(issuer, tmp_path):
    from twoline.devissuer import jwks

    old = RSAKey.generate_key(2048, parameters={"kid": "old"})
    new = RSAKey.generate_key(2048, parameters={"kid": "new"})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(old)))
    verifier = TokenVerifier(
        jwks_url=str(path), issuer=DEFAULT_ISSUER, audience=DEFAULT_AUDIENCE, algorithms=["RS256"]
    )
    assert verifier.verify(issue(old, role="auditor")).roles == {"auditor"}
    path.write_text(json.dumps(jwks(new)))
    verifier._loaded_at -= 60  # past the refresh rate limit
    assert verifier.verify(issue(new, role="auditor")).roles == {"auditor"}
    with pytest.raises(Unauthorized):
        verifier.verify(issue(old, role="auditor"))


@pytest.mark.parametrize(
    ("path", "caller", "status"),
    [
        ("/ngo", NGO_GHENT, 200),
        ("/ngo", ICAM_BRUSSELS, 403),
        ("/ngo", AUDITOR, 403),
        ("/ngo", {"role": "ngo_caseworker"}, 403),  # no org claim: no tenant to scope to
        ("/icam", ICAM_BRUSSELS, 200),
        ("/icam", FEDASIL_BRUSSELS, 403),
        ("/icam", {"role": "icam_coach", "agency": "fedasil", "office": "brussels"}, 403),
        ("/icam", {"role": "icam_coach", "agency": "immigration_office"}, 403),  # no office
        ("/second-line", FEDASIL_BRUSSELS, 200),
        ("/second-line", ICAM_BRUSSELS, 200),
        ("/second-line", NGO_GHENT, 403),
    ],
)
def test_role_and_scope_requirements(client, issuer, path, caller, status):
    response = client.get(path, headers=issuer.headers(**caller))
    if status == 200:
        assert response.status_code == 200, response.text
    else:
        assert_problem(response, status, "forbidden")


def test_principal_reports_roles():
    principal = Principal(sub="s", roles=frozenset({"auditor"}))
    from twoline_shared.auth import Role

    assert principal.has(Role.AUDITOR) and not principal.has(Role.NGO_CASEWORKER)


@pytest.mark.parametrize(
    "overrides",
    [
        {"sub": "s" * 201},
        {"org": "o" * 101},
        {"office": "x" * 101},
        {"roles": ["ngo_caseworker"] * 17},
    ],
)
def test_oversized_claims_are_401_not_stored(client, issuer, overrides):
    token = jwt.encode({"alg": "RS256", "kid": issuer.key.kid}, claims(**overrides), issuer.key)
    assert_problem(client.get("/whoami", headers=bearer(token)), 401, "unauthorized")


def test_claims_at_the_limit_are_accepted(client, issuer):
    token = jwt.encode(
        {"alg": "RS256", "kid": issuer.key.kid}, claims(sub="s" * 200, org="o" * 100), issuer.key
    )
    assert client.get("/whoami", headers=bearer(token)).status_code == 200


@pytest.mark.parametrize(
    ("path", "roles"),
    [
        ("/ngo", ["ngo_caseworker", "icam_coach"]),
        ("/ngo", ["ngo_caseworker", "auditor"]),
        ("/icam", ["icam_coach", "ngo_caseworker"]),
        ("/second-line", ["return_counsellor", "service"]),
    ],
)
def test_a_token_mixing_roles_of_two_zones_is_refused_everywhere(client, issuer, path, roles):
    # F1: the second role must not open the other side of the firewall, nor its own.
    token = jwt.encode(
        {"alg": "RS256", "kid": issuer.key.kid},
        claims(roles=roles, org="ngo-ghent", agency="immigration_office", office="brussels"),
        issuer.key,
    )
    assert_problem(client.get(path, headers=bearer(token)), 403, "mixed-zones")
