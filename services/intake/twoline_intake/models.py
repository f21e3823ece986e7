"""Intake tables and API schemas: client records under a pseudonym (`client_ref`), zone A only."""

import datetime as dt
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, StringConstraints, field_validator
from sqlalchemy import JSON, String
from sqlmodel import Field, SQLModel

from twoline_shared.codes import DataCategory, is_country, is_language
from twoline_shared.db import UtcDateTime, utcnow
from twoline_shared.fields import IsoDate, omittable
from twoline_shared.pagination import PageCount

# What each field is, once: the record's fields, their category (domain.FIELD_CATEGORY), and
# what the bridge does with them. Create, update and public schemas all say the same.
ABOUT = {
    "display_name": "The name the person wants to be called by (a first name or an alias will "
    "do). Category `identity`.",
    "birth_year": "The person's year of birth, if they give it. Category `identity`.",
    "nationality": "The person's nationality, an ISO 3166-1 alpha-2 code such as `GN`. "
    "Category `identity`.",
    "languages": "The languages the person speaks, ISO 639-1 codes such as `fr`; the bridge "
    "prefers an office that counsels in one of them. Category `needs`.",
    "municipality": "Where the person stays, e.g. `Schaerbeek`; with `contact` consented, the "
    "bridge routes to the office serving it. Category `contact`.",
    "phone": "A phone number to reach the person on. Category `contact`.",
    "household": "The members of the person's household who are with them. Category `household`.",
    "migration_history": "The person's migration history as the NGO records it, an object of "
    "the NGO's own keys (e.g. year of arrival, earlier procedures). Category "
    "`migration_history`.",
    "needs": "What the person needs first, e.g. `shelter`, `food`, `medical`: stability comes "
    "before counselling. Category `needs`.",
    "health": "Health information, an object of the NGO's own keys. Special-category data: "
    "category `health`, disclosed only where a consent names it.",
    "vulnerabilities": "Vulnerabilities the NGO noted, e.g. `minor`, `pregnant`, "
    "`trafficking_victim`. Category `vulnerabilities`.",
    "intentions": "What the person intends or is considering, an object of the NGO's own keys "
    "(e.g. legal stay, return, onward migration). Category `intentions`.",
    "case_notes": "The caseworker's notes. Category `case_notes`.",
}


class HouseholdMember(SQLModel):
    """One member of the person's household."""

    relation: str = Field(
        min_length=1,
        max_length=40,
        description="How the member is related to the person, e.g. `child`, `partner`.",
    )
    birth_year: int | None = Field(
        default=None, ge=1900, le=2100, description="The member's year of birth, if known."
    )


class ClientBase(SQLModel):
    display_name: str = Field(min_length=1, max_length=200, description=ABOUT["display_name"])
    birth_year: int | None = Field(default=None, ge=1900, le=2100, description=ABOUT["birth_year"])
    nationality: str | None = Field(
        default=None, min_length=2, max_length=2, description=ABOUT["nationality"]
    )
    languages: list[str] = Field(default_factory=list, sa_type=JSON, description=ABOUT["languages"])
    municipality: str | None = Field(
        default=None, max_length=100, description=ABOUT["municipality"]
    )
    phone: str | None = Field(default=None, max_length=40, description=ABOUT["phone"])
    household: list[dict[str, Any]] = Field(
        default_factory=list, sa_type=JSON, description=ABOUT["household"]
    )
    migration_history: dict[str, Any] = Field(
        default_factory=dict, sa_type=JSON, description=ABOUT["migration_history"]
    )
    needs: list[str] = Field(default_factory=list, sa_type=JSON, description=ABOUT["needs"])
    health: dict[str, Any] = Field(default_factory=dict, sa_type=JSON, description=ABOUT["health"])
    vulnerabilities: list[str] = Field(
        default_factory=list, sa_type=JSON, description=ABOUT["vulnerabilities"]
    )
    intentions: dict[str, Any] = Field(
        default_factory=dict, sa_type=JSON, description=ABOUT["intentions"]
    )
    case_notes: str | None = Field(default=None, max_length=20_000, description=ABOUT["case_notes"])


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


EXAMPLE_CLIENT: dict[str, Any] = {
    "display_name": "Amina",
    "birth_year": 1994,
    "nationality": "GN",
    "languages": ["fr", "en"],
    "municipality": "Schaerbeek",
    "phone": "+32 470 12 34 56",
    "household": [{"relation": "child", "birth_year": 2019}],
    "migration_history": {"arrived": 2021, "earlier_procedures": ["international_protection"]},
    "needs": ["shelter", "medical"],
    "health": {"chronic": "asthma"},
    "vulnerabilities": ["single_parent"],
    "intentions": {"considering": ["legal_stay", "return"]},
    "case_notes": "Met at the day centre; prefers appointments in the morning.",
}


class ClientCreate(ClientBase):
    """What an NGO caseworker registers; only `display_name` is required."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_CLIENT]})  # type: ignore[assignment]

    nationality: CountryCode | None = Field(default=None, description=ABOUT["nationality"])
    languages: LanguageCodes = Field(default_factory=list, description=ABOUT["languages"])
    household: list[HouseholdMember] = Field(  # type: ignore[assignment]
        default_factory=list, description=ABOUT["household"]
    )


class ClientUpdate(SQLModel):
    """A partial update: only the fields sent change. `null` clears a field the record may lack
    (birth year, nationality, municipality, phone, case notes); the others cannot be `null`: a
    list or an object is cleared by sending it empty, and `display_name` cannot be cleared."""

    model_config = ConfigDict(  # type: ignore[assignment]
        extra="forbid",
        json_schema_extra={"examples": [{"municipality": "Etterbeek", "needs": ["medical"]}]},
    )

    display_name: str = omittable(min_length=1, max_length=200, description=ABOUT["display_name"])
    birth_year: int | None = Field(
        default=None, ge=1900, le=2100, description=ABOUT["birth_year"] + " `null` clears it."
    )
    nationality: CountryCode | None = Field(
        default=None, description=ABOUT["nationality"] + " `null` clears it."
    )
    languages: LanguageCodes = omittable(description=ABOUT["languages"])
    municipality: str | None = Field(
        default=None, max_length=100, description=ABOUT["municipality"] + " `null` clears it."
    )
    phone: str | None = Field(
        default=None, max_length=40, description=ABOUT["phone"] + " `null` clears it."
    )
    household: list[HouseholdMember] = omittable(description=ABOUT["household"])
    migration_history: dict[str, Any] = omittable(description=ABOUT["migration_history"])
    needs: list[str] = omittable(description=ABOUT["needs"])
    health: dict[str, Any] = omittable(description=ABOUT["health"])
    vulnerabilities: list[str] = omittable(description=ABOUT["vulnerabilities"])
    intentions: dict[str, Any] = omittable(description=ABOUT["intentions"])
    case_notes: str | None = Field(
        default=None, max_length=20_000, description=ABOUT["case_notes"] + " `null` clears it."
    )


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


EXAMPLE_CLIENT_PUBLIC: dict[str, Any] = {
    **EXAMPLE_CLIENT,
    "client_ref": "C-5A7B63FF22E4",
    "org": "ngo-ghent",
    "created_at": "2026-01-05T09:30:00Z",
    "updated_at": "2026-01-12T14:05:00Z",
}


class ClientPublic(ClientBase):
    """A client record of your organisation."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_CLIENT_PUBLIC]})  # type: ignore[assignment]

    client_ref: str = Field(
        description="The client's pseudonym: the only reference to them that leaves intake."
    )
    org: str = Field(description="The NGO that registered the client and owns the record.")
    created_at: datetime = Field(description="When the client was registered (UTC).")
    updated_at: datetime = Field(description="When the record last changed (UTC).")


class ClientsPublic(SQLModel):
    """One page of your organisation's clients."""

    model_config = ConfigDict(  # type: ignore[assignment]
        json_schema_extra={"examples": [{"data": [EXAMPLE_CLIENT_PUBLIC], "count": 1}]}
    )

    data: list[ClientPublic] = Field(description="This page of clients, newest first.")
    count: PageCount


class ContactKind(StrEnum):
    """The outreach model's three activities."""

    CONTACT = "contact"
    INFORM = "inform"
    REFER = "refer"


TopicCode = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]


CONTACT_LANGUAGE = "The language the contact was in, an ISO 639-1 code such as `fr`."


class ContactBase(SQLModel):
    kind: ContactKind = Field(  # a plain string: no Postgres enum type
        sa_type=String(16),
        description="Which outreach activity: `contact` (reaching the person), `inform` "
        "(informing them, e.g. about legal stay and return) or `refer` (referring them on).",
    )
    topics: list[TopicCode] = Field(
        default_factory=list,
        sa_type=JSON,
        max_length=20,
        description="What was covered, as codes (lowercase letters, digits and `_`), e.g. "
        "`shelter`, `legal_stay`; at most 20.",
    )
    language: str | None = Field(default=None, max_length=2, description=CONTACT_LANGUAGE)
    date: dt.date = Field(description="The day of the contact; not in the future.")


EXAMPLE_CONTACT: dict[str, Any] = {
    "kind": "inform",
    "topics": ["legal_stay", "return"],
    "language": "fr",
    "date": "2026-01-12",
}


class ContactCreate(ContactBase):
    """One outreach contact: what kind, which topics (codes), in which language, when."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_CONTACT]})  # type: ignore[assignment]

    language: str | None = Field(default=None, description=CONTACT_LANGUAGE)
    date: IsoDate = Field(description="The day of the contact, `YYYY-MM-DD`; not in the future.")

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


EXAMPLE_CONTACT_PUBLIC: dict[str, Any] = {
    **EXAMPLE_CONTACT,
    "id": "3f6b2a4e-8c1d-4e5f-9a7b-0c2d4e6f8a1b",
    "client_ref": "C-5A7B63FF22E4",
    "logged_by": "caseworker-17",
    "created_at": "2026-01-12T10:02:00Z",
}


class ContactPublic(ContactBase):
    """An outreach contact with one of your organisation's clients."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_CONTACT_PUBLIC]})  # type: ignore[assignment]

    id: uuid.UUID = Field(description="The contact's id.")
    client_ref: str = Field(description="The pseudonym of the client the contact was with.")
    logged_by: str = Field(description="Who logged it: the caseworker's token subject.")
    created_at: datetime = Field(description="When it was logged (UTC).")


class ContactsPublic(SQLModel):
    """One page of a client's outreach contacts."""

    model_config = ConfigDict(  # type: ignore[assignment]
        json_schema_extra={"examples": [{"data": [EXAMPLE_CONTACT_PUBLIC], "count": 1}]}
    )

    data: list[ContactPublic] = Field(description="This page of contacts, most recent first.")
    count: PageCount


# ---------------------------------------------------------------- calls (svc.intake.*)


class DisclosureRequest(SQLModel):
    """`svc.intake.disclosure`: the bridge asks for some categories of one client of one org."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    client_ref: str = Field(min_length=1, max_length=64)
    org: str = Field(min_length=1, max_length=100)
    # An unknown category is a 422: nothing is disclosed for a code intake does not know.
    categories: list[DataCategory] = Field(min_length=1, max_length=len(DataCategory))


class ClientQuery(SQLModel):
    """`svc.intake.client`: does this org hold a client under this pseudonym? Asked by the
    consent service before it records a grant, so that it never decides from a projection that
    has not yet heard of a client registered a moment ago."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    client_ref: str = Field(min_length=1, max_length=64)
    org: str = Field(min_length=1, max_length=100)


class DisclosureReply(SQLModel):
    """The disclosure package: one object per asked category, holding that category's fields."""

    client_ref: str
    categories: dict[str, dict[str, Any]]
