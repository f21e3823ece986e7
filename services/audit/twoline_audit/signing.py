"""The log's Ed25519 signing key: a file in the service's data, created on first use (0600).

Every replica must read the same file (or a copy of it): verifiers pin its public key.
"""

import os
import threading
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from twoline_audit import domain

_lock = threading.Lock()
_keys: dict[Path, Ed25519PrivateKey] = {}


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The private key in `path` (PEM, PKCS#8), generated and written there if absent."""
    path = path.resolve()
    with _lock:
        if path not in _keys:
            _keys[path] = _read_or_create(path)
        return _keys[path]


def _read_or_create(path: Path) -> Ed25519PrivateKey:
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # O_EXCL: a second replica starting at the same moment reads the first one's key.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
            return key
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return loaded


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_pem(key: Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def sign(key: Ed25519PrivateKey, *, tree_size: int, root_hash: bytes, timestamp: str) -> bytes:
    return key.sign(
        domain.checkpoint_body(tree_size=tree_size, root_hash=root_hash, timestamp=timestamp)
    )


def key_id(key: Ed25519PrivateKey) -> str:
    return domain.key_id(public_bytes(key))
