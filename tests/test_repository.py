"""The README's two set-up commands, CI, and the docs stay in step with the code."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from rgnet_hf import RGNetConfig

ROOT = Path(__file__).resolve().parents[1]


def _setup_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    commands = _setup_commands()
    assert len(commands) == 2 and all("\n" not in command for command in commands)
    assert "rgnet-hf demo" in commands[0]
    assert "pytest" in commands[1]
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


def test_every_config_field_is_documented():
    documented = (ROOT / "docs" / "architecture.md").read_text()
    fields = [name for name in inspect.signature(RGNetConfig.__init__).parameters if name not in ("self", "kwargs")]
    missing = [name for name in fields if f"`{name}`" not in documented]
    assert not missing, f"undocumented config fields: {missing}"
