"""Intake settings (env prefix TWOLINE_INTAKE_)."""

from functools import lru_cache

from pydantic_settings import SettingsConfigDict

from twoline_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TWOLINE_INTAKE_", extra="ignore")

    port: int = 8001
    database_url: str = "sqlite:///.twoline/intake.db"
    nats_user: str = "intake"


@lru_cache
def get_settings() -> Settings:
    return Settings()
