"""`twoline bench` (`make bench`): figures of speed and memory from a real embedded stack.

Starts its own stack (nats-server, dev issuer, the five services on SQLite, as `twoline run`) on
free ports in a fresh data directory, drives N people through the public APIs the way an NGO and
the second line do, and prints what it measured: request latencies (p50/p95/max) and rates per
step, how long the asynchronous legs take (routing to zone B, the audit log catching up), the
cost of the audit log's checkpoint, proofs and full verification at its final size, and each
process's resident memory. Every figure comes with the machine it was measured on.

Nothing here asserts a speed: a benchmark prints, tests check behaviour.
"""

import concurrent.futures
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

from twoline import auditlog
from twoline.devissuer import DEFAULT_AUDIENCE, issue, load_key
from twoline.natsserver import free_port
from twoline.stack import SERVICES, Stack

ORG = "ngo-bench"
OFFICES = ("brussels", "antwerp", "ghent", "liege", "charleroi")
AGENCIES = {"legal_stay": "immigration_office", "return": "fedasil"}
PERFORMER = {"immigration_office": "icam_coach", "fedasil": "return_counsellor"}


class BenchFailed(Exception):
    """The stack did not do what the benchmark drives it to do."""


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _memory_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        return None
    return None


@dataclass
class Timings:
    """Latencies (seconds) of one step's requests and the wall time the step took."""

    name: str
    latencies: list[float] = field(default_factory=list)
    wall: float = 0.0

    def line(self) -> str:
        ms = sorted(1000 * t for t in self.latencies)
        n = len(ms)
        p95 = ms[min(n - 1, round(0.95 * (n - 1)))]
        rate = n / self.wall if self.wall else 0.0
        return (
            f"  {self.name:38} {n:6d} req  {rate:7.1f} req/s   p50 {statistics.median(ms):7.1f} ms"
            f"   p95 {p95:7.1f} ms   max {ms[-1]:7.1f} ms"
        )


class Bench:
    def __init__(self, *, stack: Stack, data_dir: Path, concurrency: int, out: TextIO) -> None:
        self.stack = stack
        self.key = load_key(data_dir)
        self.issuer = stack.issuer_url
        self.concurrency = concurrency
        self.out = out
        self.http = httpx.Client(
            timeout=30.0,
            limits=httpx.Limits(max_connections=4 * concurrency, max_keepalive_connections=64),
        )
        self.ports = dict(stack.ports)

    def token(self, role: str, sub: str, **claims: str) -> str:
        return issue(
            self.key,
            role=role,
            sub=sub,
            issuer=self.issuer,
            audience=DEFAULT_AUDIENCE,
            ttl=3600,
            **claims,
        )

    def url(self, service: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}/v1{path}"

    def call(
        self, token: str, method: str, service: str, path: str, expect: int = 200, **kwargs: Any
    ) -> Any:
        response = self.http.request(
            method,
            self.url(service, path),
            headers={"Authorization": f"Bearer {token}"},
            **kwargs,
        )
        if response.status_code != expect:
            raise BenchFailed(
                f"{method} {service} {path}: {response.status_code} {response.text[:300]}"
            )
        return response.json()

    def step(self, name: str, items: list[Any], do: Callable[[Any], Any]) -> tuple[Timings, list]:
        """Run `do` for every item with `concurrency` callers at once; time each and the whole."""
        timings = Timings(name)

        def timed(item: Any) -> tuple[float, Any]:
            start = time.perf_counter()
            result = do(item)
            return time.perf_counter() - start, result

        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(self.concurrency) as pool:
            done = list(pool.map(timed, items))
        timings.wall = time.perf_counter() - start
        timings.latencies = [elapsed for elapsed, _ in done]
        print(timings.line(), file=self.out, flush=True)
        return timings, [result for _, result in done]

    def wait(self, probe: Callable[[], bool], what: str, timeout: float = 600.0) -> float:
        start = time.perf_counter()
        while not probe():
            if time.perf_counter() - start > timeout:
                raise BenchFailed(f"timed out waiting for {what}")
            self.stack.check_children()
            time.sleep(0.1)
        return time.perf_counter() - start

    # ---------------------------------------------------------------- the run

    def run(self, people: int) -> None:
        say = self.out.write
        ngo = self.token("ngo_caseworker", "bench-ngo", org=ORG)
        auditor = self.token("auditor", "bench-auditor")
        say(
            f"\n{people} people, each referred for both tracks, then {max(1, people // 3)} more "
            f"through a partner's whole sequence; {self.concurrency} callers\n\n"
        )

        _, clients = self.step(
            "register a person (intake)",
            list(range(people)),
            lambda i: self.call(
                ngo,
                "POST",
                "intake",
                "/clients",
                201,
                json={
                    "display_name": f"Bench person {i}",
                    "languages": ["fr"],
                    "needs": ["shelter"],
                    "intentions": {"plans": "undecided"},
                },
            )["client_ref"],
        )
        grants = [(ref, agency) for ref in clients for agency in AGENCIES.values()]

        def grant(item: tuple[str, str]) -> Any:
            ref, agency = item
            body = {
                "client_ref": ref,
                "recipient": agency,
                "purposes": ["referral", "feedback", "joint_review"],
                "categories": ["identity", "intentions"],
                "method": "written",
                "language": "fr",
                "interpreter": False,
                "information_version": "2026-01",
            }
            # Right after the registration: the consent service asks intake about a client its
            # stream has not brought yet, so nothing is retried here.
            return self.call(ngo, "POST", "consent", "/consents", 201, json=body)["consent_id"]

        self.step("record a consent (consent)", grants, grant)

        # Right after the consents: the bridge asks the consent service when it decides.
        def refer(ref: str) -> Any:
            return self.call(
                ngo,
                "POST",
                "referral",
                "/referrals",
                201,
                json={"client_ref": ref, "tracks": list(AGENCIES)},
            )["referral_id"]

        routing_start = time.perf_counter()
        _, referral_ids = self.step("refer for both tracks (referral)", clients, refer)

        # What a partner's case-management system does: each step right after the one before.
        def sequence(i: int) -> Any:
            ref = self.call(
                ngo, "POST", "intake", "/clients", 201, json={"display_name": f"Partner {i}"}
            )["client_ref"]
            for agency in AGENCIES.values():
                grant((ref, agency))
            return refer(ref)

        partners = max(1, people // 3)
        # One "req" of this step is the whole sequence of four calls.
        _, partner_referrals = self.step(
            "a partner's sequence: register, 2 consents, refer", list(range(partners)), sequence
        )
        referral_ids += partner_referrals

        expected = 2 * (people + partners)
        performers = {
            (agency, office): self.token(
                PERFORMER[agency], f"bench-{agency}-{office}", agency=agency, office=office
            )
            for agency in AGENCIES.values()
            for office in OFFICES
        }

        def queued() -> list[tuple[str, str, str]]:
            found = []
            for (agency, office), token in performers.items():
                offset = 0
                while True:
                    page = self.call(
                        token, "GET", "case-resolution", f"/queue?limit=200&offset={offset}"
                    )
                    found += [
                        (c["case_id"], c["track"], agency + "|" + office) for c in page["data"]
                    ]
                    offset += 200
                    if offset >= page["count"]:
                        break
            return found

        routed = self.wait(lambda: len(queued()) >= expected, "every track in a zone-B queue")
        all_routed = time.perf_counter() - routing_start
        say(
            f"  every one of {expected} tracks queued in zone B {routed:.2f} s after the last "
            f"referral returned ({expected / all_routed:.1f} tracks/s from the first referral)\n"
        )
        cases = queued()

        def read(case: tuple[str, str, str]) -> Any:
            case_id, _, where = case
            agency, office = where.split("|")
            body = self.call(
                performers[(agency, office)], "GET", "case-resolution", f"/cases/{case_id}"
            )
            if body["disclosure_status"] != "disclosed":
                raise BenchFailed(f"case {case_id}: disclosure {body['disclosure_status']}")
            return body

        self.step("read a case, opening its package", cases, read)

        def accept(case: tuple[str, str, str]) -> Any:
            case_id, track, where = case
            agency, office = where.split("|")
            return self.call(
                performers[(agency, office)],
                "POST",
                "case-resolution",
                f"/cases/{case_id}/tracks/{track}/accept",
            )

        accept_start = time.perf_counter()
        self.step("accept a track (case-resolution)", cases, accept)
        self.step(
            "read a referral (referral)",
            referral_ids,
            lambda rid: self.call(ngo, "GET", "referral", f"/referrals/{rid}"),
        )

        def all_accepted() -> bool:
            body = self.call(ngo, "GET", "referral", f"/referrals/{referral_ids[-1]}")
            return all(t["status"] == "accepted" for t in body["tracks"])

        feedback = self.wait(all_accepted, "the NGO to see the last acceptance")
        say(
            f"  the NGO saw the last referral's acceptances {feedback:.2f} s after the "
            f"accepts returned ({time.perf_counter() - accept_start:.2f} s after the first)\n"
        )

        # The audit log: wait until it stops growing, then time what an auditor does.
        def size() -> int:
            return self.call(auditor, "GET", "audit", "/log/entries?limit=1")["count"]

        last, stable_since = -1, time.perf_counter()
        drain_start = time.perf_counter()
        while time.perf_counter() - stable_since < 3.0:
            now = size()
            if now != last:
                last, stable_since = now, time.perf_counter()
            time.sleep(0.25)
        say(
            f"  audit log: {last} entries, stable {time.perf_counter() - drain_start - 3.0:.2f} s "
            f"after the last acceptance was read\n\n"
        )
        self.step(
            "signed checkpoint (audit)",
            list(range(5)),
            lambda _: self.call(auditor, "GET", "audit", "/log/checkpoint"),
        )
        self.step(
            "inclusion proof (audit)",
            [i * max(last // 5, 1) for i in range(5)],
            lambda i: self.call(auditor, "GET", "audit", f"/log/proofs/inclusion/{i}"),
        )
        self.step(
            "flow trace of a referral (audit)",
            referral_ids[:20],
            lambda rid: self.call(auditor, "GET", "audit", f"/traces/{rid}"),
        )
        self.step(
            "outcome statistics by agency (audit)",
            list(range(5)),
            lambda _: self.call(auditor, "GET", "audit", "/stats?by=agency"),
        )
        start = time.perf_counter()
        with httpx.Client(
            base_url=f"http://127.0.0.1:{self.ports['audit']}",
            headers={"Authorization": f"Bearer {auditor}"},
            timeout=600,
        ) as client:
            report = auditlog.verify(client)
        say(
            f"  twoline audit verify of {report.checkpoint['tree_size']} entries: "
            f"{time.perf_counter() - start:.2f} s (root from every entry, 5 sampled inclusion "
            "proofs, the chain)\n\n"
        )

        say("resident memory after the run (VmRSS):\n")
        processes = [(name, p.pid) for name, p in self.stack.children]
        if self.stack.nats is not None and self.stack.nats.process is not None:
            processes.append(("nats-server", self.stack.nats.process.pid))
        for name, pid in processes:
            rss = _rss_mib(pid)
            say(f"  {name:16} {rss:8.1f} MiB\n" if rss is not None else f"  {name:16} n/a\n")


def run_bench(*, people: int, concurrency: int, out: TextIO, keep: Path | None = None) -> int:
    """Start a stack on free ports, run the benchmark, print the figures, stop the stack."""
    data_dir = keep or Path(tempfile.mkdtemp(prefix="twoline-bench-"))
    for service in SERVICES:
        os.environ[f"{service.prefix}PORT"] = str(free_port())
    # The benchmark's own runs: quiet services, no OTLP export unless the caller asked for it.
    stack = Stack(
        data_dir=data_dir, nats_port=free_port(), issuer_port=free_port(), host="127.0.0.1"
    )
    memory = _memory_total_gib()
    print(
        f"twoline bench — machine: {os.cpu_count()} cores, "
        + (f"{memory:.0f} GiB RAM, " if memory else "")
        + f"{platform.system()} {platform.machine()}, Python {platform.python_version()}; "
        f"embedded default (SQLite, one nats-server, one process per service)",
        file=out,
        flush=True,
    )
    try:
        stack.start()
        if not stack.wait_healthy(timeout=120):
            print("twoline bench: the stack did not become healthy", file=out)
            return 1
        Bench(stack=stack, data_dir=data_dir, concurrency=concurrency, out=out).run(people)
        return 0
    except BenchFailed as exc:
        print(f"twoline bench: {exc}", file=out)
        return 1
    finally:
        stack.stop()
        print(f"\n(data of this run: {data_dir})", file=out)
