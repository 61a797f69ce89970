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


def test_one_version_string():
    import importlib.metadata

    import rgnet_hf

    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and 'attr = "rgnet_hf.__version__"' in pyproject
    assert importlib.metadata.version("rgnet_hf") == rgnet_hf.__version__


def test_no_citation_of_files_outside_the_repository():
    # Reference notes used while writing the package are not part of it: code and docs state the facts themselves.
    outside = ("rgnet_reference" + ".md", "data_formats" + ".md", "field_anchors" + ".md", "hf_ecosystem_notes" + ".md")
    suffixes = {".py", ".md", ".yaml", ".txt", ".toml", ".sh"}
    folders = ("src", "docs", "tests", "examples", "benchmarks", "dataset_scripts", "metrics")
    files = [ROOT / "README.md"] + [path for folder in folders for path in (ROOT / folder).rglob("*")]
    files = [path for path in files if path.suffix in suffixes and path.is_file()]
    citing = [str(path.relative_to(ROOT)) for path in files if any(name in path.read_text() for name in outside)]
    assert not citing, f"files citing notes outside the repository: {citing}"
