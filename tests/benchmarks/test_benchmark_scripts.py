"""The benchmark scripts import the package, never each other or the tests (no `sys.path` edits)."""

from __future__ import annotations

import ast
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_benchmarks_import_the_package_not_each_other():
    scripts = sorted(BENCHMARKS.glob("*.py"))
    assert scripts
    siblings = {path.stem for path in scripts} | {"parity_utils", "conftest"}
    for path in scripts:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys":
                raise AssertionError(f"{path.name}:{node.lineno} edits sys.path")
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in siblings, f"{path.name}:{node.lineno} imports {name}"
        # scripts run as subprocess children carry their imports in strings: read those too
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "import" in node.value:
                assert "sys.path" not in node.value, f"{path.name}:{node.lineno} edits sys.path in a child script"
