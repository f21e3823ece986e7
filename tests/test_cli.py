"""The `twoline` command line itself: every subcommand and option says its default and its
environment variable, each environment variable is honoured when parsing, an option left out is
taken from the running stack's stack.json, `--version` reports the installed package, and a
command that signs tokens refuses when the data dir holds no issuer key instead of making one."""

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from twoline import cli
from twoline.devissuer import KEY_FILE, create_key, load_key
from twoline.stack import DISCOVERY_FILE

# What the design promises for each option that names a place; the help and the parser must
# both agree with it (the tree walk checks the help, `resolve` the value).
EXPECTED_ENV = {
    "--data-dir": "TWOLINE_DATA_DIR",
    "--issuer-port": "TWOLINE_ISSUER_PORT",
    "--nats-port": "TWOLINE_NATS_PORT",
    ("issuer", "--port"): "TWOLINE_ISSUER_PORT",
    ("audit", "verify", "--url"): "TWOLINE_AUDIT_URL",
    ("audit", "trace", "--url"): "TWOLINE_AUDIT_URL",
    ("nats", "provision", "--url"): "TWOLINE_NATS_URL",
}


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str | None]]:
    """Every (sub)command in the tree: its path, its parser and the help its parent lists."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*path, name), sub, helps.get(name)
                yield from commands(sub, (*path, name))


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    skip = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)
    return [a for a in parser._actions if not isinstance(a, skip)]


def name(action: argparse.Action) -> str:
    return action.option_strings[-1] if action.option_strings else action.dest


def expected_env(path: tuple[str, ...], action: argparse.Action) -> str | None:
    flag = name(action)
    return EXPECTED_ENV.get((*path, flag)) or EXPECTED_ENV.get(flag)


def leaf_commands() -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    return [(path, sub) for path, sub, _ in commands(cli.build_parser()) if sub.get_default("func")]


def minimal_argv(path: tuple[str, ...], parser: argparse.ArgumentParser) -> list[str]:
    """The subcommand with just its required arguments."""
    argv = list(path)
    for action in options(parser):
        if action.required:
            value = action.choices[0] if action.choices else str(uuid.uuid4())
            argv += [action.option_strings[0], value] if action.option_strings else [value]
    return argv


@pytest.fixture
def clean_environment(monkeypatch, tmp_path):
    """No TWOLINE_* variable set, and a working directory without a stack in `.twoline/`."""
    for variable in [v for v in os.environ if v.startswith("TWOLINE_")]:
        monkeypatch.delenv(variable)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_every_subcommand_and_option_has_help_with_its_default_and_environment_variable():
    tree = list(commands(cli.build_parser()))
    assert {path for path, _, _ in tree} >= {
        ("run",),
        ("token",),
        ("demo",),
        ("bench",),
        ("issuer",),
        ("nats", "provision"),
        ("audit", "verify"),
        ("audit", "trace"),
    }
    problems = []
    for path, parser, listed in tree:
        command = "twoline " + " ".join(path)
        if not listed:
            problems.append(f"{command} has no help")
        for action in options(parser):
            where = f"{command} {name(action)}"
            if not action.help:
                problems.append(f"{where} has no help")
                continue
            setting = getattr(action, "setting", None)
            default = setting.default if setting else action.default
            if default is not None and str(default) not in action.help:
                problems.append(f"{where}: help does not show the default {default}")
            env = expected_env(path, action)
            if env is not None and (setting is None or setting.env != env):
                problems.append(f"{where} does not read {env}")
            if setting is not None and setting.env and setting.env not in action.help:
                problems.append(f"{where}: help does not name {setting.env}")
            if setting is not None and setting.from_stack and DISCOVERY_FILE not in action.help:
                problems.append(f"{where}: help does not say it reads {DISCOVERY_FILE}")
    assert not problems, "\n".join(problems)


def test_each_environment_variable_is_honoured_when_parsing(clean_environment, tmp_path):
    checked = 0
    for path, parser in leaf_commands():
        for action in options(parser):
            setting = getattr(action, "setting", None)
            if setting is None or setting.env is None:
                continue
            sample = {int: "54321", Path: str(tmp_path / "elsewhere")}.get(
                action.type, "http://127.0.0.1:54321"
            )
            clean_environment.setenv(setting.env, sample)
            args = cli.parse_args(minimal_argv(path, parser))
            clean_environment.delenv(setting.env)
            wanted = action.type(sample) if callable(action.type) else sample
            assert getattr(args, action.dest) == wanted, (path, setting.env)
            # Given on the command line, the option wins over the variable.
            clean_environment.setenv(setting.env, sample)
            given = {int: "12345", Path: str(tmp_path / "given")}.get(
                action.type, "http://127.0.0.1:12345"
            )
            args = cli.parse_args([*minimal_argv(path, parser), name(action), given])
            clean_environment.delenv(setting.env)
            assert str(getattr(args, action.dest)) == given, (path, name(action))
            checked += 1
    assert checked >= 15  # data dir x7, issuer port x5, NATS port, audit URL x2, NATS URL


def test_an_option_left_out_comes_from_the_running_stacks_stack_json(clean_environment, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / DISCOVERY_FILE).write_text(
        json.dumps(
            {
                "pid": os.getpid(),  # alive: this process
                "issuer": "http://127.0.0.1:41000",
                "nats": "nats://127.0.0.1:41001",
                "services": {"audit": "http://127.0.0.1:41005"},
            }
        )
    )

    token = cli.parse_args(["token", "--role", "auditor", "--data-dir", str(data_dir)])
    assert token.issuer_port == 41000
    verify = cli.parse_args(["audit", "verify", "--data-dir", str(data_dir)])
    assert (verify.url, verify.issuer_port) == ("http://127.0.0.1:41005", 41000)
    provision = cli.parse_args(["nats", "provision", "--data-dir", str(data_dir)])
    assert provision.url == "nats://127.0.0.1:41001"
    clean_environment.setenv("TWOLINE_DATA_DIR", str(data_dir))
    assert cli.parse_args(["demo"]).issuer_port == 41000

    clean_environment.setenv("TWOLINE_ISSUER_PORT", "42000")
    assert cli.parse_args(["demo"]).issuer_port == 42000  # the variable wins over the file
    assert cli.parse_args(["demo", "--issuer-port", "43000"]).issuer_port == 43000


def test_a_stack_json_left_by_a_killed_stack_is_ignored(clean_environment, tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / DISCOVERY_FILE).write_text(
        json.dumps({"pid": gone.pid, "issuer": "http://127.0.0.1:41000", "services": {}})
    )
    args = cli.parse_args(["token", "--role", "auditor", "--data-dir", str(tmp_path)])
    assert args.issuer_port == 8000


def test_without_options_or_environment_the_defaults_apply(clean_environment):
    args = cli.parse_args(["audit", "verify"])
    assert (args.data_dir, args.url, args.issuer_port) == (
        Path(".twoline"),
        "http://127.0.0.1:8005",
        8000,
    )
    run = cli.parse_args(["run"])
    assert (run.nats_port, run.issuer_port, run.host) == (4223, 8000, "127.0.0.1")


def test_a_malformed_environment_variable_is_a_usage_error(clean_environment, capsys):
    clean_environment.setenv("TWOLINE_ISSUER_PORT", "eight-thousand")
    with pytest.raises(SystemExit) as exited:
        cli.parse_args(["token", "--role", "auditor"])
    assert exited.value.code == 2
    assert "TWOLINE_ISSUER_PORT='eight-thousand'" in capsys.readouterr().err


def test_version_prints_the_installed_package_version(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"twoline {importlib.metadata.version('twoline')}\n"


def test_token_without_an_issuer_key_exits_2_and_creates_none(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWOLINE_")}
    for argv, data_dir in (
        ([], tmp_path / ".twoline"),  # the default: .twoline in the working directory
        (["--data-dir", str(tmp_path / "other")], tmp_path / "other"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "twoline.cli", "token", "--role", "auditor", *argv],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 2, result.stderr
        assert result.stdout == ""  # no token a service would reject
        assert f"no issuer key in {data_dir}" in result.stderr
        assert "make run" in result.stderr and "--data-dir" in result.stderr
        assert not data_dir.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["audit", "verify"],
        ["audit", "trace", str(uuid.uuid4())],
        ["demo"],
    ],
    ids=["audit verify", "audit trace", "demo"],
)
def test_commands_that_mint_their_own_token_refuse_without_an_issuer_key(
    argv, clean_environment, tmp_path, capsys
):
    assert cli.main([*argv, "--data-dir", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # nothing was asked of a service with a token it would reject
    assert f"twoline {' '.join(argv[:2] if argv[0] == 'audit' else argv)}: " in err
    assert f"no issuer key in {tmp_path}" in err
    assert not (tmp_path / KEY_FILE).exists()


def test_nats_provision_without_stored_passwords_exits_2_and_creates_none(
    clean_environment, tmp_path, capsys
):
    """Like the issuer key: made-up passwords would match no server's config."""
    argv = ["nats", "provision", "--data-dir", str(tmp_path), "--url", "nats://127.0.0.1:1"]
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f"no NATS passwords in {tmp_path / 'nats-passwords.json'}" in err
    assert not (tmp_path / "nats-passwords.json").exists()


def test_audit_verify_with_a_given_token_needs_no_issuer_key(clean_environment, tmp_path, capsys):
    # Nothing listens at this URL: the command gets as far as asking, which needs no key.
    code = cli.main(
        [
            "audit",
            "verify",
            "--data-dir",
            str(tmp_path),
            "--token",
            "t",
            "--url",
            "http://127.0.0.1:9",
        ]
    )
    assert code == 1
    assert "cannot reach the audit service at http://127.0.0.1:9" in capsys.readouterr().out


def test_only_the_creating_function_makes_a_key_and_it_is_private(tmp_path):
    with pytest.raises(LookupError):
        load_key(tmp_path)
    created = create_key(tmp_path / "data")
    assert (tmp_path / "data" / KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert load_key(tmp_path / "data").kid == created.kid
    assert create_key(tmp_path / "data").kid == created.kid  # created once, then reused


def test_run_refuses_a_data_dir_a_running_stack_uses(clean_environment, tmp_path, capsys):
    (tmp_path / DISCOVERY_FILE).write_text(
        json.dumps({"pid": os.getpid(), "issuer": "http://127.0.0.1:41000", "services": {}})
    )
    assert cli.main(["run", "--data-dir", str(tmp_path)]) == 1
    assert f"a stack is already running from {tmp_path} (pid {os.getpid()})" in (
        capsys.readouterr().err
    )
