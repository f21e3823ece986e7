"""`twoline demo`: one dual-track story, driven through the public APIs of a running stack.

An NGO in Ghent registers a person, records two consents (one per agency, different categories),
and refers them for both tracks. An ICAM coach in Brussels accepts the legal-stay track and
assesses options; a Fedasil return counsellor accepts the return track and the person declines
return; the legal-stay track completes with outcome `legal_stay`, and the NGO sees it. Last, an
auditor reads the referral's trace across all services and verifies the audit log.
"""

import datetime as dt
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx

from twoline import auditlog
from twoline.devissuer import DEFAULT_AUDIENCE, issue, load_key
from twoline.stack import service_ports

ORG = "ngo-ghent"
OFFICE = "brussels"


class DemoFailed(Exception):
    """A step of the story did not behave as the story says."""


@dataclass
class Api:
    """One caller (a role and its token) against one service."""

    http: httpx.Client
    base: str
    token: str

    def call(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        response = self.http.request(method, self.base + path, headers=headers, **kwargs)
        if response.status_code != expect:
            raise DemoFailed(
                f"{method} {path}: expected {expect}, got {response.status_code}: {response.text}"
            )
        return response.json()


class Story:
    def __init__(self, *, data_dir: Path, issuer_port: int, out: TextIO, timeout: float) -> None:
        self.key = load_key(data_dir)
        self.issuer = f"http://127.0.0.1:{issuer_port}"
        self.out = out
        self.timeout = timeout
        self.http = httpx.Client(timeout=10.0)
        self.ports = service_ports(data_dir)  # the running stack's, from its stack.json

    def api(self, service: str, role: str, sub: str, **claims: str) -> Api:
        token = issue(
            self.key,
            role=role,
            sub=sub,
            issuer=self.issuer,
            audience=DEFAULT_AUDIENCE,
            ttl=3600,
            **claims,
        )
        return Api(self.http, f"http://127.0.0.1:{self.ports[service]}/v1", token)

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def wait_for(self, probe: Callable[[], Any], what: str) -> Any:
        deadline = time.monotonic() + self.timeout
        while True:
            result = probe()
            if result:
                return result
            if time.monotonic() > deadline:
                raise DemoFailed(f"timed out waiting for {what}")
            time.sleep(0.2)

    # ---------------------------------------------------------------- the story

    def run(self) -> None:
        run_id = uuid.uuid4().hex[:6]
        intake = self.api("intake", "ngo_caseworker", f"ngo-cw-{run_id}", org=ORG)
        consent = self.api("consent", "ngo_caseworker", f"ngo-cw-{run_id}", org=ORG)
        referral = self.api("referral", "ngo_caseworker", f"ngo-cw-{run_id}", org=ORG)
        coach = self.api(
            "case-resolution",
            "icam_coach",
            f"coach-{run_id}",
            agency="immigration_office",
            office=OFFICE,
        )
        counsellor = self.api(
            "case-resolution",
            "return_counsellor",
            f"counsellor-{run_id}",
            agency="fedasil",
            office=OFFICE,
        )
        today = dt.date.today().isoformat()

        self.say("== First line: the NGO (ngo-ghent)")
        client = intake.call(
            "POST",
            "/clients",
            201,
            json={
                "display_name": f"Demo person {run_id}",
                "birth_year": 1994,
                "nationality": "GN",
                "languages": ["fr", "ar"],
                "municipality": "Schaerbeek",
                "phone": "+32 470 00 00 00",
                "household": [{"relation": "child", "birth_year": 2019}],
                "migration_history": {"asylum_procedures": 1, "years_in_country": 6},
                "needs": ["shelter", "legal"],
                "health": {"chronic_condition": True},
                "intentions": {"plans": "stay with child", "return_barriers": ["school"]},
            },
        )
        ref = client["client_ref"]
        self.say(f"registered a person as {ref} (name, contact, health stay in zone A)")
        intake.call(
            "POST",
            f"/clients/{ref}/contacts",
            201,
            json={
                "kind": "inform",
                "topics": ["legal_stay", "return"],
                "language": "fr",
                "date": today,
            },
        )
        self.say("logged an outreach contact: informed about legal stay and return")

        grants = {
            "immigration_office": ["identity", "household", "migration_history", "needs"],
            "fedasil": ["needs", "intentions"],
        }
        for recipient, categories in grants.items():
            grant = consent.call(
                "POST",
                "/consents",
                201,
                json={
                    "client_ref": ref,
                    "recipient": recipient,
                    "purposes": ["referral", "feedback"],
                    "categories": categories,
                    "method": "written",
                    "language": "fr",
                    "interpreter": False,
                    "information_version": "2026-11",
                },
            )
            self.say(
                f"consent {grant['consent_id']} to {recipient}: {', '.join(categories)} "
                f"(purposes referral, feedback)"
            )

        # Right after the consents, as an NGO's system does: the bridge asks the consent
        # service at the moment it decides, so nothing has to be waited for.
        created = referral.call(
            "POST",
            "/referrals",
            201,
            json={"client_ref": ref, "tracks": ["legal_stay", "return"], "urgency": "normal"},
            headers={"Idempotency-Key": f"demo-{run_id}"},
        )
        referral_id = created["referral_id"]
        self.say(f"referred for both tracks: referral {referral_id}")
        for track in created["tracks"]:
            self.say(
                f"  {track['track']:<10} -> {track['agency']} / office {track['office']}: "
                f"{track['status']} ({track['business_status']})"
            )
        routed_at = created["created_at"]

        self.say("== Second line: ICAM coach (immigration_office, brussels)")
        legal = self._pick(coach, "legal_stay", routed_at)
        case = coach.call("GET", f"/cases/{legal}")
        self.say(
            f"queue shows case {case['case_ref']}; disclosed: "
            f"{', '.join(sorted(case['disclosure']))}"
        )
        self._accept(coach, legal, "legal_stay")
        coach.call(
            "POST", f"/cases/{legal}/tracks/legal_stay/status", json={"status": "in-progress"}
        )
        coach.call(
            "POST",
            f"/cases/{legal}/sessions",
            201,
            json={
                "date": today,
                "mode": "in_person",
                "language": "fr",
                "interpreter": False,
                "topics": ["legal_stay_options"],
            },
        )
        for option, assessment in (("9bis", "viable"), ("international_protection", "not_viable")):
            coach.call(
                "PUT",
                f"/cases/{legal}/tracks/legal_stay/options/{option}",
                json={"assessment": assessment},
            )
            self.say(f"assessed option {option}: {assessment}")
        coach.call(
            "POST",
            f"/cases/{legal}/decisions",
            201,
            json={"decision": "pursue_legal_stay", "option": "9bis", "date": today},
        )
        self.say("the person decided to pursue 9bis (recorded as the client's own decision)")
        self._ngo_sees(referral, referral_id, "legal_stay", "in-progress")

        self.say("== Second line: Fedasil return counsellor (fedasil, brussels)")
        ret = self._pick(counsellor, "return", routed_at)
        case = counsellor.call("GET", f"/cases/{ret}")
        self.say(
            f"queue shows case {case['case_ref']} (another pseudonym); disclosed: "
            f"{', '.join(sorted(case['disclosure']))}"
        )
        self._accept(counsellor, ret, "return")
        counsellor.call(
            "POST", f"/cases/{ret}/tracks/return/status", json={"status": "in-progress"}
        )
        counsellor.call(
            "POST", f"/cases/{ret}/tracks/return/steps", 201, json={"step": "informing"}
        )
        counsellor.call(
            "POST",
            f"/cases/{ret}/sessions",
            201,
            json={
                "date": today,
                "mode": "in_person",
                "language": "fr",
                "interpreter": True,
                "topics": ["return_information"],
            },
        )
        counsellor.call(
            "POST",
            f"/cases/{ret}/decisions",
            201,
            json={"decision": "decline_return", "date": today},
        )
        after = counsellor.call("GET", f"/cases/{ret}")
        self.say(f"the person declined return: step {after['return_step']}")
        counsellor.call(
            "POST",
            f"/cases/{ret}/tracks/return/status",
            json={"status": "on-hold", "reason": "declined_by_client"},
        )
        self.say("return track on hold (declined_by_client); the door stays open")
        self._ngo_sees(referral, referral_id, "return", "on-hold")

        self.say("== The legal-stay track closes")
        coach.call(
            "PUT", f"/cases/{legal}/tracks/legal_stay/options/9bis", json={"assessment": "granted"}
        )
        coach.call(
            "POST", f"/cases/{legal}/tracks/legal_stay/complete", json={"outcome": "legal_stay"}
        )
        self.say("9bis granted; legal_stay track completed with outcome legal_stay")
        final = self._ngo_sees(referral, referral_id, "legal_stay", "completed")

        self.say("== What the NGO sees (feedback consented for both agencies)")
        for track in final["tracks"]:
            self.say(
                f"  {track['track']:<10} {track['status']:<11} outcome={track['outcome']} "
                f"progress={' -> '.join(p['status'] for p in track['progress'] or [])}"
            )
        self._audit(referral_id, run_id)
        self.say("demo complete")

    def _audit(self, referral_id: str, run_id: str) -> None:
        """The auditor's view: the referral's trace across services, and the log verified."""
        self.say("== The auditor: the referral's trace and the verified log")
        auditor = self.api("audit", "auditor", f"auditor-{run_id}")

        def complete() -> Any:
            response = auditor.http.get(
                f"{auditor.base}/traces/{referral_id}",
                headers={"Authorization": f"Bearer {auditor.token}"},
            )
            if response.status_code != 200:
                return None
            trace = response.json()
            # The last facts of the story: zone B completed, and the bridge took it in.
            done = {(r.get("service"), r.get("action")) for r in trace["records"]}
            closed = {("case-resolution", "complete"), ("referral", "update")} <= done
            return (
                trace
                if closed
                and any(
                    r.get("status") == "completed" and r.get("service") == "referral"
                    for r in trace["records"]
                )
                else None
            )

        trace = self.wait_for(complete, "the audit log to hold the whole story")
        for line in auditlog.trace_lines(trace):
            self.say("  " + line)
        if trace["findings"]:
            raise DemoFailed(f"the trace has findings: {trace['findings']}")
        with httpx.Client(
            base_url=auditor.base.removesuffix("/v1"),
            headers={"Authorization": f"Bearer {auditor.token}"},
            timeout=60,
        ) as client:
            try:
                report = auditlog.verify(client)
            except auditlog.LogError as exc:
                raise DemoFailed(f"the audit log does not verify: {exc}") from exc
        for line in report.lines:
            self.say("  " + line)
        self.say("  OK: the audit log verifies")

    # ---------------------------------------------------------------- steps

    def _pick(self, caller: Api, track: str, routed_at: str) -> str:
        """The queue item of this story's track: routed at the referral's own timestamp."""
        when = dt.datetime.fromisoformat(routed_at)

        def probe() -> str | None:
            queue = caller.call("GET", "/queue", params={"limit": 100})
            for item in queue["data"]:
                if item["track"] == track and dt.datetime.fromisoformat(item["routed_at"]) == when:
                    return item["case_id"]
            return None

        return self.wait_for(probe, f"the {track} case in the queue")

    def _accept(self, caller: Api, case_id: str, track: str) -> None:
        caller.call("POST", f"/cases/{case_id}/tracks/{track}/accept")
        self.say(f"accepted the {track} track")

    def _ngo_sees(self, referral: Api, referral_id: str, track: str, status: str) -> Any:
        def probe() -> Any:
            body = referral.call("GET", f"/referrals/{referral_id}")
            statuses = {t["track"]: t["status"] for t in body["tracks"]}
            return body if statuses.get(track) == status else None

        body = self.wait_for(probe, f"the NGO to see {track} {status}")
        self.say(f"the NGO sees {track}: {status}")
        return body


def run_demo(*, data_dir: Path, issuer_port: int, out: TextIO, timeout: float = 30.0) -> int:
    story = Story(data_dir=data_dir, issuer_port=issuer_port, out=out, timeout=timeout)
    try:
        story.run()
    except (DemoFailed, httpx.HTTPError) as exc:
        print(f"demo failed: {exc}", file=out)
        return 1
    finally:
        story.http.close()
    return 0
