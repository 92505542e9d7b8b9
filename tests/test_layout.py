"""The package's floors, checked on its import graph: arrows point down, commands do not import each other,
the product never reaches into benchmarks/ or edits sys.path, and no source file grows past what a reader
takes in at once. docs/architecture.md draws the same floors."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "encoderkit"
MAX_LINES = 600

# What each room must not import (prefixes of encoderkit.* module names).
FORBIDDEN = {
    "encoderkit.models": ("encoderkit.train", "encoderkit.commands", "encoderkit.recipes", "encoderkit.cli",
                          "encoderkit.objectives", "encoderkit.data"),
    "encoderkit.data": ("encoderkit.train", "encoderkit.commands", "encoderkit.recipes", "encoderkit.cli",
                        "encoderkit.objectives", "encoderkit.models"),
    "encoderkit.objectives": ("encoderkit.train", "encoderkit.commands", "encoderkit.recipes", "encoderkit.cli"),
    "encoderkit.train": ("encoderkit.commands", "encoderkit.recipes", "encoderkit.cli"),
    "encoderkit.recipes": ("encoderkit.commands", "encoderkit.cli"),
    "encoderkit.commands": ("encoderkit.cli",),
}
# Modules of commands/ that are shared by commands rather than commands themselves.
COMMAND_HELPERS = {"encoderkit.commands.report", "encoderkit.commands.lines"}
# Inside the I-BERT family folder: each module and what it may import of its siblings.
IBERT = "encoderkit.models.ibert"
IBERT_ALLOWED = {
    "quant": set(),
    "model": {"quant"},
    "convert": {"model", "quant"},
    "int_ops": set(),
    "schedule": set(),
    "kernels": set(),
    "integer": {"int_ops", "kernels", "schedule"},
    "export": {"model", "quant", "integer", "int_ops"},
}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module `name` imports, relative imports resolved, `from x import y` giving x.y where x.y is ours."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES)
    return found


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _room(name: str) -> str | None:
    return next((room for room in FORBIDDEN if name == room or name.startswith(room + ".")), None)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_point_down(name):
    room = _room(name)
    if room is None:
        return
    upward = sorted(imported for imported in IMPORTS[name]
                    if any(imported == bad or imported.startswith(bad + ".") for bad in FORBIDDEN[room]))
    assert not upward, f"{name} ({room}) imports {upward}"


def test_no_command_imports_another():
    commands = {name for name in MODULES if name.startswith("encoderkit.commands.")} - COMMAND_HELPERS
    for name in sorted(commands):
        others = sorted(IMPORTS[name] & (commands - {name}))
        assert not others, f"{name} imports the commands {others}; move what they share to a lower floor"


def test_the_ibert_folder_points_down():
    for name, allowed in IBERT_ALLOWED.items():
        module = f"{IBERT}.{name}"
        assert module in MODULES, f"{module} is missing"
        siblings = {imported.removeprefix(IBERT + ".") for imported in IMPORTS[module]
                    if imported.startswith(IBERT + ".")}
        assert siblings <= allowed, f"{module} imports {sorted(siblings - allowed)} of its folder"
    assert not IMPORTS[IBERT] & {f"{IBERT}.{name}" for name in ("convert", "export")}, \
        "ibert/__init__ must not import convert or export (hf_format imports the folder; convert imports hf_format)"


def test_the_product_never_reaches_into_benchmarks_or_sys_path():
    for name, path in MODULES.items():
        assert not any(imported.split(".")[0] == "benchmarks" for imported in IMPORTS[name]), name
        assert "sys.path" not in path.read_text(), f"{name} edits sys.path"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_source_files_stay_readable(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[name]} has {lines} lines (at most {MAX_LINES}); split it by concern"


def test_the_checks_see_real_imports():
    """The scanner itself: a known downward import is found, so the tests above cannot pass on an empty graph."""
    assert "encoderkit.train.run_dir" in IMPORTS["encoderkit.train.loop"]
    assert "encoderkit.models.load" in IMPORTS["encoderkit.commands.finetune"]
    assert len(MODULES) > 30
