"""Every command line shown in the README and `docs/` still exists: its sub-command and each option it names."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rgnet_hf.apps.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "dataset_scripts" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND = r"(?:(?:\.venv/bin/)?rgnet-hf|(?:\.venv/bin/)?python3? [\w./-]+\.py|accelerate launch)\b"


def _command_lines() -> list[tuple[str, str]]:
    """(document, command) for each command in a code block (continuation lines joined) or an inline code span."""
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for block in re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.strip().removeprefix("$ ")
                for part in re.split(r"\s*(?:&&|;|\|)\s*", line):
                    if re.match(COMMAND, part):
                        found.append((doc.name, part))
        prose = re.sub(r"```.*?```", "", text, flags=re.S)
        found += [(doc.name, span) for span in re.findall(rf"`({COMMAND}[^`]*)`", prose)]
    return found


def _argv(command: str) -> list[str]:
    argv = shlex.split(command.split("#", 1)[0])
    if argv[:2] == ["accelerate", "launch"]:
        argv = argv[2:]
        while argv and argv[0].startswith("--"):  # accelerate's own options and their values
            argv = (
                argv[2:] if len(argv) > 1 and not argv[1].startswith("--") and not argv[1].endswith(".py") else argv[1:]
            )
        argv = ["python", *argv]
    if argv[1:3] == ["-m", "rgnet_hf.apps.cli"]:
        argv = ["rgnet-hf", *argv[3:]]  # the command line as a module: the same parser
    if argv[0].endswith("rgnet-hf"):
        argv[0] = "rgnet-hf"
    return argv


def _options(argv: list[str]) -> set[str]:
    return {arg.split("=", 1)[0] for arg in argv if arg.startswith("--") and len(arg) > 2}


COMMANDS = _command_lines()


def test_the_docs_show_commands():
    assert len(COMMANDS) > 20
    assert any(_argv(command)[0] == "rgnet-hf" for _, command in COMMANDS)


def test_every_rgnet_hf_command_parses():
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices
    for doc, command in COMMANDS:
        argv = _argv(command)
        if argv[0] != "rgnet-hf":
            continue
        if len(argv) == 1 or argv[1].startswith("-"):
            continue  # `rgnet-hf --help`
        assert argv[1] in subcommands, f"{doc}: `{command}`: no sub-command {argv[1]!r}"
        known = {option for action in subcommands[argv[1]]._actions for option in action.option_strings}
        unknown = _options(argv[2:]) - known
        assert not unknown, f"{doc}: `{command}`: rgnet-hf {argv[1]} has no option {sorted(unknown)}"


def test_every_python_script_command_exists_with_its_options():
    scripts: dict[str, list[tuple[str, str, list[str]]]] = {}
    for doc, command in COMMANDS:
        argv = _argv(command)
        if len(argv) > 1 and argv[0].startswith("python"):
            scripts.setdefault(argv[1], []).append((doc, command, argv))
    assert scripts
    for script, uses in scripts.items():
        assert (ROOT / script).is_file(), f"{uses[0][0]}: `{uses[0][1]}`: no script {script}"

    def help_text(script: str) -> str:
        done = subprocess.run(
            [sys.executable, str(ROOT / script), "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"{script} --help failed: {done.stderr[-2000:]}"
        return done.stdout

    with ThreadPoolExecutor(max_workers=2) as pool:
        helps = dict(zip(scripts, pool.map(help_text, scripts)))
    for script, uses in scripts.items():
        documented = set(re.findall(r"--[\w-]+", helps[script]))
        for doc, command, argv in uses:
            unknown = _options(argv[2:]) - documented
            assert not unknown, f"{doc}: `{command}`: {script} has no option {sorted(unknown)}"


@pytest.mark.parametrize("argv", [["--help"], ["ground", "--help"], ["extract", "--help"]])
def test_cli_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 0
    assert "usage: rgnet-hf" in capsys.readouterr().out
