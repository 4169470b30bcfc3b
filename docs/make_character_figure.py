"""Render docs/character_take_frames.png: one take of the shipped model on the built-in head (left) and on an ARKit
character (right) at the same frames, the character driven by the add-on's Drive character (thunder_blender/
character.py) through its ARKit shape keys alone.

    python docs/make_character_figure.py [--out docs/character_take_frames.png] [--columns 2]

The character is not the built-in head's rig: a mesh of the built-in head's shape with no armature and 21 shape
keys spelled as another rig spells them (`A01_Brow_Inner_Up`, `eyeBlink_L`, `blendShape1.mouthFunnel`, ...; 20
of ARKit's components and a jawOpen made by turning the jaw-skinned vertices by JAW_SHAPE_ANGLE), so its mouth
opens through jawOpen (calibrated from that shape) and its lips through the mapped components; the take's head
rotation turns the whole object. The frames: the take's most closed lips on the built-in head, its median and 80th-percentile
lip distance, and its most open; each caption gives the inner-lip distance on the head / on the character.
Needs bpy and torch.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from backend.blender.preview import CameraView, flame_to_blender  # noqa: E402
from backend.blender.scene import FRAME_START, build_take_scene  # noqa: E402
from backend.generate import Generator  # noqa: E402
from backend.take_file import save_take, take_file_name, take_vertices  # noqa: E402
from training.metrics import lip_distance  # noqa: E402

EXAMPLE = REPO / "backend" / "examples" / "thunder_example.wav"
FPS = 25.0
OFFSET = 0.21   # metres between the two heads, along the subject's left
JAW_SHAPE_ANGLE = 0.35   # the character's own jawOpen shape opens further than the built-in head's 0.30 rad
SPELLINGS = {"mouthClose": "A26_Mouth_Close", "mouthFunnel": "blendShape1.mouthFunnel",
             "mouthPucker": "blendShape1.mouthPucker", "mouthSmileLeft": "Mouth_Smile_L",
             "mouthSmileRight": "Mouth_Smile_R", "mouthPressLeft": "mouth_press_left",
             "mouthPressRight": "mouth_press_right", "mouthLowerDownLeft": "MouthLowerDown_L",
             "mouthLowerDownRight": "MouthLowerDown_R", "mouthUpperUpLeft": "MouthUpperUp_L",
             "mouthUpperUpRight": "MouthUpperUp_R", "mouthRollLower": "mouth-roll-lower",
             "mouthRollUpper": "mouth-roll-upper", "mouthStretchLeft": "MouthStretch_L",
             "mouthStretchRight": "MouthStretch_R", "eyeBlinkLeft": "eyeBlink_L", "eyeBlinkRight": "eyeBlink_R",
             "browInnerUp": "A01_Brow_Inner_Up", "browDownLeft": "A02_Brow_Down_Left",
             "browDownRight": "A03_Brow_Down_Right"}


def character_mesh(head, name: str = "ARKit character"):
    """The character's mesh object: the built-in head's shape at OFFSET, its shape keys spelled another way."""
    import bpy

    from thunder_blender.head_build import mesh_from_arrays
    from thunder_blender.rig_math import axis_angle_to_matrix

    data = head.data
    rest = data.v_template.astype(np.float64)
    joints = data.joint_regressor @ rest
    pivot = joints[1]   # the neck: the object turns about it
    names = list(head.expression_names)
    offsets = {key: data.exprdirs[:, :, names.index(arkit)].astype(np.float64) for arkit, key in SPELLINGS.items()}
    turned = (rest - joints[2]) @ axis_angle_to_matrix(np.array([JAW_SHAPE_ANGLE, 0.0, 0.0])).T + joints[2]
    offsets["A25_Jaw_Open"] = data.weights[:, 2:3] * (turned - rest)   # the jaw-skinned part of a turn of the jaw
    regions = [str(r) for r in data.face_region_names] if data.face_region_names is not None else ["skin"]
    mesh = mesh_from_arrays(name, flame_to_blender(rest - pivot), data.faces, data.face_region, regions)
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    obj.location = tuple(flame_to_blender(pivot + np.array([OFFSET, 0.0, 0.0])))
    obj.shape_key_add(name="Basis", from_mix=False)
    for key, offset in offsets.items():
        block = obj.shape_key_add(name=key, from_mix=False)
        block.data.foreach_set("co", flame_to_blender(rest - pivot + offset).astype(np.float32).ravel())
    obj.shape_key_add(name="Wink", from_mix=False)   # not an ARKit name: left alone
    for material in mesh.materials:   # a paler skin, to tell the two apart
        if material.name.endswith(" skin"):
            material.diffuse_color = (0.55, 0.50, 0.62, 1.0)
    return obj


def character_lip_distance(obj, frame: int, landmarks: dict) -> float:
    """The character's inner-lip distance (mm) at `frame`: it has the built-in head's topology, so its landmarks."""
    import bpy

    bpy.context.scene.frame_set(frame)
    evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    data = evaluated.to_mesh()
    co = np.empty(len(data.vertices) * 3, dtype=np.float32)
    data.vertices.foreach_get("co", co)
    evaluated.to_mesh_clear()
    return float(lip_distance(co.reshape(1, -1, 3), landmarks)[0] * 1000.0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "character_take_frames.png")
    parser.add_argument("--columns", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=640)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(2)
    generator = Generator(device="cpu")
    head = generator.head
    take = generator.generate(EXAMPLE, seeds=[0], fps=FPS)[0]
    distance_mm = lip_distance(take_vertices(take, head), head.landmarks) * 1000.0
    order = np.argsort(distance_mm)
    picks = sorted({int(order[round(q * (len(order) - 1))]) for q in (0.0, 0.5, 0.8, 1.0)})

    with tempfile.TemporaryDirectory(prefix="thunder-figure-") as tmp:
        path = save_take(Path(tmp) / take_file_name(EXAMPLE.stem, 1, 0), take)
        view = CameraView(target=(OFFSET / 2, -0.02, 0.02), distance=1.05, azimuth=0.0, elevation=4.0)
        scene = build_take_scene(head, EXAMPLE, [path], FPS, name="Thunder head", view=view,
                                 resolution=args.resolution)
        from thunder_blender import character

        mesh = character_mesh(head)
        missing = character.bind(mesh, scene.head, head_target="OBJECT", head_strength=1.0)
        angle, residual = character.calibrate_jaw(mesh)
        character.rekey(mesh)
        print(f"mapped {52 - len(missing)} of 52 ARKit names; jawOpen calibrated to {angle:.3f} rad "
              f"(a turn leaves {residual:.1%} unexplained)")
        frames = [FRAME_START + k for k in picks]
        character_mm = [character_lip_distance(mesh, frame, head.landmarks) for frame in frames]
        captions = [f"{k / FPS:.2f} s  lips {distance_mm[k]:.1f} / {mm:.1f} mm" for k, mm in zip(picks, character_mm)]
        for k, mm in zip(picks, character_mm):
            print(f"frame {FRAME_START + k:3d}: lip distance {distance_mm[k]:5.1f} mm on the built-in head, "
                  f"{mm:5.1f} mm on the character (jaw {take.jaw[k, 0]:.3f} rad, its jawOpen "
                  f"{min(1.0, max(0.0, take.jaw[k, 0] / angle)):.2f})")
        crop = (0.25, 0.80, 0.0, 1.0)
        out = scene.render_frames(frames, args.out, columns=args.columns, captions=captions, crop=crop,
                                  caption_size=0.09, caption_band=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
