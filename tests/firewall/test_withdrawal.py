"""F4, proven end to end: withdrawing consent crypto-shreds what was disclosed.

All five services on one real nats-server with the project's config, each on its own database.
A client is registered with a canary in every personal field, consents some categories to the
Immigration Office (and, as a control, something to Fedasil), and is referred for both tracks.
The coach reads the case and sees exactly the consented canaries. The NGO withdraws the ICAM
consent: within five seconds no zone-B API returns them. Then everything that remains is
searched: every table of the case-resolution database, every message of the SECONDLINE stream
(raw bytes), and a copy of zone B's row taken before the withdrawal (a backup) — no canary in
plaintext, and no ciphertext found there opens with any key material left in the bridge's
database. The key call refuses the withdrawn package's key.
"""

import asyncio
import base64
import binascii
import json
from typing import Any

import pytest

from tests.canaries import as_text, canaries_of, client_body, make_canaries, rows_of
from tests.conftest import ICAM_BRUSSELS, NGO_GHENT, eventually
from tests.e2e.conftest import stack, stream_payloads  # noqa: F401  (`stack` is a fixture)
from twoline.natsserver import credential
from twoline_shared.broker import connect
from twoline_shared.calls import call
from twoline_shared.crypto import KEY_BYTES, CannotOpen, Sealed, decode_key, open_sealed
from twoline_shared.errors import Conflict

pytestmark = pytest.mark.nats

# The categories the person consents to disclose to the Immigration Office (not health, etc.).
ICAM_CATEGORIES = ["contact", "identity", "migration_history", "needs"]
# A second consent, to Fedasil, stays active: its key must remain, and must not open ICAM's data.
FEDASIL_CATEGORIES = ["intentions"]
KEY_CALL = "svc.referral.disclosure-key"


def key_material(engine: Any) -> list[bytes]:
    """Everything in a database that could be a 256-bit key: any 32-byte binary value, and any
    text that is the base64 or the hex of 32 bytes, in any column of any table."""
    found: list[bytes] = []
    for _, row in rows_of(engine):
        for value in row.values():
            if isinstance(value, bytes | memoryview):
                candidates = [bytes(value)]
            elif isinstance(value, str):
                candidates = []
                for decode in (lambda v: base64.b64decode(v, validate=True), bytes.fromhex):
                    try:
                        candidates.append(decode(value))
                    except (binascii.Error, ValueError):
                        continue
            else:
                continue
            found += [raw for raw in candidates if len(raw) == KEY_BYTES]
    return found


def sealed_in(payload: bytes) -> list[tuple[str, Sealed]]:
    """The sealed packages in one raw stream message: (track_id, sealed)."""
    data = json.loads(payload).get("data", {})
    disclosure = data.get("disclosure")
    if not isinstance(disclosure, dict) or "ciphertext" not in disclosure:
        return []
    return [(data["track_id"], Sealed(disclosure["nonce"], disclosure["ciphertext"]))]


def opens(sealed: Sealed, keys: list[bytes], aads: list[str]) -> bool:
    for key in keys:
        for aad in aads:
            try:
                open_sealed(sealed, key=key, aad=aad)
                return True
            except CannotOpen:
                continue
    return False


async def ask_for_key(nats_server: Any, track_id: str, key_id: str) -> dict[str, Any]:
    nc = await connect(
        nats_server.url, credential("case-resolution", nats_server.passwords), name="test:key"
    )
    try:
        return await call(nc, KEY_CALL, {"track_id": track_id, "key_id": key_id}, wait=5)
    finally:
        await nc.close()


def test_withdrawal_makes_the_disclosed_data_unreadable_everywhere_in_zone_b(
    stack,  # noqa: F811
    issuer,
    nats_server,
):
    intake, consent, referral, cases = (
        stack["intake"],
        stack["consent"],
        stack["referral"],
        stack["case"],
    )
    ngo = issuer.headers(sub="ngo-cw-1", **NGO_GHENT)
    coach = issuer.headers(sub="coach-1", **ICAM_BRUSSELS)
    c = make_canaries("wdrw")

    # ---- register, consent, refer
    created = intake.post("/v1/clients", json=client_body(c), headers=ngo)
    assert created.status_code == 201, created.text
    client_ref = created.json()["client_ref"]

    def grant(recipient: str, categories: list[str]) -> dict[str, Any]:
        response = consent.post(
            "/v1/consents",
            headers=ngo,
            json={
                "client_ref": client_ref,
                "recipient": recipient,
                "purposes": ["referral"],
                "categories": categories,
                "method": "written",
                "language": "fr",
                "interpreter": False,
                "information_version": "2026-11",
            },
        )
        assert response.status_code == 201, response.text
        return response.json()

    icam_consent = grant("immigration_office", ICAM_CATEGORIES)
    grant("fedasil", FEDASIL_CATEGORIES)
    referred = referral.post(
        "/v1/referrals",
        json={"client_ref": client_ref, "tracks": ["legal_stay", "return"]},
        headers=ngo,
    )
    assert referred.status_code == 201, referred.text
    tracks = {t["track"]: t for t in referred.json()["tracks"]}
    icam_track, fedasil_track = tracks["legal_stay"], tracks["return"]
    assert icam_track["office"] == "brussels"  # an unknown municipality: the default office

    # ---- the coach reads the case: exactly the consented canaries
    def queued() -> list[dict[str, Any]]:
        return cases.get("/v1/queue", headers=coach).json()["data"]

    [item] = eventually(queued, "the legal-stay case in the Brussels queue")
    case_url = f"/v1/cases/{item['case_id']}"
    before = cases.get(case_url, headers=coach)
    assert before.status_code == 200, before.text
    assert before.json()["disclosure_status"] == "disclosed"
    assert sorted(before.json()["disclosure"]) == ICAM_CATEGORIES
    for value in c.values():
        assert (value in before.text) is (value in canaries_of(c, ICAM_CATEGORIES)), value

    # A backup of zone B taken now: the sealed package as it sits in the row.
    case_engine = cases.app.state.runtime.engine
    [backup_row] = [
        row
        for table, row in rows_of(case_engine)
        if table == "cases" and row["track_id"] == icam_track["track_id"]
    ]
    backup_sealed = Sealed(backup_row["disclosure_nonce"], backup_row["disclosure_ciphertext"])
    icam_key_id = backup_row["disclosure_key_id"]

    # ---- the NGO withdraws the consent: from its 200 on, no zone-B API returns the data (the
    # bridge asks the consent service before it hands out a key, so this holds before the
    # withdrawal event has reached anyone)
    response = consent.post(f"/v1/consents/{icam_consent['consent_id']}/withdraw", headers=ngo)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "inactive"

    after = cases.get(case_url, headers=coach)
    assert after.status_code == 200, after.text
    assert after.json()["disclosure_status"] == "withdrawn"
    assert after.json()["disclosure"] is None
    for value in c.values():
        assert value not in after.text
    queue_now = cases.get("/v1/queue", headers=coach)
    assert all(value not in queue_now.text for value in c.values())

    # The cancel reaches zone B too, which deletes its sealed copy (metadata stays).
    def purged() -> dict[str, Any] | None:
        [row] = [
            r
            for table, r in rows_of(case_engine)
            if table == "cases" and r["track_id"] == icam_track["track_id"]
        ]
        return row if row["disclosure_ciphertext"] is None else None

    purged_row = eventually(purged, "zone B to delete its sealed copy")
    assert (purged_row["status"], purged_row["disclosure_status"]) == ("cancelled", "withdrawn")
    assert (purged_row["disclosure_key_id"], purged_row["disclosure_nonce"]) == (None, None)

    # ---- what remains in zone B's database: no canary, in any table, row or column
    zone_b = "\n".join(as_text(v) for _, row in rows_of(case_engine) for v in row.values())
    for value in c.values():
        assert value not in zone_b, value

    # ---- what remains in the SECONDLINE stream: no canary in any message's raw bytes
    stream = asyncio.run(stream_payloads(nats_server, "SECONDLINE", "sl-admin"))
    assert stream, "the stream holds the routed events"
    for payload in stream:
        for value in c.values():
            assert value.encode() not in payload, value

    # ---- every ciphertext found (stream, zone-B rows, the backup) against every key left
    bridge_engine = referral.app.state.runtime.engine
    keys_left = key_material(bridge_engine)
    key_rows = {
        row["key_id"]: row for table, row in rows_of(bridge_engine) if table == "referral_data_key"
    }
    # The withdrawn consent's key is gone; the other consent's key remains (and is tried).
    assert key_rows[icam_key_id]["key_bytes"] is None
    assert key_rows[icam_key_id]["destroyed_at"] is not None
    [fedasil_key] = [bytes(r["key_bytes"]) for k, r in key_rows.items() if k != icam_key_id]
    assert fedasil_key in keys_left

    found = [s for payload in stream for s in sealed_in(payload)]
    found += [
        (row["track_id"], Sealed(row["disclosure_nonce"], row["disclosure_ciphertext"]))
        for table, row in rows_of(case_engine)
        if table == "cases" and row["disclosure_ciphertext"] is not None
    ]
    found.append((icam_track["track_id"], backup_sealed))
    aads = [icam_track["track_id"], fedasil_track["track_id"]]
    icam_copies = [sealed for track_id, sealed in found if track_id == icam_track["track_id"]]
    assert len(icam_copies) == 2  # the routed event in the stream, and the backup
    for sealed in icam_copies:
        assert not opens(sealed, keys_left, aads)
    # Control: the method works — Fedasil's package, under the key that remains, still opens.
    fedasil_copies = [s for t, s in found if t == fedasil_track["track_id"]]
    assert fedasil_copies and all(opens(s, keys_left, aads) for s in fedasil_copies)

    # ---- and the bridge no longer hands out the key
    with pytest.raises(Conflict) as refused:
        asyncio.run(ask_for_key(nats_server, icam_track["track_id"], icam_key_id))
    assert refused.value.slug == "disclosure-withdrawn"
    fedasil_key_id = next(
        json.loads(p)["data"]["disclosure"]["key_id"]
        for p in stream
        if json.loads(p)["data"].get("track_id") == fedasil_track["track_id"]
        and b"track.routed" in p
    )
    reply = asyncio.run(ask_for_key(nats_server, fedasil_track["track_id"], fedasil_key_id))
    assert decode_key(reply["key"]) in keys_left
