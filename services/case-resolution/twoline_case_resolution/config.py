"""Case-resolution settings (env prefix TWOLINE_CASE_RESOLUTION_)."""

from functools import lru_cache

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from twoline_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TWOLINE_CASE_RESOLUTION_", extra="ignore")

    port: int = 8004
    database_url: str = "sqlite:///.twoline/case-resolution.db"
    nats_user: str = "case-resolution"
    # How long a case read waits for each of the bridge's answers (the package's key, the joint
    # review); after that the case is shown with `disclosure_status` or `joint_review.status`
    # `unavailable` (never a 500).
    bridge_call_timeout_seconds: float = Field(default=2.0, gt=0, le=10)


@lru_cache
def get_settings() -> Settings:
    return Settings()
