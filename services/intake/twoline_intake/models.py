"""Intake tables and API schemas: client records under a pseudonym (`client_ref`), zone A only."""

import uuid
from datetime import datetime
from typing import Any

from pydantic import field_validator
from sqlalchemy import JSON
from sqlmodel import Field, SQLModel

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


class ClientCreate(ClientBase):
    """What an NGO caseworker registers; only `display_name` is required."""

    household: list[HouseholdMember] = Field(default_factory=list)  # type: ignore[assignment]

    @field_validator("nationality")
    @classmethod
    def _iso_country(cls, value: str | None) -> str | None:
        if value is not None and not (value.isascii() and value.isalpha() and value.isupper()):
            raise ValueError("nationality must be an ISO 3166-1 alpha-2 code, e.g. 'GN'")
        return value

    @field_validator("languages")
    @classmethod
    def _iso_languages(cls, value: list[str]) -> list[str]:
        for code in value:
            if not (len(code) == 2 and code.isascii() and code.isalpha() and code.islower()):
                raise ValueError("languages must be ISO 639-1 codes, e.g. 'fr'")
        return value


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
