"""Render one take of the shipped model on the built-in head and on an ARKit character side by side at the same
frames (docs/character_take_frames.png), and with --flame on a FLAME-layout head between them
(docs/three_heads_take_frames.png). The character is driven by the add-on's Drive character (thunder_blender/
character.py) through its ARKit shape keys alone; the FLAME-layout head is one of the retarget's test heads
(training/retarget_heads.py), retargeted as a user's FLAME file is (backend.head.load_head_for_takes).

    python docs/make_character_figure.py [--out docs/character_take_frames.png] [--columns 2]
    python docs/make_character_figure.py --flame flame2023-open-layout      # docs/three_heads_take_frames.png

The character is not the built-in head's rig: a mesh of the built-in head's shape with no armature and 21 shape
keys spelled as another rig spells them (`A01_Brow_Inner_Up`, `eyeBlink_L`, `blendShape1.mouthFunnel`, ...; 20
of ARKit's components and a jawOpen made by turning the jaw-skinned vertices by JAW_SHAPE_ANGLE), so its mouth
opens through jawOpen (calibrated from that shape) and its lips through the mapped components; the take's head
rotation turns the whole object. The frames of the two-head figure: the take's most closed lips on the built-in
head, its median and 80th-percentile lip distance, and its most open. The frames of the three-head figure, chosen
from the phones (the corpus's forced aligner, as docs/make_blender_figures.py chooses them): the middle of the
longest /p b m/ that does not touch a pause, of the longest open vowel of a content word, and of the longest pause
(the rest). Each caption gives the inner-lip distance on each head, left to right.
Needs bpy and torch, and with --flame pocketsphinx (the `train` extra).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from backend.audio_io import load_audio  # noqa: E402
from backend.blender.preview import CameraView, flame_to_blender  # noqa: E402
from backend.blender.scene import FRAME_START, build_take_scene  # noqa: E402
from backend.generate import Generator  # noqa: E402
from backend.head import load_head_for_takes  # noqa: E402
from backend.take_file import save_take, take_file_name, take_vertices  # noqa: E402
from docs.make_blender_figures import FUNCTION_WORDS, OPEN_VOWELS, pick_segments, word_at  # noqa: E402
from training.metrics import BILABIALS, lip_distance  # noqa: E402
from training.retarget_heads import TEST_HEADS  # noqa: E402
from training.retarget_report import write_test_head  # noqa: E402

EXAMPLE = REPO / "backend" / "examples" / "thunder_example.wav"
FPS = 25.0
OFFSET = 0.21   # metres between neighbouring heads, along the subject's left
# Skin colours (linear RGB) to tell the heads apart: the character's paler, the FLAME-layout head's greener.
CHARACTER_SKIN = (0.55, 0.50, 0.62, 1.0)
FLAME_SKIN = (0.50, 0.56, 0.48, 1.0)
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


def character_mesh(head, offset: float = OFFSET, name: str = "ARKit character"):
    """The character's mesh object: the built-in head's shape `offset` metres along the subject's left, its shape
    keys spelled another way."""
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
    obj.location = tuple(flame_to_blender(pivot + np.array([offset, 0.0, 0.0])))
    obj.shape_key_add(name="Basis", from_mix=False)
    for key, offset in offsets.items():
        block = obj.shape_key_add(name=key, from_mix=False)
        block.data.foreach_set("co", flame_to_blender(rest - pivot + offset).astype(np.float32).ravel())
    obj.shape_key_add(name="Wink", from_mix=False)   # not an ARKit name: left alone
    tint_skin(obj, CHARACTER_SKIN)
    return obj


def tint_skin(mesh_object, color) -> None:
    """Give the mesh's skin material `color`, to tell the heads apart."""
    for material in mesh_object.data.materials:
        if material.name.endswith(" skin"):
            material.diffuse_color = color


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


def quantile_frames(distance_mm: np.ndarray) -> tuple[list[int], list[str]]:
    """The two-head figure's frames: the take's most closed lips, its median and 80th-percentile lip distance and
    its most open, captioned with their time."""
    order = np.argsort(distance_mm)
    picks = sorted({int(order[round(q * (len(order) - 1))]) for q in (0.0, 0.5, 0.8, 1.0)})
    return picks, [f"{k / FPS:.2f} s" for k in picks]


def phone_frames() -> tuple[list[int], list[str]]:
    """The three-head figure's frames: the middle of the longest /p b m/ away from pauses, of the longest open
    vowel of a content word and of the longest pause, captioned with their time, phone and word."""
    from training.corpus.align import SILENCE, align

    words, phones = align(load_audio(EXAMPLE), EXAMPLE.with_suffix(".txt").read_text())
    chosen = [pick_segments(phones, words, BILABIALS, 1, avoid_pauses=True)[0],
              pick_segments(phones, words, OPEN_VOWELS, 1, avoid_pauses=False, skip_words=FUNCTION_WORDS)[0],
              pick_segments(phones, words, {SILENCE}, 1, avoid_pauses=False)[0]]
    picks, captions = [], []
    for seg in chosen:
        index = int(round(0.5 * (seg.start + seg.end) * FPS))      # the take's frame at the segment's middle
        picks.append(index)
        said = "rest (pause)" if seg.label == SILENCE else f"{seg.label} ({word_at(words, index / FPS)})"
        captions.append(f"{index / FPS:.2f} s  {said}")
    return picks, captions


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="default docs/character_take_frames.png, with --flame "
                        "docs/three_heads_take_frames.png")
    parser.add_argument("--flame", choices=sorted(TEST_HEADS),
                        help="a FLAME-layout test head between the built-in head and the character")
    parser.add_argument("--columns", type=int, help="default 2, with --flame 1")
    parser.add_argument("--resolution", type=int,
                        help="the render's size before cropping; default 640, with --flame 1024")
    args = parser.parse_args(argv)
    out = args.out or REPO / "docs" / ("three_heads_take_frames.png" if args.flame else "character_take_frames.png")

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 2)))
    generator = Generator(device="cpu")
    head = generator.head
    take = generator.generate(EXAMPLE, seeds=[0], fps=FPS)[0]
    distances = {"built-in head": lip_distance(take_vertices(take, head), head.landmarks) * 1000.0}
    with tempfile.TemporaryDirectory(prefix="thunder-figure-") as tmp:
        if args.flame:   # the same take, retargeted: takes stay in the built-in head's parameters
            flame_head = load_head_for_takes(write_test_head(args.flame, Path(tmp))[0])
            distances["FLAME-layout head"] = lip_distance(take_vertices(take, flame_head),
                                                          flame_head.landmarks) * 1000.0
        picks, captions = (phone_frames() if args.flame else quantile_frames(distances["built-in head"]))
        frames = [FRAME_START + k for k in picks]

        path = save_take(Path(tmp) / take_file_name(EXAMPLE.stem, 1, 0), take)
        span = len(distances) * OFFSET   # from the built-in head to the character, the last of the row
        view = CameraView(target=(span / 2, -0.02, 0.02), distance=1.05 + 2.1 * (span - OFFSET),
                          azimuth=0.0, elevation=4.0)
        scene = build_take_scene(head, EXAMPLE, [path], FPS, name="Thunder head", view=view,
                                 resolution=args.resolution or (1024 if args.flame else 640))
        if args.flame:
            flame_object = scene.add_head(flame_head, "FLAME-layout head", offset=(OFFSET, 0.0, 0.0))
            for child in flame_object.children:
                tint_skin(child, FLAME_SKIN)
        from thunder_blender import character

        mesh = character_mesh(head, offset=span)
        missing = character.bind(mesh, scene.head, head_target="OBJECT", head_strength=1.0)
        angle, residual = character.calibrate_jaw(mesh)
        character.rekey(mesh)
        print(f"mapped {52 - len(missing)} of 52 ARKit names; jawOpen calibrated to {angle:.3f} rad "
              f"(a turn leaves {residual:.1%} unexplained)")
        gaps_mm = {name: [mm[k] for k in picks] for name, mm in distances.items()}   # per head, per frame
        gaps_mm["ARKit character"] = [character_lip_distance(mesh, frame, head.landmarks) for frame in frames]
        for n, (k, caption) in enumerate(zip(picks, captions)):
            gaps = [mm[n] for mm in gaps_mm.values()]
            captions[n] = f"{caption}  lips {' / '.join(f'{mm:.1f}' for mm in gaps)} mm"
            print(f"frame {FRAME_START + k:3d}: {caption:28s} lip distance "
                  + ", ".join(f"{mm:5.1f} mm on the {name}" for name, mm in zip(gaps_mm, gaps))
                  + f" (jaw {take.jaw[k, 0]:.3f} rad, the character's jawOpen "
                  f"{min(1.0, max(0.0, take.jaw[k, 0] / angle)):.2f})")
        crop = (0.33, 0.77, 0.0, 1.0) if args.flame else (0.25, 0.80, 0.0, 1.0)   # brows to neck; crown to neck
        out = scene.render_frames(frames, out, columns=args.columns or (1 if args.flame else 2), captions=captions,
                                  crop=crop, caption_size=0.09, caption_band=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
