"""How fast the add-on's Blender side is: building the head, keying a take, switching takes.

    python -m backend.blender.bench [--seconds 60] [--takes 4] [--repeats 40]

Runs under a Python with bpy (Blender as a module) and the backend; uses the add-on's own modules on the
built-in head and synthetic takes (the model's speed is backend.bench's). Prints medians.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each take (default 60)")
    parser.add_argument("--takes", type=int, default=4, help="takes on the head (default 4)")
    parser.add_argument("--repeats", type=int, default=40, help="take switches timed (default 40)")
    args = parser.parse_args(argv)

    import bpy

    from backend.blender.preview import reset_blender
    from backend.head import head_description, head_mesh_arrays, load_head
    from backend.motion import POSE_PARTS
    from backend.take_file import Take, save_take
    from thunder_blender import headless

    reset_blender()
    headless.register_properties()
    head = load_head("builtin")
    rng = np.random.default_rng(0)
    frames = int(round(args.seconds * 25))
    with tempfile.TemporaryDirectory(prefix="thunder-bench-") as folder:
        arrays = head_mesh_arrays(head)
        started = time.perf_counter()
        head_object = headless.build_head(arrays, head_description(head))
        build_seconds = time.perf_counter() - started

        keying = []
        for k in range(args.takes):
            spread = {"jaw": 0.1, "neck": 0.05, "eyes": 0.05}
            parts = {"expression": rng.normal(0, 0.5, (frames, head.n_expression)),
                     **{name: rng.normal(0, spread[name], (frames, width)) for name, width in POSE_PARTS}}
            path = Path(folder) / f"take{k}.npz"
            save_take(path, Take(**{n: v.astype(np.float32) for n, v in parts.items()}, fps=25.0, seed=k,
                                 settings={}, model={"name": "bench", "hash": "-"},
                                 head={"name": head.name, "identity": head.identity}, audio={}))
            take = headless.read_take(path)
            started = time.perf_counter()
            headless.add_take(head_object, take, 1.0, 1, audio_path="")   # synthetic takes: no audio
            keying.append(time.perf_counter() - started)

        switching = []
        for r in range(args.repeats):
            started = time.perf_counter()
            headless.activate(head_object, r % args.takes)
            bpy.context.scene.frame_set(1 + (r * 7) % frames)   # the new take's pose, evaluated
            switching.append(time.perf_counter() - started)

    n_keys = head.n_expression + 36
    print(f"bpy {bpy.app.version_string}, built-in head: {head.n_vertices} vertices, {n_keys} shape keys")
    print(f"build the head                          {build_seconds * 1000:8.0f} ms")
    print(f"key a {args.seconds:g} s take ({frames} frames), median  {np.median(keying) * 1000:8.0f} ms")
    print(f"switch takes and show a frame, median   {np.median(switching) * 1000:8.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
