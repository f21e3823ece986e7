"""Audit settings (env prefix TWOLINE_AUDIT_)."""

from functools import lru_cache
from pathlib import Path

from pydantic_settings import SettingsConfigDict

from twoline_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TWOLINE_AUDIT_", extra="ignore")

    port: int = 8005
    database_url: str = "sqlite:///.twoline/audit.db"
    nats_user: str = "audit"
    # The Ed25519 key that signs checkpoints; generated here on first use if absent.
    signing_key_path: Path = Path(".twoline/audit-signing-key.pem")
    # Flow traces: a fact one service emitted and the next has not recorded is a finding only
    # once it is older than this (events are asynchronous; relays and consumers take a moment).
    trace_grace_seconds: float = 60.0


@lru_cache
def get_settings() -> Settings:
    return Settings()
