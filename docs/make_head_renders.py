"""Render the built-in head's key poses to docs/: one PNG per pose and a captioned sheet, docs/head_poses.png.

    python docs/make_head_renders.py [--resolution 512] [--out docs]

The poses go through the project's forward model (``backend.head.load_head``), so the pictures show what
every other part of Thunder gets. Rendering needs bpy (Blender's Workbench engine, headless).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from backend.blender.preview import render_pose_sheet  # noqa: E402
from backend.head import load_head  # noqa: E402

JAW_OPEN = 0.3  # radians about +x: a wide-open mouth, ARKit's jawOpen = 1

# (file stem, caption, expression weights, jaw rotation)
POSES = (
    ("neutral", "neutral", {}, 0.0),
    ("jaw_open", "jaw open", {}, JAW_OPEN),
    ("pucker", "mouthPucker", {"mouthPucker": 1.0}, 0.0),
    ("smile", "mouthSmile L+R", {"mouthSmileLeft": 1.0, "mouthSmileRight": 1.0}, 0.0),
    ("blink", "eyeBlink L+R", {"eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0}, 0.0),
    ("half_blink", "eyeBlink L+R 0.5", {"eyeBlinkLeft": 0.5, "eyeBlinkRight": 0.5}, 0.0),
)


def pose_vertices(head, poses=POSES):
    """Vertices (V, 3) of each pose, through the head's forward model."""
    import torch

    expression = np.zeros((len(poses), head.n_expression), dtype=np.float32)
    jaw = np.zeros((len(poses), 3), dtype=np.float32)
    for frame, (_, _, weights, jaw_angle) in enumerate(poses):
        for name, weight in weights.items():
            expression[frame, head.expression_names.index(name)] = weight
        jaw[frame, 0] = jaw_angle
    with torch.no_grad():
        vertices = head(expression=torch.from_numpy(expression), jaw=torch.from_numpy(jaw))
    return [v.numpy() for v in vertices]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    args = parser.parse_args(argv)

    head = load_head("builtin")
    frames = pose_vertices(head)
    poses = [(stem, vertices) for (stem, _, _, _), vertices in zip(POSES, frames)]
    paths, sheet = render_pose_sheet(
        head.faces,
        head.face_region,
        list(head.face_region_names),
        poses,
        args.out,
        args.out / "head_poses.png",
        prefix="head_",
        resolution=args.resolution,
        columns=3,
        captions=[caption for _, caption, _, _ in POSES],
    )
    for path in [*paths, sheet]:
        print(path)


if __name__ == "__main__":
    main()
