"""A plain (not editable) install generates with the shipped models (THUNDER, and M2S scoring every take): the wheel is built from this tree,
installed into a fresh virtual environment, and `thunder generate` runs there from a folder outside the
source tree. Offline and quick: the wheel installs with --no-deps, and the fresh environment sees this
environment's packages (torch, numpy...) through a .pth line, which adds that folder to sys.path without
running its .pth files, so the editable install of this tree stays out of sight."""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def run(command, **kwargs):
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result


def test_the_installed_wheel_generates_with_the_shipped_model(tmp_path):
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "dist",
         ROOT])
    wheel = next((tmp_path / "dist").glob("thunder_talking_heads-*.whl"))
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    site_packages = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    (site_packages / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel])

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    where = run([python, "-c", "import backend, backend.m2s, backend.models as m; print(backend.__file__); "
                               "print(backend.m2s.__file__); print(m.SHIPPED_THUNDER / 'model.safetensors'); "
                               "print(m.SHIPPED_M2S / 'model.safetensors'); print(m.SHIPPED_M2S / 'config.json')"],
                cwd=elsewhere, env=environment)
    package_file, m2s_file, *weights = where.stdout.split()
    assert Path(package_file).is_relative_to(site_packages) and Path(m2s_file).is_relative_to(site_packages)
    assert all(Path(w).is_file() for w in weights), where.stdout
    example = run([python, "-c", "import backend, pathlib; print(pathlib.Path(backend.__file__).parent / "
                                 "'examples' / 'thunder_example.wav')"], cwd=elsewhere, env=environment).stdout.strip()
    result = run([venv / "bin" / "thunder", "generate", example, "--out", "takes", "--steps", "2", "--quiet",
                  "--threads", "1", "--device", "cpu", "--end", "2"], cwd=elsewhere, env=environment)
    take = elsewhere / "takes" / "thunder_example.take1.seed0.npz"
    assert result.stdout.split() == ["takes/" + take.name] and take.is_file(), result.stdout
    with np.load(take, allow_pickle=False) as npz:
        assert npz["jaw"].shape == (50, 3)
        score = json.loads(str(npz["meta"]))["scores"]["m2s_mel_l1"]   # the installed M2S heard the lips
    assert 0 < score < 10
