"""Consent tables and API schemas: one grant per client and recipient agency, zone A only.

A grant records what the person agreed to (recipient, purposes, data categories, validity) and how
that was obtained (verbal/written, language, interpreter, information-sheet version, caseworker).
Withdrawal is recorded on the grant, never by deleting it (GDPR Art. 7(1)/(3)).
"""

import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, field_validator
from pydantic import Field as PydanticField
from pydantic.alias_generators import to_camel
from sqlalchemy import JSON
from sqlmodel import Field, SQLModel

from twoline_shared.auth import Agency
from twoline_shared.codes import ISO_639_1, ConsentStatus, DataCategory, Purpose
from twoline_shared.db import UtcDateTime, utcnow
from twoline_shared.fields import IsoDateTime
from twoline_shared.pagination import PageCount


class CollectionMethod(StrEnum):
    """How the consent was given: said aloud, or signed."""

    VERBAL = "verbal"
    WRITTEN = "written"


VERSION_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+-]*")


class KnownClient(SQLModel, table=True):
    """A client intake registered: only the pseudonym and the org that owns it."""

    # Not `known_client`: every service's tables share SQLModel's default metadata, where
    # referral's projection already holds that name.
    __tablename__ = "consent_known_client"

    client_ref: str = Field(primary_key=True, max_length=64)
    org: str = Field(max_length=100)
    recorded_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class ClientRegistered(SQLModel):
    """Payload of `firstline.intake.client.registered`; producers may add fields later."""

    model_config = ConfigDict(extra="ignore")  # type: ignore[assignment]

    client_ref: str = Field(min_length=1, max_length=64)
    org: str = Field(min_length=1, max_length=100)


# ---------------------------------------------------------------- consents


VALID_UNTIL = "When the consent ends by itself (UTC); `null`: until it is withdrawn."


class ConsentBase(SQLModel):
    client_ref: str = Field(
        min_length=1,
        max_length=64,
        description="The pseudonym (from intake) of the client of your organisation who consents.",
    )
    # One recipient agency per grant: consent is never bundled (GDPR Art. 7(4)).
    recipient: Agency = Field(
        sa_type=sa.String(32),
        description="The one agency this consent lets data go to: `immigration_office` (ICAM "
        "coaches: a disclosure to the immigration authority) or `fedasil` (return counsellors). "
        "Consent is given per agency, never bundled.",
    )
    purposes: list[Purpose] = Field(
        min_length=1,
        sa_type=JSON,
        description="What the recipient may do: `referral` (receive the data for a review of the "
        "case), `feedback` (report status and outcome back to the NGO), `joint_review` (the "
        "two agencies may see each other's track). No repeats.",
    )
    categories: list[DataCategory] = Field(
        min_length=1,
        sa_type=JSON,
        description="The data categories that may be disclosed to the recipient. `health` is "
        "special-category data, covered only when named here. No repeats.",
    )
    method: CollectionMethod = Field(
        sa_type=sa.String(16), description="How the person gave the consent."
    )
    language: str = Field(
        min_length=2,
        max_length=2,
        description="The language the person was informed in, an ISO 639-1 code such as `fr`.",
    )
    interpreter: bool = Field(description="Whether an interpreter took part.")
    information_version: str = Field(
        min_length=1,
        max_length=64,
        description="The version of the information sheet the person was given, e.g. `2026-01`.",
    )
    valid_until: datetime | None = Field(default=None, sa_type=UtcDateTime, description=VALID_UNTIL)

    @field_validator("purposes", "categories")
    @classmethod
    def _no_duplicates(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("must not repeat a value")
        return value

    @field_validator("information_version")
    @classmethod
    def _version_code(cls, value: str) -> str:
        # A version label such as "2026-01", not free text (SQLModel's `regex` is not enforced).
        if not VERSION_LABEL.fullmatch(value):
            raise ValueError("information_version must be a version label, e.g. '2026-01'")
        return value

    @field_validator("language")
    @classmethod
    def _iso_language(cls, value: str) -> str:
        if value not in ISO_639_1:
            raise ValueError("language must be an ISO 639-1 code, e.g. 'fr'")
        return value


EXAMPLE_CONSENT: dict[str, Any] = {
    "client_ref": "C-5A7B63FF22E4",
    "recipient": "immigration_office",
    "purposes": ["referral", "feedback"],
    "categories": ["identity", "needs", "migration_history"],
    "method": "written",
    "language": "fr",
    "interpreter": False,
    "information_version": "2026-01",
    "valid_until": "2027-01-31T23:00:00Z",
}


class ConsentCreate(ConsentBase):
    """What the caseworker records after informing the client about this one recipient."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_CONSENT]})  # type: ignore[assignment]

    valid_until: IsoDateTime | None = Field(
        default=None, description=VALID_UNTIL + " In the future, with a time zone."
    )

    @field_validator("valid_until")
    @classmethod
    def _in_the_future(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        try:
            value = value.astimezone(UTC)
        except OverflowError as exc:
            raise ValueError("valid_until is out of range") from exc
        if value <= utcnow():
            raise ValueError("valid_until must be in the future")
        return value


class Consent(ConsentBase, table=True):
    """A consent grant. Status is derived (withdrawn or expired: inactive), so it cannot go stale."""

    __tablename__ = "consent"
    __table_args__ = (sa.Index("ix_consent_org_client_ref", "org", "client_ref"),)

    consent_id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    org: str = Field(max_length=100)
    obtained_by: str = Field(max_length=255)  # the token `sub` (OIDC: at most 255)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    withdrawn_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    withdrawn_by: str | None = Field(default=None, max_length=255)
    # Zone A only: never in an event, an audit record or a log line (F8).
    withdrawal_reason: str | None = Field(default=None, max_length=500)


WITHDRAWAL_REASON = (
    "Why the person withdrew, in the caseworker's words; it stays on the grant, in zone A only."
)


class ConsentWithdraw(SQLModel):
    """The withdrawal of a consent at the person's request; the body may be left out."""

    model_config = ConfigDict(  # type: ignore[assignment]
        extra="forbid",
        json_schema_extra={"examples": [{"reason": "The client no longer wants the review."}]},
    )

    reason: str | None = Field(
        default=None, min_length=1, max_length=500, description=WITHDRAWAL_REASON
    )


EXAMPLE_CONSENT_PUBLIC: dict[str, Any] = {
    **EXAMPLE_CONSENT,
    "consent_id": "6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b",
    "status": "active",
    "org": "ngo-ghent",
    "obtained_by": "caseworker-17",
    "created_at": "2026-01-12T10:15:00Z",
    "withdrawn_at": None,
    "withdrawn_by": None,
    "withdrawal_reason": None,
}


class ConsentPublic(ConsentBase):
    """A consent grant of one of your organisation's clients, with its status now."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_CONSENT_PUBLIC]})  # type: ignore[assignment]

    consent_id: uuid.UUID = Field(description="The consent's id.")
    status: ConsentStatus = Field(
        description="FHIR Consent status now: `active`, or `inactive` once withdrawn or past "
        "`valid_until`."
    )
    org: str = Field(description="The NGO that recorded the consent.")
    obtained_by: str = Field(description="Who recorded it: the caseworker's token subject.")
    created_at: datetime = Field(description="When it was recorded (UTC); it is valid from then.")
    withdrawn_at: datetime | None = Field(description="When it was withdrawn (UTC), if it was.")
    withdrawn_by: str | None = Field(
        description="Who recorded the withdrawal (token subject), if it was withdrawn."
    )
    withdrawal_reason: str | None = Field(description=WITHDRAWAL_REASON)


class ConsentsPublic(SQLModel):
    """One page of a client's consents."""

    model_config = ConfigDict(  # type: ignore[assignment]
        json_schema_extra={"examples": [{"data": [EXAMPLE_CONSENT_PUBLIC], "count": 1}]}
    )

    data: list[ConsentPublic] = Field(description="This page of consents, newest first.")
    count: PageCount


# ---------------------------------------------------------------- calls (svc.consent.*)

# At most this many consents in one answer: a client has a handful per agency.
MAX_ANSWERED = 50


class ActiveConsentsQuery(SQLModel):
    """`svc.consent.active`: the bridge asks, at the moment it decides a referral, which
    consents of one client of one org are active now, and whether the client exists at all."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    client_ref: str = Field(min_length=1, max_length=64)
    org: str = Field(min_length=1, max_length=100)


class ConsentStatusQuery(SQLModel):
    """`svc.consent.status`: the bridge asks what some consents (its tracks') are now, before it
    releases a data key, a joint-review link or a step-up package towards the second line."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    consent_ids: list[uuid.UUID] = Field(min_length=1, max_length=64)


class ConsentFacts(BaseModel):
    """One consent as it is at `checked_at`: codes, ids and validity, never the free text."""

    consent_id: uuid.UUID
    client_ref: str
    org: str
    recipient: Agency
    purposes: list[Purpose]
    categories: list[DataCategory]
    valid_from: datetime
    valid_until: datetime | None
    status: ConsentStatus
    withdrawn_at: datetime | None


class ConsentsAnswer(BaseModel):
    """The consent service's answer to either call. `checked_at` is taken before the read, so a
    withdrawal acknowledged before it is always in the answer (the read sees every commit)."""

    checked_at: datetime
    client_known: bool | None = None
    consents: list[ConsentFacts]


# ---------------------------------------------------------------- consent receipt


class _Receipt(BaseModel):
    """Kantara Consent Receipt field names (camelCase) on the wire."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class ReceiptController(_Receipt):
    """The controller of the person's data: their NGO."""

    pii_controller: str = PydanticField(description="The NGO that holds the data and the consent.")
    on_behalf: bool = PydanticField(
        default=False, description="Whether the NGO acts on behalf of another controller."
    )


class ReceiptPurpose(_Receipt):
    """One purpose of the consent, as told to the person."""

    purpose: str = PydanticField(description="What the purpose means for the person, in words.")
    purpose_category: list[Purpose] = PydanticField(description="The purpose's code.")
    consent_type: str = PydanticField(
        default="EXPLICIT", description="How consent was given: always explicit here."
    )
    pii_category: list[DataCategory] = PydanticField(
        description="The data categories disclosed for this purpose."
    )
    termination: str = PydanticField(description="When the consent ends, in words.")
    third_party_disclosure: bool = PydanticField(
        default=True, description="Whether data goes to a third party: always, the recipient."
    )
    third_party_name: Agency = PydanticField(description="The recipient agency.")


class ReceiptService(_Receipt):
    """What the recipient does with the data, as told to the person."""

    service: str = PydanticField(description="The recipient's service, in words.")
    purposes: list[ReceiptPurpose] = PydanticField(description="The purposes consented to.")


class ReceiptThirdParty(_Receipt):
    """A party the data is disclosed to."""

    third_party_name: Agency = PydanticField(description="The recipient agency.")


class ReceiptTermination(_Receipt):
    """How the consent ends."""

    valid_until: datetime | None = PydanticField(
        description="When it ends by itself (UTC); `null`: until withdrawn."
    )
    withdrawn_at: datetime | None = PydanticField(
        description="When it was withdrawn (UTC), if it was."
    )
    how_to_withdraw: str = PydanticField(description="How the person can withdraw it, in words.")


class ConsentReceipt(_Receipt):
    """A receipt the NGO can hand to the person (Kantara Consent Receipt v1.1 style)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "version": "KI-CR-v1.1.0",
                    "jurisdiction": "BE",
                    "consentTimestamp": 1768212900,
                    "collectionMethod": "written",
                    "consentReceiptID": "6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b",
                    "language": "fr",
                    "interpreter": False,
                    "informationVersion": "2026-01",
                    "piiPrincipalId": "C-5A7B63FF22E4",
                    "piiControllers": [{"piiController": "ngo-ghent", "onBehalf": False}],
                    "services": [
                        {
                            "service": "Referral to a Fedasil return counsellor, who informs "
                            "about assisted voluntary return and reintegration.",
                            "purposes": [
                                {
                                    "purpose": "Your data in the listed categories is disclosed "
                                    "for a review of your case.",
                                    "purposeCategory": ["referral"],
                                    "consentType": "EXPLICIT",
                                    "piiCategory": ["identity", "needs"],
                                    "termination": "Until withdrawal.",
                                    "thirdPartyDisclosure": True,
                                    "thirdPartyName": "fedasil",
                                }
                            ],
                        }
                    ],
                    "piiCategory": ["identity", "needs"],
                    "sensitive": False,
                    "spiCat": [],
                    "thirdParties": [{"thirdPartyName": "fedasil"}],
                    "termination": {
                        "validUntil": None,
                        "withdrawnAt": None,
                        "howToWithdraw": "You can withdraw this consent at any time by telling "
                        "your NGO caseworker; nothing more is then disclosed under it.",
                    },
                    "status": "active",
                }
            ]
        }
    )

    version: str = PydanticField(
        default="KI-CR-v1.1.0", description="The Kantara Consent Receipt version followed."
    )
    jurisdiction: str = PydanticField(
        default="BE", description="Where the consent was given, a country code."
    )
    consent_timestamp: int = PydanticField(  # Unix epoch seconds, as in the Kantara specification
        description="When the consent was recorded, in Unix epoch seconds."
    )
    collection_method: CollectionMethod = PydanticField(description="How it was given.")
    consent_receipt_id: str = PydanticField(
        alias="consentReceiptID", description="The receipt's id: the consent's id."
    )
    language: str = PydanticField(description="The language the person was informed in.")
    interpreter: bool = PydanticField(description="Whether an interpreter took part.")
    information_version: str = PydanticField(
        description="The version of the information sheet the person was given."
    )
    pii_principal_id: str = PydanticField(
        description="The person, by their pseudonym at the NGO (`client_ref`)."
    )
    pii_controllers: list[ReceiptController] = PydanticField(
        description="Who controls the data: the NGO."
    )
    services: list[ReceiptService] = PydanticField(
        description="What the recipient does with the data, and for which purposes."
    )
    pii_category: list[DataCategory] = PydanticField(description="The categories consented to.")
    sensitive: bool = PydanticField(
        description="Whether special-category data (`health`) is among them."
    )
    spi_cat: list[DataCategory] = PydanticField(
        description="The special categories among them (GDPR Art. 9)."
    )
    third_parties: list[ReceiptThirdParty] = PydanticField(
        description="Who the data may go to: the one recipient agency."
    )
    termination: ReceiptTermination = PydanticField(description="How and when the consent ends.")
    status: ConsentStatus = PydanticField(description="Its status now: `active` or `inactive`.")
