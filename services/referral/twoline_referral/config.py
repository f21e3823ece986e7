"""Referral settings (env prefix TWOLINE_REFERRAL_): the bridge holds a user in both zone accounts."""

from functools import lru_cache

from pydantic import SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from twoline_shared.auth import Agency
from twoline_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TWOLINE_REFERRAL_", extra="ignore")

    port: int = 8003
    database_url: str = "sqlite:///.twoline/referral.db"
    # Link "firstline": consumes intake and consent facts, publishes audit records.
    nats_user: str = "referral-fl"
    # Link "secondline": publishes routed tracks, consumes the case service's status facts.
    nats_sl_user: str = "referral-sl"
    nats_sl_password: SecretStr = SecretStr("")

    # agency -> the office queue a track goes to when no finer routing rule applies.
    routing_default_office: dict[str, str] = {
        Agency.IMMIGRATION_OFFICE.value: "brussels",
        Agency.FEDASIL.value: "brussels",
    }

    @field_validator("routing_default_office")
    @classmethod
    def _every_agency_routed(cls, value: dict[str, str]) -> dict[str, str]:
        missing = sorted(a.value for a in Agency if not value.get(a.value))
        if missing:
            raise ValueError(f"routing_default_office needs an office for {missing}")
        return value


@lru_cache
def get_settings() -> Settings:
    return Settings()
