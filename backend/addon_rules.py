"""The add-on's numpy-only rules that the backend shares (the take format's check, the ARKit weights), loaded
from the add-on's folder without running its package.

The backend imports no module of the add-on (tests/test_import_rules.py), yet must read takes and write ARKit
files by the add-on's own rules, so that both sides agree. `addon_module("take_file")` imports
thunder_blender/take_file.py as `backend._addon_rules.take_file`: a package of that name whose folder is the
add-on's, so the rule files' relative imports (arkit.py uses rig_math.py) find their neighbours, and the add-on's
__init__ (which registers Blender classes) never runs.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

PACKAGE = "backend._addon_rules"
# The add-on files the backend may load: numpy and the standard library only (no bpy).
RULES = ("take_file", "arkit", "rig_math")


def addon_folder() -> Path:
    package = importlib.util.find_spec("thunder_blender")  # finds the folder without running the package
    if package is None or not package.submodule_search_locations:
        raise ImportError("the thunder_blender package (which holds the take format's rule) is not installed")
    return Path(next(iter(package.submodule_search_locations)))


def addon_module(name: str):
    """The add-on's rule file `name` (one of RULES), loaded once."""
    if name not in RULES:
        raise ValueError(f"{name!r} is not one of the add-on's shared rule files {RULES}")
    if PACKAGE not in sys.modules:
        package = types.ModuleType(PACKAGE)
        package.__path__ = [str(addon_folder())]
        sys.modules[PACKAGE] = package
    return importlib.import_module(f"{PACKAGE}.{name}")
