"""Zone B's synchronous calls, both to the bridge: the data key of a sealed package
(`svc.referral.disclosure-key`) and the tracks a case may be reviewed with
(`svc.referral.joint-review`).

Packages arrive sealed under a per-consent key that only the bridge holds (F4). Each read of a
case asks the bridge for the key, opens the package in memory and forgets the key: no cache, so
a withdrawal is honoured by the very next read once the bridge has destroyed the key. The key
and the plaintext are never stored, sent on, audited or logged here. Joint review is asked the
same way, on every read: zone B keeps no link between an ICAM and a Fedasil case (F5).

The service layer gets plain callables (`KeyFetcher`, `LinkFinder`) and stays free of NATS;
this module makes them from the running service's link. A call nobody answers in time is a
503 `call-unavailable` (`ServiceRuntime.call`).
"""

from collections.abc import Callable

from twoline_case_resolution.domain import DisclosureWithdrawn
from twoline_shared import crypto
from twoline_shared.errors import Conflict, Unavailable
from twoline_shared.runtime import ServiceRuntime

KEY_CALL = "svc.referral.disclosure-key"
JOINT_REVIEW_CALL = "svc.referral.joint-review"
_MAX_LINKS = 16

# (track_id, key_id) -> the key; raises DisclosureWithdrawn once the consent is withdrawn, and
# another ServiceError when the bridge does not hand it out for any other reason.
KeyFetcher = Callable[[str, str], bytes]
# track_id -> the other agency's track ids its case may be reviewed with (none without
# `joint_review` on both sides); raises a ServiceError when the bridge does not answer.
LinkFinder = Callable[[str], list[str]]


def bridge_key_fetcher(runtime: ServiceRuntime, *, timeout: float) -> KeyFetcher:
    """A `KeyFetcher` that asks the bridge over the service's link (blocking; worker threads)."""

    def fetch(track_id: str, key_id: str) -> bytes:
        payload = {"track_id": track_id, "key_id": key_id}
        try:
            reply = runtime.call("default", KEY_CALL, payload, timeout=timeout)
        except Conflict as exc:
            if exc.slug == DisclosureWithdrawn.slug:
                raise DisclosureWithdrawn() from None
            raise
        try:
            return crypto.decode_key(reply.get("key"))  # type: ignore[arg-type]
        except crypto.CannotOpen:
            raise Unavailable("The bridge's key reply is malformed.", slug="call-failed") from None

    return fetch


def bridge_link_finder(runtime: ServiceRuntime, *, timeout: float) -> LinkFinder:
    """A `LinkFinder` that asks the bridge over the service's link (blocking; worker threads)."""

    def find(track_id: str) -> list[str]:
        reply = runtime.call("default", JOINT_REVIEW_CALL, {"track_id": track_id}, timeout=timeout)
        linked = reply.get("linked_track_ids")
        if (
            not isinstance(linked, list)
            or len(linked) > _MAX_LINKS
            or not all(isinstance(t, str) and 0 < len(t) <= 64 for t in linked)
        ):
            raise Unavailable("The bridge's joint-review reply is malformed.", slug="call-failed")
        return linked

    return find
