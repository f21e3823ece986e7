"""Zone B's one synchronous call: the data key of a sealed package (`svc.referral.disclosure-key`).

Packages arrive sealed under a per-consent key that only the bridge holds (F4). Each read of a
case asks the bridge for the key, opens the package in memory and forgets the key: no cache, so
a withdrawal is honoured by the very next read once the bridge has destroyed the key. The key
and the plaintext are never stored, sent on, audited or logged here.

The service layer gets a plain callable (`KeyFetcher`) and stays free of NATS; this module makes
one from the running service's link.
"""

import concurrent.futures
from collections.abc import Callable

from twoline_case_resolution.domain import DisclosureWithdrawn
from twoline_shared import crypto
from twoline_shared.errors import Conflict, Unavailable
from twoline_shared.runtime import ServiceRuntime

KEY_CALL = "svc.referral.disclosure-key"

# (track_id, key_id) -> the key; raises DisclosureWithdrawn once the consent is withdrawn, and
# another ServiceError when the bridge does not hand it out for any other reason.
KeyFetcher = Callable[[str, str], bytes]


def bridge_key_fetcher(runtime: ServiceRuntime, *, timeout: float) -> KeyFetcher:
    """A `KeyFetcher` that asks the bridge over the service's link (blocking; worker threads)."""

    def fetch(track_id: str, key_id: str) -> bytes:
        payload = {"track_id": track_id, "key_id": key_id}
        try:
            reply = runtime.call("default", KEY_CALL, payload, timeout=timeout)
        except concurrent.futures.TimeoutError as exc:
            raise Unavailable(
                "The bridge did not answer in time.", slug="call-unavailable"
            ) from exc
        except Conflict as exc:
            if exc.slug == DisclosureWithdrawn.slug:
                raise DisclosureWithdrawn() from None
            raise
        try:
            return crypto.decode_key(reply.get("key"))  # type: ignore[arg-type]
        except crypto.CannotOpen:
            raise Unavailable("The bridge's key reply is malformed.", slug="call-failed") from None

    return fetch
