"""The documentation stays true: every test it names exists, every route it shows is served."""

import re
from pathlib import Path

import pytest

from twoline_audit.app import create_app as audit_app
from twoline_case_resolution.app import create_app as case_app
from twoline_consent.app import create_app as consent_app
from twoline_intake.app import create_app as intake_app
from twoline_referral.app import create_app as referral_app

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "docs" / "architecture.md", ROOT / "docs" / "events.md"]

# `tests/x.py::test_name`, then any `::test_other` that follows in the same cell.
NAMED_TEST = re.compile(r"`(tests/[\w/]+\.py)(::test_\w+)?`((?:, `::test_\w+`)*)")
ROUTE = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) (/v1/[^`\s?]*)")


def named_tests() -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    for doc in DOCS:
        for path, first, rest in NAMED_TEST.findall(doc.read_text()):
            found.append((path, first[2:] if first else None))
            found += [(path, name) for name in re.findall(r"::(test_\w+)", rest)]
    return found


@pytest.mark.parametrize(("path", "name"), named_tests())
def test_every_test_the_docs_name_exists(path, name):
    source = ROOT / path
    assert source.is_file(), f"{path} is named in the docs but does not exist"
    if name is not None:
        assert re.search(rf"^(async )?def {name}\(", source.read_text(), re.M), (
            f"{path}::{name} is named in the docs but does not exist"
        )


def served_routes(settings_for) -> set[tuple[str, str]]:
    routes: set[tuple[str, str]] = set()
    for app in (intake_app, consent_app, referral_app, case_app, audit_app):
        for path, operations in app(settings_for(app)).openapi()["paths"].items():
            for method in operations:
                routes.add((method.upper(), re.sub(r"\{[^}]+\}", "{}", path)))
    return routes


def test_every_route_the_readme_shows_is_served(service_settings):
    from twoline_audit.config import Settings as AuditSettings
    from twoline_case_resolution.config import Settings as CaseSettings
    from twoline_consent.config import Settings as ConsentSettings
    from twoline_intake.config import Settings as IntakeSettings
    from twoline_referral.config import Settings as ReferralSettings

    settings = {
        intake_app: (IntakeSettings, "intake"),
        consent_app: (ConsentSettings, "consent"),
        referral_app: (ReferralSettings, "referral"),
        case_app: (CaseSettings, "case-resolution"),
        audit_app: (AuditSettings, "audit"),
    }
    served = served_routes(lambda app: service_settings(*settings[app]))
    shown = ROUTE.findall((ROOT / "README.md").read_text())
    assert len(shown) > 20
    for method, path in shown:
        # A served `{}` segment stands for any value (the README may show `legal_stay`).
        wanted = re.sub(r"\{[^}]+\}", "{}", path).split("/")
        assert any(
            m == method
            and len(p := served_path.split("/")) == len(wanted)
            and all(a == b or a == "{}" for a, b in zip(p, wanted, strict=True))
            for m, served_path in served
        ), f"README shows {method} {path}; no service has it"
