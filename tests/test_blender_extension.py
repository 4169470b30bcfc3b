"""The extension builds into a valid zip and installs, enables and disables cleanly on every Blender tested
(this environment's bpy plus THUNDER_BLENDER_PYTHONS; see tests/blender_harness.py)."""

import importlib.util
import subprocess
import sys
import zipfile

import pytest

from blender_harness import BUILD_SCRIPT, blender_pythons, python_id, run_in_blender


def load_build_script():
    spec = importlib.util.spec_from_file_location("build_extension", BUILD_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_extension_zip(extension_zip):
    assert extension_zip.is_file() and extension_zip.name.startswith("thunder-"), extension_zip
    with zipfile.ZipFile(extension_zip) as archive:
        names = archive.namelist()
    assert "blender_manifest.toml" in names and "__init__.py" in names, names
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pyo"))], names
    assert not [n for n in names if n.startswith("tests/") or "/tests/" in n], names

    tool = load_build_script().find_extension_tool()
    result = subprocess.run([sys.executable, str(tool), "validate", str(extension_zip)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "Success" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("python", blender_pythons(), ids=python_id)
def test_install_extension(python, extension_zip, tmp_path):
    result = run_in_blender("install", python, tmp_path, {"zip": str(extension_zip)}, timeout=300)
    assert result["module"] == "bl_ext.user_default.thunder"
    assert {"backend_python", "flame_model"} <= set(result["preferences"]), result["preferences"]
    installed = tmp_path / "blender_user" / "extensions" / "user_default" / "thunder"
    assert (installed / "__init__.py").is_file() and (installed / "blender_manifest.toml").is_file()
    print(f"bpy {result['bpy']}: preferences {result['preferences']}, files {result['files']}")
