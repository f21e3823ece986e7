"""Consent tables and API schemas: one grant per client and recipient agency, zone A only.

A grant records what the person agreed to (recipient, purposes, data categories, validity) and how
that was obtained (verbal/written, language, interpreter, information-sheet version, caseworker).
Withdrawal is recorded on the grant, never by deleting it (GDPR Art. 7(1)/(3)).
"""

import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum

import sqlalchemy as sa
from pydantic import AwareDatetime, BaseModel, ConfigDict, field_validator
from pydantic import Field as PydanticField
from pydantic.alias_generators import to_camel
from sqlalchemy import JSON
from sqlmodel import Field, SQLModel

from twoline_shared.auth import Agency
from twoline_shared.codes import ISO_639_1, ConsentStatus, DataCategory, Purpose
from twoline_shared.db import UtcDateTime, utcnow


class CollectionMethod(StrEnum):
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


class ConsentBase(SQLModel):
    client_ref: str = Field(min_length=1, max_length=64)
    # One recipient agency per grant: consent is never bundled (GDPR Art. 7(4)).
    recipient: Agency = Field(sa_type=sa.String(32))
    purposes: list[Purpose] = Field(min_length=1, sa_type=JSON)
    categories: list[DataCategory] = Field(min_length=1, sa_type=JSON)
    method: CollectionMethod = Field(sa_type=sa.String(16))
    language: str = Field(min_length=2, max_length=2)
    interpreter: bool
    information_version: str = Field(min_length=1, max_length=64)
    valid_until: datetime | None = Field(default=None, sa_type=UtcDateTime)

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


class ConsentCreate(ConsentBase):
    """What the caseworker records after informing the client about this one recipient."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    valid_until: AwareDatetime | None = None

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


class ConsentWithdraw(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    reason: str | None = Field(default=None, min_length=1, max_length=500)


class ConsentPublic(ConsentBase):
    consent_id: uuid.UUID
    status: ConsentStatus
    org: str
    obtained_by: str
    created_at: datetime
    withdrawn_at: datetime | None
    withdrawn_by: str | None
    withdrawal_reason: str | None


class ConsentsPublic(SQLModel):
    data: list[ConsentPublic]
    count: int


# ---------------------------------------------------------------- consent receipt


class _Receipt(BaseModel):
    """Kantara Consent Receipt field names (camelCase) on the wire."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class ReceiptController(_Receipt):
    pii_controller: str
    on_behalf: bool = False


class ReceiptPurpose(_Receipt):
    purpose: str
    purpose_category: list[Purpose]
    consent_type: str = "EXPLICIT"
    pii_category: list[DataCategory]
    termination: str
    third_party_disclosure: bool = True
    third_party_name: Agency


class ReceiptService(_Receipt):
    service: str
    purposes: list[ReceiptPurpose]


class ReceiptThirdParty(_Receipt):
    third_party_name: Agency


class ReceiptTermination(_Receipt):
    valid_until: datetime | None
    withdrawn_at: datetime | None
    how_to_withdraw: str


class ConsentReceipt(_Receipt):
    """A receipt the NGO can hand to the person (Kantara Consent Receipt v1.1 style)."""

    version: str = "KI-CR-v1.1.0"
    jurisdiction: str = "BE"
    consent_timestamp: int  # Unix epoch seconds, as in the Kantara specification
    collection_method: CollectionMethod
    consent_receipt_id: str = PydanticField(alias="consentReceiptID")
    language: str
    interpreter: bool
    information_version: str
    pii_principal_id: str
    pii_controllers: list[ReceiptController]
    services: list[ReceiptService]
    pii_category: list[DataCategory]
    sensitive: bool
    spi_cat: list[DataCategory]
    third_parties: list[ReceiptThirdParty]
    termination: ReceiptTermination
    status: ConsentStatus
