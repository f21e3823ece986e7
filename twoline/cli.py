"""The `twoline` command: run the embedded stack, mint dev tokens, drive the demo, provision NATS,
verify the audit log and trace a referral through it.

An option left out takes its environment variable, else (for the commands that talk to a running
stack) what `twoline run` wrote to DATA_DIR/stack.json, else its default: a second terminal needs
at most the data dir to reach a stack started with other ports.
"""

import argparse
import importlib.metadata
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from twoline.devissuer import DEFAULT_AUDIENCE, NoIssuerKey, issue, load_key
from twoline.stack import DEFAULT_DATA_DIR, DISCOVERY_FILE, SERVICES, read_discovery, service_port

ROLES = ("ngo_caseworker", "ngo_admin", "icam_coach", "return_counsellor", "auditor", "service")
AGENCY_OF = {"icam_coach": "immigration_office", "return_counsellor": "fedasil"}
AUDIT = next(s for s in SERVICES if s.name == "audit")


@dataclass(frozen=True)
class Setting:
    """Where an option's value comes from when it is not given (see `resolve`)."""

    env: str | None
    default: Any
    from_stack: Callable[[dict[str, Any]], Any] | None


def _issuer_port(found: dict[str, Any]) -> int | None:
    return urlsplit(found["issuer"]).port


def _audit_url(found: dict[str, Any]) -> str:
    return found["services"]["audit"]


def _nats_url(found: dict[str, Any]) -> str:
    return found["nats"]


def option(
    parser: argparse.ArgumentParser,
    *flags: str,
    help: str,
    default: Any = None,
    env: str | None = None,
    from_stack: Callable[[dict[str, Any]], Any] | None = None,
    **kwargs: Any,
) -> argparse.Action:
    """Add an option whose help names its default and its environment variable."""
    notes = []
    if from_stack is not None:
        notes.append(
            f"default: the running stack's, from DATA_DIR/{DISCOVERY_FILE}, else {default}"
        )
    elif default is not None:
        notes.append(f"default: {default}")
    if env is not None:
        notes.append(f"env {env}")
    text = f"{help} ({'; '.join(notes)})" if notes else help
    resolved = env is not None or from_stack is not None
    # Resolved ones parse to None when left out, so that `resolve` can tell "not given" apart.
    action = parser.add_argument(*flags, help=text, default=None if resolved else default, **kwargs)
    if resolved:
        action.setting = Setting(env, default, from_stack)  # type: ignore[attr-defined]
    return action


def data_dir_option(parser: argparse.ArgumentParser) -> None:
    option(
        parser,
        "--data-dir",
        type=Path,
        default=Path(DEFAULT_DATA_DIR),
        env="TWOLINE_DATA_DIR",
        help="the stack's data directory: SQLite files, NATS store, keys, stack.json",
    )


def issuer_port_option(parser: argparse.ArgumentParser) -> None:
    option(
        parser,
        "--issuer-port",
        type=int,
        default=8000,
        env="TWOLINE_ISSUER_PORT",
        from_stack=_issuer_port,
        help="the dev issuer's port, which names it in the token's `iss`",
    )


def audit_url_option(parser: argparse.ArgumentParser) -> None:
    option(
        parser,
        "--url",
        default=f"http://127.0.0.1:{service_port(AUDIT)}",
        env="TWOLINE_AUDIT_URL",
        from_stack=_audit_url,
        help="the audit service",
    )


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill each option left out from its environment variable, else from the running stack's
    stack.json (found in the data dir, which is resolved first), else from its default."""
    parser: argparse.ArgumentParser = args.parser
    actions = [a for a in parser._actions if hasattr(a, "setting")]
    actions.sort(key=lambda a: a.dest != "data_dir")
    found: dict[str, Any] | None = None
    for action in actions:
        if getattr(args, action.dest) is not None:
            continue
        setting: Setting = action.setting  # type: ignore[attr-defined]
        value = None
        raw = os.environ.get(setting.env) if setting.env else None
        if raw:
            try:
                value = action.type(raw) if callable(action.type) else raw
            except (TypeError, ValueError):
                parser.error(f"{setting.env}={raw!r} is not a valid {action.dest}")
        elif setting.from_stack is not None:
            if found is None:
                found = read_discovery(args.data_dir) or {}
            try:
                value = setting.from_stack(found) if found else None
            except (KeyError, TypeError, ValueError):  # a file lacking it: as if there were none
                value = None
        setattr(args, action.dest, setting.default if value is None else value)
    return args


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
    token = issue(
        load_key(args.data_dir),
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
    app = create_issuer_app(args.data_dir, issuer=issuer_url)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the embedded stack in the foreground until Ctrl-C."""
    from twoline.stack import run

    return run(
        data_dir=args.data_dir,
        nats_port=args.nats_port,
        issuer_port=args.issuer_port,
        host=args.host,
    )


def cmd_demo(args: argparse.Namespace) -> int:
    """Drive the dual-track story against the running `twoline run` stack."""
    from twoline.demo import run_demo

    return run_demo(
        data_dir=args.data_dir,
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
        stored = args.data_dir / "nats-passwords.json"
        if not stored.exists():
            # Never made up here: new passwords would match no server's config.
            print(
                f"twoline nats provision: no NATS passwords in {stored} (start a stack with "
                "`make run`, point --data-dir / TWOLINE_DATA_DIR at its data dir, or set the "
                "admins' NATS_*_ADMIN_PASSWORD_PLAIN)",
                file=sys.stderr,
            )
            return 2
        passwords = load_passwords(stored)
    run_provision(args.url, passwords)
    print(f"provisioned streams and consumers on {args.url}")
    return 0


def _auditor_token(args: argparse.Namespace) -> str:
    """The given token, or an auditor token minted by the dev issuer (the embedded stack)."""
    if args.token is not None:
        return args.token
    return issue(
        load_key(args.data_dir),
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


def _version() -> str:
    try:
        return importlib.metadata.version("twoline")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree never installed
        return "unknown (not installed)"


def command(
    sub: Any, name: str, text: str, func: Callable[[argparse.Namespace], int] | None = None
) -> argparse.ArgumentParser:
    """A subcommand whose one-line help is also its `-h` description."""
    parser = sub.add_parser(name, help=text, description=text)
    if func is not None:
        parser.set_defaults(func=func, parser=parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree; defaults that come from the environment are read when parsing."""
    parser = argparse.ArgumentParser(prog="twoline", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ports = ", ".join(f"{s.prefix}PORT ({s.port})" for s in SERVICES)
    run = command(sub, "run", "run the embedded stack in the foreground; Ctrl-C stops it", cmd_run)
    run.epilog = f"Service ports come from {ports}."
    data_dir_option(run)
    option(
        run,
        "--nats-port",
        type=int,
        default=4223,
        env="TWOLINE_NATS_PORT",
        help="nats-server's client port",
    )
    option(
        run,
        "--issuer-port",
        type=int,
        default=8000,
        env="TWOLINE_ISSUER_PORT",
        help="the dev issuer's port",
    )
    option(run, "--host", default="127.0.0.1", help="the address the five services listen on")

    token = command(sub, "token", "print a dev bearer token the running stack accepts", cmd_token)
    option(token, "--role", required=True, choices=ROLES, help="the token's one role")
    option(token, "--org", help="the NGO (required for ngo_caseworker and ngo_admin)")
    option(
        token,
        "--agency",
        choices=sorted(set(AGENCY_OF.values())),
        help="the second-line agency (default: the role's own)",
    )
    option(token, "--office", help="the second-line office (required for second-line roles)")
    option(token, "--sub", help="the subject (default: ROLE-<random>)")
    option(token, "--ttl", type=int, default=8 * 3600, help="lifetime in seconds")
    data_dir_option(token)
    issuer_port_option(token)

    demo = command(sub, "demo", "drive the dual-track story against the running stack", cmd_demo)
    data_dir_option(demo)
    issuer_port_option(demo)
    option(demo, "--timeout", type=float, default=30.0, help="seconds to wait for each step")

    bench = command(
        sub, "bench", "measure speed and memory on a stack of its own (free ports)", cmd_bench
    )
    option(bench, "--people", type=int, default=100, help="people referred (both tracks)")
    option(bench, "--concurrency", type=int, default=4, help="callers at once")

    issuer = command(sub, "issuer", "serve the dev token issuer's JWKS", cmd_issuer)
    option(issuer, "--host", default="127.0.0.1", help="the address to listen on")
    option(
        issuer,
        "--port",
        type=int,
        default=8000,
        env="TWOLINE_ISSUER_PORT",
        help="the port to listen on",
    )
    option(issuer, "--issuer", help="the `iss` value (default: http://127.0.0.1:PORT)")
    data_dir_option(issuer)

    nats = command(sub, "nats", "NATS operations")
    nats_sub = nats.add_subparsers(dest="nats_command", required=True, metavar="COMMAND")
    provision = command(
        nats_sub, "provision", "create streams and consumers (idempotent)", cmd_nats_provision
    )
    option(
        provision,
        "--url",
        default=f"nats://127.0.0.1:{os.environ.get('TWOLINE_NATS_PORT') or 4223}",
        env="TWOLINE_NATS_URL",
        from_stack=_nats_url,
        help="the NATS server",
    )
    data_dir_option(provision)

    audit = command(sub, "audit", "audit log operations")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    verify = command(
        audit_sub,
        "verify",
        "check the audit log's checkpoint, every entry's inclusion, consistency",
        cmd_audit_verify,
    )
    audit_url_option(verify)
    option(
        verify, "--token", help="auditor bearer token (default: minted with the dev issuer's key)"
    )
    option(verify, "--public-key", help="pin the log's key: a PEM or base64 key file")
    option(verify, "--previous", help="a checkpoint saved earlier: prove the log extends it")
    option(verify, "--save", help="write the verified checkpoint here (for --previous)")
    data_dir_option(verify)
    issuer_port_option(verify)
    trace = command(
        audit_sub,
        "trace",
        "one referral's records across every service, and findings (exit 1 if any)",
        cmd_audit_trace,
    )
    option(trace, "referral_id", help="the referral's id (a UUID)")
    audit_url_option(trace)
    option(
        trace, "--token", help="auditor bearer token (default: minted with the dev issuer's key)"
    )
    data_dir_option(trace)
    issuer_port_option(trace)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed command line, every option resolved (see `resolve`)."""
    return resolve(build_parser().parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    """The `twoline` entry point; 2 when a token is needed and the data dir has no issuer key."""
    args = parse_args(argv)
    try:
        return args.func(args)
    except NoIssuerKey as exc:
        print(f"{args.parser.prog}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
