"""`twoline audit verify` checks the audit log from outside the service, over HTTP: a signed
checkpoint, every entry included, a newer checkpoint consistent with an older one — and names
the entry that was changed or removed behind the service's back. `twoline audit trace` prints one
referral's timeline and findings, and says by its exit code whether there were any."""

import base64
import contextlib
import io
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from tests.conftest import AUDITOR
from tests.services.test_audit import audit_record
from tests.services.test_audit_trace import COUNSELLOR, Flow
from twoline import auditlog, cli
from twoline_audit import domain
from twoline_audit.app import create_app
from twoline_audit.config import Settings
from twoline_audit.consumers import on_audit_record
from twoline_shared.db import session_scope


class Served:
    """The audit app behind a real HTTP port, with its database at hand for tampering."""

    def __init__(self, app: Any, url: str) -> None:
        self.app = app
        self.url = url

    @property
    def engine(self) -> Any:
        return self.app.state.runtime.engine

    def feed(self, *numbers: int) -> None:
        for n in numbers:
            with contextlib.contextmanager(session_scope)(self.engine) as session:
                on_audit_record(session, audit_record(n))

    def execute(self, sql: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(text(sql))


@pytest.fixture
def served(service_settings, tmp_path: Path) -> Iterator[Served]:
    settings = service_settings(Settings, "audit", signing_key_path=tmp_path / "signing-key.pem")
    app = create_app(settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the audit app did not start"
        time.sleep(0.05)
    try:
        yield Served(app, f"http://127.0.0.1:{sock.getsockname()[1]}")
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def verify(
    served: Served, issuer: Any, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    """Run `twoline audit verify` through the CLI's main, as an auditor."""
    token = issuer.token(**AUDITOR)
    code = cli.main(["audit", "verify", "--url", served.url, "--token", token, *args])
    return code, capsys.readouterr().out


def test_an_untouched_log_verifies(served, issuer, capsys):
    served.feed(*range(5))

    code, out = verify(served, issuer, capsys)

    assert code == 0, out
    assert "checkpoint: 5 entries" in out
    assert "the root recomputed from them is the signed one" in out
    assert "inclusion proofs of 5 verified" in out
    assert "OK" in out


def test_an_empty_log_verifies(served, issuer, capsys):
    code, out = verify(served, issuer, capsys)
    assert code == 0, out
    assert "checkpoint: 0 entries" in out


def test_a_changed_entry_fails_verification_and_is_named(served, issuer, capsys):
    served.feed(*range(5))
    event_id = served_entries(served, issuer)[3]["event_id"]

    served.execute('UPDATE audit_entry SET data = \'{"actor": "somebody-else"}\' WHERE "index" = 3')

    code, out = verify(served, issuer, capsys)
    assert code == 1
    assert f"entry 3 (event {event_id}) has been altered" in out


def test_a_deleted_entry_fails_verification_and_its_index_is_named(served, issuer, capsys):
    served.feed(*range(5))

    served.execute('DELETE FROM audit_entry WHERE "index" = 2')

    code, out = verify(served, issuer, capsys)
    assert code == 1
    assert "entry 2 is missing" in out


def test_a_deleted_last_entry_is_seen_against_a_saved_checkpoint(served, issuer, capsys, tmp_path):
    served.feed(*range(4))
    saved = tmp_path / "checkpoint.json"
    assert verify(served, issuer, capsys, "--save", str(saved))[0] == 0

    served.execute('DELETE FROM audit_entry WHERE "index" = 3')

    code, out = verify(served, issuer, capsys, "--previous", str(saved))
    assert code == 1
    assert "the log shrank from 4 to 3 entries" in out


def test_a_rewritten_history_is_not_consistent_with_a_saved_checkpoint(
    served, issuer, capsys, tmp_path
):
    # A tamperer who rewrites an entry *and* its stored hashes leaves the current log
    # self-consistent; only a checkpoint kept outside the service shows it.
    served.feed(*range(3))
    saved = tmp_path / "checkpoint.json"
    assert verify(served, issuer, capsys, "--save", str(saved))[0] == 0
    served.feed(3, 4)
    served.execute("DELETE FROM audit_entry")
    served.feed(*range(10, 15))

    code, out = verify(served, issuer, capsys, "--previous", str(saved))

    assert code == 1
    assert "is not an extension of the previous checkpoint's 3" in out


def test_a_newer_checkpoint_is_proven_consistent_with_a_saved_one(served, issuer, capsys, tmp_path):
    served.feed(*range(3))
    older = tmp_path / "older.json"
    code, out = verify(served, issuer, capsys, "--save", str(older))
    assert code == 0, out
    assert json.loads(older.read_text())["checkpoint"]["tree_size"] == 3
    served.feed(*range(3, 7))

    code, out = verify(served, issuer, capsys, "--previous", str(older))

    assert code == 0, out
    assert "consistency: size 3 -> 7 proven" in out


def test_a_pinned_public_key_is_used(served, issuer, capsys, tmp_path):
    served.feed(0, 1)
    key = get(served, issuer, "/v1/log/public-key")
    pem, raw = tmp_path / "key.pem", tmp_path / "key.b64"
    pem.write_text(key["pem"])
    raw.write_text(key["public_key"])
    for path in (pem, raw):
        code, out = verify(served, issuer, capsys, "--public-key", str(path))
        assert code == 0, out
        assert "not pinned" not in out

    other = tmp_path / "other.pem"
    other.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    code, out = verify(served, issuer, capsys, "--public-key", str(other))
    assert code == 1
    assert "not the pinned key" in out


def test_a_forged_checkpoint_signature_is_refused(served, issuer):
    served.feed(*range(3))
    checkpoint = get(served, issuer, "/v1/log/checkpoint")
    public_key = domain.unb64(get(served, issuer, "/v1/log/public-key")["public_key"])
    assert auditlog.check_signature(checkpoint, public_key, what="it")

    other = Ed25519PrivateKey.generate()
    other_public = other.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    root = domain.unb64(checkpoint["root_hash"])
    forgeries = [
        {**checkpoint, "tree_size": 2},
        {**checkpoint, "timestamp": "2030-01-01T00:00:00Z"},
        {**checkpoint, "root_hash": domain.b64(bytes(32))},
        {**checkpoint, "signature": domain.b64(bytes(64))},
        # Signed by another key that claims the log's key id.
        {
            **checkpoint,
            "signature": domain.b64(
                other.sign(
                    domain.checkpoint_body(
                        tree_size=3, root_hash=root, timestamp=checkpoint["timestamp"]
                    )
                )
            ),
        },
    ]
    for forged in forgeries:
        with pytest.raises(auditlog.LogError, match="signature does not verify"):
            auditlog.check_signature(forged, public_key, what="it")
    with pytest.raises(auditlog.LogError, match="not the pinned key"):
        auditlog.check_signature(checkpoint, other_public, what="it")


def test_a_forged_previous_checkpoint_is_refused(served, issuer, capsys, tmp_path):
    served.feed(*range(3))
    saved = tmp_path / "checkpoint.json"
    assert verify(served, issuer, capsys, "--save", str(saved))[0] == 0
    body = json.loads(saved.read_text())
    body["checkpoint"]["tree_size"] = 2
    saved.write_text(json.dumps(body))

    code, out = verify(served, issuer, capsys, "--previous", str(saved))

    assert code == 1
    assert "previous checkpoint's signature does not verify" in out


def test_a_non_auditor_token_fails_cleanly(served, issuer, capsys):
    token = issuer.token(role="icam_coach", agency="immigration_office", office="brussels")
    code = cli.main(["audit", "verify", "--url", served.url, "--token", token])
    assert code == 1
    assert "answered 403" in capsys.readouterr().out


def test_without_a_token_one_is_minted_from_the_dev_issuer_key(issuer, tmp_path, monkeypatch):
    seen: dict[str, Any] = {}

    def fake_run(**kwargs: Any) -> int:
        seen.update(kwargs)
        return 0

    monkeypatch.setattr(auditlog, "run", fake_run)
    assert cli.main(["audit", "verify", "--data-dir", str(issuer.directory)]) == 0
    assert seen["url"] == "http://127.0.0.1:8005"
    claims = json.loads(base64.urlsafe_b64decode(seen["token"].split(".")[1] + "=="))
    assert claims["roles"] == ["auditor"]


def get(served: Served, issuer: Any, path: str) -> Any:
    response = httpx.get(served.url + path, headers=issuer.headers(**AUDITOR))
    assert response.status_code == 200, response.text
    return response.json()


def served_entries(served: Served, issuer: Any) -> list[dict[str, Any]]:
    return get(served, issuer, "/v1/log/entries?limit=1000")["data"]


def test_report_is_printed_to_the_given_stream(served, issuer):
    served.feed(0)
    out = io.StringIO()
    code = auditlog.run(
        url=served.url,
        token=issuer.token(**AUDITOR),
        public_key_file=None,
        previous_file=None,
        save_file=None,
        out=out,
    )
    assert code == 0
    assert "key taken from the server" in out.getvalue()


# ---------------------------------------------------------------- twoline audit trace


def trace_cli(
    served: Served, issuer: Any, capsys: pytest.CaptureFixture[str], referral_id: str, **who: Any
) -> tuple[int, str]:
    """Run `twoline audit trace` through the CLI's main (as an auditor unless told)."""
    token = issuer.token(**(who or AUDITOR))
    code = cli.main(["audit", "trace", referral_id, "--url", served.url, "--token", token])
    return code, capsys.readouterr().out


def feed_events(served: Served, *events: Any) -> None:
    for event in events:
        with contextlib.contextmanager(session_scope)(served.engine) as session:
            on_audit_record(session, event)


def test_trace_prints_the_referrals_timeline_and_no_findings_and_exits_0(served, issuer, capsys):
    flow, other = Flow(), Flow()
    events = flow.clean()
    feed_events(served, *events, *other.clean())

    code, out = trace_cli(served, issuer, capsys, flow.referral_id)

    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == f"trace of referral {flow.referral_id}: 15 records"
    assert len(lines) == 1 + 15 + 1 and lines[-1] == "no findings"
    legal_stay, consent = flow.tracks["legal_stay"], flow.consents["legal_stay"]
    assert lines[1].split()[:4] == ["0", events[0].time, "consent", "create"]
    assert f"consent_id={consent}" in lines[1] and "by ngo_caseworker/ngo-ghent" in lines[1]
    accept = lines[8]
    assert accept.split()[0] == "7"
    assert "case-resolution  accept case  by icam_coach/immigration_office/brussels" in accept
    assert f"track_id={legal_stay}" in accept and "status=accepted" in accept
    assert "  by system  " in lines[6]  # zone B opened the case itself
    # Ids and codes only: nobody's sub, no client pseudonym, nothing of the other referral.
    for absent in ("actor", "C-TRACE0001", other.referral_id, *other.tracks.values()):
        assert absent not in out


def test_trace_with_findings_lists_them_and_exits_1(served, issuer, capsys):
    flow = Flow()
    events = flow.clean()
    events[7] = flow.accept("legal_stay", who=COUNSELLOR)
    feed_events(served, *events)

    code, out = trace_cli(served, issuer, capsys, flow.referral_id)

    assert code == 1, out
    lines = out.splitlines()
    assert lines[-2] == "1 finding:"
    assert lines[-1].startswith("  status-by-wrong-role (entries 7): ")
    assert flow.tracks["legal_stay"] in lines[-1]


def test_trace_without_a_trace_to_show_exits_2(served, issuer, capsys):
    flow = Flow()
    feed_events(served, *flow.clean())

    code, out = trace_cli(served, issuer, capsys, str(uuid.uuid4()))
    assert code == 2
    assert "answered 404" in out

    code, out = trace_cli(served, issuer, capsys, "../log/entries")
    assert code == 2
    assert "is not a referral id" in out

    coach = {"role": "icam_coach", "agency": "immigration_office", "office": "brussels"}
    code, out = trace_cli(served, issuer, capsys, flow.referral_id, **coach)
    assert code == 2
    assert "answered 403" in out and flow.tracks["legal_stay"] not in out


def test_trace_of_an_unreachable_service_exits_2(capsys, issuer):
    code = cli.main(
        ["audit", "trace", str(uuid.uuid4()), "--url", "http://127.0.0.1:9", "--token", "x"]
    )
    assert code == 2
    assert "cannot reach the audit service" in capsys.readouterr().out
