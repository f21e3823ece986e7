"""Development token issuer: an RSA key in the data dir, its JWKS over HTTP, and signed tokens.

Only for the embedded default. Deployments point the services at a real OIDC provider.
"""

import json
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import RSAKey

DEFAULT_ISSUER = "http://127.0.0.1:8000"
DEFAULT_AUDIENCE = "twoline"
KEY_FILE = "issuer-key.json"


class NoIssuerKey(LookupError):
    """The data dir holds no issuer key: no stack was started from it, so no service would
    trust a token signed here."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(
            f"no issuer key in {data_dir.resolve()} (no {KEY_FILE}): start the stack with "
            "`make run` (or `.venv/bin/twoline run`) first, or pass the data dir of the running "
            "stack with --data-dir or TWOLINE_DATA_DIR"
        )
        self.data_dir = data_dir


def create_key(data_dir: Path) -> RSAKey:
    """The issuer's signing key, created on first use (mode 0600); for `twoline run`/`issuer`."""
    path = data_dir / KEY_FILE
    if path.exists():
        return load_key(data_dir)
    key = RSAKey.generate_key(2048, parameters={"kid": uuid.uuid4().hex[:16], "use": "sig"})
    data_dir.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps(key.as_dict(private=True)))
    return key


def load_key(data_dir: Path) -> RSAKey:
    """The existing issuer key; raises NoIssuerKey rather than make one nobody trusts."""
    path = data_dir / KEY_FILE
    try:
        return RSAKey.import_key(json.loads(path.read_text()))
    except FileNotFoundError:
        raise NoIssuerKey(data_dir) from None


def jwks(key: RSAKey) -> dict[str, Any]:
    public = key.as_dict(private=False)
    public.setdefault("alg", "RS256")
    return {"keys": [public]}


def issue(
    key: RSAKey,
    *,
    role: str,
    sub: str | None = None,
    org: str | None = None,
    agency: str | None = None,
    office: str | None = None,
    issuer: str = DEFAULT_ISSUER,
    audience: str = DEFAULT_AUDIENCE,
    ttl: int = 8 * 3600,
    now: int | None = None,
) -> str:
    """Sign a bearer JWT (RS256) for one role and its scope claims."""
    issued = int(time.time()) if now is None else now
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": sub or f"{role}-{uuid.uuid4().hex[:8]}",
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl,
        "jti": uuid.uuid4().hex,
        "roles": [role],
    }
    for name, value in (("org", org), ("agency", agency), ("office", office)):
        if value:
            claims[name] = value
    header = {"alg": "RS256", "kid": key.kid, "typ": "JWT"}
    return jwt.encode(header, claims, key)


def create_issuer_app(data_dir: Path, issuer: str = DEFAULT_ISSUER) -> FastAPI:
    """The issuer's public face: OIDC discovery and JWKS (tokens come from `twoline token`)."""
    key = create_key(data_dir)
    app = FastAPI(title="twoline development token issuer", version="0.1.0")

    @app.get("/.well-known/openid-configuration")
    def discovery() -> dict[str, Any]:
        """OIDC discovery document."""
        return {
            "issuer": issuer,
            "jwks_uri": f"{issuer}/.well-known/jwks.json",
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    @app.get("/.well-known/jwks.json")
    def keys() -> dict[str, Any]:
        """The public signing key."""
        return jwks(key)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """Liveness."""
        return {"status": "ok"}

    return app
