"""Case-resolution settings (env prefix TWOLINE_CASE_RESOLUTION_)."""

from functools import lru_cache

from pydantic_settings import SettingsConfigDict

from twoline_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TWOLINE_CASE_RESOLUTION_", extra="ignore")

    port: int = 8004
    database_url: str = "sqlite:///.twoline/case-resolution.db"
    nats_user: str = "case-resolution"


@lru_cache
def get_settings() -> Settings:
    return Settings()
