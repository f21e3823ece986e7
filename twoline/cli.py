"""The `twoline` command: run the embedded stack, mint dev tokens, drive the demo, provision NATS,
verify the audit log and trace a referral through it."""

import argparse
import os
import sys
from pathlib import Path

from twoline.devissuer import DEFAULT_AUDIENCE, issue, load_key

DATA_DIR = Path(os.environ.get("TWOLINE_DATA_DIR", ".twoline"))
ISSUER_PORT = int(os.environ.get("TWOLINE_ISSUER_PORT", "8000"))
NATS_PORT = int(os.environ.get("TWOLINE_NATS_PORT", "4223"))
AUDIT_URL = f"http://127.0.0.1:{os.environ.get('TWOLINE_AUDIT_PORT', '8005')}"
ROLES = ("ngo_caseworker", "ngo_admin", "icam_coach", "return_counsellor", "auditor", "service")
AGENCY_OF = {"icam_coach": "immigration_office", "return_counsellor": "fedasil"}


def cmd_token(args: argparse.Namespace) -> int:
    """Print a bearer JWT for the running `twoline run` stack."""
    if args.role in ("ngo_caseworker", "ngo_admin") and not args.org:
        print("twoline token: --org is required for NGO roles", file=sys.stderr)
        return 2
    agency = args.agency
    if args.role in AGENCY_OF:
        agency = agency or AGENCY_OF[args.role]
        if agency != AGENCY_OF[args.role]:
            print(f"twoline token: {args.role} belongs to {AGENCY_OF[args.role]}", file=sys.stderr)
            return 2
        if not args.office:
            print("twoline token: --office is required for second-line roles", file=sys.stderr)
            return 2
    key = load_key(Path(args.data_dir))
    token = issue(
        key,
        role=args.role,
        sub=args.sub,
        org=args.org,
        agency=agency,
        office=args.office,
        issuer=f"http://127.0.0.1:{args.issuer_port}",
        audience=DEFAULT_AUDIENCE,
        ttl=args.ttl,
    )
    print(token)
    return 0


def cmd_issuer(args: argparse.Namespace) -> int:
    """Serve the dev issuer's OIDC discovery and JWKS."""
    import uvicorn

    from twoline.devissuer import create_issuer_app

    issuer_url = args.issuer or f"http://127.0.0.1:{args.port}"
    app = create_issuer_app(Path(args.data_dir), issuer=issuer_url)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from twoline.stack import run

    return run(
        data_dir=Path(args.data_dir),
        nats_port=args.nats_port,
        issuer_port=args.issuer_port,
        host=args.host,
    )


def cmd_demo(args: argparse.Namespace) -> int:
    """Drive the dual-track story against the running `twoline run` stack."""
    from twoline.demo import run_demo

    return run_demo(
        data_dir=Path(args.data_dir),
        issuer_port=args.issuer_port,
        out=sys.stdout,
        timeout=args.timeout,
    )


def cmd_bench(args: argparse.Namespace) -> int:
    """Start a stack of its own on free ports, drive N people through it, print the figures."""
    from twoline.bench import run_bench

    return run_bench(people=args.people, concurrency=args.concurrency, out=sys.stdout)


def cmd_nats_provision(args: argparse.Namespace) -> int:
    """Create streams and durable consumers (idempotent) with the per-account admin users."""
    from twoline.natsserver import ADMINS, USERS, load_passwords, run_provision

    passwords: dict[str, str] = {}
    for user in ADMINS.values():
        plain = os.environ.get(USERS[user] + "_PLAIN")
        if plain:
            passwords[user] = plain
    if len(passwords) < len(ADMINS):
        passwords = load_passwords(Path(args.data_dir) / "nats-passwords.json")
    run_provision(args.url, passwords)
    print(f"provisioned streams and consumers on {args.url}")
    return 0


def _auditor_token(args: argparse.Namespace) -> str:
    """The given token, or an auditor token minted by the dev issuer (the embedded stack)."""
    if args.token is not None:
        return args.token
    return issue(
        load_key(Path(args.data_dir)),
        role="auditor",
        issuer=f"http://127.0.0.1:{args.issuer_port}",
        audience=DEFAULT_AUDIENCE,
        ttl=600,
    )


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Verify the audit log from outside the service: signature, inclusion, consistency."""
    from twoline.auditlog import run as run_audit_verify

    return run_audit_verify(
        url=args.url,
        token=_auditor_token(args),
        public_key_file=Path(args.public_key) if args.public_key else None,
        previous_file=Path(args.previous) if args.previous else None,
        save_file=Path(args.save) if args.save else None,
        out=sys.stdout,
    )


def cmd_audit_trace(args: argparse.Namespace) -> int:
    """Show one referral's flow through every service, and its findings (exit 1 if any)."""
    from twoline.auditlog import run_trace

    return run_trace(
        url=args.url, token=_auditor_token(args), referral_id=args.referral_id, out=sys.stdout
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="twoline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the embedded stack in the foreground")
    run.add_argument("--data-dir", default=str(DATA_DIR))
    run.add_argument("--nats-port", type=int, default=NATS_PORT)
    run.add_argument("--issuer-port", type=int, default=ISSUER_PORT)
    run.add_argument("--host", default="127.0.0.1")
    run.set_defaults(func=cmd_run)

    token = sub.add_parser("token", help="print a dev bearer token")
    token.add_argument("--role", required=True, choices=ROLES)
    token.add_argument("--org")
    token.add_argument("--agency", choices=sorted(set(AGENCY_OF.values())))
    token.add_argument("--office")
    token.add_argument("--sub")
    token.add_argument("--ttl", type=int, default=8 * 3600, help="seconds (default 8 h)")
    token.add_argument("--data-dir", default=str(DATA_DIR))
    token.add_argument("--issuer-port", type=int, default=ISSUER_PORT)
    token.set_defaults(func=cmd_token)

    demo = sub.add_parser("demo", help="drive the dual-track story against `twoline run`")
    demo.add_argument("--data-dir", default=str(DATA_DIR))
    demo.add_argument("--issuer-port", type=int, default=ISSUER_PORT)
    demo.add_argument("--timeout", type=float, default=30.0, help="seconds per step")
    demo.set_defaults(func=cmd_demo)

    bench = sub.add_parser("bench", help="measure speed and memory on a stack of its own")
    bench.add_argument("--people", type=int, default=100, help="people referred (both tracks)")
    bench.add_argument("--concurrency", type=int, default=4, help="callers at once")
    bench.set_defaults(func=cmd_bench)

    issuer = sub.add_parser("issuer", help="serve the dev token issuer's JWKS")
    issuer.add_argument("--host", default="127.0.0.1")
    issuer.add_argument("--port", type=int, default=ISSUER_PORT)
    issuer.add_argument("--issuer", help="the `iss` value (default http://127.0.0.1:PORT)")
    issuer.add_argument("--data-dir", default=str(DATA_DIR))
    issuer.set_defaults(func=cmd_issuer)

    nats = sub.add_parser("nats", help="NATS operations")
    nats_sub = nats.add_subparsers(dest="nats_command", required=True)
    provision = nats_sub.add_parser("provision", help="create streams and consumers")
    provision.add_argument("--url", default=f"nats://127.0.0.1:{NATS_PORT}")
    provision.add_argument("--data-dir", default=str(DATA_DIR))
    provision.set_defaults(func=cmd_nats_provision)

    audit = sub.add_parser("audit", help="audit log operations")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser(
        "verify", help="check the audit log's checkpoint, every entry's inclusion, consistency"
    )
    verify.add_argument("--url", default=AUDIT_URL, help=f"audit service (default {AUDIT_URL})")
    verify.add_argument("--token", help="auditor bearer token (default: minted by the dev issuer)")
    verify.add_argument("--public-key", help="pin the log's key: a PEM or base64 key file")
    verify.add_argument("--previous", help="a checkpoint saved earlier: prove the log extends it")
    verify.add_argument("--save", help="write the verified checkpoint here (for --previous)")
    verify.add_argument("--data-dir", default=str(DATA_DIR))
    verify.add_argument("--issuer-port", type=int, default=ISSUER_PORT)
    verify.set_defaults(func=cmd_audit_verify)
    trace = audit_sub.add_parser(
        "trace",
        help="one referral's records across every service, and findings (exit 1 if any)",
    )
    trace.add_argument("referral_id", help="the referral's id (a UUID)")
    trace.add_argument("--url", default=AUDIT_URL, help=f"audit service (default {AUDIT_URL})")
    trace.add_argument("--token", help="auditor bearer token (default: minted by the dev issuer)")
    trace.add_argument("--data-dir", default=str(DATA_DIR))
    trace.add_argument("--issuer-port", type=int, default=ISSUER_PORT)
    trace.set_defaults(func=cmd_audit_trace)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
