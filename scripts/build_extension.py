"""Build the installable Blender extension zip: `python scripts/build_extension.py [--out dist]`.

Stages blender_manifest.toml and the files of the thunder_blender package (no __pycache__, no tests) in a
temporary folder, checks the manifest against the rules in docs (tagline, permissions, minimum Blender),
validates it with the extension tool that ships in the bpy wheel (bpy/<ver>/scripts/addons_core/bl_pkg/
cli/blender_ext.py), builds dist/<id>-<version>.zip and prints its path. Needs no Blender binary: the tool
is plain Python, run here with this interpreter. A failed check or validation prints the reason (the
validator's own words) and exits with status 1.

Importable too: `build_extension(out_dir) -> Path` raises BuildError with the same words.
"""

import argparse
import importlib.util
import shutil
import site
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
from pathlib import Path

from backend.files import write_atomically

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "thunder_blender"
MANIFEST = ROOT / "blender_manifest.toml"
TOOL_GLOB = "*/scripts/addons_core/bl_pkg/cli/blender_ext.py"
# What never goes into the zip: byte code, tests, editor and OS litter.
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", "tests", "test_*.py", ".*")
REQUIRED_KEYS = ("schema_version", "id", "version", "name", "tagline", "maintainer", "type",
                 "blender_version_min", "license")
BLENDER_VERSION_MIN = "4.5.0"  # Blender 4.5 LTS is the oldest supported (4.2's bpy has no audio)
TAGLINE_MAX = 64


class BuildError(Exception):
    """The extension could not be built; the message says why."""


def find_extension_tool():
    """The path of blender_ext.py inside the installed bpy wheel, found without importing bpy."""
    folders = []
    spec = importlib.util.find_spec("bpy")  # locates the package without running it
    if spec is not None:
        folders += [Path(p) for p in spec.submodule_search_locations or []]
        if spec.origin:
            folders.append(Path(spec.origin).parent)
    # Not importable from here: look through the site-packages folders this interpreter knows.
    site_dirs = list(site.getsitepackages()) + [site.getusersitepackages(), sysconfig.get_paths()["purelib"],
                                                sysconfig.get_paths()["platlib"]]
    folders += [Path(d) / "bpy" for d in site_dirs]
    for folder in folders:
        found = sorted(folder.glob(TOOL_GLOB)) if folder.is_dir() else []
        if found:
            return found[-1]
    raise BuildError(
        f"Cannot find Blender's extension tool ({TOOL_GLOB.replace('*', '<version>')}) in a bpy package "
        f"for {sys.executable}; install the bpy wheel into this environment (pip install -e \".[dev]\" does) "
        "and run this script with its Python.")


def check_manifest(manifest):
    """The rules of docs on blender.md that the validator does not enforce; raises BuildError."""
    problems = [f"missing key {key!r}" for key in REQUIRED_KEYS if key not in manifest]
    problems += [f"key {key!r} is empty (omit optional keys instead)" for key, value in manifest.items()
                 if value in ("", [], {})]
    tagline = manifest.get("tagline", "")
    if len(tagline) > TAGLINE_MAX:
        problems.append(f"tagline is {len(tagline)} characters, at most {TAGLINE_MAX} allowed")
    if tagline and not tagline[-1].isalnum():
        problems.append(f"tagline ends with {tagline[-1]!r}: no trailing punctuation")
    if manifest.get("blender_version_min") != BLENDER_VERSION_MIN:
        problems.append(f"blender_version_min is {manifest.get('blender_version_min')!r}, expected "
                        f"{BLENDER_VERSION_MIN!r} (Blender 4.5 LTS)")
    if not manifest.get("permissions", {}).get("files"):
        problems.append("[permissions] files is missing: the add-on reads audio and heads and writes takes")
    if problems:
        raise BuildError(f"{MANIFEST.name}: " + "; ".join(problems))


def run_tool(tool, *args):
    """Run blender_ext.py; raise BuildError with its words when it fails."""
    result = subprocess.run([sys.executable, str(tool), *args], capture_output=True, text=True, timeout=300)
    words = (result.stdout + result.stderr).strip()
    # The tool prints "Error: ..." for a bad package; some versions still exit with 0 then.
    if result.returncode != 0 or "error:" in words.lower():
        raise BuildError(f"blender_ext.py {args[0]} failed (exit status {result.returncode}):\n{words}")
    return words


def stage(folder):
    """Copy the manifest and the package files into folder; return folder."""
    shutil.copytree(PACKAGE, folder, ignore=IGNORE)
    shutil.copy2(MANIFEST, folder / MANIFEST.name)
    return folder


def build_extension(out_dir="dist"):
    """Validate and build the extension zip into out_dir; return its path."""
    try:
        manifest = tomllib.loads(MANIFEST.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise BuildError(f"Cannot read {MANIFEST}: {error}") from None
    check_manifest(manifest)
    tool = find_extension_tool()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    zip_path = out_dir / f"{manifest['id']}-{manifest['version']}.zip"
    with tempfile.TemporaryDirectory(prefix="thunder-extension-") as tmp:
        staged = stage(Path(tmp) / manifest["id"])
        run_tool(tool, "validate", str(staged))
        built_dir = Path(tmp) / "out"
        built_dir.mkdir()  # the tool wants it to exist; it names the zip <id>-<version>.zip
        run_tool(tool, "build", "--source-dir", str(staged), "--output-dir", str(built_dir))
        built = built_dir / zip_path.name
        if not built.is_file():
            raise BuildError(f"blender_ext.py build wrote {[p.name for p in built_dir.iterdir()]}, "
                             f"not {zip_path.name}")
        run_tool(tool, "validate", str(built))
        # never leave a half-written zip under the final name, nor touch any other file there
        write_atomically(zip_path, lambda partial: shutil.copyfile(built, partial))
    return zip_path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "dist"), help="output folder (default: dist/)")
    args = parser.parse_args(argv)
    try:
        path = build_extension(args.out)
    except BuildError as error:
        print(f"build_extension: {error}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
