"""Intake tables and API schemas: client records under a pseudonym (`client_ref`), zone A only."""

import datetime as dt
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, StringConstraints, field_validator, model_validator
from sqlalchemy import JSON, String
from sqlmodel import Field, SQLModel

from twoline_shared.codes import DataCategory, is_country, is_language
from twoline_shared.db import UtcDateTime, utcnow


class HouseholdMember(SQLModel):
    relation: str = Field(min_length=1, max_length=40)
    birth_year: int | None = Field(default=None, ge=1900, le=2100)


class ClientBase(SQLModel):
    display_name: str = Field(min_length=1, max_length=200)
    birth_year: int | None = Field(default=None, ge=1900, le=2100)
    nationality: str | None = Field(default=None, min_length=2, max_length=2)
    languages: list[str] = Field(default_factory=list, sa_type=JSON)
    municipality: str | None = Field(default=None, max_length=100)
    phone: str | None = Field(default=None, max_length=40)
    household: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    migration_history: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    needs: list[str] = Field(default_factory=list, sa_type=JSON)
    health: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    vulnerabilities: list[str] = Field(default_factory=list, sa_type=JSON)
    intentions: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    case_notes: str | None = Field(default=None, max_length=20_000)


def _country(value: str | None) -> str | None:
    if value is not None and not is_country(value):
        raise ValueError("nationality must be an ISO 3166-1 alpha-2 code, e.g. 'GN'")
    return value


def _languages(value: list[str] | None) -> list[str] | None:
    if value is not None and not all(is_language(code) for code in value):
        raise ValueError("languages must be ISO 639-1 codes, e.g. 'fr'")
    return value


CountryCode = Annotated[str, AfterValidator(_country)]
LanguageCodes = Annotated[list[str], AfterValidator(_languages)]


class ClientCreate(ClientBase):
    """What an NGO caseworker registers; only `display_name` is required."""

    nationality: CountryCode | None = None
    languages: LanguageCodes = Field(default_factory=list)
    household: list[HouseholdMember] = Field(default_factory=list)  # type: ignore[assignment]


class ClientUpdate(SQLModel):
    """A partial update: only the fields sent change; `null` clears an optional field."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    display_name: str | None = Field(default=None, min_length=1, max_length=200)
    birth_year: int | None = Field(default=None, ge=1900, le=2100)
    nationality: CountryCode | None = None
    languages: LanguageCodes | None = None
    municipality: str | None = Field(default=None, max_length=100)
    phone: str | None = Field(default=None, max_length=40)
    household: list[HouseholdMember] | None = None
    migration_history: dict[str, Any] | None = None
    needs: list[str] | None = None
    health: dict[str, Any] | None = None
    vulnerabilities: list[str] | None = None
    intentions: dict[str, Any] | None = None
    case_notes: str | None = Field(default=None, max_length=20_000)

    @model_validator(mode="after")
    def _required_stay_set(self) -> "ClientUpdate":
        if "display_name" in self.model_fields_set and self.display_name is None:
            raise ValueError("display_name cannot be cleared")
        return self


def new_client_ref() -> str:
    return "C-" + uuid.uuid4().hex[:12].upper()


class Client(ClientBase, table=True):
    """A client record. `client_ref` is the pseudonym that leaves intake; the org owns the record."""

    __tablename__ = "client"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    client_ref: str = Field(default_factory=new_client_ref, unique=True, max_length=16)
    org: str = Field(index=True, max_length=100)
    registered_by: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class ClientPublic(ClientBase):
    client_ref: str
    org: str
    created_at: datetime
    updated_at: datetime


class ClientsPublic(SQLModel):
    data: list[ClientPublic]
    count: int


class ContactKind(StrEnum):
    """The outreach model's three activities."""

    CONTACT = "contact"
    INFORM = "inform"
    REFER = "refer"


TopicCode = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]


class ContactBase(SQLModel):
    kind: ContactKind = Field(sa_type=String(16))  # a plain string: no Postgres enum type
    topics: list[TopicCode] = Field(default_factory=list, sa_type=JSON, max_length=20)
    language: str | None = Field(default=None, max_length=2)
    date: dt.date


class ContactCreate(ContactBase):
    """One outreach contact: what kind, which topics (codes), in which language, when."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    language: str | None = None

    @field_validator("language")
    @classmethod
    def _iso_language(cls, value: str | None) -> str | None:
        if value is not None and not is_language(value):
            raise ValueError("language must be an ISO 639-1 code, e.g. 'fr'")
        return value

    @field_validator("date")
    @classmethod
    def _not_in_future(cls, value: dt.date) -> dt.date:
        if value > dt.date.today() + dt.timedelta(days=1):
            raise ValueError("a contact cannot be logged in the future")
        return value


class Contact(ContactBase, table=True):
    """An outreach contact log entry of one client (zone A)."""

    __tablename__ = "contact"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    client_id: uuid.UUID = Field(foreign_key="client.id", index=True)
    logged_by: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class ContactPublic(ContactBase):
    id: uuid.UUID
    client_ref: str
    logged_by: str
    created_at: datetime


class ContactsPublic(SQLModel):
    data: list[ContactPublic]
    count: int


# ---------------------------------------------------------------- calls (svc.intake.*)


class DisclosureRequest(SQLModel):
    """`svc.intake.disclosure`: the bridge asks for some categories of one client of one org."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    client_ref: str = Field(min_length=1, max_length=64)
    org: str = Field(min_length=1, max_length=100)
    # An unknown category is a 422: nothing is disclosed for a code intake does not know.
    categories: list[DataCategory] = Field(min_length=1, max_length=len(DataCategory))


class DisclosureReply(SQLModel):
    """The disclosure package: one object per asked category, holding that category's fields."""

    client_ref: str
    categories: dict[str, dict[str, Any]]
