"""`twoline bench` (what `make bench` runs) starts a stack of its own, drives people through it
and prints its figures with the machine they were measured on. This checks that it runs and
reports every step; it asserts no speed (figures are read, not tested)."""

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.nats

STEPS = (
    "register a person (intake)",
    "record a consent (consent)",
    "refer for both tracks (referral)",
    "a partner's sequence: register, 2 consents, refer",
    "read a case, opening its package",
    "accept a track (case-resolution)",
    "read a referral (referral)",
    "signed checkpoint (audit)",
    "inclusion proof (audit)",
    "flow trace of a referral (audit)",
    "outcome statistics by agency (audit)",
)


def test_bench_runs_a_stack_of_its_own_and_prints_every_figure_with_the_machine():
    result = subprocess.run(
        [sys.executable, "-m", "twoline.cli", "bench", "--people", "3", "--concurrency", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r"machine: \d+ cores", out), out
    for step in STEPS:
        [line] = [line for line in out.splitlines() if step in line]
        assert re.search(r"req/s\s+p50\s+[\d.]+ ms\s+p95\s+[\d.]+ ms", line), line
    # 3 people and 1 partner sequence (3 // 3), both tracks each.
    assert "every one of 8 tracks queued in zone B" in out
    assert re.search(r"twoline audit verify of \d+ entries", out), out
    for process in ("intake", "consent", "referral", "case-resolution", "audit", "nats-server"):
        assert re.search(rf"^\s+{process}\s+[\d.]+ MiB$", out, re.M), out
