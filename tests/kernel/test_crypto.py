"""Sealed packages (twoline_shared.crypto): AES-256-GCM bound to the track, one clear failure."""

import base64
import json

import pytest

from twoline_shared.crypto import (
    KEY_BYTES,
    NONCE_BYTES,
    TAG_BYTES,
    CannotOpen,
    Sealed,
    decode_key,
    encode_key,
    is_well_formed,
    new_data_key,
    open_sealed,
    seal,
)

CANARY = "CANARY-crypto-3b7e Aïcha"
PACKAGE = {"identity": {"display_name": CANARY, "birth_year": 1991}, "needs": {"needs": []}}
TRACK = "5d0c6f1e-4a49-4f0b-9a55-0c6c3c1f2a10"


def flip(text: str, index: int) -> str:
    """`text` (base64) with one bit of byte `index` flipped."""
    raw = bytearray(base64.b64decode(text))
    raw[index] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def test_a_sealed_package_opens_with_its_key_and_track():
    key = new_data_key()

    sealed = seal(PACKAGE, key=key, aad=TRACK)

    assert open_sealed(sealed, key=key, aad=TRACK) == PACKAGE
    # Transport form: base64 text, a 96-bit nonce, the ciphertext with its 128-bit tag.
    assert len(base64.b64decode(sealed.nonce)) == NONCE_BYTES
    plaintext = json.dumps(PACKAGE, separators=(",", ":"), ensure_ascii=False).encode()
    assert len(base64.b64decode(sealed.ciphertext)) == len(plaintext) + TAG_BYTES
    assert is_well_formed(sealed)


def test_the_sealed_form_holds_no_plaintext():
    sealed = seal(PACKAGE, key=new_data_key(), aad=TRACK)
    raw = sealed.nonce + sealed.ciphertext + base64.b64decode(sealed.ciphertext).hex()
    for secret in (CANARY, "display_name", "identity", base64.b64encode(CANARY.encode()).decode()):
        assert secret not in raw
    assert CANARY.encode() not in base64.b64decode(sealed.ciphertext)


def test_every_seal_takes_a_fresh_nonce():
    key = new_data_key()
    seals = [seal(PACKAGE, key=key, aad=TRACK) for _ in range(50)]
    assert len({s.nonce for s in seals}) == 50
    assert len({s.ciphertext for s in seals}) == 50


def test_data_keys_are_fresh_256_bit_keys():
    keys = {new_data_key() for _ in range(50)}
    assert len(keys) == 50 and all(len(k) == KEY_BYTES for k in keys)


def test_a_wrong_key_fails():
    sealed = seal(PACKAGE, key=new_data_key(), aad=TRACK)
    with pytest.raises(CannotOpen):
        open_sealed(sealed, key=new_data_key(), aad=TRACK)


def test_another_track_fails():
    """The ciphertext is bound to its track: copied onto another case, it does not open."""
    key = new_data_key()
    sealed = seal(PACKAGE, key=key, aad=TRACK)
    for other in ("", TRACK.upper(), TRACK + " ", "1d0c6f1e-4a49-4f0b-9a55-0c6c3c1f2a10"):
        with pytest.raises(CannotOpen):
            open_sealed(sealed, key=key, aad=other)


@pytest.mark.parametrize("index", [0, 5, -1, -TAG_BYTES])
def test_a_tampered_ciphertext_or_tag_fails(index):
    key = new_data_key()
    sealed = seal(PACKAGE, key=key, aad=TRACK)
    with pytest.raises(CannotOpen):
        open_sealed(Sealed(sealed.nonce, flip(sealed.ciphertext, index)), key=key, aad=TRACK)


def test_a_tampered_or_swapped_nonce_fails():
    key = new_data_key()
    first, second = seal(PACKAGE, key=key, aad=TRACK), seal(PACKAGE, key=key, aad=TRACK)
    with pytest.raises(CannotOpen):
        open_sealed(Sealed(flip(first.nonce, 0), first.ciphertext), key=key, aad=TRACK)
    with pytest.raises(CannotOpen):
        open_sealed(Sealed(second.nonce, first.ciphertext), key=key, aad=TRACK)


@pytest.mark.parametrize(
    "sealed",
    [
        Sealed("not base64!", "AAAA"),
        Sealed(base64.b64encode(b"short").decode(), base64.b64encode(b"x" * 32).decode()),
        Sealed(base64.b64encode(b"n" * NONCE_BYTES).decode(), base64.b64encode(b"x").decode()),
        Sealed(base64.b64encode(b"n" * NONCE_BYTES).decode(), "é"),
        Sealed(None, None),  # type: ignore[arg-type]
    ],
)
def test_a_malformed_seal_fails_the_same_way_and_is_not_well_formed(sealed):
    with pytest.raises(CannotOpen):
        open_sealed(sealed, key=new_data_key(), aad=TRACK)
    assert not is_well_formed(sealed)


@pytest.mark.parametrize("key", [b"", b"k" * 16, b"k" * 31, "k" * 32, None])
def test_opening_with_no_real_key_fails_the_same_way(key):
    sealed = seal(PACKAGE, key=new_data_key(), aad=TRACK)
    with pytest.raises(CannotOpen):
        open_sealed(sealed, key=key, aad=TRACK)  # type: ignore[arg-type]


def test_a_sealed_value_that_is_not_an_object_does_not_open():
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key, nonce = new_data_key(), b"\x00" * NONCE_BYTES
    ciphertext = AESGCM(key).encrypt(nonce, b"[1, 2]", TRACK.encode())
    sealed = Sealed(base64.b64encode(nonce).decode(), base64.b64encode(ciphertext).decode())
    with pytest.raises(CannotOpen):
        open_sealed(sealed, key=key, aad=TRACK)


def test_the_exception_says_nothing_about_the_cause_or_the_content():
    sealed = seal(PACKAGE, key=new_data_key(), aad=TRACK)
    with pytest.raises(CannotOpen) as raised:
        open_sealed(sealed, key=new_data_key(), aad=TRACK)
    assert str(raised.value) == "The sealed package cannot be opened."
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_sealing_needs_a_real_key_and_an_object():
    with pytest.raises(ValueError):
        seal(PACKAGE, key=b"short", aad=TRACK)
    with pytest.raises(TypeError):
        seal(["not", "an", "object"], key=new_data_key(), aad=TRACK)  # type: ignore[arg-type]


def test_keys_travel_as_base64_text():
    key = new_data_key()
    assert decode_key(encode_key(key)) == key
    for bad in ("", "not base64!", base64.b64encode(b"k" * 16).decode()):
        with pytest.raises(CannotOpen):
            decode_key(bad)
    with pytest.raises(ValueError):
        encode_key(b"short")
