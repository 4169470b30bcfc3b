"""Blender test cases, each run in its own process inside a Blender Python (bpy and numpy, no torch).

    python tests/blender_cases.py CASE WORK_DIR JSON_ARGS

tests/blender_harness.py (run_in_blender) starts this script with an isolated BLENDER_USER_RESOURCES,
so extensions install under WORK_DIR and never into the real user's Blender. main() factory-resets
Blender, runs the case, prints its result as the last line `THUNDER_RESULT {json}`, disables every
extension the case enabled, and leaves with os._exit (Blender can hang at exit with classes registered).

A case is a function `(work_dir: Path, args: dict) -> dict | None` decorated with @case; the harness
passes args as JSON (paths as strings: args["zip"] is the extension zip the extension_zip fixture built).
Use install_extension() and check() below. This module must run in Blender's own Python, so it imports
bpy, numpy and the standard library only: torch, backend, training and the repository's thunder_blender
are blocked (the add-on under test is the one installed from the zip).
"""

import importlib
import importlib.abc
import json
import os
import sys
import traceback
import zipfile
from pathlib import Path

BLOCKED = frozenset({"torch", "backend", "training", "thunder_blender"})
ADDON_ID = "thunder"
REPO = "user_default"
MODULE = f"bl_ext.{REPO}.{ADDON_ID}"
CASES = {}


class _BlockImports(importlib.abc.MetaPathFinder):
    """Refuse the packages Blender's own Python does not have (or must not take from the repository)."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"{name!r} is not available inside Blender's Python (blocked by {__file__})")
        return None


def _isolate():
    sys.meta_path.insert(0, _BlockImports())
    repo_root = Path(__file__).resolve().parents[1]
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != repo_root]


_isolate()

import bpy  # noqa: E402  (after the import blocker, on purpose)


def case(function):
    """Register a case under its function's name."""
    CASES[function.__name__] = function
    return function


def check(condition, message):
    """Fail the case with message (an AssertionError, whose traceback the harness shows)."""
    if not condition:
        raise AssertionError(message)


def install_extension(zip_path, enable=True):
    """Install the extension zip into the isolated user repository, enable it, and return its module
    (bl_ext.user_default.thunder)."""
    zip_path = Path(zip_path)
    check(zip_path.is_file(), f"no extension zip at {zip_path}")
    result = bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo=REPO,
                                                      enable_on_install=enable)
    check(result == {"FINISHED"}, f"package_install_files({zip_path}) returned {result}")
    return importlib.import_module(MODULE)


def addon_enabled(module=MODULE):
    return module in bpy.context.preferences.addons


def addon_preferences(module=MODULE):
    """The add-on's AddonPreferences instance (None when the add-on has none)."""
    addon = bpy.context.preferences.addons.get(module)
    check(addon is not None, f"{module} is not enabled")
    return addon.preferences


def disable_extensions():
    """Disable every extension (bl_ext.*) that is enabled; return the modules disabled."""
    modules = [name for name in bpy.context.preferences.addons.keys() if name.startswith("bl_ext.")]
    for module in modules:
        bpy.ops.preferences.addon_disable(module=module)
    return modules


def _under(path, folder):
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def _real_user_files():
    """Files named like the add-on in the real user's Blender folders, with their modification times."""
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "blender"
    found = {}
    for pattern in ("*/extensions/**/*", "*/scripts/addons/**/*"):
        for path in config.glob(pattern) if config.is_dir() else []:
            if ADDON_ID in str(path.relative_to(config)).lower():
                found[str(path)] = path.stat().st_mtime_ns
    return found


@case
def install(work_dir, args):
    """Install the zip in the isolated user folder, check the add-on and its preferences, disable it."""
    user_resources = Path(os.environ["BLENDER_USER_RESOURCES"])
    check(_under(user_resources, work_dir), f"BLENDER_USER_RESOURCES={user_resources} is not under {work_dir}")
    extensions_dir = Path(bpy.utils.user_resource("EXTENSIONS"))
    check(_under(extensions_dir, user_resources),
          f"Blender's user extensions folder {extensions_dir} is not under {user_resources}")
    before = _real_user_files()

    module = install_extension(args["zip"])
    check(module.__name__ == MODULE, f"the add-on's module is {module.__name__}, expected {MODULE}")
    check(addon_enabled(), f"{MODULE} is not in preferences.addons after install: "
                           f"{list(bpy.context.preferences.addons.keys())}")

    preferences = addon_preferences()
    check(preferences is not None, "the add-on has no AddonPreferences")
    names = [p.identifier for p in preferences.bl_rna.properties if p.identifier not in ("rna_type", "bl_idname")]
    for name in ("backend_python", "flame_model"):
        check(name in names, f"AddonPreferences has no {name!r}: {names}")

    installed = Path(module.__file__).resolve().parent
    check(_under(installed, extensions_dir / REPO), f"installed at {installed}, not under {extensions_dir / REPO}")
    with zipfile.ZipFile(args["zip"]) as archive:
        members = [n for n in archive.namelist() if not n.endswith("/")]
    missing = [n for n in members if not (installed / n).is_file()]
    check(not missing, f"files of the zip not installed under {installed}: {missing}")
    after = _real_user_files()
    check(after == before, f"the install touched the real user's Blender folder: "
                           f"{sorted(set(after.items()) ^ set(before.items()))}")

    preferences_class = type(preferences)
    result = bpy.ops.preferences.addon_disable(module=MODULE)
    check(result == {"FINISHED"}, f"addon_disable returned {result}")
    check(not addon_enabled(), f"{MODULE} is still enabled after addon_disable")
    check(not preferences_class.is_registered, "the AddonPreferences class is still registered after disable")
    return {"module": module.__name__, "installed_dir": str(installed), "files": sorted(members),
            "preferences": names, "bpy": bpy.app.version_string}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    status = 1
    try:
        if len(argv) not in (2, 3) or argv[0] not in CASES:
            raise SystemExit(f"usage: blender_cases.py CASE WORK_DIR [JSON_ARGS]; cases: {sorted(CASES)}")
        name, work_dir = argv[0], Path(argv[1])
        args = json.loads(argv[2]) if len(argv) == 3 else {}
        bpy.ops.wm.read_factory_settings(use_empty=True)
        try:
            result = CASES[name](work_dir, args)
        finally:
            disable_extensions()  # a failure here still shows the case's own error as its context
        print("THUNDER_RESULT " + json.dumps(result if result is not None else {}), flush=True)
        status = 0
    except SystemExit as error:
        print(error, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


if __name__ == "__main__":
    main()
