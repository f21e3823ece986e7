"""Settings base: one pydantic-settings class per service, each with its own env prefix."""

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Settings every service shares; a service subclasses it and sets `env_prefix`."""

    model_config = SettingsConfigDict(extra="ignore", env_prefix="TWOLINE_")

    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str = "sqlite:///.twoline/service.db"

    nats_url: str = "nats://127.0.0.1:4223"
    nats_user: str = ""
    nats_password: SecretStr = SecretStr("")
    nats_enabled: bool = True

    auth_jwks_url: str = "http://127.0.0.1:8000/.well-known/jwks.json"
    auth_issuer: str = "http://127.0.0.1:8000"
    auth_audience: str = "twoline"
    # Asymmetric algorithms only: HS* would let anyone holding the public key forge tokens.
    auth_algorithms: list[str] = ["RS256", "ES256", "EdDSA"]

    outbox_poll_seconds: float = 1.0
    outbox_lease_seconds: float = 30.0
    consumer_ack_wait_seconds: float = 30.0
    consumer_max_deliver: int = 10
