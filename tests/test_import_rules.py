"""The arrows between Thunder's three packages, read from the source with `ast` (every import statement,
also those inside functions):

- backend/blender/ uses the add-on through one door, thunder_blender.headless, and no other add-on module;
- the rest of backend/ imports neither the add-on nor Blender (bpy, mathutils, bpy_extras);
- backend/ never imports training/;
- thunder_blender/ never imports torch, backend or training (it runs in Blender's own Python).
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLENDER_MODULES = {"bpy", "mathutils", "bpy_extras"}
DOOR = "thunder_blender.headless"


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, module) for each absolute import in the source; `from package import name` counts as
    package.name, since the name may be a submodule (from thunder_blender import api)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def top(module: str) -> str:
    return module.split(".")[0]


def broken_rules(relative: str, source: str) -> list[str]:
    """The rules `source`, the file at `relative` (a path from the repository's root), breaks."""
    package = relative.split("/")[0]
    broken = []
    for line, module in imported_modules(source):
        where = f"{relative}:{line} imports {module}"
        if package == "backend":
            if top(module) == "training":
                broken.append(f"{where}: backend never imports training")
            if relative.startswith("backend/blender/"):
                if top(module) == "thunder_blender" and not (module == DOOR or module.startswith(DOOR + ".")):
                    broken.append(f"{where}: backend/blender uses the add-on only through {DOOR}")
            elif top(module) == "thunder_blender" or top(module) in BLENDER_MODULES:
                broken.append(f"{where}: only backend/blender uses Blender or the add-on")
        elif package == "thunder_blender" and top(module) in {"torch", "backend", "training"}:
            broken.append(f"{where}: the add-on runs in Blender's Python (bpy and numpy only)")
    return broken


SOURCES = sorted(p for package in ("backend", "thunder_blender") for p in (ROOT / package).rglob("*.py"))


def test_the_rules_see_every_kind_of_import():
    """The reader catches imports at the top, inside functions, and the `from package import module` form."""
    source = ("import torch\nfrom thunder_blender import api\n"
              "def f():\n    from training.m2s import loss\n    import thunder_blender.headless\n")
    assert [m for _, m in imported_modules(source)] == ["torch", "thunder_blender.api", "training.m2s.loss",
                                                        "thunder_blender.headless"]
    broken = broken_rules("backend/blender/probe.py", source)
    assert len(broken) == 2 and "thunder_blender.api" in broken[0] and "training" in broken[1], broken
    assert len(broken_rules("backend/cli.py", "import bpy\n")) == 1
    assert len(broken_rules("thunder_blender/api.py", "import torch\nfrom backend import head\n")) == 2


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_imports_follow_the_arrows(path):
    relative = path.relative_to(ROOT).as_posix()
    assert broken_rules(relative, path.read_text(encoding="utf-8")) == []


def test_backend_blender_goes_through_the_door():
    """The door is used (the rule above is not vacuous): the scene builder reaches the add-on through it."""
    used = {module for path in (ROOT / "backend" / "blender").glob("*.py")
            for _, module in imported_modules(path.read_text(encoding="utf-8"))}
    assert DOOR in used
