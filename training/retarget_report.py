"""How well the retarget keeps what matters, on the FLAME-layout test heads (training/retarget_heads.py):

    python -m training.retarget_report            # prints the markdown table of docs/retarget.md

Per head:
- lip error (mm): training.metrics.lip_vertex_error of the retargeted components against what the built-in
  components are on that head (the test heads know it), each of the 39 components at weight 1 counting as one
  "frame" (the largest lip-vertex miss per component, averaged; and the worst component);
- blink error (mm): the same over the upper face, for eyeBlinkLeft and eyeBlinkRight;
- through a take: the shipped model's takes (seeds 0 and 1) for the example clip (backend/examples), each posed
  on the head. /p b m/ closure is training.metrics.bilabial_closure_rate (the lips close below 10% of the clip's
  95th-percentile opening), the /p b m/ gap the smallest lip distance in each /p b m/ segment (mean over
  segments, mm), the vowel opening the largest in each open-vowel segment (mean, mm). Phones come from the
  corpus's forced aligner on the clip and its transcript, as in docs/make_blender_figures.py.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from backend.audio_io import load_audio
from backend.generate import Generator
from backend.head import Head, load_head, load_head_for_takes
from backend.take_file import take_vertices
from training.metrics import (BILABIALS, OPEN_VOWELS, bilabial_closure_rate, lip_distance, lip_vertex_error,
                              segment_frames, segments_of)
from training.retarget_heads import TEST_HEADS, make_test_head

EXAMPLE = Path(__file__).resolve().parents[1] / "backend" / "examples" / "thunder_example.wav"
SEEDS = (0, 1)
BLINKS = ("eyeBlinkLeft", "eyeBlinkRight")


def component_errors(basis: np.ndarray, truth: np.ndarray, indices) -> tuple[float, float]:
    """(mean, worst) over components of the largest miss (mm) at `indices` between expression components
    `basis` (V, 3, K) and `truth` (V, 3, K)."""
    got = np.moveaxis(np.asarray(basis, np.float64), 2, 0)
    want = np.moveaxis(np.asarray(truth, np.float64), 2, 0)
    per_component = [lip_vertex_error(got[k:k + 1], want[k:k + 1], indices) for k in range(len(got))]
    return float(np.mean(per_component)), float(np.max(per_component))


def lip_figures(distance: np.ndarray, phones, fps: float) -> dict:
    """Closure rate, mean /p b m/ gap (mm) and mean open-vowel opening (mm) of a lip-distance curve (metres)."""
    gaps = [distance[segment_frames(s, e, len(distance), fps)].min() for s, e in segments_of(phones, BILABIALS)]
    opens = [distance[segment_frames(s, e, len(distance), fps)].max() for s, e in segments_of(phones, OPEN_VOWELS)]
    return {"closure": bilabial_closure_rate(distance, phones, fps), "gap_mm": 1000.0 * float(np.mean(gaps)),
            "open_mm": 1000.0 * float(np.mean(opens))}


def write_test_head(name: str, folder: Path) -> tuple[Path, dict]:
    """The test head `name` as a FLAME .npz conversion in `folder`, and its truth."""
    model, truth = make_test_head(name)
    path = folder / f"{name}.npz"
    np.savez(path, **model)
    return path, truth


def report_rows() -> list[dict]:
    """One row per head: the built-in head (the reference), then each FLAME-layout test head retargeted."""
    from training.corpus.align import align

    generator = Generator(device="cpu")
    takes = generator.generate(EXAMPLE, seeds=list(SEEDS))
    _, phones = align(load_audio(EXAMPLE), EXAMPLE.with_suffix(".txt").read_text())

    def through_takes(head: Head) -> dict:
        figures = [lip_figures(lip_distance(take_vertices(take, head), head.landmarks), phones, take.fps)
                   for take in takes]
        return {key: float(np.mean([f[key] for f in figures])) for key in figures[0]}

    builtin = load_head("builtin")
    rows = [{"head": "built-in (reference)", "vertices": builtin.n_vertices, "flame_components": "-",
             "lip_mean_mm": 0.0, "lip_worst_mm": 0.0, "blink_mm": 0.0, **through_takes(builtin)}]
    with tempfile.TemporaryDirectory() as folder:
        for name, (_, n_expr, n_noise) in TEST_HEADS.items():
            path, truth = write_test_head(name, Path(folder))
            head = load_head_for_takes(path)
            basis, blinks = head.data.exprdirs, [head.expression_names.index(b) for b in BLINKS]
            rows.append({"head": name, "vertices": head.n_vertices, "flame_components": f"{n_expr} ({n_noise} noise)",
                         **dict(zip(("lip_mean_mm", "lip_worst_mm"),
                                    component_errors(basis, truth["arkit"], head.vertex_sets["lips"]))),
                         "blink_mm": component_errors(basis[:, :, blinks], truth["arkit"][:, :, blinks],
                                                      head.vertex_sets["upper_face"])[1],
                         **through_takes(head)})
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = ["| head | vertices | FLAME expression components | lip error, mean (mm) | lip error, worst component (mm) "
             "| blink error (mm) | /p b m/ closure | /p b m/ gap (mm) | open-vowel opening (mm) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['head']} | {r['vertices']} | {r['flame_components']} | {r['lip_mean_mm']:.2f} | "
                     f"{r['lip_worst_mm']:.2f} | {r['blink_mm']:.2f} | {r['closure']:.2f} | {r['gap_mm']:.2f} | "
                     f"{r['open_mm']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    print(markdown_table(report_rows()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
