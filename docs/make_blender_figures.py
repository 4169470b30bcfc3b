"""Render docs/blender_take_frames.png: `thunder demo`'s scene on the example clip, at the frames where the lips
must close (/p b m/) and where the jaw must drop (open vowels), captioned with time, phone and word.

    python docs/make_blender_figures.py [--out docs/blender_take_frames.png] [--columns 5] [--crop mouth|face]
    python docs/make_blender_figures.py --head flame2023-open-layout --out docs/retarget_take_frames.png
    python docs/make_blender_figures.py --audio ../shared/real-speech/198-209-0000.ogg \
        --out docs/real_speech_take_frames.png        # a real recording; its transcript beside it (.txt)

--head renders the same takes at the same frames on one of the retarget's FLAME-layout test heads
(training/retarget_heads.py), retargeted as a user's FLAME file is (backend.head.load_head_for_takes).

The takes come from the shipped model (two takes, seeds 0 and 1, 25 fps: what the demo makes), the scene from
backend/blender/scene.py (the add-on's rigged head with the takes keyed, the camera and render settings of the
preview video), so the images are frames of the preview video. The phones come from the pocketsphinx forced
aligner of the corpus (training/corpus/align.py) on the clip and its transcript (backend/examples/*.txt).

The frames: in the top row the longest /p b m/ segments that do not touch a pause (a lip closure at a pause
proves nothing), in the bottom row the longest open vowels (AA AE AO AW AY AH) of content words (function
words such as "and", "of" and "a" are reduced in running speech: "and my" is said "an' my", "am my"); each
at its segment's middle frame, not at the frame that looks best. The lip distance at each frame is printed beside it. Needs bpy,
torch and pocketsphinx (the `train` extra).
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

from backend.audio_io import load_audio  # noqa: E402
from backend.blender.scene import FRAME_START, build_take_scene  # noqa: E402
from backend.generate import Generator  # noqa: E402
from backend.take_file import save_take, take_file_name, take_vertices  # noqa: E402
from training.corpus.align import SILENCE, align  # noqa: E402
from training.metrics import BILABIALS, lip_distance  # noqa: E402
from training.retarget_heads import TEST_HEADS  # noqa: E402
from training.retarget_report import write_test_head  # noqa: E402

EXAMPLE = REPO / "backend" / "examples" / "thunder_example.wav"
OPEN_VOWELS = ("AA", "AE", "AO", "AW", "AY", "AH")
FUNCTION_WORDS = {"a", "an", "and", "the", "of", "for", "to", "us", "at", "as", "but", "or"}
FPS = 25.0
SEEDS = (0, 1)
# Fractions of the image kept (top, bottom, left, right) around the mouth's position in the image.
CROPS = {"mouth": (0.15, 0.17, 0.17), "face": (0.36, 0.30, 0.36)}   # above, below, half width


def word_at(words, t: float) -> str:
    return next((w.label for w in words if w.start <= t < w.end), "")


def pick_segments(phones, words, labels, count: int, avoid_pauses: bool, skip_words=frozenset()):
    """The `count` longest segments with a label in `labels`, in time order; with `avoid_pauses`, none next
    to a silence; none in the words `skip_words`."""
    chosen = []
    for k, seg in enumerate(phones):
        if seg.label not in labels or word_at(words, 0.5 * (seg.start + seg.end)) in skip_words:
            continue
        neighbours = [phones[j].label for j in (k - 1, k + 1) if 0 <= j < len(phones)]
        if avoid_pauses and SILENCE in neighbours:
            continue
        chosen.append(seg)
    chosen = sorted(chosen, key=lambda s: s.end - s.start, reverse=True)[:count]
    return sorted(chosen, key=lambda s: s.start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "blender_take_frames.png")
    parser.add_argument("--columns", type=int, default=5)
    parser.add_argument("--crop", choices=sorted(CROPS), default="mouth")
    parser.add_argument("--resolution", type=int, default=1024, help="the render's size before cropping")
    parser.add_argument("--head", choices=sorted(TEST_HEADS), help="a FLAME-layout test head instead of the built-in")
    parser.add_argument("--audio", type=Path, default=EXAMPLE,
                        help="the speech (default the example clip); its transcript is the .txt beside it")
    args = parser.parse_args(argv)
    audio = args.audio

    import torch

    torch.set_num_threads(2)
    head_folder = tempfile.TemporaryDirectory(prefix="thunder-figure-head-")
    head_spec = write_test_head(args.head, Path(head_folder.name))[0] if args.head else "builtin"
    generator = Generator(head=head_spec, device="cpu")
    head = generator.head
    takes = generator.generate(audio, seeds=list(SEEDS), fps=FPS)
    words, phones = align(load_audio(audio), audio.with_suffix(".txt").read_text())
    distance_mm = lip_distance(take_vertices(takes[0], head), head.landmarks) * 1000.0

    rows = [("closed", pick_segments(phones, words, BILABIALS, args.columns, avoid_pauses=True)),
            ("open", pick_segments(phones, words, OPEN_VOWELS, args.columns, avoid_pauses=False,
                                   skip_words=FUNCTION_WORDS))]
    frames, captions = [], []
    for kind, segments in rows:
        for seg in segments:
            index = int(round(0.5 * (seg.start + seg.end) * FPS))      # the take's frame at the phone's middle
            frames.append(FRAME_START + index)
            captions.append(f"{index / FPS:.2f} s  {seg.label}  ({word_at(words, index / FPS)})")
            print(f"{kind:6s} frame {FRAME_START + index:3d}  {captions[-1]:28s} lip distance "
                  f"{distance_mm[index]:5.1f} mm (segment {seg.start:.2f}-{seg.end:.2f} s)")

    with tempfile.TemporaryDirectory(prefix="thunder-figure-") as tmp:
        paths = [save_take(Path(tmp) / take_file_name(audio.stem, k + 1, seed), take)
                 for k, (seed, take) in enumerate(zip(SEEDS, takes))]
        scene = build_take_scene(head, audio, paths, FPS, name=f"{audio.stem} head",
                                 resolution=args.resolution)
        mouth = head.data.v_template[[head.landmarks["upper_lip_center"], head.landmarks["lower_lip_center"]]]
        row, column = scene.image_position(mouth.mean(axis=0))
        above, below, half = CROPS[args.crop]
        crop = (max(row - above, 0.0), min(row + below, 1.0), max(column - half, 0.0), min(column + half, 1.0))
        out = scene.render_frames(frames, args.out, columns=args.columns, captions=captions, crop=crop,
                                  caption_size=0.07, caption_band=True)
    head_folder.cleanup()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
