"""The arrows between Thunder's three packages, read from the source with `ast` (every import statement,
also those inside functions):

- backend/blender/ uses the add-on through one door, thunder_blender.headless, and no other add-on module;
- the rest of backend/ imports no Blender module (bpy, mathutils, bpy_extras) and, of the add-on, only the
  modules without bpy that hold a rule both sides share: the take file's rule (thunder_blender.take_file),
  the ARKit weights (thunder_blender.arkit, with rig_math), the closure-keeping smoothing
  (thunder_blender.strengths), the errors under them, and the process link the bench drives the service with
  (thunder_blender.link), so that there is one take rule and one client of the protocol;
- backend/ never imports training/;
- thunder_blender/ never imports torch, backend or training (it runs in Blender's own Python).
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLENDER_MODULES = {"bpy", "mathutils", "bpy_extras"}
DOOR = "thunder_blender.headless"
SHARED = ("thunder_blender.take_file", "thunder_blender.arkit", "thunder_blender.strengths", "thunder_blender.rig_math",
          "thunder_blender.errors",
          "thunder_blender.link")


def is_within(module: str, names) -> bool:
    return any(module == name or module.startswith(name + ".") for name in names)


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
                if top(module) == "thunder_blender" and not is_within(module, (DOOR,)):
                    broken.append(f"{where}: backend/blender uses the add-on only through {DOOR}")
            elif top(module) in BLENDER_MODULES:
                broken.append(f"{where}: only backend/blender uses Blender")
            elif top(module) == "thunder_blender" and not is_within(module, SHARED):
                broken.append(f"{where}: outside backend/blender, backend uses only the add-on's shared "
                              f"modules without bpy ({', '.join(SHARED)})")
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
    assert len(broken_rules("backend/cli.py", "from thunder_blender import api, take_file\n")) == 1
    assert broken_rules("backend/bench.py", "from thunder_blender.link.backend_process import BackendProcess\n") == []
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


def test_the_shared_add_on_modules_load_without_blender():
    """What the backend may import of the add-on runs where there is no bpy: loaded in a Python in which
    `import bpy` fails, they and everything they import (relative imports too) come in without it."""
    code = ("import sys; sys.modules['bpy'] = None; sys.modules['mathutils'] = None\n"
            + "".join(f"import {name}\n" for name in SHARED)
            + "import thunder_blender.link.backend_process, thunder_blender.link.jobs\n"
            + "print(sorted(m for m in sys.modules if m.startswith('thunder_blender')))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = set(eval(done.stdout))
    assert loaded <= {"thunder_blender", *SHARED, "thunder_blender.link.backend_process", "thunder_blender.link.jobs"}, loaded
