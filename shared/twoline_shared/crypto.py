"""Sealed disclosure packages: AES-256-GCM over a JSON object, bound to what it is about (F2, F4).

The bridge seals each package under a per-consent data key it alone holds, with the track id
as associated data, so a ciphertext opens only with that key *and* only as that track's package.
Destroying the key (crypto-shredding) makes every copy unreadable: zone-B rows, the stream's
history, backups. Pure functions, no I/O; keys and nonces travel as standard base64 text.
"""

import base64
import binascii
import json
import os
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # 96 bits, fresh and random for every seal
TAG_BYTES = 16  # GCM's authentication tag, appended to the ciphertext


class CannotOpen(Exception):
    """A sealed package did not open: wrong key, wrong associated data, tampered or malformed.

    Deliberately one exception without detail: which of these it was is not for a log line.
    """

    def __init__(self) -> None:
        super().__init__("The sealed package cannot be opened.")


@dataclass(frozen=True)
class Sealed:
    """A sealed JSON object in transport form: base64 nonce and base64 ciphertext (with tag)."""

    nonce: str
    ciphertext: str


def new_data_key() -> bytes:
    """A fresh random 256-bit data key."""
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def encode_key(key: bytes) -> str:
    """A key as base64 text, for the one call that hands it out."""
    _check_key(key)
    return base64.b64encode(key).decode("ascii")


def decode_key(text: str) -> bytes:
    """The key in `encode_key`'s text; CannotOpen if it is not a 256-bit key."""
    key = _b64(text)
    if len(key) != KEY_BYTES:
        raise CannotOpen()
    return key


def seal(value: dict[str, Any], *, key: bytes, aad: str) -> Sealed:
    """Encrypt the JSON object `value` under `key`, bound to `aad` (e.g. the track id)."""
    _check_key(key)
    if not isinstance(value, dict):
        raise TypeError("only a JSON object is sealed")
    nonce = os.urandom(NONCE_BYTES)
    plaintext = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    ciphertext = AESGCM(key).encrypt(nonce, plaintext, aad.encode("utf-8"))
    return Sealed(nonce=_text(nonce), ciphertext=_text(ciphertext))


def open_sealed(sealed: Sealed, *, key: bytes, aad: str) -> dict[str, Any]:
    """The JSON object inside `sealed`; CannotOpen for anything but the right key and `aad`."""
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise CannotOpen()
    nonce, ciphertext = _b64(sealed.nonce), _b64(sealed.ciphertext)
    if len(nonce) != NONCE_BYTES or len(ciphertext) < TAG_BYTES:
        raise CannotOpen()
    try:
        plaintext = AESGCM(key).decrypt(nonce, ciphertext, aad.encode("utf-8"))
    except InvalidTag:
        raise CannotOpen() from None
    try:
        value = json.loads(plaintext.decode("utf-8"))
    except ValueError:
        raise CannotOpen() from None
    if not isinstance(value, dict):
        raise CannotOpen()
    return value


def is_well_formed(sealed: Sealed) -> bool:
    """Whether `sealed` has the shape of a seal (a 96-bit nonce, a ciphertext with its tag).

    A shape check only, for a consumer that holds no key: whether it opens is `open_sealed`.
    """
    try:
        nonce, ciphertext = _b64(sealed.nonce), _b64(sealed.ciphertext)
    except CannotOpen:
        return False
    return len(nonce) == NONCE_BYTES and len(ciphertext) >= TAG_BYTES


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise ValueError("a data key is 32 random bytes (new_data_key)")


def _text(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _b64(text: str) -> bytes:
    if not isinstance(text, str):
        raise CannotOpen()
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise CannotOpen() from None
