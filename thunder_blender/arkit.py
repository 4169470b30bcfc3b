"""A take as Apple ARKit's 52 face weights, in numpy alone (no bpy): the rule the add-on drives ARKit characters
with and the backend writes Live Link CSVs with (backend/arkit_export.py loads this file and rig_math.py from
the add-on's folder, as backend/take_file.py loads take_file.py: one rule, two sides).

    mapping = match_shape_keys(shape_key_names)          # {ARKit name: shape key}, forgiving names
    weights = arkit_weights(take_parts, expression_names)   # (T, 52) in ARKIT_NAMES order, each in [0, 1]
    angles = head_eye_angles(take_parts)                 # (T, 9) head, left eye, right eye: yaw, pitch, roll
    text = live_link_csv(weights, angles, fps, start)    # the Live Link Face app's CSV layout
    data = arkit_json(weights, angles, fps, start)       # the same for scripts

A take is in the built-in head's parameters: 39 ARKit-named expression components (their weights are the
ARKit weights, clipped to ARKit's [0, 1]), the jaw's rotation, the neck's and the eyes' (axis-angle in FLAME's
frame: x to the subject's left, y up, z forward). The 13 other ARKit weights come from rotations:

- jawOpen = jaw pitch / `jaw_open_angle`. The default, 0.30 rad, is the built-in head's own jawOpen = 1: its
  mouthClose component is built to close the lips of a jaw opened by exactly that angle
  (backend/builtin_head/build.py, JAW_OPEN_REFERENCE), as ARKit's mouthClose works against jawOpen. A
  character whose jawOpen shape opens more or less is calibrated by measuring its own angle
  (`jaw_open_angle_of_shape`), so that its jaw reaches the built-in head's opening.
- jawLeft / jawRight = jaw yaw / `jaw_side_angle` (0.10 rad: the largest sideways excursion of a human jaw is
  about 10 mm at the incisors, about 100 mm from the joint). jawForward and tongueOut: a take has neither (0).
- eyeLook{Up,Down,In,Out}{Left,Right} from each eye's gaze direction. ARKit documents no angles; 1 is taken at
  30 deg sideways, 25 deg up and 30 deg down: the range people turn their eyes in before they turn the head
  (gaze further out comes with a head turn, so a tracked face seldom holds more). The built-in head's takes
  keep well inside it (a few degrees to about 15).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass

import numpy as np

from .errors import ThunderError
from .rig_math import axis_angle_to_matrix

# The 52 names in the column order of the Live Link Face app's CSV (Epic's iOS app; PascalCase there). Order
# and spelling as in the Blender add-on built on PyLiveLinkFace (livelinkface/bpylivelinkface.py,
# LIVE_LINK_FACE_HEADER, which reads the app's CSVs) and in a test of another CSV writer that quotes "a real
# LiveLinkFace capture's own header row" byte for byte (pipeline/helpers, test of livelink_csv.py): both in the
# code corpus. Note JawRight before JawLeft and MouthRight before MouthLeft: the app's order, not ARKit's enum
# order. That capture spells the second column "BlendshapeCount"; PyLiveLinkFace's header and the importers'
# docs "BlendShapeCount", which is what we write (the readers found take the columns by position or ignore case).
LIVE_LINK_NAMES = (
    "EyeBlinkLeft", "EyeLookDownLeft", "EyeLookInLeft", "EyeLookOutLeft", "EyeLookUpLeft", "EyeSquintLeft",
    "EyeWideLeft", "EyeBlinkRight", "EyeLookDownRight", "EyeLookInRight", "EyeLookOutRight", "EyeLookUpRight",
    "EyeSquintRight", "EyeWideRight", "JawForward", "JawRight", "JawLeft", "JawOpen", "MouthClose", "MouthFunnel",
    "MouthPucker", "MouthRight", "MouthLeft", "MouthSmileLeft", "MouthSmileRight", "MouthFrownLeft",
    "MouthFrownRight", "MouthDimpleLeft", "MouthDimpleRight", "MouthStretchLeft", "MouthStretchRight",
    "MouthRollLower", "MouthRollUpper", "MouthShrugLower", "MouthShrugUpper", "MouthPressLeft", "MouthPressRight",
    "MouthLowerDownLeft", "MouthLowerDownRight", "MouthUpperUpLeft", "MouthUpperUpRight", "BrowDownLeft",
    "BrowDownRight", "BrowInnerUp", "BrowOuterUpLeft", "BrowOuterUpRight", "CheekPuff", "CheekSquintLeft",
    "CheekSquintRight", "NoseSneerLeft", "NoseSneerRight", "TongueOut")
# ARKit's own spelling (ARFaceAnchor.BlendShapeLocation: camelCase), in the same order.
ARKIT_NAMES = tuple(name[0].lower() + name[1:] for name in LIVE_LINK_NAMES)
# The app's nine rotation columns after the 52 weights. Written in radians (see head_eye_angles).
HEAD_EYE_COLUMNS = ("HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll",
                    "RightEyeYaw", "RightEyePitch", "RightEyeRoll")
CSV_HEADER = ("Timecode", "BlendShapeCount", *LIVE_LINK_NAMES, *HEAD_EYE_COLUMNS)
# The app writes 61 in BlendShapeCount: the 52 weights and the 9 rotations.
BLENDSHAPE_COUNT = len(LIVE_LINK_NAMES) + len(HEAD_EYE_COLUMNS)
JSON_FORMAT, JSON_VERSION = "thunder-arkit", 1
MAPPING_FORMAT, MAPPING_VERSION = "thunder-arkit-mapping", 1

# The weights a take does not hold as expression components, from its rotations.
FROM_ROTATIONS = ("jawOpen", "jawLeft", "jawRight", "jawForward", "tongueOut",
                  *(f"eyeLook{way}{side}" for side in ("Left", "Right") for way in ("Up", "Down", "In", "Out")))


class ArkitError(ThunderError):
    """A take, mapping or file that cannot become ARKit weights; one sentence."""


@dataclass(frozen=True)
class ArkitCalibration:
    """The rotations (radians) that make an ARKit weight 1; the module's docstring says why these."""

    jaw_open_angle: float = 0.30
    jaw_side_angle: float = 0.10
    eye_side_angle: float = math.radians(30.0)
    eye_up_angle: float = math.radians(25.0)
    eye_down_angle: float = math.radians(30.0)

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 1e-4):
                raise ArkitError(f"the ARKit calibration's {name} must be a positive angle in radians, not {value!r}")


# ---------------------------------------------------------------------------------------------- names
# Words that name a rig or a set rather than a shape: dropped from the front of a shape key's name.
_PREFIX_WORDS = {"arkit", "blendshape", "blendshapes", "bs", "shape", "shapes", "shapekey", "morph", "morphs",
                 "facs", "face", "facial", "ft", "vrc", "cc", "mh"}
_SIDES = {"l": "left", "left": "left", "r": "right", "right": "right"}
_ARKIT_KEYS = {name.lower(): name for name in ARKIT_NAMES}


def _words(text: str) -> list[str]:
    """Lower-case words of a name: split at separators, between camelCase humps and at digit runs."""
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", text)
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", text)
    return [word.lower() for word in re.split(r"[^A-Za-z0-9]+", text) if word]


def arkit_name(shape_key: str) -> str | None:
    """The ARKit name `shape_key` spells, forgiving case, separators, namespaces, prefixes and the spelling of
    sides, or None: 'BrowInnerUp', 'brow_inner_up', 'A01_Brow_Inner_Up', 'blendShape1.browInnerUp' and
    'Face:eyeBlink_L' all name browInnerUp (and eyeBlinkLeft). Sides are the character's own, as ARKit's."""
    # A namespace ("blendShape1.", "Face:", "Mesh|") ends at the last separator that is followed by letters.
    parts = [part for part in re.split(r"[.:|/]", shape_key) if re.search(r"[A-Za-z]", part)]
    if not parts:
        return None
    words = _words(re.sub(r"^arkit[^A-Za-z0-9]*", "", parts[-1], flags=re.IGNORECASE))   # "ARKit" splits oddly
    while len(words) > 1 and (words[0] in _PREFIX_WORDS or re.fullmatch(r"[a-z]?\d+[a-z]?", words[0])):
        words = words[1:]
    words = [word for word in words if not word.isdigit()]
    if len(words) > 1 and words[0] in _SIDES:          # "L_eyeBlink", "Left eyeBlink"
        words = words[1:] + [words[0]]
    if words and words[-1] in _SIDES:
        words[-1] = _SIDES[words[-1]]
    return _ARKIT_KEYS.get("".join(words))


def match_shape_keys(shape_keys) -> dict[str, str]:
    """{ARKit name: shape key} for the shape keys (names, in the mesh's order) that spell an ARKit name. Where
    several spell the same one, the exact spelling wins, then the first."""
    found: dict[str, str] = {}
    for key in shape_keys:
        name = arkit_name(key)
        if name is not None and (name not in found or key == name and found[name] != name):
            found[name] = key
    return {name: found[name] for name in ARKIT_NAMES if name in found}


def check_mapping(mapping: dict, shape_keys=None) -> dict[str, str]:
    """`mapping` as {ARKit name: shape key}, or ArkitError naming what is wrong: a name ARKit does not have, a
    shape key that is not text, one shape key for two ARKit names, or (with `shape_keys`) a shape key the mesh
    does not have."""
    if not isinstance(mapping, dict):
        raise ArkitError("an ARKit mapping must be a JSON object of ARKit name to shape key")
    unknown = [name for name in mapping if name not in ARKIT_NAMES]
    if unknown:
        raise ArkitError(f"{unknown[0]!r} is not one of ARKit's 52 names (the mapping's keys are ARKit names, "
                         "such as 'jawOpen')")
    bad = [name for name, key in mapping.items() if not isinstance(key, str) or not key]
    if bad:
        raise ArkitError(f"the mapping's shape key for {bad[0]} must be a name, not {mapping[bad[0]]!r}")
    users: dict[str, str] = {}
    for name, key in mapping.items():
        if key in users:
            raise ArkitError(f"the shape key {key!r} is mapped to both {users[key]} and {name}; give each ARKit "
                             "name its own shape key")
        users[key] = name
    if shape_keys is not None:
        absent = [key for key in mapping.values() if key not in set(shape_keys)]
        if absent:
            raise ArkitError(f"the mesh has no shape key {absent[0]!r}"
                             + (f" (nor {len(absent) - 1} more of the mapping)" if len(absent) > 1 else ""))
    return {name: mapping[name] for name in ARKIT_NAMES if name in mapping}


def mapping_json(mapping: dict) -> str:
    return json.dumps({"format": MAPPING_FORMAT, "version": MAPPING_VERSION, "mapping": check_mapping(mapping)},
                      indent=2) + "\n"


def read_mapping_json(text: str, where: str = "the mapping file") -> dict[str, str]:
    """The mapping a `mapping_json` text holds, or ArkitError naming `where`."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise ArkitError(f"{where} is not valid JSON") from None
    if not isinstance(data, dict) or data.get("format") != MAPPING_FORMAT:
        raise ArkitError(f"{where} is not a Thunder ARKit mapping (its format is not {MAPPING_FORMAT!r})")
    if data.get("version") != MAPPING_VERSION:
        raise ArkitError(f"{where} is an ARKit mapping of version {data.get('version')!r}; this Thunder reads "
                         f"version {MAPPING_VERSION}")
    try:
        return check_mapping(data.get("mapping"))
    except ArkitError as error:
        raise ArkitError(f"{where}: {error}") from None


# ---------------------------------------------------------------------------------------------- rotations
def yaw_pitch_roll(axis_angle: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle in FLAME's frame to (..., 3) yaw, pitch, roll in radians, R = Ry(yaw) Rx(-pitch)
    Rz(roll): yaw turns the face toward the subject's left, pitch raises it, roll tips the top of the head
    toward the subject's right. Yaw and pitch are those of the forward (gaze) direction."""
    rotation = axis_angle_to_matrix(axis_angle)
    forward = rotation[..., :, 2]
    yaw = np.arctan2(forward[..., 0], forward[..., 2])
    pitch = np.arcsin(np.clip(forward[..., 1], -1.0, 1.0))
    roll = np.arctan2(rotation[..., 1, 0], rotation[..., 1, 1])
    return np.stack([yaw, pitch, roll], axis=-1)


def head_eye_angles(parts: dict) -> np.ndarray:
    """(T, 9): the neck's, the left eye's and the right eye's yaw, pitch and roll (radians), in
    HEAD_EYE_COLUMNS order."""
    eyes = np.asarray(parts["eyes"], dtype=np.float64).reshape(-1, 2, 3)
    rotations = np.stack([np.asarray(parts["neck"], dtype=np.float64), eyes[:, 0], eyes[:, 1]], axis=1)
    return yaw_pitch_roll(rotations).reshape(len(rotations), 9)


def arkit_weights(parts: dict, expression_names, calibration: ArkitCalibration = ArkitCalibration()) -> np.ndarray:
    """(T, 52) ARKit weights in ARKIT_NAMES order, each in [0, 1], from a take's parts (expression (T, E), jaw,
    neck (T, 3), eyes (T, 6)) whose expression components are named `expression_names`."""
    expression = np.asarray(parts["expression"], dtype=np.float64)
    names = [str(name) for name in expression_names]
    if expression.ndim != 2 or expression.shape[1] != len(names):
        raise ArkitError(f"the take has {expression.shape[-1]} expression components but its head names "
                         f"{len(names)}")
    if not any(name in _ARKIT_KEYS.values() for name in names):
        raise ArkitError("the take's head has no ARKit-named expression components (a take of the built-in "
                         "head has 39)")
    frames = len(expression)
    weights = np.zeros((frames, len(ARKIT_NAMES)))
    column = {name: k for k, name in enumerate(ARKIT_NAMES)}
    for k, name in enumerate(names):
        if name in column and name not in FROM_ROTATIONS:
            weights[:, column[name]] = expression[:, k]
    jaw = np.asarray(parts["jaw"], dtype=np.float64)
    jaw_yaw = yaw_pitch_roll(jaw)[:, 0]
    weights[:, column["jawOpen"]] = jaw[:, 0] / calibration.jaw_open_angle
    weights[:, column["jawLeft"]] = jaw_yaw / calibration.jaw_side_angle
    weights[:, column["jawRight"]] = -jaw_yaw / calibration.jaw_side_angle
    angles = head_eye_angles(parts).reshape(frames, 3, 3)
    for eye, side in ((1, "Left"), (2, "Right")):
        yaw, pitch = angles[:, eye, 0], angles[:, eye, 1]
        # Looking toward the subject's left is "out" for the left eye and "in" for the right one.
        outward = yaw if side == "Left" else -yaw
        weights[:, column[f"eyeLookOut{side}"]] = outward / calibration.eye_side_angle
        weights[:, column[f"eyeLookIn{side}"]] = -outward / calibration.eye_side_angle
        weights[:, column[f"eyeLookUp{side}"]] = pitch / calibration.eye_up_angle
        weights[:, column[f"eyeLookDown{side}"]] = -pitch / calibration.eye_down_angle
    return np.clip(weights, 0.0, 1.0)


def jaw_open_angle_of_shape(rest: np.ndarray, opened: np.ndarray, moving: float = 0.2) -> tuple[float, float]:
    """The angle (radians) by which a jawOpen shape turns the chin, and how well a turn explains it.

    rest, opened: (V, 3) vertex positions in a frame whose x is the jaw's hinge axis and in which the jaw opens
    by a positive turn about +x (FLAME's frame; for a character facing -y with z up, Blender's world too). The
    vertices that move (more than `moving` times the largest move) are fitted, in the y-z plane, with the rigid
    motion that best carries them (least squares, Kabsch's method in 2D): a rigid motion of the plane that is
    not a slide is a turn about some point, so the pivot need not be known. Returns (angle, residual): the rms
    of what the turn leaves unexplained (the x motion included) over the rms of the motion (0: a pure turn)."""
    rest, opened = np.asarray(rest, dtype=np.float64), np.asarray(opened, dtype=np.float64)
    motion = opened - rest
    size = np.linalg.norm(motion, axis=1)
    if size.max(initial=0.0) <= 1e-9:
        raise ArkitError("the jawOpen shape key does not move any vertex")
    chosen = size > moving * size.max()
    before, after = rest[chosen][:, 1:], opened[chosen][:, 1:]
    before_centred, after_centred = before - before.mean(0), after - after.mean(0)
    cross = (before_centred[:, 0] * after_centred[:, 1] - before_centred[:, 1] * after_centred[:, 0]).sum()
    angle = float(np.arctan2(cross, (before_centred * after_centred).sum()))
    if abs(angle) < 1e-6:
        raise ArkitError("the jawOpen shape key does not turn the jaw about a sideways axis")
    c, s = math.cos(angle), math.sin(angle)
    turned = before_centred @ np.array([[c, s], [-s, c]]) + after.mean(0)
    unexplained = np.concatenate([after - turned, motion[chosen, :1]], axis=1)
    residual = float(np.sqrt((unexplained**2).sum(1).mean() / (size[chosen]**2).mean()))
    return angle, residual


# ---------------------------------------------------------------------------------------------- files
def live_link_timecode(seconds: float, rate: int) -> str:
    """HH:MM:SS:FF.fff, as the Live Link Face app writes it ("HH:MM:SS:Frame.MS format (like 07:44:57:02.944)",
    WaterS-MoYu/Maya-Live-Link-CSV-Import's README): FF counts frames of the timecode rate within the second and
    .fff is the fraction of a frame (captures at 59.94 Hz on a 60 fps timecode read 00:00:00:01.001,
    00:00:00:02.002, ...: rows quoted by CSV converters in the code corpus)."""
    rate = max(1, int(rate))
    milliframes = int(round(max(0.0, seconds) * rate * 1000.0))
    frames, fraction = divmod(milliframes, 1000)
    whole_seconds, frame = divmod(frames, rate)
    minutes, second = divmod(whole_seconds, 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours:02d}:{minute:02d}:{second:02d}:{frame:02d}.{fraction:03d}"


def _check_frames(weights, angles, fps) -> tuple[np.ndarray, np.ndarray]:
    weights, angles = np.asarray(weights, dtype=np.float64), np.asarray(angles, dtype=np.float64)
    if weights.ndim != 2 or weights.shape[1] != len(ARKIT_NAMES) or angles.shape != (len(weights), 9):
        raise ArkitError(f"ARKit frames need (T, 52) weights and (T, 9) angles, not {weights.shape} and "
                         f"{angles.shape}")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ArkitError(f"the frame rate must be a positive number, not {fps!r}")
    return weights, angles


def live_link_csv(weights, angles, fps: float, start: float = 0.0) -> str:
    """The Live Link Face app's CSV: a header row (CSV_HEADER), then per frame its timecode (audio second
    `start` + k / fps, on a timecode of round(fps) frames per second), 61, the 52 weights in the app's column
    order and the 9 rotations (radians)."""
    weights, angles = _check_frames(weights, angles, fps)
    order = [ARKIT_NAMES.index(name[0].lower() + name[1:]) for name in LIVE_LINK_NAMES]
    rate = max(1, round(fps))
    lines = [",".join(CSV_HEADER)]
    for k in range(len(weights)):
        values = [f"{value:.6f}" for value in weights[k, order]] + [f"{value:.6f}" for value in angles[k]]
        lines.append(",".join([live_link_timecode(start + k / fps, rate), str(BLENDSHAPE_COUNT), *values]))
    return "\n".join(lines) + "\n"


def arkit_json(weights, angles, fps: float, start: float = 0.0, take: dict | None = None,
               calibration: ArkitCalibration = ArkitCalibration()) -> dict:
    """The same frames for scripts: names, per-frame weights and angles, and how they were made."""
    weights, angles = _check_frames(weights, angles, fps)
    return {"format": JSON_FORMAT, "version": JSON_VERSION, "fps": float(fps), "start": float(start),
            "frames": len(weights), "names": list(ARKIT_NAMES), "weights": np.round(weights, 6).tolist(),
            "angle_names": list(HEAD_EYE_COLUMNS), "angles_radians": np.round(angles, 6).tolist(),
            "calibration": asdict(calibration), "take": take or {}}
