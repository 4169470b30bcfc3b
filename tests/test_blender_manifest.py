"""The extension manifest validates with the validator that ships in the bpy wheel."""

import shutil
import subprocess
import sys
from pathlib import Path

import bpy

ROOT = Path(__file__).resolve().parents[1]


def test_manifest_validates(tmp_path):
    # bpy/<version>/scripts/modules/bpy/__init__.py -> bpy/<version>/scripts/addons_core/bl_pkg/cli/
    tool = Path(bpy.__file__).parents[2] / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"
    staged = tmp_path / "thunder"
    shutil.copytree(ROOT / "thunder_blender", staged, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "blender_manifest.toml", staged)
    result = subprocess.run([sys.executable, str(tool), "validate", str(staged)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout
