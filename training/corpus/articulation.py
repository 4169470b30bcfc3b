"""The articulation model: timed phones to jaw and mouth motion on a head, with coarticulation.

1. Each phone has a viseme: targets for eight articulatory channels (jaw angle, bilabial closure, labiodental
   contact, pucker, funnel, spread, lower-lip drop) and how strongly it claims them (its dominance).
   Diphthongs are two half-segments with their own targets.
2. Coarticulation blends the targets with dominance functions in the manner of Cohen and Massaro (1993): a
   segment's dominance is its magnitude alpha inside the segment and falls off as exp(-(d / sigma)^2) with
   the distance d outside; each channel at time t is the dominance-weighted mean of all segments' targets.
   Bilabials and /f v/ claim their lip channels with a magnitude far above everything else, so the lips close
   whatever the neighbours do, while rounding and spreading spread widely (anticipatory rounding).
3. A clip's style scales jaw and lip-shape amplitudes (hypo- to hyper-articulation) and sets how much the
   lips press at a closure; closures themselves never weaken.
4. The channels become the head's own parameters, looked up by name: jaw pitch and ARKit components. The
   closure is made real on the head: `close_lips` measures the inner-lip gap of the posed head and solves
   for the mouthClose weight that leaves the wanted fraction of it (none at /p b m/).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from training.corpus.format import FPS, Segment

CHANNELS = ("jaw", "closure", "labiodental", "pucker", "funnel", "spread", "lower_down")
# How far a segment's dominance reaches beyond its edges (seconds): jaw, lip contact, lip shape.
# Contacts reach 10 ms: a bilabial's release is that quick, and with a wider reach the dominance of 40 kept the
# lips shut through the short vowel after /p b m/ or before /f v/ (a fifth of vowels under 60 ms never opened).
SIGMA = {"jaw": 0.07, "closure": 0.010, "labiodental": 0.010, "pucker": 0.10, "funnel": 0.10,
         "spread": 0.08, "lower_down": 0.07}
CONTACT_DOMINANCE = 40.0  # alpha of /p b m/ on closure and of /f v/ on labiodental contact
CONTACT_CHANNELS = ("closure", "labiodental")
CONTACT_SUBSTEPS = 5  # the contact channels are averaged over each frame's interval at this many instants


@dataclass(frozen=True)
class Viseme:
    """Targets (jaw in radians at strength 1, the others in [0, 1]) and dominance magnitudes."""

    jaw: float
    pucker: float = 0.0
    funnel: float = 0.0
    spread: float = 0.0
    lower_down: float = 0.0
    closure: float = 0.0
    labiodental: float = 0.0
    jaw_alpha: float = 1.0
    lip_alpha: float = 1.0


def _v(jaw, **kw):
    return Viseme(jaw, **kw)


# Vowels: the jaw opens with vowel height (open AA AE > mid EH AH AO > close IY IH UW UH).
VISEMES: dict[str, Viseme] = {
    "AA": _v(0.20, lower_down=0.35), "AE": _v(0.17, spread=0.35, lower_down=0.4),
    "AH": _v(0.13, lower_down=0.2), "AO": _v(0.16, funnel=0.45, pucker=0.15, lower_down=0.2),
    "EH": _v(0.12, spread=0.3, lower_down=0.2), "ER": _v(0.08, pucker=0.25, funnel=0.35),
    "IH": _v(0.07, spread=0.5), "IY": _v(0.05, spread=0.9), "UH": _v(0.07, pucker=0.45, funnel=0.35),
    "UW": _v(0.05, pucker=0.9, funnel=0.3),
    # Consonants: lips and jaw where they matter, weak claims where they do not (so neighbours show through).
    "P": _v(0.02, closure=1.0, jaw_alpha=0.7, lip_alpha=0.3), "B": _v(0.02, closure=1.0, jaw_alpha=0.7, lip_alpha=0.3),
    "M": _v(0.02, closure=1.0, jaw_alpha=0.7, lip_alpha=0.3),
    "F": _v(0.035, labiodental=1.0, jaw_alpha=0.8, lip_alpha=0.5),
    "V": _v(0.035, labiodental=1.0, jaw_alpha=0.8, lip_alpha=0.5),
    "W": _v(0.04, pucker=1.0, funnel=0.2, jaw_alpha=0.6, lip_alpha=3.0),
    "TH": _v(0.05, jaw_alpha=0.5, lip_alpha=0.2), "DH": _v(0.05, jaw_alpha=0.5, lip_alpha=0.2),
    "T": _v(0.05, jaw_alpha=0.4, lip_alpha=0.2), "D": _v(0.05, jaw_alpha=0.4, lip_alpha=0.2),
    "N": _v(0.05, jaw_alpha=0.4, lip_alpha=0.2), "L": _v(0.06, jaw_alpha=0.4, lip_alpha=0.2),
    "S": _v(0.03, spread=0.3, jaw_alpha=0.9, lip_alpha=0.4), "Z": _v(0.03, spread=0.3, jaw_alpha=0.9, lip_alpha=0.4),
    "SH": _v(0.04, funnel=0.6, pucker=0.3, jaw_alpha=0.8, lip_alpha=1.5),
    "ZH": _v(0.04, funnel=0.6, pucker=0.3, jaw_alpha=0.8, lip_alpha=1.5),
    "CH": _v(0.04, funnel=0.6, pucker=0.3, jaw_alpha=0.8, lip_alpha=1.5),
    "JH": _v(0.04, funnel=0.6, pucker=0.3, jaw_alpha=0.8, lip_alpha=1.5),
    "R": _v(0.06, pucker=0.3, funnel=0.3, jaw_alpha=0.4, lip_alpha=0.8),
    "Y": _v(0.04, spread=0.6, jaw_alpha=0.5, lip_alpha=0.8),
    "K": _v(0.06, jaw_alpha=0.3, lip_alpha=0.15), "G": _v(0.06, jaw_alpha=0.3, lip_alpha=0.15),
    "NG": _v(0.06, jaw_alpha=0.3, lip_alpha=0.15), "HH": _v(0.10, jaw_alpha=0.1, lip_alpha=0.1),
    # Silence: the mouth comes to rest, lips together.
    "SIL": _v(0.0, closure=0.9, jaw_alpha=0.6, lip_alpha=0.4),
}
# Diphthongs: (first half, second half).
DIPHTHONGS: dict[str, tuple[Viseme, Viseme]] = {
    "AW": (_v(0.19, lower_down=0.35), _v(0.07, pucker=0.6, funnel=0.3)),
    "AY": (_v(0.19, lower_down=0.35), _v(0.06, spread=0.6)),
    "OY": (_v(0.15, funnel=0.5, pucker=0.2), _v(0.06, spread=0.6)),
    "EY": (_v(0.12, spread=0.35, lower_down=0.2), _v(0.06, spread=0.7)),
    "OW": (_v(0.12, funnel=0.6, pucker=0.2), _v(0.06, pucker=0.75, funnel=0.3)),
}
BILABIAL = ("P", "B", "M")
LABIODENTAL = ("F", "V")


@dataclass(frozen=True)
class Style:
    """A clip's speaking style: jaw and lip-shape amplitude (1 = the table), coarticulation reach (1 = the
    table's sigmas), and how hard the lips press at a bilabial closure."""

    jaw: float = 1.0
    lips: float = 1.0
    reach: float = 1.0
    press: float = 0.3

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "Style":
        return cls(jaw=float(rng.uniform(0.7, 1.35)), lips=float(rng.uniform(0.6, 1.3)),
                   reach=float(rng.uniform(0.8, 1.3)), press=float(rng.uniform(0.1, 0.5)))


def _units(phones: list[Segment]) -> list[tuple[Viseme, float, float]]:
    """Phones to (viseme, start, end) units; diphthongs become two halves; unknown labels count as silence."""
    units = []
    for p in phones:
        label = p.label.upper()
        if label in DIPHTHONGS:
            mid = 0.5 * (p.start + p.end)
            first, second = DIPHTHONGS[label]
            units += [(first, p.start, mid), (second, mid, p.end)]
        else:
            units.append((VISEMES.get(label, VISEMES["SIL"]), p.start, p.end))
    return units


def _blend(units, t: np.ndarray, ch: str, style: Style) -> np.ndarray:
    """One channel at the times `t`: each unit's target weighted by its dominance (module docstring, 2)."""
    starts = np.array([u[1] for u in units])
    ends = np.array([u[2] for u in units])
    # Distance from each time to each unit's interval (0 inside it).
    d = np.maximum(0.0, np.maximum(starts[None, :] - t[:, None], t[:, None] - ends[None, :]))
    targets = np.array([getattr(u[0], ch) for u in units])
    if ch == "jaw":
        alpha = np.array([u[0].jaw_alpha for u in units])
    elif ch == "closure":
        # /p b m/ claim closure hard; silence holds lips together weakly; everything else opens them.
        alpha = np.array([CONTACT_DOMINANCE if u[0].closure >= 1.0 else u[0].lip_alpha if u[0].closure > 0
                          else 1.0 for u in units])
    elif ch == "labiodental":
        alpha = np.array([CONTACT_DOMINANCE if u[0].labiodental >= 1.0 else 1.0 for u in units])
    else:
        alpha = np.array([u[0].lip_alpha for u in units])
    sigma = SIGMA[ch] * (style.reach if ch not in CONTACT_CHANNELS else 1.0)
    dom = alpha[None, :] * np.exp(-((d / sigma) ** 2))
    return (dom * targets[None, :]).sum(1) / np.maximum(dom.sum(1), 1e-12)


def channel_tracks(phones: list[Segment], n_frames: int, style: Style = Style(), fps: float = FPS) -> dict:
    """The coarticulated channels (CHANNELS), each (n_frames,): at the frame times i / fps, and the contact
    channels as their mean over each frame's 1 / fps interval. A frame stands for that whole interval: sampled
    at one instant, a 40 ms vowel between /v/ and /m/ lands within a contact's reach and shows shut lips,
    while averaged it shows the lips parting between the two contacts (and a /p b m/ still closes fully)."""
    units = _units(phones)
    t = np.arange(n_frames) / fps
    within = (np.arange(CONTACT_SUBSTEPS) + 0.5) / CONTACT_SUBSTEPS - 0.5  # offsets in frames, centred
    t_fine = (np.arange(n_frames)[:, None] + within[None, :]).ravel() / fps
    tracks = {}
    for ch in CHANNELS:
        if ch in CONTACT_CHANNELS:
            tracks[ch] = _blend(units, t_fine, ch, style).reshape(n_frames, CONTACT_SUBSTEPS).mean(1)
        else:
            tracks[ch] = _blend(units, t, ch, style)
    tracks["jaw"] = tracks["jaw"] * style.jaw
    for ch in ("pucker", "funnel", "spread", "lower_down"):
        tracks[ch] = np.clip(tracks[ch] * style.lips, 0.0, 1.0)
    return tracks


class ExpressionMap:
    """Expression component names of a head -> indices; components the head lacks are skipped."""

    def __init__(self, names: list[str]):
        self.index = {n: i for i, n in enumerate(names)}
        self.width = len(names)

    def has(self, name: str) -> bool:
        return name in self.index

    def add(self, expression: np.ndarray, name: str, value) -> None:
        """Add `value` ((T,) or scalar) to the named component, and to Left/Right where the name is a pair."""
        for n in (name, name + "Left", name + "Right"):
            if n in self.index:
                expression[:, self.index[n]] += value


def mouth_parameters(tracks: dict, expr_map: ExpressionMap, style: Style) -> tuple[np.ndarray, np.ndarray]:
    """Channels to (expression (T, E), jaw (T, 3)) on the head; mouthClose is left to close_lips."""
    n = tracks["jaw"].size
    expression = np.zeros((n, expr_map.width), dtype=np.float64)
    expr_map.add(expression, "mouthPucker", tracks["pucker"])
    expr_map.add(expression, "mouthFunnel", tracks["funnel"])
    expr_map.add(expression, "mouthStretch", 0.45 * tracks["spread"])
    expr_map.add(expression, "mouthSmile", 0.12 * tracks["spread"])
    expr_map.add(expression, "mouthLowerDown", tracks["lower_down"])
    # /f v/: the lower lip rolls in and rises to the upper teeth.
    expr_map.add(expression, "mouthRollLower", 0.75 * tracks["labiodental"])
    expr_map.add(expression, "mouthUpperUp", 0.15 * tracks["labiodental"])
    # Bilabial closure: the lips press a little at the closure's core.
    expr_map.add(expression, "mouthPress", style.press * np.clip(tracks["closure"], 0, 1) ** 4)
    jaw = np.zeros((n, 3), dtype=np.float64)
    jaw[:, 0] = tracks["jaw"]
    return expression, jaw


def lip_contact(tracks: dict) -> np.ndarray:
    """How closed the lips should be, per frame, in [0, 1]: 1 at /p b m/, nearly so at /f v/."""
    return np.clip(np.maximum(tracks["closure"], 0.92 * tracks["labiodental"]), 0.0, 1.0)


@torch.no_grad()
def close_lips(head, expression: np.ndarray, jaw: np.ndarray, contact: np.ndarray,
               max_weight: float = 1.6) -> np.ndarray:
    """Set mouthClose per frame so that the inner-lip gap of the posed head is (1 - contact) times its gap
    without mouthClose. The gap is measured along the head's own vertical (no neck pose), signed so that lips
    pushed through each other count as negative. For a fixed pose a FLAME head's vertices are affine in the
    expression weights, so two measurements give the weight; a third step corrects what rounding leaves.
    Returns the expression with mouthClose set."""
    names = list(head.expression_names)
    if "mouthClose" not in names:
        return expression
    k = names.index("mouthClose")
    upper, lower = head.landmarks["upper_lip_center"], head.landmarks["lower_lip_center"]
    frames = np.nonzero(contact > 0.02)[0]
    out = expression.copy()
    out[:, k] = 0.0
    if frames.size == 0:
        return out
    base = torch.as_tensor(out[frames], dtype=torch.float32)
    jaw_t = torch.as_tensor(jaw[frames], dtype=torch.float32)

    def gap(weights):
        e = base.clone()
        e[:, k] = torch.as_tensor(weights, dtype=torch.float32)
        v = head(expression=e, jaw=jaw_t)
        return (v[:, upper, 1] - v[:, lower, 1]).double().numpy()

    open_gap = gap(np.zeros(frames.size))
    want = (1.0 - contact[frames]) * np.maximum(open_gap, 0.0)
    slope = gap(np.ones(frames.size)) - open_gap  # gap change per unit of mouthClose (negative)
    weight = np.clip((want - open_gap) / np.minimum(slope, -1e-6), 0.0, max_weight)
    weight = np.clip(weight + (want - gap(weight)) / np.minimum(slope, -1e-6), 0.0, max_weight)
    out[frames, k] = weight
    return out


def articulate(head, phones: list[Segment], n_frames: int, style: Style, expr_map: ExpressionMap | None = None,
               fps: float = FPS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Phones to (expression (T, E), jaw (T, 3), contact (T,)) for the head, before free motion and before the
    lips are closed (see close_lips, which runs after free motion is added)."""
    expr_map = expr_map or ExpressionMap(list(head.expression_names))
    tracks = channel_tracks(phones, n_frames, style, fps)
    expression, jaw = mouth_parameters(tracks, expr_map, style)
    return expression, jaw, lip_contact(tracks)
