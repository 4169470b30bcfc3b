"""The committed render script works headless (Blender's Workbench) and draws a face, not a blank frame."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHECK = r"""
import sys
import numpy as np
from backend.blender.preview import read_png
neutral, jaw_open = (read_png(sys.argv[1] + f"/head_{n}.png") for n in ("neutral", "jaw_open"))
h, w = neutral.shape[:2]
centre = neutral[h // 4: 3 * h // 4, w // 4: 3 * w // 4, :3]
background = neutral[2, 2, :3]
print(float(np.abs(centre - background).sum(-1).mean() > 0.1),
      float((np.abs(neutral - jaw_open).sum(-1) > 0.1).mean()))
"""


def test_make_head_renders_draws_the_head_and_the_open_jaw(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "docs" / "make_head_renders.py"), "--resolution", "128",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    for name in ("neutral", "jaw_open", "pucker", "smile", "blink", "poses"):
        assert (tmp_path / f"head_{name}.png").stat().st_size > 1000, name
    check = subprocess.run([sys.executable, "-c", CHECK, str(tmp_path)], capture_output=True, text=True,
                           timeout=120, cwd=ROOT)
    assert check.returncode == 0, check.stderr[-2000:]
    face_differs_from_background, changed_by_jaw = map(float, check.stdout.split()[-2:])
    assert face_differs_from_background == 1.0
    assert 0.005 < changed_by_jaw < 0.3  # the mouth region changes, not the whole frame
