"""The classic lip-sync baseline: timed phones -> visemes -> smoothed mouth motion, as Papagayo or Rhubarb do.

It is what Thunder's learned models are compared against, so it is deliberately simple and independent of
the corpus's articulation model (which generates the synthetic ground truth; reusing it would make the
baseline an oracle). Its steps:

1. Each CMU phone (stress digits dropped) maps to one of nine viseme classes in the style of Preston Blair's
   mouth chart (closed M B P, lip-to-teeth F V, rounded U/W, open-rounded O, wide E, open A, ...); silence
   maps to the rest pose. A viseme is a jaw opening (rotation about +x, radians) plus a few ARKit
   expression weights, looked up by name in the head's expression_names.
2. The phones are quantized to frames like a frame-based tool: a phone holds the frames whose time i / fps
   lies in [start, end); a phone too short to hold one gets the frame nearest its middle, so every phone
   shows for at least a frame (a later phone wins a frame two phones claim). Frames outside all phones
   are at rest.
3. The piecewise-constant targets are smoothed over time with a Gaussian (sigma SMOOTHING_FRAMES), which
   stands in for the tween between mouth shapes.
4. Contact visemes (M B P: lips shut; F V: lower lip on the teeth) are held for their phones' frames, as an
   animator or a classic tool keys them: smoothing blends into and out of them but does not open them.
   Without the hold a 3-frame /m/ between two open vowels would keep the lips ~4 mm apart.

The output matches the corpus's motion layout (training/corpus/format.py): expression (T, E), jaw (T, 3),
neck (T, 3) and eyes (T, 6), float32; neck and eyes stay zero (the baseline moves only the mouth).
"""

from __future__ import annotations

import numpy as np

from backend.errors import ThunderError
from training.metrics import phone_segment, segment_frames

SMOOTHING_FRAMES = 1.5
SILENCE = ("SIL", "SP", "SPN", "NSN", "")


class BaselineError(ThunderError):
    """The baseline cannot animate this input: the head lacks a needed expression or a phone is unknown."""


# name: (phones, jaw opening in radians, {ARKit expression: weight}, held for the phone's duration).
# Jaw angles are modest: on the built-in head 0.14 rad already parts the lips by ~15 mm.
VISEMES = {
    "MBP": (("M", "B", "P"), 0.0, {"mouthPressLeft": 0.35, "mouthPressRight": 0.35}, True),
    "FV": (("F", "V"), 0.03, {"mouthRollLower": 0.6, "mouthUpperUpLeft": 0.25, "mouthUpperUpRight": 0.25},
           True),
    "TH_L": (("TH", "DH", "L"), 0.05, {"mouthStretchLeft": 0.1, "mouthStretchRight": 0.1}, False),
    "ETC": (("T", "D", "N", "S", "Z", "K", "G", "NG", "HH"), 0.04,
            {"mouthStretchLeft": 0.15, "mouthStretchRight": 0.15}, False),
    "CH_SH": (("CH", "JH", "SH", "ZH"), 0.04, {"mouthFunnel": 0.5, "mouthPucker": 0.2}, False),
    "U_W": (("UW", "UH", "W", "R", "ER"), 0.04, {"mouthPucker": 0.75}, False),
    "O": (("AO", "OW", "OY"), 0.11, {"mouthFunnel": 0.6, "mouthPucker": 0.15}, False),
    "E": (("IY", "IH", "EY", "EH", "Y"), 0.07,
          {"mouthStretchLeft": 0.35, "mouthStretchRight": 0.35, "mouthSmileLeft": 0.3, "mouthSmileRight": 0.3},
          False),
    "A": (("AA", "AE", "AH", "AW", "AY"), 0.14, {"mouthStretchLeft": 0.1, "mouthStretchRight": 0.1}, False),
}
PHONE_VISEME = {phone: name for name, (phones, *_rest) in VISEMES.items() for phone in phones}


def phone_viseme(label: str) -> str | None:
    """The viseme class of a phone label (CMU ARPAbet, any case, stress digits allowed); None for silence
    (SIL, SP, pocketsphinx's +SPN+ / +NSN+ fillers)."""
    phone = label.strip().strip("+").rstrip("012").upper()
    if phone in SILENCE:
        return None
    if phone not in PHONE_VISEME:
        raise BaselineError(f"the viseme baseline does not know the phone {label!r}; give CMU ARPAbet phones "
                            "or SIL for silence")
    return PHONE_VISEME[phone]


def viseme_poses(expression_names) -> dict[str, tuple[float, np.ndarray]]:
    """{viseme: (jaw angle, (E,) expression weights)} for a head with these expression names."""
    needed = sorted({name for _p, _j, weights, _h in VISEMES.values() for name in weights})
    missing = [name for name in needed if name not in expression_names]
    if missing:
        raise BaselineError(f"the head lacks the ARKit expression components {', '.join(missing)} that the "
                            "viseme baseline poses the mouth with")
    index = {name: i for i, name in enumerate(expression_names)}
    poses = {}
    for viseme, (_phones, jaw, weights, _held) in VISEMES.items():
        expression = np.zeros(len(expression_names))
        for name, weight in weights.items():
            expression[index[name]] = weight
        poses[viseme] = (jaw, expression)
    return poses


def gaussian_smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Smooth (T, ...) along time with a normalized Gaussian of `sigma` frames, repeating the edge frames
    (so a clip that starts or ends at rest stays at rest there)."""
    if sigma <= 0 or len(x) == 0:
        return x.copy()
    radius = int(np.ceil(3.0 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.concatenate([np.repeat(x[:1], radius, 0), x, np.repeat(x[-1:], radius, 0)])
    return sum(w * padded[k: k + len(x)] for k, w in enumerate(kernel))


def baseline_motion(phones, n_frames: int, head, fps: float = 25.0,
                    sigma_frames: float = SMOOTHING_FRAMES) -> dict[str, np.ndarray]:
    """Motion for a clip from its timed phones ((label, start, end) in seconds, or Segment objects).

    Returns {"expression": (T, E), "jaw": (T, 3), "neck": (T, 3), "eyes": (T, 6)} float32 arrays for
    `head` (only its expression_names and n_expression are used)."""
    names = list(head.expression_names)
    poses = viseme_poses(names)
    viseme_of_frame: list[str | None] = [None] * n_frames  # None: rest
    for seg in phones:
        label, start, end = phone_segment(seg)
        viseme = phone_viseme(label)
        for frame in segment_frames(start, end, n_frames, fps, outside_clip="none").tolist():
            viseme_of_frame[frame] = viseme

    jaw = np.zeros(n_frames)
    expression = np.zeros((n_frames, len(names)))
    for frame, viseme in enumerate(viseme_of_frame):
        if viseme is not None:
            jaw[frame], expression[frame] = poses[viseme]
    track = gaussian_smooth(np.concatenate([jaw[:, None], expression], axis=1), sigma_frames)
    for frame, viseme in enumerate(viseme_of_frame):
        if viseme is not None and VISEMES[viseme][3]:  # contact visemes are held, not smoothed away
            track[frame] = np.concatenate([[poses[viseme][0]], poses[viseme][1]])
    jaw, expression = track[:, 0], track[:, 1:]

    jaw3 = np.zeros((n_frames, 3))
    jaw3[:, 0] = jaw
    return {"expression": expression.astype(np.float32), "jaw": jaw3.astype(np.float32),
            "neck": np.zeros((n_frames, 3), np.float32), "eyes": np.zeros((n_frames, 6), np.float32)}
