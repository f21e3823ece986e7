"""The README's commands, the way a newcomer meets them: this module finds every shell command in
the README's code blocks and checks, without a stack, that none needs `uv` or `twoline` on the
PATH and that every command named in the prose exists. `tests/test_stack.py` then runs them all
against a real `make run` (`test_every_readme_command_works_as_printed`); the few it cannot run
here are in NOT_RUN_HERE, each with its reason, and a command neither run nor listed cannot
exist: whatever is not listed is run."""

import contextlib
import io
import itertools
import os
import re
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from twoline import cli

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

# The commands the test does not run, and why. Keep this short: every other command is run.
NOT_RUN_HERE = {
    "make test": "runs the whole suite, this test included, so it cannot run inside it; "
    "CI runs it (.ci/run)",
    "cp deploy/.env.example deploy/.env": "would overwrite the reader's own deploy/.env (a "
    "deployment's secrets), and prepares only `docker compose`, which cannot run here",
    "docker compose --env-file deploy/.env up -d --build": "needs a Docker engine and this "
    "machine has none (tests/test_compose.py checks the files it reads)",
}
# Not run again: the stack every other command talks to is started with this very command.
STARTS_THE_STACK = "make run"
# Files the README has the reader write in the working directory. The test writes them in a
# scratch directory instead, so that it never overwrites a reader's own (a saved checkpoint).
WRITES_HERE = ("checkpoint.json",)

BLOCK = re.compile(r"^([ \t]*)```(?:sh|bash|shell|console)[ \t]*\n(.*?)^\1```", re.M | re.S)
INLINE = re.compile(r"(?<!`)`([^`]+)`(?!`)")
ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")
# An inline span that is a command line: make or the installed twoline, with arguments.
COMMAND_LINE = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=\S+ )*(?:make|\.venv/bin/twoline) \S")


def shell_blocks(text: str | None = None) -> list[list[str]]:
    """Each ```sh block of the README as its commands: continuation lines joined, indentation,
    blank lines and comment lines dropped (a trailing comment stays; bash ignores it)."""
    blocks = []
    for indent, body in BLOCK.findall(README.read_text() if text is None else text):
        commands, pending = [], ""
        for raw in body.splitlines():
            line = raw[len(indent) :] if raw.startswith(indent) else raw.lstrip()
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1].strip() + " "
                continue
            line, pending = pending + line.strip(), ""
            if line.strip() and not line.lstrip().startswith("#"):
                commands.append(line.strip())
        blocks.append(commands)
    return blocks


def words(command: str) -> list[str]:
    """The command's words as the shell splits them, without its trailing comment."""
    return shlex.split(command, comments=True)


def key(command: str) -> str:
    """The command as NOT_RUN_HERE names it: its words, without the comment."""
    return " ".join(words(command))


def programs(command: str) -> list[str]:
    """What the command runs: its first word after any VAR=value, and the same in each $(...)."""
    inner = re.findall(r"\$\(([^)]*)\)", command)
    outer = re.sub(r"\$\([^)]*\)", "SUBSTITUTED", command)
    found = []
    for part in [outer, *inner]:
        names = [w for w in words(part) if not ASSIGNMENT.match(w)]
        if names:
            found.append(names[0])
    return found


def readme_commands() -> list[str]:
    return [command for block in shell_blocks() for command in block]


def translator(ports: dict[int, int], scratch: Path) -> Callable[[str], str]:
    """The command for a stack on other ports: each default port the README prints becomes the
    stack's own, and each file in WRITES_HERE goes to the scratch directory."""

    def translate(command: str) -> str:
        command = re.sub(
            r"(?<=127\.0\.0\.1:)(\d+)\b",
            lambda m: str(ports.get(int(m.group(1)), m.group(1))),
            command,
        )
        for name in WRITES_HERE:
            command = re.sub(rf"(?<![\w/.-]){re.escape(name)}\b", str(scratch / name), command)
        return command

    return translate


MARKER = "::twoline-readme: end of a command::"


def run_block(
    commands: list[str], *, env: dict[str, str], translate: Callable[[str], str]
) -> list[tuple[str, str]]:
    """Run one code block the way a reader pastes it into bash in the repository's root;
    fail naming the first command that fails; return each command with its output."""
    script = ["set -euo pipefail"]
    for command in commands:
        script += [translate(command), f"printf '\\n%s\\n' '{MARKER}'"]
    result = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    outputs = result.stdout.split(f"\n{MARKER}\n")
    if result.returncode != 0:
        failed = commands[len(outputs) - 1]
        pytest.fail(
            f"README command `{failed}` failed with status {result.returncode}:\n"
            f"{outputs[-1]}\n{result.stderr}"
        )
    return list(zip(commands, outputs[:-1], strict=True))


def newcomer_environment() -> dict[str, str]:
    """A fresh terminal after `make`: no virtualenv active, neither `twoline` nor `uv` on the
    PATH (`uv run pytest` puts .venv/bin there), no TWOLINE_* or make variables set."""
    bootstrapped = (ROOT / ".tools" / "bin" / "uv").exists()

    def keep(directory: str) -> bool:
        place = Path(directory)
        if (place / "twoline").exists():
            return False
        # Hide uv only where make's own copy stands in for it (else make would download one),
        # and never a system directory that also holds make itself.
        return not (bootstrapped and (place / "uv").exists() and not (place / "make").exists())

    dropped = {"VIRTUAL_ENV", "MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES"}
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in dropped and not name.startswith(("TWOLINE_", "UV_RUN_"))
    }
    env["PATH"] = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep) if keep(d))
    return env


def test_the_readme_shows_its_commands_in_shell_blocks_and_every_exception_is_one_of_them():
    commands = [key(c) for c in readme_commands()]
    assert len(shell_blocks()) >= 6 and len(commands) >= 12, commands
    assert STARTS_THE_STACK in commands
    for command, reason in NOT_RUN_HERE.items():
        assert reason
        assert command in commands, (
            f"NOT_RUN_HERE names `{command}`, which the README no longer shows"
        )


def test_the_extraction_joins_continued_lines_and_keeps_indented_blocks():
    text = "x\n\n  ```sh\n  a --one \\\n     --two   # why\n  # only a comment\n  b\n  ```\n"
    assert shell_blocks(text) == [["a --one --two   # why", "b"]]
    assert key("a --one --two   # why") == "a --one --two"
    assert programs("TOKEN=$(.venv/bin/twoline token --role auditor)") == [".venv/bin/twoline"]


def test_no_readme_command_needs_uv_or_twoline_on_the_path():
    for command in readme_commands():
        for program in programs(command):
            assert program not in ("uv", "uvx", "twoline"), (
                f"`{command}` runs {program}, which a newcomer does not have on the PATH: "
                "print .venv/bin/twoline (make installs it there)"
            )
    for span in INLINE.findall(README.read_text()):
        assert not re.match(r"\s*uvx? run\b", span), f"the README shows `{span}`"


def test_every_command_the_prose_shows_is_a_make_target_or_parses():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    parser_checked = 0
    for span in INLINE.findall(README.read_text()):
        span = " ".join(span.split())
        if "<" in span or not COMMAND_LINE.match(span):  # prose, or a placeholder (<command>)
            continue
        parts = [w for w in shlex.split(span) if not ASSIGNMENT.match(w)]
        if parts[:1] == ["make"]:
            assert set(parts[1:]) <= targets, f"the README shows `{span}`; no such make target"
        elif parts[:1] == [".venv/bin/twoline"]:
            with (
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
            ):
                try:
                    cli.build_parser().parse_args(parts[1:])
                except SystemExit as exited:
                    assert exited.code == 0, f"the README shows `{span}`, which does not parse"
            parser_checked += 1
    assert parser_checked >= 3


def test_every_file_a_readme_command_saves_is_kept_out_of_the_working_tree():
    for command in readme_commands():
        parts = words(command)
        for flag, value in itertools.pairwise(parts):
            if flag == "--save":
                assert value in WRITES_HERE, f"`{command}` writes {value}: add it to WRITES_HERE"
