"""The package's layers: a flat model core (copied into model folders as remote code) and sub-packages around it."""

from __future__ import annotations

import ast
from pathlib import Path

import rgnet_hf

PACKAGE = Path(rgnet_hf.__file__).resolve().parent

# The modules `save_model_folder(..., remote_pipeline=True)` copies into a model folder. Transformers resolves
# `from .x import` in them as sibling files, so they stay flat and import nothing outside this set.
FLAT_CORE = {
    "configuration_rgnet",
    "modeling_rgnet",
    "loss_rgnet",
    "feature_extraction_rgnet",
    "processing_rgnet",
    "windowing",
    "inference_rgnet",
    "memory_planning",
    "post_processing",
    "pipeline_rgnet",
    "video_text_encoders",
    "video_decoding",
}
SUB_PACKAGES = {"apps", "data", "evaluation", "hub", "search", "synthetic", "training"}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(level, module) of every import in a file, at any depth (lazy imports inside functions count)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or ""))
        elif isinstance(node, ast.Import):
            found.extend((0, alias.name) for alias in node.names)
    return found


def test_top_level_holds_only_the_flat_core_and_the_sub_packages():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert modules == FLAT_CORE, "a new top-level module belongs to the flat core (and this list) or a sub-package"
    assert packages == SUB_PACKAGES


def test_flat_core_imports_nothing_outside_itself():
    for name in sorted(FLAT_CORE):
        for level, module in _imports(PACKAGE / f"{name}.py"):
            if level == 0:
                assert not module.startswith("rgnet_hf"), f"{name}.py imports {module}: use a single-dot import"
                continue
            assert level == 1, f"{name}.py has a {level}-dot import of {module!r}: the flat core has no parents"
            target = module.split(".")[0]
            assert target in FLAT_CORE, f"{name}.py imports .{module}, which is not in the flat core"


def test_sub_packages_do_not_reach_above_the_package():
    for path in PACKAGE.rglob("*.py"):
        depth = len(path.relative_to(PACKAGE).parts) - 1
        for level, module in _imports(path):
            assert level <= depth + 1, f"{path.relative_to(PACKAGE)} imports {'.' * level}{module} above rgnet_hf"


def test_the_flat_core_names_a_sub_package_only_for_library_inputs():
    """The pipeline reaches `rgnet_hf.search` by name (`importlib`, on a library input), where no import statement is
    allowed; no other flat-core module names a module of the package (a dotted `rgnet_hf.x` string)."""
    import re

    named = set()
    for name in sorted(FLAT_CORE):
        for node in ast.walk(ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if re.fullmatch(r"rgnet_hf(\.\w+)+", node.value):
                    named.add((name, node.value))
    assert named == {("pipeline_rgnet", "rgnet_hf.search")}
