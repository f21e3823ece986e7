"""Schemathesis against every service's live OpenAPI, as every role that may call each operation.

Every operation of every service is fuzzed over real HTTP (tests/api/conftest.py): its explicit
examples, the coverage phase's boundary values (huge integers, empty and over-long strings,
nulls, wrong types) and a fixed number of generated cases, valid and invalid, deterministic
(derandomised, fixed seed) so that CI runs the same cases every time. Each case is sent as every
role the service's policy lets call the operation (the public health routes without a token),
and valid path parameters (and `client_ref` queries) take a real seeded id every other time, so
fuzzing reaches the code behind the 404s.

Each response must be no server error, and exactly what the operation declares: a declared
status code, the declared content type (problem+json for every error), a body matching the
declared schema (`Problem` for errors) and the declared headers; invalid input must be refused.
The documents are loaded from the apps, and held against the ones the live servers publish.
"""

import collections
import time
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.conftest import SERVICES, Live, Seeds, bare_app, declared
from tests.conftest import AUDITOR, FEDASIL_BRUSSELS, ICAM_BRUSSELS, NGO_GHENT
from twoline_shared.auth import Role

# Schemathesis' own strategies draw from `random` (its warning, not this project's).
pytestmark = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module:hypothesis.errors.HypothesisDeprecationWarning"
)

# Generated cases per operation and mode (the examples and the coverage phase's cases come on top).
MAX_EXAMPLES = 25
SEED = 20261

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]

CLAIMS: dict[Role, dict[str, str]] = {
    Role.NGO_CASEWORKER: NGO_GHENT,
    Role.NGO_ADMIN: {**NGO_GHENT, "role": "ngo_admin"},
    Role.ICAM_COACH: ICAM_BRUSSELS,
    Role.RETURN_COUNSELLOR: FEDASIL_BRUSSELS,
    Role.AUDITOR: AUDITOR,
}

# Which seeds each service's path and query parameters take (conftest.Seeds).
SEEDED: dict[str, dict[tuple[ParameterLocation, str], str]] = {
    "intake": {
        (ParameterLocation.PATH, "client_ref"): "client_refs",
        (ParameterLocation.PATH, "contact_id"): "contact_ids",
    },
    "consent": {
        (ParameterLocation.PATH, "consent_id"): "consent_ids",
        (ParameterLocation.QUERY, "client_ref"): "consent_client_refs",
        (ParameterLocation.BODY, "client_ref"): "consent_client_refs",
    },
    "referral": {
        (ParameterLocation.PATH, "referral_id"): "referral_ids",
        (ParameterLocation.PATH, "request_id"): "request_ids",
        (ParameterLocation.QUERY, "client_ref"): "referral_client_refs",
        (ParameterLocation.BODY, "client_ref"): "referral_client_refs",
    },
    "case-resolution": {
        (ParameterLocation.PATH, "case_id"): "case_ids",
        (ParameterLocation.PATH, "step_id"): "step_ids",
        (ParameterLocation.PATH, "session_id"): "session_ids",
        (ParameterLocation.PATH, "decision_id"): "decision_ids",
        (ParameterLocation.PATH, "request_id"): "request_ids",
    },
    "audit": {
        (ParameterLocation.PATH, "entry_id"): "entry_indexes",
        (ParameterLocation.PATH, "referral_id"): "traced_referral_ids",
    },
}

# Integers at the edges of what JSON, SQLite and Postgres hold, mixed into every integer a case
# sends: valid ones must be answered, invalid ones refused, none may reach the database unbounded.
EXTREME_INTEGERS = [2**31 - 1, 2**31, 2**53, 2**63 - 1, 2**63, 2**64, 10**30, -(2**63) - 1]

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "generation": {
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "mode": "all",
            # The caller's token is set per call; a generated Authorization would replace it.
            "with-security-parameters": False,
            "dictionaries": {"integer": {"dictionary": "extreme-integers", "probability": 0.2}},
        },
        "dictionaries": {"extreme-integers": {"values": EXTREME_INTEGERS}},
        "phases": {"stateful": {"enabled": False}},
    }
)

DOCUMENTS: dict[str, dict[str, Any]] = {name: bare_app(name).openapi() for name in SERVICES}
SCHEMAS = {
    name.replace("-", "_"): schemathesis.openapi.from_dict(document, config=CONFIG)
    for name, document in DOCUMENTS.items()
}
SERVICE_OF_TITLE = {document["info"]["title"]: name for name, document in DOCUMENTS.items()}

CASES: collections.Counter[str] = collections.Counter()
SECONDS: collections.Counter[str] = collections.Counter()
_DRAWN: collections.Counter[str] = collections.Counter()


def callers(service: str, method: str, path: str) -> list[Role | None]:
    """Every role that may call the operation; None (no token) for a public one."""
    access = declared(service)[(method, path)]
    return [None] if access.public else sorted(access.roles)


def headers_of(live: Live, role: Role | None) -> dict[str, str]:
    if role is None:
        return {}
    claims = dict(CLAIMS[role])
    return live.issuer.headers(claims.pop("role"), sub=f"fuzz-{role.value}", **claims)


def with_seeds(case: Any, service: str, seeds: Seeds) -> None:
    """Every other case names seeded resources where its values are valid: in its path, its
    `client_ref` query or body field; a seeded case's path names that case's own track."""
    key = case.operation.label
    drawn = _DRAWN[key]
    _DRAWN[key] += 1
    if drawn % 2:
        return
    for (location, name), attribute in SEEDED[service].items():
        container = {
            ParameterLocation.PATH: case.path_parameters,
            ParameterLocation.QUERY: case.query,
            ParameterLocation.BODY: case.body,
        }[location]
        values = getattr(seeds, attribute)
        if not isinstance(container, dict) or name not in container or not values:
            continue
        if case.meta is not None and case.meta.is_negative_at(location):
            continue  # the invalid value is the point of this case
        container[name] = values[(drawn // 2) % len(values)]
        if name == "case_id" and "track" in container:
            container["track"] = seeds.case_tracks[container[name]]


@pytest.fixture(scope="module")
def fuzzed(live: Live) -> Live:
    """The live stack, once every served document is the one fuzzed here."""
    for name, document in DOCUMENTS.items():
        served = httpx.get(f"{live.url(name)}/openapi.json", timeout=10)
        assert served.status_code == 200
        assert served.json() == document, f"{name} serves another OpenAPI document"
    return live


@schemathesis.pytest.parametrize(**SCHEMAS)
def test_every_input_gets_an_answer_its_operation_declares(case, fuzzed):
    service = SERVICE_OF_TITLE[case.operation.schema.raw_schema["info"]["title"]]
    with_seeds(case, service, fuzzed.seeds)
    started = time.monotonic()
    for role in callers(service, case.operation.method.upper(), case.operation.path):
        CASES[service] += 1
        case.call_and_validate(
            base_url=fuzzed.url(service), headers=headers_of(fuzzed, role), checks=CHECKS
        )
    SECONDS[service] += time.monotonic() - started


def test_every_operation_of_every_service_is_fuzzed():
    """The fuzzed operations are exactly the routes the services serve and declare."""
    fuzzed = {
        (name, method.upper(), path)
        for name, document in DOCUMENTS.items()
        for path, operations in document["paths"].items()
        for method in operations
    }
    assert fuzzed == {(s, m, p) for s in SERVICES for (m, p) in declared(s)}
