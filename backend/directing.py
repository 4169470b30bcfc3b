"""Directing a take: resample a range of an old take, and constraints the sampler keeps (hold a pose, key an
expression at a frame). Pure functions from take frames and the head's names to what the sampler imposes
(`backend.take_sampling.KnownMotion`: a target and a weight per model frame and channel).

Frames here are a take's own: frame k is k / fps seconds into the take's audio range, 0 its first frame; a
range START:END holds frames START .. END - 1. The model samples at 25 fps, so every rule below says which
25 fps frames a take frame needs.

The channel groups (one place, `channel_groups`): lips = the mouth* and jaw* expressions and the jaw joint;
upper face = the brow*, eye*, cheek* and nose* expressions and the eyeballs (gaze); head = the neck joint.

Constraints, saved in a take's settings under "constraints" (docs/take_format.md) so Resample keeps them:

    {"kind": "hold", "pose": "mouth_closed" | "neutral" | "eyes_open", "start": F, "end": F}
    {"kind": "key", "name": "mouthSmileLeft", "value": 0.8, "frame": F}

A hold sets its pose's channels (POSES) to their rest value 0 over the frames; a key sets one expression
weight at one frame. Both are imposed exactly on the 25 fps frames their take frames are made from, and
with a weight that falls off over SOFT_EDGE_FRAMES model frames either side, so the take eases into and out
of them instead of jumping; the model, which sees the imposed values at every step, does the rest.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from backend.audio import MOTION_FPS
from backend.errors import ThunderError
from backend.motion import POSE_PARTS, motion_dim, part_slices


class DirectingError(ThunderError):
    """A range, part or constraint that cannot be honoured on this take or head."""


# The one grouping of a frame's channels into the parts an animator resamples alone.
GROUP_PREFIXES = {"lips": ("mouth", "jaw"), "upper": ("brow", "eye", "cheek", "nose"), "head": ()}
GROUP_POSE_PARTS = {"lips": ("jaw",), "upper": ("eyes",), "head": ("neck",)}
assert set(name for parts in GROUP_POSE_PARTS.values() for name in parts) == {name for name, _ in POSE_PARTS}

# The expression weights that part the lips (with the jaw): held at 0 they keep the mouth shut, while a
# smile, a press or a roll still may play.
MOUTH_OPENING = ("mouthClose", "mouthFunnel", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft",
                 "mouthUpperUpRight")
POSES = ("mouth_closed", "neutral", "eyes_open")
SOFT_EDGE_FRAMES = 4   # model frames (0.16 s) over which a constraint's weight falls from 1 to 0
RANGE_MARGIN = 25      # model frames (1 s) of the old take each side of a range that the sampler is shown


def channel_groups(expression_names) -> dict[str, np.ndarray]:
    """{"lips", "upper", "head"}: (D,) bool masks over a packed frame (backend/motion.py's layout)."""
    names = list(expression_names)
    slices = part_slices(len(names))
    groups = {}
    for group, prefixes in GROUP_PREFIXES.items():
        mask = np.zeros(motion_dim(len(names)), dtype=bool)
        mask[:len(names)] = [name.startswith(prefixes) for name in names] if prefixes else False
        for part in GROUP_POSE_PARTS[group]:
            mask[slices[part]] = True
        groups[group] = mask
    return groups


def pose_channels(pose: str, expression_names) -> np.ndarray:
    """(D,) bool: the channels a held pose sets to 0. DirectingError for a pose the head cannot hold."""
    names = list(expression_names)
    slices = part_slices(len(names))
    mask = np.zeros(motion_dim(len(names)), dtype=bool)
    if pose == "mouth_closed":
        mask[slices["jaw"]] = True
        mask[[names.index(n) for n in MOUTH_OPENING if n in names]] = True
    elif pose == "neutral":
        mask[slices["expression"]] = True
        mask[slices["jaw"]] = True
    elif pose == "eyes_open":
        blinks = [k for k, n in enumerate(names) if n.startswith("eyeBlink")]
        if not blinks:
            raise DirectingError("this head has no eyeBlink expressions, so it cannot hold its eyes open")
        mask[blinks] = True
    else:
        raise DirectingError(f"unknown pose '{pose}'; choose {', '.join(POSES)}")
    return mask


@dataclasses.dataclass(frozen=True)
class Constraint:
    """A hold (pose over frames start .. end - 1) or a key (expression `name` = `value` at `frame`)."""

    kind: str
    pose: str | None = None
    start: int | None = None
    end: int | None = None
    name: str | None = None
    value: float | None = None
    frame: int | None = None

    def to_json(self) -> dict:
        if self.kind == "hold":
            return {"kind": "hold", "pose": self.pose, "start": self.start, "end": self.end}
        return {"kind": "key", "name": self.name, "value": self.value, "frame": self.frame}

    def describe(self) -> str:
        if self.kind == "hold":
            return f"{self.pose} over frames {self.start}:{self.end}"
        return f"{self.name}={self.value:g} at frame {self.frame}"


def _whole(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise DirectingError(f"{what} must be a whole frame number, not {value!r}")
    return int(value)


def constraint_from_json(item) -> Constraint:
    """One constraint from its JSON object (the module docstring); DirectingError names what is wrong."""
    if not isinstance(item, dict) or item.get("kind") not in ("hold", "key"):
        raise DirectingError(f"a constraint must be an object with kind 'hold' or 'key', not {item!r}")
    fields = {"hold": {"kind", "pose", "start", "end"}, "key": {"kind", "name", "value", "frame"}}[item["kind"]]
    unknown = sorted(set(item) - fields)
    missing = sorted(fields - set(item))
    if unknown or missing:
        raise DirectingError(f"a {item['kind']} constraint has the fields {', '.join(sorted(fields))}"
                             + (f"; {', '.join(missing)} missing" if missing else "")
                             + (f"; {', '.join(unknown)} unknown" if unknown else ""))
    if item["kind"] == "hold":
        if item["pose"] not in POSES:
            raise DirectingError(f"unknown pose {item['pose']!r}; choose {', '.join(POSES)}")
        start, end = _whole(item["start"], "a hold's start"), _whole(item["end"], "a hold's end")
        if not 0 <= start < end:
            raise DirectingError(f"the hold {item['pose']} over frames {start}:{end} is empty or starts before "
                                 "frame 0")
        return Constraint("hold", pose=item["pose"], start=start, end=end)
    value = item["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not -1.0 <= value <= 1.0:
        raise DirectingError(f"the key {item['name']!r} must have a value from -1 to 1, not {value!r}")
    if not isinstance(item["name"], str):
        raise DirectingError(f"a key's name must be an expression name, not {item['name']!r}")
    frame = _whole(item["frame"], "a key's frame")
    if frame < 0:
        raise DirectingError(f"the key {item['name']} at frame {frame} is before frame 0")
    return Constraint("key", name=item["name"], value=float(value), frame=frame)


def constraints_from_json(items) -> list[Constraint]:
    if items is None:
        return []
    if not isinstance(items, (list, tuple)):
        raise DirectingError(f"constraints must be a list of objects, not {items!r}")
    return [constraint_from_json(item) for item in items]


def parse_hold(text: str, pose: str | None = None) -> Constraint:
    """`POSE:START:END` (or `START:END` with `pose` given), the command line's form of a hold."""
    pieces = text.split(":")
    if pose is not None:
        pieces = [pose] + pieces
    if len(pieces) != 3:
        raise DirectingError(f"a hold is POSE:START:END (for example mouth_closed:10:40), not {text!r}")
    try:
        start, end = int(pieces[1]), int(pieces[2])
    except ValueError:
        raise DirectingError(f"the hold {text!r} needs whole frame numbers START:END") from None
    return constraint_from_json({"kind": "hold", "pose": pieces[0], "start": start, "end": end})


def parse_key(text: str) -> Constraint:
    """`NAME=VALUE@FRAME`, the command line's form of a key (for example mouthSmileLeft=0.8@120)."""
    name, _, rest = text.partition("=")
    value, _, frame = rest.partition("@")
    try:
        value, frame = float(value), int(frame)
    except ValueError:
        raise DirectingError(f"a key is NAME=VALUE@FRAME (for example mouthSmileLeft=0.8@120), not {text!r}") \
            from None
    return constraint_from_json({"kind": "key", "name": name, "value": value, "frame": frame})


def parse_range(text: str) -> tuple[int, int]:
    """`START:END`, take frames START .. END - 1."""
    try:
        start, end = (int(piece) for piece in text.split(":"))
    except ValueError:
        raise DirectingError(f"a range is START:END in whole frames (for example 100:150), not {text!r}") from None
    return start, end


def check_constraints(constraints: list[Constraint], n_frames: int, expression_names) -> None:
    """Refuse, in one sentence, a constraint that reaches past the take or names an expression the head lacks."""
    names = list(expression_names)
    for c in constraints:
        last = c.end - 1 if c.kind == "hold" else c.frame
        if last >= n_frames:
            raise DirectingError(f"the constraint {c.describe()} reaches past the take's last frame "
                                 f"({n_frames - 1})")
        if c.kind == "key" and c.name not in names:
            raise DirectingError(f"the head has no expression named '{c.name}' (keyed at frame {c.frame})")
        if c.kind == "hold":
            pose_channels(c.pose, names)


def model_frames_of(start: int, end: int, fps: float) -> tuple[int, int]:
    """The 25 fps frames that take frames start .. end - 1 at `fps` are made from: first, last (inclusive)."""
    ratio = MOTION_FPS / fps
    return math.floor(round(start * ratio, 9)), math.ceil(round((end - 1) * ratio, 9))


def _soft_weight(n_frames: int, first: int, last: int) -> np.ndarray:
    """(T,) 1 on frames first..last, falling off as a raised cosine over SOFT_EDGE_FRAMES either side."""
    frames = np.arange(n_frames)
    distance = np.maximum(first - frames, frames - last).clip(min=0)
    weight = 0.5 * (1 + np.cos(np.pi * distance / (SOFT_EDGE_FRAMES + 1)))
    return np.where(distance <= SOFT_EDGE_FRAMES, weight, 0.0)


def constraint_targets(constraints: list[Constraint], expression_names, fps: float,
                       n_model_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(target, weight), each (T, D) at 25 fps in the head's own units: what the constraints impose. Later
    constraints win where two set one channel; the weight is the largest."""
    names = list(expression_names)
    dim = motion_dim(len(names))
    target = np.zeros((n_model_frames, dim), dtype=np.float32)
    weight = np.zeros((n_model_frames, dim), dtype=np.float32)
    for c in constraints:
        channels = np.zeros(dim, dtype=bool)
        if c.kind == "hold":
            channels, value = pose_channels(c.pose, names), 0.0
            first, last = model_frames_of(c.start, c.end, fps)
        else:
            channels[names.index(c.name)], value = True, c.value
            first, last = model_frames_of(c.frame, c.frame + 1, fps)
        w = _soft_weight(n_model_frames, first, last)[:, None] * channels[None]
        target = np.where(w > 0, value, target).astype(np.float32)
        weight = np.maximum(weight, w).astype(np.float32)
    return target, weight


@dataclasses.dataclass(frozen=True)
class RangePlan:
    """Where a range resample samples: model frames lo .. hi - 1 (the range and RANGE_MARGIN around it), of
    which `free` ((hi - lo,) bool) are between the kept take frames before and after the range."""

    start: int
    end: int
    lo: int
    hi: int
    free: np.ndarray


def plan_range(start: int, end: int, n_frames: int, fps: float, n_model_frames: int,
               margin: int | None = None) -> RangePlan:
    """Take frames start .. end - 1 of an n_frames take: the model frames strictly between the kept frames
    start - 1 and end are sampled anew, `margin` (default RANGE_MARGIN) model frames either side are shown as
    known."""
    margin = RANGE_MARGIN if margin is None else margin
    if isinstance(start, bool) or isinstance(end, bool) or not 0 <= start < end <= n_frames:
        raise DirectingError(f"the range {start}:{end} is not inside the take's frames 0:{n_frames} "
                             "(START:END holds frames START to END - 1)")
    ratio = MOTION_FPS / fps
    frames = np.arange(n_model_frames)
    after_kept = frames > (start - 1) * ratio + 1e-9 if start > 0 else np.ones(n_model_frames, dtype=bool)
    before_kept = frames < end * ratio - 1e-9 if end < n_frames else np.ones(n_model_frames, dtype=bool)
    free_frames = np.flatnonzero(after_kept & before_kept)
    if not free_frames.size:   # a range between two model frames (fps above 25): its nearest one
        free_frames = np.array([min(round(start * ratio), n_model_frames - 1)])
    lo = max(0, int(free_frames[0]) - margin)
    hi = min(n_model_frames, int(free_frames[-1]) + 1 + margin)
    free = np.zeros(hi - lo, dtype=bool)
    free[free_frames - lo] = True
    return RangePlan(start, end, lo, hi, free)


def range_known(plan: RangePlan, old_motion: np.ndarray, free_channels: np.ndarray,
                constraints: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(target, weight) over the plan's model frames: the old take (25 fps, packed, (T, D)) wherever it is
    kept (outside the free frames, and the channels not in `free_channels` inside them); the constraints'
    (target, weight) over the whole take at 25 fps, where free."""
    old = old_motion[plan.lo:plan.hi].astype(np.float32)
    free = (plan.free[:, None] & free_channels[None]).astype(np.float32)
    if constraints is None:
        return old, 1.0 - free
    c_target, c_weight = (a[plan.lo:plan.hi] for a in constraints)
    return (free * c_target + (1 - free) * old).astype(np.float32), (1 - free + free * c_weight).astype(np.float32)


def splice_range(old_parts: dict, new_parts: dict, plan: RangePlan, free_channels: np.ndarray) -> dict:
    """The old take's parts with take frames plan.start .. plan.end - 1 of the `free_channels` taken from
    `new_parts` ({name: (end - start, n)}): every other value is the old one, bit for bit."""
    out, column = {}, 0
    for name, old in old_parts.items():
        width = old.shape[1]
        mask = free_channels[column:column + width]
        column += width
        value = np.array(old, copy=True)
        value[plan.start:plan.end, mask] = np.asarray(new_parts[name])[:, mask].astype(old.dtype)
        out[name] = value
    return out


# Sampling settings added after takes were first written, with the value every take made before them had:
# such a take was guided (if at all) on every step and channel, and sampled down to the schedule's lowest
# noise level, whatever the model's defaults are now.
SETTINGS_BEFORE_THEY_WERE_RECORDED = {"guidance_max_noise": None, "guidance_channels": "all",
                                      "lowest_noise": None}


def split_take_settings(settings: dict) -> tuple[dict, list[Constraint]]:
    """A take's settings as (sampling settings, constraints): the record also holds the constraints and, for
    a range resample, where it came from, neither of which is a sampling setting. A setting the take does not
    record gets the value it was made with (SETTINGS_BEFORE_THEY_WERE_RECORDED)."""
    sampling = {k: v for k, v in settings.items() if k not in ("constraints", "resampled_from")}
    sampling = {**SETTINGS_BEFORE_THEY_WERE_RECORDED, **sampling}
    return sampling, constraints_from_json(settings.get("constraints"))
