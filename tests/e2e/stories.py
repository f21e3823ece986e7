"""A client's story through the public APIs of a running stack (`tests/e2e/conftest.py`)."""

import uuid
from typing import Any

from tests.conftest import FEDASIL_BRUSSELS, ICAM_BRUSSELS, NGO_GHENT, eventually

AGENCY_OF = {"legal_stay": "immigration_office", "return": "fedasil"}


class Story:
    """One client of the NGO, referred for both tracks, each case accepted by its performer.

    The stack is fresh for each test and a story's cases are accepted as soon as they are
    queued, so the one requested case of a track in the queue is this story's.
    """

    def __init__(self, stack: dict[str, Any], issuer: Any, purposes: list[str]) -> None:
        self.stack = stack
        self.ngo = issuer.headers(**NGO_GHENT)
        self.performer = {
            "legal_stay": issuer.headers(sub="coach-1", **ICAM_BRUSSELS),
            "return": issuer.headers(sub="counsellor-1", **FEDASIL_BRUSSELS),
        }
        self.canary = f"Canary-{uuid.uuid4().hex}"
        created = stack["intake"].post(
            "/v1/clients",
            json={"display_name": self.canary, "languages": ["fr"], "needs": ["shelter"]},
            headers=self.ngo,
        )
        assert created.status_code == 201, created.text
        self.client_ref = created.json()["client_ref"]
        # No pause between the steps: each service reads the writes of the one before.
        self.consents = {agency: self._grant(agency, purposes) for agency in AGENCY_OF.values()}
        self.referral_id = self._refer()["referral_id"]
        self.case_ids = {
            track: eventually(lambda t=track: self._accept_queued(t), f"the {track} queue")
            for track in AGENCY_OF
        }

    def _grant(self, agency: str, purposes: list[str]) -> str:
        response = self.stack["consent"].post(
            "/v1/consents",
            headers=self.ngo,
            json={
                "client_ref": self.client_ref,
                "recipient": agency,
                "purposes": purposes,
                "categories": ["identity", "needs"],
                "method": "written",
                "language": "fr",
                "interpreter": False,
                "information_version": "2026-01",
            },
        )
        assert response.status_code == 201, response.text
        return response.json()["consent_id"]

    def _refer(self) -> dict[str, Any]:
        response = self.stack["referral"].post(
            "/v1/referrals",
            json={"client_ref": self.client_ref, "tracks": list(AGENCY_OF)},
            headers=self.ngo,
        )
        assert response.status_code == 201, response.text
        return response.json()

    def _accept_queued(self, track: str) -> str | None:
        response = self.stack["case"].get("/v1/queue", headers=self.performer[track])
        assert response.status_code == 200, response.text
        queued = [c["case_id"] for c in response.json()["data"] if c["track"] == track]
        if not queued:
            return None
        [case_id] = queued
        accepted = self.stack["case"].post(
            f"/v1/cases/{case_id}/tracks/{track}/accept", headers=self.performer[track]
        )
        assert accepted.status_code == 200, accepted.text
        return case_id

    def act(self, track: str, verb: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.stack["case"].post(
            f"/v1/cases/{self.case_ids[track]}/tracks/{track}/{verb}",
            json=body,
            headers=self.performer[track],
        )
        assert response.status_code == 200, response.text
        return response.json()

    def read(self, track: str) -> Any:
        response = self.stack["case"].get(
            f"/v1/cases/{self.case_ids[track]}", headers=self.performer[track]
        )
        assert response.status_code == 200, response.text
        return response
