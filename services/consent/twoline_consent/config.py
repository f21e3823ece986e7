"""Consent settings (env prefix TWOLINE_CONSENT_)."""

from functools import lru_cache

from pydantic_settings import SettingsConfigDict

from twoline_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TWOLINE_CONSENT_", extra="ignore")

    port: int = 8002
    database_url: str = "sqlite:///.twoline/consent.db"
    nats_user: str = "consent"
    # How long a grant waits for intake to confirm a client it has not heard of yet.
    intake_timeout_seconds: float = 5.0


@lru_cache
def get_settings() -> Settings:
    return Settings()
