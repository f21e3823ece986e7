"""Consent rules without I/O: status (FHIR Consent), withdrawal, and the consent receipt."""

from collections.abc import Iterable
from datetime import datetime

from twoline_consent.models import (
    Consent,
    ConsentReceipt,
    ReceiptController,
    ReceiptPurpose,
    ReceiptService,
    ReceiptTermination,
    ReceiptThirdParty,
)
from twoline_shared.auth import Agency
from twoline_shared.codes import ConsentStatus, DataCategory, Purpose
from twoline_shared.errors import Conflict

# GDPR Art. 9 special-category data. Only an explicit `health` grant covers it: no other
# category implies it, and nothing here ever widens a grant.
SPECIAL_CATEGORIES = frozenset({DataCategory.HEALTH})

# What the person is told each recipient and purpose means (GDPR Art. 7(4), 9).
RECIPIENT_SERVICE = {
    Agency.IMMIGRATION_OFFICE: (
        "Referral to an ICAM coach of the Immigration Office, who examines whether legal stay is "
        "possible. This is a disclosure to the immigration authority."
    ),
    Agency.FEDASIL: (
        "Referral to a Fedasil return counsellor, who informs about assisted voluntary return "
        "and reintegration."
    ),
}

PURPOSE_EXPLANATION = {
    Purpose.REFERRAL: "Your data in the listed categories is disclosed for a review of your case.",
    Purpose.FEEDBACK: "The recipient may report the status and outcome of your case to your NGO.",
    Purpose.JOINT_REVIEW: (
        "The Immigration Office and Fedasil may see each other's track of your case."
    ),
}

HOW_TO_WITHDRAW = (
    "You can withdraw this consent at any time by telling your NGO caseworker; "
    "nothing more is then disclosed under it."
)


def canonical(codes: Iterable[str]) -> list[str]:
    """A grant's codes in one stable order, exactly as granted (nothing added, nothing implied)."""
    return sorted(str(code) for code in codes)


def status_at(consent: Consent, now: datetime) -> ConsentStatus:
    """FHIR Consent status at `now`: withdrawn or past `valid_until` is `inactive`."""
    if consent.withdrawn_at is not None:
        return ConsentStatus.INACTIVE
    if consent.valid_until is not None and consent.valid_until <= now:
        return ConsentStatus.INACTIVE
    return ConsentStatus.ACTIVE


def ensure_withdrawable(consent: Consent, now: datetime) -> None:
    """Only an active consent can be withdrawn; a withdrawal is recorded once and kept."""
    if consent.withdrawn_at is not None:
        raise Conflict("The consent is already withdrawn.", slug="consent-inactive")
    if status_at(consent, now) is ConsentStatus.INACTIVE:
        raise Conflict("The consent has expired.", slug="consent-inactive")


def sensitive_categories(categories: Iterable[str]) -> list[DataCategory]:
    return [DataCategory(c) for c in canonical(categories) if c in SPECIAL_CATEGORIES]


def receipt(consent: Consent, now: datetime) -> ConsentReceipt:
    """The Kantara-style receipt of one grant, for the person."""
    recipient = Agency(consent.recipient)
    categories = [DataCategory(c) for c in canonical(consent.categories)]
    until = consent.valid_until.isoformat() if consent.valid_until else None
    termination = f"Until {until} or withdrawal." if until else "Until withdrawal."
    purposes = [
        ReceiptPurpose(
            purpose=PURPOSE_EXPLANATION[Purpose(p)],
            purpose_category=[Purpose(p)],
            pii_category=categories,
            termination=termination,
            third_party_name=recipient,
        )
        for p in canonical(consent.purposes)
    ]
    spi = sensitive_categories(consent.categories)
    return ConsentReceipt(
        consent_timestamp=int(consent.created_at.timestamp()),
        collection_method=consent.method,
        consent_receipt_id=str(consent.consent_id),
        language=consent.language,
        interpreter=consent.interpreter,
        information_version=consent.information_version,
        pii_principal_id=consent.client_ref,
        pii_controllers=[ReceiptController(pii_controller=consent.org)],
        services=[ReceiptService(service=RECIPIENT_SERVICE[recipient], purposes=purposes)],
        pii_category=categories,
        sensitive=bool(spi),
        spi_cat=spi,
        third_parties=[ReceiptThirdParty(third_party_name=recipient)],
        termination=ReceiptTermination(
            valid_until=consent.valid_until,
            withdrawn_at=consent.withdrawn_at,
            how_to_withdraw=HOW_TO_WITHDRAW,
        ),
        status=status_at(consent, now),
    )
