"""Generate the built-in head, ``builtin_head.npz``, in FLAME's layout (see docs/head_format.md).

Run ``python -m backend.builtin_head.build [OUT.npz]``. The output is bit-identical on every run: the script
uses numpy only, no randomness, and writes the zip archive with fixed timestamps.

How the head is made
--------------------
* The skin is one tensor-product grid of rows (rings at increasing height) by columns (angles around the
  vertical axis). Each grid vertex is found by casting a horizontal ray from the head's vertical axis and
  bisecting a smooth implicit surface: a skull (cranium ellipsoid smooth-unioned with a jaw superellipsoid
  and a neck cylinder) minus relief features (brow, eye sockets, nose, cheekbones, lips, chin, ears).
  Rows and columns are spaced by arc length and concentrated on the face, most of all on the eyes and lips.
* The mouth is one grid row whose vertices between the two corners are duplicated: the upper lip keeps
  one copy, the lower lip the other, so the lips can part. A closed pocket (the mouth "bag") is sewn to
  the slit so that the surface stays watertight.
* Eyes are separate eyeball spheres. The skin stays continuous over them: inside an almond-shaped aperture
  it is recessed behind the eyeball (so the eyeball shows), outside it lies on the eyeball like a lid. A blink
  brings the recessed skin forward over the eyeball, upper part first.
* Five joints in FLAME's order (global, neck, jaw, left eye, right eye), a joint regressor, smooth skinning
  weights, semantic expression components named after ARKit blendshapes, identity shape components and a
  few pose correctives complete the model.

Coordinates follow FLAME: metres, y up, z forward (out of the face), x to the subject's left.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from backend.flame_file import LANDMARK_PREFIX, VSET_PREFIX, write_npz

HEAD_NAME = "thunder-builtin-v1"
DEFAULT_OUTPUT = Path(__file__).with_name("builtin_head.npz")

# ---------------------------------------------------------------------------------------------------------
# Anatomy of the neutral head (metres). Left-side values; the head is mirror-symmetric in x.
# ---------------------------------------------------------------------------------------------------------
AXIS_Z = -0.012  # the vertical axis that every horizontal ray starts from (inside skull, jaw and neck)
NECK_BOTTOM_Y = -0.185

CRANIUM_CENTER = np.array([0.0, 0.028, -0.012])
CRANIUM_RADII = np.array([0.0740, 0.098, 0.099])
JAW_CENTER = np.array([0.0, -0.034, 0.010])
JAW_RADII = np.array([0.064, 0.070, 0.079])
NECK_CENTER_Z = -0.020
NECK_RADII = np.array([0.050, 0.054])  # x, z
NECK_TOP_Y = -0.030  # the neck cylinder ends inside the head

MOUTH_Y = -0.045  # height of the lip slit
MOUTH_HALF_WIDTH = 0.0245  # target x of the mouth corners (the nearest grid column is used)
UPPER_LIP_ROWS = 4  # grid rows between the slit and the upper vermilion border
LOWER_LIP_ROWS = 5

EYE_CENTER = np.array([0.0315, 0.031, 0.0595])  # centre of the left eyeball
EYEBALL_RADIUS = 0.0122
IRIS_ANGLE = np.arcsin(0.0058 / EYEBALL_RADIUS)  # polar angle of the iris border seen from the centre
PUPIL_ANGLE = np.arcsin(0.0022 / EYEBALL_RADIUS)
EYE_HALF_WIDTH = 0.0126  # half width of the almond-shaped lid aperture
EYE_OPEN_TOP = 0.0053  # upper lid margin above the eye centre (covers the top of the iris a little)
EYE_OPEN_BOTTOM = 0.0047  # lower lid margin below the eye centre
EYE_CANTHAL_TILT = 0.0012  # the outer corner sits this much higher than the inner corner
LID_THICKNESS = 0.0016  # how far a closed lid lies in front of the eyeball
LID_MARGIN_ROUNDING = 0.0010  # how quickly the skin rises from the eyeball to lid height at the margin
LID_CLOSE_LINE = 0.78  # where upper and lower lids meet in a blink, as a fraction of the aperture height
MAX_CLOSING_TIME = 0.82  # later closing would need skin recessed very deep; the last bit closes at once

EAR_CENTER = np.array([0.0, 0.008, -0.024])  # y and z of the ear's centre (x lies on the skull)
EAR_HALF_HEIGHT = 0.030
EAR_HALF_WIDTH = 0.0165

# Joint positions (FLAME order). The jaw pivot sits on the midline between the temporomandibular joints.
JOINT_NAMES = ("global", "neck", "jaw", "eye_left", "eye_right")
KINTREE_PARENTS = (-1, 0, 1, 1, 1)
GLOBAL_JOINT = np.array([0.0, -0.165, NECK_CENTER_Z])
NECK_JOINT = np.array([0.0, -0.050, -0.024])
JAW_JOINT = np.array([0.0, -0.006, -0.004])

# Grid resolution.
ROW_COUNT = 64
HALF_COLUMN_COUNT = 48  # columns from the front (theta = 0) to the back (theta = pi)
BOTTOM_CAP_RING_SCALE = 0.5

# Reference jaw opening (radians) that a weight of 1.0 of mouthClose compensates: ARKit's jawOpen = 1.
JAW_OPEN_REFERENCE = 0.30

REGION_NAMES = ("skin", "lips", "mouth_interior", "sclera", "iris", "pupil")
SKIN, LIPS, MOUTH_INTERIOR, SCLERA, IRIS, PUPIL = range(len(REGION_NAMES))


# ---------------------------------------------------------------------------------------------------------
# Small smooth functions
# ---------------------------------------------------------------------------------------------------------
def smoothstep(edge0, edge1, x):
    """Hermite step from 0 at ``edge0`` to 1 at ``edge1`` (either order)."""
    t = np.clip((np.asarray(x, dtype=np.float64) - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def gauss(d, sigma):
    """exp(-(d / sigma)^2): a bump of width ``sigma``."""
    return np.exp(-np.square(np.asarray(d, dtype=np.float64) / sigma))


def blob(x, y, cx, cy, sx, sy):
    """Separable 2D Gaussian bump centred at (cx, cy) with widths (sx, sy)."""
    return gauss(x - cx, sx) * gauss(y - cy, sy)


def smooth_min(a, b, k):
    """Polynomial smooth minimum: the union of two distance fields with a fillet of size ``k``."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def smooth_max(a, b, k):
    """Smooth maximum: the intersection of two distance fields."""
    return -smooth_min(-a, -b, k)


def mirror_x(points):
    """The points reflected through the mid-sagittal plane (x -> -x)."""
    mirrored = np.array(points, dtype=np.float64, copy=True)
    mirrored[..., 0] *= -1.0
    return mirrored


def azimuth(points):
    """Angle around the vertical axis, 0 straight ahead (+z), positive towards the subject's left (+x)."""
    return np.arctan2(points[..., 0], points[..., 2] - AXIS_Z)


# ---------------------------------------------------------------------------------------------------------
# The skull: a smooth star-shaped base surface as a signed-distance-like field (negative inside)
# ---------------------------------------------------------------------------------------------------------
def ellipsoid_field(points, center, radii):
    """Approximate signed distance to an ellipsoid (exact on the surface, smooth everywhere)."""
    q = (points - center) / radii
    k0 = np.linalg.norm(q, axis=-1)
    k1 = np.linalg.norm(q / radii, axis=-1)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-12)


def jaw_field(points):
    """Lower face and jaw: a superellipsoid, flatter in front and below than an ellipsoid."""
    q = np.abs((points - JAW_CENTER) / JAW_RADII)
    horizontal = (q[..., 0] ** 2.4 + q[..., 2] ** 2.4) ** (1.0 / 2.4)
    shape = (horizontal**3.2 + q[..., 1] ** 3.2) ** (1.0 / 3.2)
    return (shape - 1.0) * JAW_RADII.min()


def neck_field(points):
    """An elliptic neck cylinder that ends (smoothly) inside the head."""
    x = points[..., 0] / NECK_RADII[0]
    z = (points[..., 2] - NECK_CENTER_Z) / NECK_RADII[1]
    cylinder = (np.sqrt(x * x + z * z) - 1.0) * NECK_RADII.min()
    return smooth_max(cylinder, points[..., 1] - NECK_TOP_Y, 0.01)


def skull_field(points):
    """The featureless head: cranium, jaw and neck blended together."""
    head = smooth_min(ellipsoid_field(points, CRANIUM_CENTER, CRANIUM_RADII), jaw_field(points), 0.022)
    return smooth_min(head, neck_field(points), 0.03)


# ---------------------------------------------------------------------------------------------------------
# The lips: heights of the vermilion (red part) as functions of the lateral mouth coordinate
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MouthFrame:
    """Where the mouth is: the slit height and the azimuth of the left corner.

    Lateral mouth coordinate ``X = azimuth / corner_azimuth``: 0 on the midline, +-1 at the corners.
    """

    slit_y: float
    corner_azimuth: float

    def lateral(self, points):
        """Signed lateral coordinate X of each point (+1 at the left corner)."""
        return azimuth(points) / self.corner_azimuth


def upper_vermilion_height(X):
    """Height of the upper lip's red part above the slit: a Cupid's bow that thins to the corners."""
    a = np.abs(X)
    body = np.clip(1.0 - a * a, 0.0, 1.0) ** 0.55
    bow = 0.0011 * gauss(a - 0.24, 0.13) - 0.0007 * gauss(a, 0.09)
    inside = 0.0013 + 0.0069 * body + bow * body
    # Beyond the corners the rows relax to the unwarped grid; this value is only a floor there.
    return np.where(a <= 1.0, inside, 0.0013)


def lower_vermilion_height(X):
    """Depth of the lower lip's red part below the slit: a fuller, rounder curve than the upper lip."""
    a = np.abs(X)
    body = np.clip(1.0 - a * a, 0.0, 1.0) ** 0.5
    return np.where(a <= 1.0, 0.0014 + 0.0086 * body, 0.0014)


# ---------------------------------------------------------------------------------------------------------
# Relief: smooth outward displacements (metres) added to the skull
# ---------------------------------------------------------------------------------------------------------
def front_mask(points):
    """1 on the face, 0 behind the ears: keeps face features off the back of the head."""
    return smoothstep(0.005, 0.045, points[..., 2])


def nose_relief(x, y):
    """Dorsum rising from the nasion to a rounded tip, a steep columella below it, and the alae."""
    tip_y, nasion_y, subnasale_y = -0.013, 0.036, -0.029
    # Profile height along the midline: grows down the bridge, falls quickly under the tip.
    bridge = 0.0205 * smoothstep(nasion_y + 0.004, tip_y, y) ** 1.15
    under_tip = smoothstep(tip_y + 0.002, subnasale_y, y)
    profile = bridge * (1.0 - under_tip) ** 1.4
    width = 0.0060 + 0.0036 * smoothstep(nasion_y, tip_y, y)
    ridge = profile * gauss(x, width) ** 0.9
    tip = 0.0045 * blob(x, y, 0.0, tip_y - 0.001, 0.0075, 0.0065)
    alae = 0.0085 * (blob(x, y, 0.0142, -0.0215, 0.0058, 0.0062) + blob(x, y, -0.0142, -0.0215, 0.0058, 0.0062))
    side_walls = 0.004 * blob(np.abs(x), y, 0.009, -0.004, 0.006, 0.014)
    return ridge + tip + alae + side_walls


def lip_relief(points, mouth):
    """Lips (with a crease at the slit and a rolled vermilion border), philtrum, sulcus and dental arch."""
    x, y = points[..., 0], points[..., 1]
    X = mouth.lateral(points)
    above = y >= mouth.slit_y
    t_up = np.clip((y - mouth.slit_y) / upper_vermilion_height(X), 0.0, None)
    t_low = np.clip((mouth.slit_y - y) / lower_vermilion_height(X), 0.0, None)
    across = np.clip(1.0 - X * X, 0.0, 1.0) ** 0.6  # lips thin out to nothing at the corners
    # Each lip: a roll that peaks mid-vermilion, a slight crease at the slit and a ridge at the border.
    upper = 0.0036 * gauss(t_up - 0.5, 0.5) + 0.0009 * gauss(t_up - 1.0, 0.16)
    lower = 0.0043 * gauss(t_low - 0.52, 0.55) + 0.0004 * gauss(t_low - 1.0, 0.2)
    lips = np.where(above, upper, lower) * across
    # Skin around the lips: the arch of the teeth pushes the whole mouth forward.
    arch = 0.0085 * gauss(x, 0.030) * gauss(y - mouth.slit_y - 0.002, 0.024)
    philtrum_groove = -0.0006 * gauss(x, 0.0028) * gauss(y - mouth.slit_y - 0.013, 0.0045)
    philtrum_ridges = 0.0004 * (gauss(x - 0.0055, 0.0018) + gauss(x + 0.0055, 0.0018)) * gauss(
        y - mouth.slit_y - 0.013, 0.005
    )
    sulcus = -0.0028 * gauss(x, 0.017) * gauss(y - mouth.slit_y + 0.0175, 0.0055)
    return lips + arch + philtrum_groove + philtrum_ridges + sulcus


def face_relief(points, mouth):
    """All features of the face front, in metres of outward displacement."""
    x, y = points[..., 0], points[..., 1]
    ax = np.abs(x)
    brow_ridge = 0.0045 * gauss(y - 0.051 + 0.05 * ax * ax / 0.05, 0.0085) * gauss(ax - 0.022, 0.032)
    glabella = 0.0015 * blob(x, y, 0.0, 0.046, 0.010, 0.010)
    eye_socket = -0.0080 * blob(ax, y, EYE_CENTER[0] + 0.003, EYE_CENTER[1] + 0.001, 0.0140, 0.0120)
    cheekbone = 0.0042 * blob(ax, y, 0.047, 0.0035, 0.015, 0.011)
    cheek = 0.003 * blob(ax, y, 0.040, -0.030, 0.015, 0.016)
    nasolabial = -0.0012 * gauss(ax - (0.0195 + 0.42 * (-0.022 - y)), 0.0032) * smoothstep(-0.018, -0.026, y) * (
        smoothstep(-0.066, -0.054, y)
    )
    chin = 0.0115 * blob(x, y, 0.0, -0.087, 0.018, 0.0135)
    chin_bottom = 0.005 * blob(x, y, 0.0, -0.099, 0.021, 0.008)
    temple = -0.003 * blob(ax, y, 0.066, 0.045, 0.012, 0.02)
    forehead = 0.0055 * blob(x, y, 0.0, 0.078, 0.045, 0.028)
    relief = (
        brow_ridge
        + glabella
        + eye_socket
        + cheekbone
        + cheek
        + nasolabial
        + chin
        + chin_bottom
        + temple
        + forehead
        + nose_relief(x, y)
        + lip_relief(points, mouth)
    )
    return relief * front_mask(points)


def ear_relief(points):
    """A simplified outer ear on each side: a rim (helix), a hollow bowl (concha) and a lobe."""
    ax = np.abs(points[..., 0])
    v = (points[..., 1] - EAR_CENTER[1]) / EAR_HALF_HEIGHT  # up
    w = (points[..., 2] - EAR_CENTER[2]) / EAR_HALF_WIDTH  # forward
    # Outline: an egg, narrower at the lobe (v < 0) and towards the front.
    width_scale = 1.0 - 0.25 * smoothstep(0.0, -1.0, v)
    r = np.sqrt(v * v + (w / width_scale) ** 2)
    body = smoothstep(1.0, 0.78, r)
    backward_tilt = 0.55 + 0.45 * smoothstep(0.8, -0.6, w)  # the back of the ear stands off the head most
    helix_rim = 0.0028 * gauss(r - 0.82, 0.09) * smoothstep(-0.45, -0.1, v + 0.3 * w)
    concha = -0.0075 * gauss(v + 0.08, 0.32) * gauss(w - 0.28, 0.38)
    fossa = -0.0025 * gauss(v - 0.55, 0.18) * gauss(w + 0.1, 0.35)
    height = 0.0145 * body * backward_tilt + (helix_rim + concha + fossa) * body
    return height * smoothstep(0.03, 0.055, ax)


def head_field(points, mouth):
    """The implicit head surface before the eye lids are fitted: negative inside."""
    return skull_field(points) - face_relief(points, mouth) - ear_relief(points)


def cast_rays(origins, directions, field, max_distance=0.25, steps=42):
    """Where each ray from inside first leaves the region ``field < 0`` (bisection; rays must start inside)."""
    near = np.zeros(len(origins))
    far = np.full(len(origins), max_distance)
    for _ in range(steps):
        mid = 0.5 * (near + far)
        inside = field(origins + mid[:, None] * directions) < 0.0
        near = np.where(inside, mid, near)
        far = np.where(inside, far, mid)
    return origins + (0.5 * (near + far))[:, None] * directions


def surface_at(heights, azimuths, mouth):
    """Skin points on horizontal rays at the given heights and azimuths (any matching shapes)."""
    heights = np.asarray(heights, dtype=np.float64)
    azimuths = np.broadcast_to(azimuths, heights.shape).astype(np.float64)
    flat_y, flat_theta = heights.ravel(), azimuths.ravel()
    origins = np.stack([np.zeros_like(flat_y), flat_y, np.full_like(flat_y, AXIS_Z)], axis=-1)
    directions = np.stack([np.sin(flat_theta), np.zeros_like(flat_y), np.cos(flat_theta)], axis=-1)
    points = cast_rays(origins, directions, lambda p: head_field(p, mouth))
    points[np.abs(points[:, 0]) < 1e-9, 0] = 0.0  # sin(pi) is not 0 in floating point: keep the midline exact
    return points.reshape(heights.shape + (3,))


def crown_height(mouth):
    """Height of the top of the head on the vertical axis."""
    origin = np.array([[0.0, 0.0, AXIS_Z]])
    up = np.array([[0.0, 1.0, 0.0]])
    return float(cast_rays(origin, up, lambda p: head_field(p, mouth))[0, 1])


# ---------------------------------------------------------------------------------------------------------
# Eyes: eyeball surface and the lids fitted around it
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LidShape:
    """The aperture of the lids: margin heights and how closed the lids are."""

    top: float = EYE_OPEN_TOP
    bottom: float = EYE_OPEN_BOTTOM
    closed: bool = False


def almond_coordinates(x, y, lids):
    """Signed distance to the almond aperture (negative inside) and the vertical fraction s (0 top, 1 bottom).

    Uses |x|, so it describes the left eye for x > 0 and the mirrored right eye for x < 0.
    """
    dx = np.abs(x) - EYE_CENTER[0]
    dy = y - EYE_CENTER[1]
    u = np.clip(dx / EYE_HALF_WIDTH, -1.0, 1.0)
    span = np.clip(1.0 - u * u, 0.0, 1.0)
    tilt = 0.5 * EYE_CANTHAL_TILT * u
    top = lids.top * span**0.5 * (1.0 - 0.12 * u) + tilt  # highest a little towards the nose
    bottom = -lids.bottom * span**0.65 + tilt
    side = (np.abs(dx) / EYE_HALF_WIDTH - 1.0) * EYE_HALF_WIDTH
    distance = np.maximum(np.maximum(dy - top, bottom - dy), side)
    fraction = (top - dy) / np.maximum(top - bottom, 1e-5)
    return distance, fraction, np.abs(dx) / EYE_HALF_WIDTH


def eyeball_front_z(x, y):
    """z of the front of the eyeball under (x, y); clamped to the centre depth outside its silhouette."""
    r2 = (np.abs(x) - EYE_CENTER[0]) ** 2 + (y - EYE_CENTER[1]) ** 2
    return EYE_CENTER[2] + np.sqrt(np.clip(EYEBALL_RADIUS**2 - r2, 0.0, None))


def closed_lid_z(x, y):
    """z of a closed lid: an ellipsoidal shell just in front of the eyeball, wider than it sideways."""
    dx = (np.abs(x) - EYE_CENTER[0]) / 1.3
    dy = (y - EYE_CENTER[1]) / 1.15
    radius = EYEBALL_RADIUS + LID_THICKNESS
    return EYE_CENTER[2] + np.sqrt(np.clip(radius**2 - dx * dx - dy * dy, (0.25 * radius) ** 2, None))


def closing_time(fraction, lateral):
    """Blink weight at which the skin at this point of the aperture crosses the eyeball.

    The upper lid travels down to the close line, the lower lid comes up a little to meet it, and the
    corners close first, so a half blink reads as a descending upper lid.
    """
    upper = fraction / LID_CLOSE_LINE
    lower = (1.0 - fraction) / (1.0 - LID_CLOSE_LINE)
    corners = smoothstep(1.0, 0.75, lateral)
    return np.clip(np.minimum(upper, lower), 0.0, MAX_CLOSING_TIME) * corners


def lid_z(x, y, lids):
    """z of the eye-region skin: recessed behind the eyeball in the aperture, lid-shaped outside it."""
    ball = eyeball_front_z(x, y)
    shell = closed_lid_z(x, y)
    if lids.closed:
        return shell
    distance, fraction, lateral = almond_coordinates(x, y, lids)
    tau = closing_time(fraction, lateral)
    # Inside: depth chosen so that moving linearly to the closed shell crosses the eyeball at weight tau.
    # The gap is taken as the lid thickness everywhere: towards the corners, where the shell stands further
    # off the eyeball, the skin then closes a little earlier, and no skin is recessed more than ~7 mm.
    recessed = ball - LID_THICKNESS * tau / (1.0 - tau)
    # Outside: rise from the eyeball at the margin to the lid shell within a millimetre or so.
    lid = shell - (shell - ball) * np.exp(-np.clip(distance, 0.0, None) / LID_MARGIN_ROUNDING)
    return np.where(distance < 0.0, recessed, lid)


def lid_blend(x, y):
    """How much the eye-region skin follows the lid surface (1) rather than the face relief (0)."""
    dx = (np.abs(x) - EYE_CENTER[0]) / 1.3
    dy = (y - EYE_CENTER[1]) / np.where(y > EYE_CENTER[1], 1.05, 0.95)
    r = np.sqrt(dx * dx + dy * dy)
    return smoothstep(1.12 * EYEBALL_RADIUS, 0.8 * EYEBALL_RADIUS, r)


def fit_lids(points, lids=LidShape()):
    """Move the skin near the eyes (in z only) onto the lid surface for the given lid shape."""
    x, y = points[..., 0], points[..., 1]
    blend = lid_blend(x, y) * smoothstep(0.04, 0.05, points[..., 2])
    fitted = points.copy()
    fitted[..., 2] = (1.0 - blend) * points[..., 2] + blend * lid_z(x, y, lids)
    return fitted


# ---------------------------------------------------------------------------------------------------------
# Grid layout: row heights and column azimuths, concentrated on the face
# ---------------------------------------------------------------------------------------------------------
def spacing_by_density(samples, density, count_below, count_above, anchor):
    """Place ``count_below + count_above + 1`` values along ``samples`` at equal steps of the integral of
    ``density``, with value number ``count_below`` exactly at ``anchor`` (a sample value)."""
    cumulative = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(samples))])
    at_anchor = np.interp(anchor, samples, cumulative)
    targets = np.concatenate(
        [
            np.linspace(0.0, at_anchor, count_below + 1),
            np.linspace(at_anchor, cumulative[-1], count_above + 1)[1:],
        ]
    )
    return np.interp(targets, cumulative, samples)


def row_heights(mouth, top_y):
    """Heights of the grid rows (bottom of the neck to just under the crown) and the slit row's index.

    Rows are spaced by arc length of the head's outline (taken as the longest of several meridians, so the
    chin's underside and the crown are covered), weighted to be dense on the lips and eyes.
    """
    heights = np.linspace(NECK_BOTTOM_Y, top_y, 800)
    meridians = np.array([0.0, 0.35, 1.2, 1.65, 2.6, np.pi])
    outline = surface_at(heights[:, None] + 0.0 * meridians, meridians[None, :], mouth)
    radius = np.hypot(outline[..., 0], outline[..., 2] - AXIS_Z)
    step = np.sqrt(np.diff(heights)[:, None] ** 2 + np.diff(radius, axis=0) ** 2).max(axis=1)
    arc = np.concatenate([[step[0]], step]) / np.diff(heights).mean()
    emphasis = (
        0.55
        + 4.2 * gauss(heights - mouth.slit_y, 0.0125)
        + 1.6 * gauss(heights - mouth.slit_y, 0.03)
        + 3.4 * gauss(heights - EYE_CENTER[1], 0.0105)
        + 1.0 * gauss(heights - 0.0, 0.03)
        + 0.5 * gauss(heights + 0.11, 0.012)
    )
    density = arc * emphasis
    below = int(round(ROW_COUNT * 0.3))
    rows = spacing_by_density(heights, density, below, ROW_COUNT - below, mouth.slit_y)
    # Find the real split: move the anchor so that the neighbours of the slit are evenly spaced.
    cumulative = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(heights))])
    fraction = np.interp(mouth.slit_y, heights, cumulative) / cumulative[-1]
    below = int(round(fraction * ROW_COUNT))
    rows = spacing_by_density(heights, density, below, ROW_COUNT - below, mouth.slit_y)
    return rows[:-1], below  # the last value is the crown itself: it becomes the pole vertex


def column_azimuths(corner_target):
    """Azimuths of the grid columns (0 at the front, ascending, mirror-symmetric) and the left corner's index.

    Columns are dense across the face and around the ears and sparse at the back of the head.
    """
    angles = np.linspace(0.0, np.pi, 2000)
    density = (
        0.45
        + 2.4 * smoothstep(0.70, 0.45, angles)
        + 0.6 * gauss(angles - 0.48, 0.12)
        + 0.9 * gauss(angles - 1.68, 0.2)
        + 0.25 * smoothstep(1.5, 1.2, angles)
    )
    cumulative = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(angles))])
    corner_index = int(round(np.interp(corner_target, angles, cumulative) / cumulative[-1] * HALF_COLUMN_COUNT))
    half = spacing_by_density(angles, density, corner_index, HALF_COLUMN_COUNT - corner_index, corner_target)
    columns = np.concatenate([half, -half[-2:0:-1]])  # 0 .. pi, then -pi+ .. -0-
    return columns, corner_index


def mouth_corner_azimuth():
    """Azimuth at which the neutral face is MOUTH_HALF_WIDTH to the left, at the slit height."""
    provisional = MouthFrame(MOUTH_Y, 0.3)
    angles = np.linspace(0.05, 0.6, 200)
    points = surface_at(np.full_like(angles, MOUTH_Y), angles, provisional)
    return float(np.interp(MOUTH_HALF_WIDTH, points[:, 0], angles))


def lip_row_warp(rows, slit_row, columns, corner_azimuth):
    """Per-column row heights: around the mouth, rows bend to follow the vermilion borders.

    Returns (R, C) heights. Row ``slit_row`` stays at the slit, row ``slit_row + UPPER_LIP_ROWS`` follows the
    upper vermilion border and row ``slit_row - LOWER_LIP_ROWS`` the lower one; a few rows beyond each
    border blend back to the flat rows. Away from the mouth the rows are flat.
    """
    X = columns / corner_azimuth
    relax = smoothstep(1.0, 1.9, np.abs(X))  # 0 within the mouth, 1 well beyond the corners
    top_row, bottom_row = slit_row + UPPER_LIP_ROWS, slit_row - LOWER_LIP_ROWS
    flat_up = rows[top_row] - rows[slit_row]
    flat_down = rows[slit_row] - rows[bottom_row]
    up = (1.0 - relax) * upper_vermilion_height(np.clip(X, -1, 1)) + relax * flat_up
    down = (1.0 - relax) * lower_vermilion_height(np.clip(X, -1, 1)) + relax * flat_down
    knots_index = np.array([bottom_row - 3, bottom_row, slit_row, top_row, top_row + 3], dtype=np.float64)
    heights = np.repeat(rows[:, None], len(columns), axis=1)
    for c in range(len(columns)):
        knots_y = [rows[bottom_row - 3], rows[slit_row] - down[c], rows[slit_row], rows[slit_row] + up[c],
                   rows[top_row + 3]]  # fmt: skip
        index = np.arange(bottom_row - 3, top_row + 4, dtype=np.float64)
        heights[bottom_row - 3 : top_row + 4, c] = np.interp(index, knots_index, knots_y)
    return heights


# ---------------------------------------------------------------------------------------------------------
# Topology: the skin grid with its lip slit, the mouth bag, the eyeballs
# ---------------------------------------------------------------------------------------------------------
# Mouth bag rings behind the slit: (lateral scale, vertical bulge, depth), from the lips inwards.
BAG_RINGS = ((0.96, 0.0028, 0.0030), (0.90, 0.0085, 0.0085), (0.82, 0.0115, 0.0170), (0.66, 0.0095, 0.0260))
BAG_BOTTOM_DEPTH = 0.0310
EYEBALL_SEGMENTS = 18


@dataclass(frozen=True)
class GridLayout:
    """Where the skin grid's vertices sit before the surface is found."""

    heights: np.ndarray  # (R, C) height of each grid vertex
    columns: np.ndarray  # (C,) azimuth of each column, ascending, 0 at the front
    slit_row: int
    corner_column: int  # column of the left mouth corner; the right one is its mirror
    mouth: MouthFrame

    @property
    def mouth_columns(self):
        """Column indices from the right mouth corner to the left one, through the front."""
        count = len(self.columns)
        return np.array([(c % count) for c in range(-self.corner_column, self.corner_column + 1)])


@dataclass
class Mesh:
    """Vertices, triangles, their material regions, and where each part of the head lives in the arrays."""

    vertices: np.ndarray  # (V, 3) float64
    faces: np.ndarray  # (F, 3) int
    face_region: np.ndarray  # (F,) int
    part: np.ndarray  # (V,) 0 skin, 1 mouth bag, 2 left eyeball, 3 right eyeball
    skin_base: np.ndarray  # (V, 3) skin before the lids were fitted (equal to vertices elsewhere)
    grid: np.ndarray  # (R, C) vertex index of each grid vertex (on the slit: the upper lip's copy)
    lower_slit: np.ndarray  # (M,) lower lip's copy of each slit vertex, right corner to left corner
    bag_loop: np.ndarray  # (L,) the slit loop that the bag hangs from
    bag_rings: np.ndarray  # (K, L) bag vertices ring by ring, matching bag_loop
    bag_bottom: int
    eye_left: np.ndarray
    eye_right: np.ndarray
    layout: GridLayout


PART_SKIN, PART_BAG, PART_EYE_LEFT, PART_EYE_RIGHT = range(4)


def make_layout():
    """Rows, columns and the lip warp of the skin grid."""
    corner_azimuth = mouth_corner_azimuth()
    columns, corner_column = column_azimuths(corner_azimuth)
    mouth = MouthFrame(MOUTH_Y, float(columns[corner_column]))
    rows, slit_row = row_heights(mouth, crown_height(mouth))
    heights = lip_row_warp(rows, slit_row, columns, mouth.corner_azimuth)
    return GridLayout(heights, columns, slit_row, corner_column, mouth)


def quad_triangles(a, b, c, d, left_side):
    """Two triangles of the quad a-b-c-d (counter-clockwise seen from outside).

    The diagonal mirrors across the midline so that the triangulation is left-right symmetric.
    """
    if left_side:
        return [(a, b, c), (a, c, d)]
    return [(a, b, d), (b, c, d)]


def uv_sphere(center, radius, mirror):
    """An eyeball looking along +z: front pole, rings at chosen polar angles, back pole.

    Returns vertices, faces (outward) and the region of each face (pupil, iris, sclera).
    """
    polar = np.array(
        [PUPIL_ANGLE, 0.5 * (PUPIL_ANGLE + IRIS_ANGLE), IRIS_ANGLE, IRIS_ANGLE + 0.12, 0.9, 1.25, 1.6, 2.0, 2.45, 2.85]
    )
    around = np.arange(EYEBALL_SEGMENTS) * (2.0 * np.pi / EYEBALL_SEGMENTS)
    ring_points = np.stack(
        [
            np.sin(polar)[:, None] * np.cos(around)[None, :],
            np.sin(polar)[:, None] * np.sin(around)[None, :],
            np.repeat(np.cos(polar)[:, None], EYEBALL_SEGMENTS, axis=1),
        ],
        axis=-1,
    ).reshape(-1, 3)
    unit = np.concatenate([[[0.0, 0.0, 1.0]], ring_points, [[0.0, 0.0, -1.0]]])
    vertices = center + radius * unit
    n, back = EYEBALL_SEGMENTS, 1 + len(polar) * EYEBALL_SEGMENTS
    faces, regions = [], []
    for s in range(n):
        faces.append((0, 1 + (s + 1) % n, 1 + s))
        regions.append(PUPIL)
    for ring in range(len(polar) - 1):
        region = IRIS if polar[ring + 1] <= IRIS_ANGLE + 1e-9 else SCLERA
        for s in range(n):
            a, b = 1 + ring * n + s, 1 + ring * n + (s + 1) % n
            faces += [(a, b, b + n), (a, b + n, a + n)]
            regions += [region, region]
    for s in range(n):
        faces.append((back, 1 + (len(polar) - 1) * n + s, 1 + (len(polar) - 1) * n + (s + 1) % n))
        regions.append(SCLERA)
    faces = np.array(faces)
    if signed_volume(vertices, faces) < 0:
        faces = faces[:, ::-1]
    if mirror:
        vertices = mirror_x(vertices)
        faces = faces[:, ::-1]
    return vertices, faces, np.array(regions)


def signed_volume(vertices, faces):
    """Volume enclosed by a closed triangle mesh; positive when the faces point outward."""
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def build_mesh(layout):
    """Assemble the whole head mesh: skin grid, caps, lip slit, mouth bag and eyeballs."""
    rows, cols = layout.heights.shape
    half = cols // 2
    skin_base = surface_at(layout.heights, layout.columns[None, :], layout.mouth)  # (R, C, 3)
    skin = fit_lids(skin_base)
    grid = np.arange(rows * cols).reshape(rows, cols)
    vertices = [skin.reshape(-1, 3)]
    base = [skin_base.reshape(-1, 3)]
    count = rows * cols

    # Bottom cap: one inner ring and a centre, at the height of the lowest row.
    bottom = skin[0]
    centre = np.array([0.0, bottom[0, 1], NECK_CENTER_Z])
    inner = centre + BOTTOM_CAP_RING_SCALE * (bottom - centre)
    inner_ring = count + np.arange(cols)
    bottom_centre = count + cols
    crown = count + cols + 1
    top_point = np.array([0.0, crown_height(layout.mouth), CRANIUM_CENTER[2]])
    extra = np.concatenate([inner, centre[None], top_point[None]])
    vertices.append(extra)
    base.append(extra)
    count += cols + 2

    # The lower lip's copies of the slit vertices between the corners.
    mouth_columns = layout.mouth_columns
    slit = layout.slit_row
    interior = mouth_columns[1:-1]
    lower_copy_index = count + np.arange(len(interior))
    vertices.append(skin[slit, interior])
    base.append(skin_base[slit, interior])
    count += len(interior)
    lower_slit = np.concatenate([[grid[slit, mouth_columns[0]]], lower_copy_index, [grid[slit, mouth_columns[-1]]]])
    lower_of_column = dict(zip(mouth_columns.tolist(), lower_slit.tolist()))
    mouth_quads = set(mouth_columns[:-1].tolist())  # quad j spans columns j and j+1

    faces, regions = [], []

    def add(triangles, region):
        faces.extend(triangles)
        regions.extend([region] * len(triangles))

    lip_rows = range(slit - LOWER_LIP_ROWS, slit + UPPER_LIP_ROWS)
    for i in range(rows - 1):
        for j in range(cols):
            k = (j + 1) % cols
            a, b, c, d = grid[i, j], grid[i, k], grid[i + 1, k], grid[i + 1, j]
            if i + 1 == slit and j in mouth_quads:  # the quad under the slit hangs from the lower copies
                c, d = lower_of_column[k], lower_of_column[j]
            region = LIPS if (i in lip_rows and j in mouth_quads) else SKIN
            add(quad_triangles(a, b, c, d, j < half), region)
    for j in range(cols):
        k = (j + 1) % cols
        add(quad_triangles(inner_ring[j], inner_ring[k], grid[0, k], grid[0, j], j < half), SKIN)
        add([(bottom_centre, inner_ring[k], inner_ring[j])], SKIN)
        add([(grid[rows - 1, j], grid[rows - 1, k], crown)], SKIN)

    # The mouth bag: rings that follow the slit loop inwards, then a bottom point.
    loop = np.concatenate([grid[slit, mouth_columns], lower_slit[-2:0:-1]])
    side = np.concatenate([np.zeros(1), np.ones(len(interior)), np.zeros(1), -np.ones(len(interior))])
    all_vertices = np.concatenate(vertices)
    loop_points = all_vertices[loop]
    X = np.clip(layout.mouth.lateral(loop_points), -1.0, 1.0)
    bulge = side * np.sqrt(np.clip(1.0 - X * X, 0.0, 1.0))
    ring_points = []
    for scale, height, depth in BAG_RINGS:
        ring = loop_points.copy()
        ring[:, 0] *= scale
        ring[:, 1] += height * bulge
        ring[:, 2] -= depth
        ring_points.append(ring)
    bag_bottom_point = np.array([0.0, layout.mouth.slit_y, loop_points[:, 2].mean() - BAG_BOTTOM_DEPTH])
    bag_rings = count + np.arange(len(BAG_RINGS) * len(loop)).reshape(len(BAG_RINGS), len(loop))
    bag_bottom = count + bag_rings.size
    bag_points = np.concatenate(ring_points + [bag_bottom_point[None]])
    vertices.append(bag_points)
    base.append(bag_points)
    count += len(bag_points)

    # Sew the bag to the slit against the direction the skin runs along the slit loop.
    skin_edges = {(f[0], f[1]) for f in faces} | {(f[1], f[2]) for f in faces} | {(f[2], f[0]) for f in faces}
    forward = (int(loop[0]), int(loop[1])) in skin_edges
    chain = [loop] + list(bag_rings)
    n = len(loop)
    for ring_index in range(len(chain) - 1):
        outer, deeper = chain[ring_index], chain[ring_index + 1]
        # All of the bag is mouth interior, so that without it the head has FLAME's mouth hole, bounded by
        # the inner lip line.
        region = MOUTH_INTERIOR
        for s in range(n):
            t = (s + 1) % n
            a, b = (outer[s], outer[t]) if forward else (outer[t], outer[s])
            a2, b2 = (deeper[s], deeper[t]) if forward else (deeper[t], deeper[s])
            add([(b, a, a2), (b, a2, b2)], region)
    last = chain[-1]
    for s in range(n):
        t = (s + 1) % n
        a, b = (last[s], last[t]) if forward else (last[t], last[s])
        add([(b, a, bag_bottom)], MOUTH_INTERIOR)

    # Eyeballs.
    eye_indices = []
    for mirror in (False, True):  # the right eyeball is the mirror image of the left one
        eye_vertices, eye_faces, eye_regions = uv_sphere(EYE_CENTER, EYEBALL_RADIUS, mirror)
        faces.extend((eye_faces + count).tolist())
        regions.extend(eye_regions.tolist())
        vertices.append(eye_vertices)
        base.append(eye_vertices)
        eye_indices.append(count + np.arange(len(eye_vertices)))
        count += len(eye_vertices)

    vertices = np.concatenate(vertices)
    part = np.full(len(vertices), PART_SKIN)
    part[bag_rings.ravel()] = PART_BAG
    part[bag_bottom] = PART_BAG
    part[eye_indices[0]] = PART_EYE_LEFT
    part[eye_indices[1]] = PART_EYE_RIGHT
    return Mesh(
        vertices=vertices,
        faces=np.array(faces, dtype=np.int64),
        face_region=np.array(regions, dtype=np.int64),
        part=part,
        skin_base=np.concatenate(base),
        grid=grid,
        lower_slit=lower_slit,
        bag_loop=loop,
        bag_rings=bag_rings,
        bag_bottom=bag_bottom,
        eye_left=eye_indices[0],
        eye_right=eye_indices[1],
        layout=layout,
    )


# ---------------------------------------------------------------------------------------------------------
# Per-vertex descriptors that the rig and the blendshapes are written in
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Anatomy:
    """Per-vertex quantities that make the rig and the blendshapes easy to state.

    ``lip_side`` is 1 on the upper lip's side of the mouth and 0 on the lower lip's: a sharp step across the
    slit between the corners (the two copies of a slit vertex get 1 and 0), softening to 0.5 at the corners
    and to a broad blend beyond them. Everything else is a plain function of the rest position.
    """

    points: np.ndarray  # (V, 3) rest positions
    part: np.ndarray  # (V,)
    lip_side: np.ndarray  # (V,)
    mouth: MouthFrame
    corner: np.ndarray  # (3,) the left mouth corner

    @property
    def x(self):
        return self.points[:, 0]

    @property
    def y(self):
        return self.points[:, 1]

    @property
    def z(self):
        return self.points[:, 2]

    @property
    def lateral(self):
        """Signed lateral mouth coordinate X (+-1 at the corners)."""
        return self.mouth.lateral(self.points)

    @property
    def above_slit(self):
        """Height above the lip slit."""
        return self.y - self.mouth.slit_y

    @property
    def on_head_surface(self):
        """1 for skin and mouth bag vertices, 0 for the eyeballs."""
        return (self.part <= PART_BAG).astype(np.float64)

    def mirrored(self):
        """The same head seen in a mirror: left-side formulas evaluated on it describe the right side."""
        return replace(self, points=mirror_x(self.points))


def lip_side_field(mesh):
    """``Anatomy.lip_side`` for every vertex of the mesh (see there)."""
    points, layout = mesh.vertices, mesh.layout
    X = np.abs(layout.mouth.lateral(points))
    height = points[:, 1] - layout.mouth.slit_y
    softness = 0.0004 + 0.0045 * smoothstep(0.75, 2.2, X)
    side = 0.5 + 0.5 * np.tanh(height / softness)
    # The slit itself: upper copies towards 1, lower copies towards 0, both 0.5 at the corners.
    upper, lower = mesh.grid[layout.slit_row, layout.mouth_columns], mesh.lower_slit
    corner_share = 0.5 * np.abs(layout.mouth.lateral(points[upper])) ** 6
    side[upper] = 1.0 - corner_share
    side[lower] = corner_share
    side[mesh.lower_slit[[0, -1]]] = 0.5
    # The bag inherits from the slit loop it hangs from; its bottom is half and half.
    side[mesh.bag_rings] = side[mesh.bag_loop][None, :]
    side[mesh.bag_bottom] = 0.5
    return side


def make_anatomy(mesh):
    corner = mesh.vertices[mesh.lower_slit[-1]]
    return Anatomy(mesh.vertices.copy(), mesh.part.copy(), lip_side_field(mesh), mesh.layout.mouth, corner)


# ---------------------------------------------------------------------------------------------------------
# Rig: skinning weights and the joint regressor
# ---------------------------------------------------------------------------------------------------------
def head_neck_boundary(z):
    """Height where the head ends and the neck begins: under the chin in front, the skull base behind."""
    return -0.123 - 0.59 * (z - 0.04)


def jaw_weight(anatomy):
    """How much each skin vertex follows the jaw: the lower lip, chin and lower face, fading over the cheeks
    to nothing in front of the ears and under the jaw line."""
    X = np.abs(anatomy.lateral)
    # The line between the parts that stay and the parts that drop: the slit between the corners, then up
    # over the cheeks towards the joint in front of the ear.
    line = anatomy.mouth.slit_y + 0.040 * smoothstep(0.95, 2.7, X)
    softness = 0.0004 + 0.0125 * smoothstep(0.8, 2.4, X)
    below = smoothstep(line + 1.6 * softness, line - 1.6 * softness, anatomy.y)
    near_mouth = smoothstep(1.4, 0.9, X)
    below = near_mouth * (1.0 - anatomy.lip_side) + (1.0 - near_mouth) * below
    in_front_of_ear = smoothstep(-0.03, 0.02, anatomy.z)
    above_throat = smoothstep(-0.035, 0.03, anatomy.y - head_neck_boundary(anatomy.z))
    return below * in_front_of_ear * above_throat


def skinning_weights(mesh, anatomy):
    """(V, 5) linear-blend-skinning weights over (global, neck, jaw, left eye, right eye); rows sum to 1."""
    weights = np.zeros((len(mesh.vertices), len(JOINT_NAMES)))
    on_neck = smoothstep(0.0, -0.075, anatomy.y - head_neck_boundary(anatomy.z))
    jaw = jaw_weight(anatomy) * (1.0 - on_neck)
    # The mouth bag moves as the lip it hangs from.
    jaw[mesh.bag_rings] = jaw[mesh.bag_loop][None, :]
    jaw[mesh.bag_bottom] = 0.5 * (jaw[mesh.bag_loop].max() + jaw[mesh.bag_loop].min())
    surface = anatomy.part <= PART_BAG
    weights[surface, 0] = on_neck[surface]
    weights[surface, 2] = jaw[surface]
    weights[surface, 1] = 1.0 - weights[surface, 0] - weights[surface, 2]
    weights[mesh.eye_left, 3] = 1.0
    weights[mesh.eye_right, 4] = 1.0
    return weights


def joint_targets():
    """(5, 3) joint positions of the neutral head, FLAME order."""
    return np.stack([GLOBAL_JOINT, NECK_JOINT, JAW_JOINT, EYE_CENTER, mirror_x(EYE_CENTER)])


def regressor_row(points, candidates, target):
    """Weights over ``candidates`` that sum to 1 and average the points to exactly ``target``.

    Starts from uniform weights and makes the smallest change (least squares) that meets the constraints,
    so the joint moves with the candidates when the head's shape changes.
    """
    p = points[candidates]
    uniform = np.full(len(candidates), 1.0 / len(candidates))
    constraints = np.vstack([p.T, np.ones(len(candidates))])  # (4, n)
    residual = np.append(target, 1.0) - constraints @ uniform
    correction = constraints.T @ np.linalg.solve(constraints @ constraints.T, residual)
    return uniform + correction


def joint_regressor(mesh, anatomy):
    """(5, V) dense regressor. Each joint is a weighted mean of a symmetric group of vertices around it."""
    points = mesh.vertices
    skin = anatomy.part == PART_SKIN
    height = anatomy.y
    ring_of_neck_base = np.flatnonzero(skin & (height < NECK_BOTTOM_Y + 0.025))
    neck_and_skull_base = np.flatnonzero(
        skin
        & (((height > NECK_JOINT[1] - 0.05) & (height < NECK_JOINT[1] - 0.02)) | (np.abs(height - 0.0) < 0.008))
        & (np.abs(azimuth(points)) > 1.2)
    )
    tmj_skin = np.flatnonzero(
        skin
        & (np.hypot(np.abs(points[:, 0]) - 0.068, np.hypot(height - JAW_JOINT[1], points[:, 2] - 0.004)) < 0.014)
    )
    groups = [ring_of_neck_base, neck_and_skull_base, tmj_skin, mesh.eye_left, mesh.eye_right]
    regressor = np.zeros((len(JOINT_NAMES), len(points)))
    for joint, (group, target) in enumerate(zip(groups, joint_targets())):
        regressor[joint, group] = regressor_row(points, group, target)
    return regressor


# ---------------------------------------------------------------------------------------------------------
# Expression blendshapes (ARKit semantics, weight 1 = the full ARKit pose). Left = subject's left (+x).
# ---------------------------------------------------------------------------------------------------------
def vec(*components):
    """A displacement direction (metres) to scale by a per-vertex field."""
    return np.array(components, dtype=np.float64)


def field(weight, direction):
    """(V, 3) displacement: a per-vertex scalar field times a fixed direction."""
    return np.asarray(weight)[:, None] * direction[None, :]


def face_front(a):
    return smoothstep(0.02, 0.05, a.z)


def corner_influence(a):
    """1 at the left mouth corner, fading across the lips to the right and over the left cheek."""
    x, cx = a.x, a.corner[0]
    along_lips = smoothstep(-0.5 * cx, cx, x) ** 1.6
    over_cheek = gauss(x - cx, 0.020)
    lateral = np.where(x <= cx, along_lips, over_cheek)
    return lateral * gauss(a.above_slit, 0.015) * face_front(a)


def across_lips(a, power=0.6):
    """1 at the middle of the lips, 0 at and beyond the corners."""
    return np.clip(1.0 - a.lateral**2, 0.0, 1.0) ** power


def lips_band(a, reach=0.011):
    """1 on the lips (both), fading over ``reach`` above and below and soon beyond the corners."""
    return gauss(a.above_slit, reach) * smoothstep(1.5, 0.95, np.abs(a.lateral)) * face_front(a)


def mouth_area(a, reach_x=1.9, reach_y=0.015):
    """The lips and the skin around them."""
    return gauss(a.above_slit, reach_y) * smoothstep(reach_x, 0.8, np.abs(a.lateral)) * face_front(a)


def left_half(a, softness=0.35):
    """Side weight for one-sided mouth shapes: 1 on the left, 0.5 at the midline, 0 on the right lips."""
    return smoothstep(-softness, softness, a.lateral)


def strictly_left(a):
    """1 on the left half of the face (x > 0), 0 elsewhere: for shapes that must not touch the other side."""
    return ((a.x > 0) & (a.z > 0.0)).astype(np.float64)


def rotate_about_jaw(points, angle):
    """Points rotated by ``angle`` (radians, per point) about the jaw joint's x axis."""
    rel = points - JAW_JOINT
    c, s = np.cos(angle), np.sin(angle)
    rotated = np.stack([rel[:, 0], c * rel[:, 1] - s * rel[:, 2], s * rel[:, 1] + c * rel[:, 2]], axis=-1)
    return rotated + JAW_JOINT


def mouth_close(a, jaw):
    """mouthClose: with the jaw open by JAW_OPEN_REFERENCE, bring the lips together halfway.

    Each lip vertex is pre-rotated about the jaw pivot so that, after skinning, both lips sit at half the
    jaw's rotation: exactly where the upper and lower copies of the slit meet.
    """
    reach = smoothstep(0.022, 0.004, np.abs(a.above_slit)) * smoothstep(1.6, 1.0, np.abs(a.lateral))
    target = rotate_about_jaw(a.points, (0.5 - jaw) * JAW_OPEN_REFERENCE)
    return (target - a.points) * (reach * face_front(a))[:, None]


def mouth_funnel(a):
    """Lips flare forward into a rounded opening; the corners come in."""
    area = mouth_area(a, 2.0, 0.014)
    opening = across_lips(a, 0.7) * gauss(a.above_slit, 0.01)
    lifted = np.where(a.lip_side > 0.5, 0.0030, -0.0034) * opening * (2.0 * np.abs(a.lip_side - 0.5))
    delta = field(area, vec(0, 0, 0.0050)) + field(lips_band(a), vec(0, 0, 0.0022))
    delta[:, 0] += -0.24 * a.x * area
    delta[:, 1] += lifted
    return delta


def mouth_pucker(a):
    """Lips pushed forward and gathered towards the middle, still closed."""
    area = mouth_area(a, 2.1, 0.0135)
    band = lips_band(a)
    delta = field(area, vec(0, 0, 0.0080)) + field(band, vec(0, 0, 0.0015))
    delta[:, 0] += -0.38 * a.x * area
    delta[:, 1] += -0.22 * a.above_slit * band
    return delta


def mouth_left(a):
    """The whole mouth slides to the subject's left."""
    return field(mouth_area(a, 2.4, 0.02), vec(0.0075, 0.0, 0.0))


def mouth_smile_left(a):
    """The left corner pulls up and back; the cheek above it rises."""
    cheek = blob(a.x, a.y, 0.041, a.mouth.slit_y + 0.026, 0.014, 0.014) * face_front(a)
    return field(corner_influence(a), vec(0.0055, 0.0070, -0.0040)) + field(cheek, vec(0.0005, 0.0040, 0.0025))


def mouth_frown_left(a):
    """The left corner pulls down."""
    chin_side = blob(a.x, a.y, 0.026, a.mouth.slit_y - 0.02, 0.012, 0.012) * face_front(a)
    return field(corner_influence(a), vec(0.0012, -0.0060, -0.0008)) + field(chin_side, vec(0, -0.0015, 0))


def mouth_dimple_left(a):
    """The left corner pulls straight back, dimpling the cheek."""
    return field(corner_influence(a), vec(0.0030, 0.0005, -0.0045))


def mouth_stretch_left(a):
    """The left corner pulls out sideways and down; the lips flatten."""
    delta = field(corner_influence(a), vec(0.0075, -0.0030, -0.0030))
    delta[:, 2] += -0.0010 * lips_band(a) * left_half(a)
    return delta


def lip_roll(a, upper):
    """The upper (or lower) lip rolls in over the teeth: its red part turns back and towards the slit."""
    side = a.lip_side if upper else 1.0 - a.lip_side
    # Both copies of a slit vertex move alike, half as much, so that the lips stay in contact.
    side = np.where(np.abs(a.above_slit) < 1e-9, 0.5, side)
    t = np.abs(a.above_slit)
    roll = side * smoothstep(0.016, 0.002, t) * across_lips(a, 0.5) * face_front(a)
    squeeze = side * smoothstep(0.016, 0.004, t) * across_lips(a, 0.5) * face_front(a)
    delta = np.zeros_like(a.points)
    delta[:, 2] = -0.0042 * roll
    delta[:, 1] = -0.45 * a.above_slit * squeeze
    return delta


def mouth_shrug_lower(a):
    """The lower lip pushes up and out, the chin boss rises."""
    below = 1.0 - a.lip_side
    lip = below * lips_band(a, 0.012)
    up = 0.0030 * smoothstep(0.0, -0.006, a.above_slit) * lip
    chin = blob(a.x, a.y, 0.0, a.mouth.slit_y - 0.042, 0.020, 0.018) * face_front(a)
    delta = field(lip, vec(0, 0, 0.0018)) + field(chin, vec(0, 0.0030, 0.0015))
    delta[:, 1] += up
    return delta


def mouth_shrug_upper(a):
    """The upper lip pushes up and out."""
    lip = a.lip_side * lips_band(a, 0.012)
    up = 0.0022 * smoothstep(0.0, 0.006, a.above_slit) * lip
    delta = field(lip, vec(0, 0, 0.0016))
    delta[:, 1] += up
    return delta


def mouth_press_left(a):
    """The left half of the lips press together: the red parts thin and flatten, the slit stays closed."""
    band = lips_band(a, 0.012) * left_half(a)
    delta = np.zeros_like(a.points)
    delta[:, 1] = -0.35 * a.above_slit * band
    delta[:, 2] = -0.0014 * band
    return delta


def mouth_lower_down_left(a):
    """The left half of the lower lip pulls down, parting the lips there."""
    weight = (1.0 - a.lip_side) * left_half(a, 0.6) * across_lips(a, 0.5) * gauss(np.minimum(a.above_slit, 0), 0.016)
    return field(weight * face_front(a), vec(0.0004, -0.0060, 0.0008))


def mouth_upper_up_left(a):
    """The left half of the upper lip pulls up, parting the lips there."""
    weight = a.lip_side * left_half(a, 0.6) * across_lips(a, 0.5) * gauss(np.maximum(a.above_slit, 0), 0.013)
    return field(weight * face_front(a), vec(0.0003, 0.0050, 0.0006))


def brow_down_left(a):
    """The left brow lowers and draws in towards the nose."""
    brow = blob(a.x, a.y, 0.024, 0.049, 0.019, 0.011) * smoothstep(0.034, 0.046, a.y)
    return field(brow * strictly_left(a), vec(-0.0028, -0.0045, 0.0008))


def brow_inner_up(a):
    """The inner ends of both brows and the middle of the forehead rise."""
    inner = blob(np.abs(a.x), a.y, 0.012, 0.051, 0.014, 0.014) * smoothstep(0.035, 0.046, a.y)
    forehead = blob(np.abs(a.x), a.y, 0.010, 0.075, 0.026, 0.02)
    return field(inner * 1.0, vec(0, 0.0062, 0.0006)) + field(forehead * face_front(a), vec(0, 0.0022, 0))


def brow_outer_up_left(a):
    """The outer end of the left brow rises."""
    outer = blob(a.x, a.y, 0.043, 0.050, 0.014, 0.014) * smoothstep(0.035, 0.046, a.y)
    return field(outer * strictly_left(a), vec(0, 0.0060, 0.0004))


def cheek_puff(a):
    """Both cheeks blow out; the closed lips bulge a little."""
    cheeks = blob(np.abs(a.x), a.y, 0.040, a.mouth.slit_y + 0.004, 0.016, 0.019) * face_front(a)
    theta = azimuth(a.points)
    outward = np.stack([np.sin(theta), np.zeros_like(theta), np.cos(theta)], axis=-1)
    return 0.0075 * cheeks[:, None] * outward + field(lips_band(a), vec(0, 0, 0.0015))


def cheek_squint_left(a):
    """The left cheek rises towards the eye."""
    cheek = blob(a.x, a.y, 0.042, 0.006, 0.016, 0.012) * face_front(a)
    return field(cheek * strictly_left(a), vec(0, 0.0035, 0.0012))


def nose_sneer_left(a):
    """The left side of the nose wrinkles up."""
    side = blob(a.x, a.y, 0.012, -0.012, 0.009, 0.013) * face_front(a)
    lip = blob(a.x, a.y, 0.012, a.mouth.slit_y + 0.012, 0.010, 0.008) * a.lip_side * face_front(a)
    return field(side * left_half(a, 0.25), vec(0.0004, 0.0035, -0.0008)) + field(lip, vec(0, 0.0015, 0))


def lid_change(a, skin_base, lids):
    """Displacement of the left eye's skin when its lids take the shape ``lids`` instead of the rest shape."""
    moved = fit_lids(skin_base, lids) - fit_lids(skin_base, LidShape())
    return moved * (strictly_left(a) * (a.part == PART_SKIN))[:, None]


def eye_blink_left(a, skin_base):
    """The left lids close: upper lid down to the close line, lower lid up a little."""
    upper_lid = blob(a.x, a.y, EYE_CENTER[0], EYE_CENTER[1] + 0.0075, 0.013, 0.0035)
    return lid_change(a, skin_base, LidShape(closed=True)) + field(
        upper_lid * strictly_left(a) * (a.part == PART_SKIN), vec(0, -0.0012, 0)
    )


def eye_wide_left(a, skin_base):
    """The left upper lid lifts, showing white above the iris."""
    lid = blob(a.x, a.y, EYE_CENTER[0], EYE_CENTER[1] + 0.008, 0.013, 0.004)
    return lid_change(a, skin_base, LidShape(top=EYE_OPEN_TOP + 0.0024)) + field(
        lid * strictly_left(a) * (a.part == PART_SKIN), vec(0, 0.0012, 0)
    )


def eye_squint_left(a, skin_base):
    """The left lower lid rises and the cheek under the eye bunches up."""
    cheek = blob(a.x, a.y, EYE_CENTER[0] + 0.004, EYE_CENTER[1] - 0.014, 0.015, 0.007)
    lids = LidShape(top=EYE_OPEN_TOP - 0.0005, bottom=EYE_OPEN_BOTTOM - 0.0024)
    return lid_change(a, skin_base, lids) + field(cheek * strictly_left(a) * face_front(a), vec(0, 0.0016, 0.0008))


def expression_basis(mesh, anatomy, weights):
    """Names and (V, 3, E) displacements of the expression components, in ARKit's order."""
    jaw = weights[:, 2]
    base = mesh.skin_base
    mirrored = anatomy.mirrored()

    def both_sides(left_shape, *args):
        """The left shape, and the right one made by evaluating it on the mirrored head."""
        left = left_shape(anatomy, *args)
        right = mirror_x(left_shape(mirrored, *[mirror_x(arg) if arg is base else arg for arg in args]))
        return left, right

    shapes = {}

    def add_pair(stem, left_shape, *args):
        shapes[stem + "Left"], shapes[stem + "Right"] = both_sides(left_shape, *args)

    add_pair("eyeBlink", eye_blink_left, base)
    add_pair("eyeSquint", eye_squint_left, base)
    add_pair("eyeWide", eye_wide_left, base)
    shapes["mouthClose"] = mouth_close(anatomy, jaw)
    shapes["mouthFunnel"] = mouth_funnel(anatomy)
    shapes["mouthPucker"] = mouth_pucker(anatomy)
    shapes["mouthLeft"], shapes["mouthRight"] = both_sides(mouth_left)
    add_pair("mouthSmile", mouth_smile_left)
    add_pair("mouthFrown", mouth_frown_left)
    add_pair("mouthDimple", mouth_dimple_left)
    add_pair("mouthStretch", mouth_stretch_left)
    shapes["mouthRollLower"] = lip_roll(anatomy, upper=False)
    shapes["mouthRollUpper"] = lip_roll(anatomy, upper=True)
    shapes["mouthShrugLower"] = mouth_shrug_lower(anatomy)
    shapes["mouthShrugUpper"] = mouth_shrug_upper(anatomy)
    add_pair("mouthPress", mouth_press_left)
    add_pair("mouthLowerDown", mouth_lower_down_left)
    add_pair("mouthUpperUp", mouth_upper_up_left)
    add_pair("browDown", brow_down_left)
    shapes["browInnerUp"] = brow_inner_up(anatomy)
    add_pair("browOuterUp", brow_outer_up_left)
    shapes["cheekPuff"] = cheek_puff(anatomy)
    add_pair("cheekSquint", cheek_squint_left)
    add_pair("noseSneer", nose_sneer_left)

    names = [
        # ARKit's order (Apple's ARFaceAnchor.BlendShapeLocation listing), without the eye-look, jaw and
        # tongue entries: those are joints here, or absent.
        "eyeBlinkLeft", "eyeSquintLeft", "eyeWideLeft",
        "eyeBlinkRight", "eyeSquintRight", "eyeWideRight",
        "mouthClose", "mouthFunnel", "mouthPucker", "mouthLeft", "mouthRight",
        "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight",
        "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight",
        "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
        "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight",
        "mouthUpperUpLeft", "mouthUpperUpRight",
        "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
        "cheekPuff", "cheekSquintLeft", "cheekSquintRight",
        "noseSneerLeft", "noseSneerRight",
    ]  # fmt: skip
    assert sorted(names) == sorted(shapes), "every expression component is listed exactly once"
    deltas = np.stack([finish_expression(mesh, shapes[name]) for name in names], axis=-1)
    return names, deltas


def finish_expression(mesh, delta):
    """Make a skin displacement field whole: the mouth bag follows its slit loop (less so deeper in),
    the eyeballs never change shape."""
    delta = np.array(delta, dtype=np.float64)
    depth_falloff = np.linspace(0.8, 0.2, len(BAG_RINGS))
    delta[mesh.bag_rings] = depth_falloff[:, None, None] * delta[mesh.bag_loop][None]
    delta[mesh.bag_bottom] = 0.1 * delta[mesh.bag_loop].mean(axis=0)
    delta[mesh.eye_left] = 0.0
    delta[mesh.eye_right] = 0.0
    return delta


# ---------------------------------------------------------------------------------------------------------
# Identity shape components (weight 1 = about one standard deviation of adult variation)
# ---------------------------------------------------------------------------------------------------------
def shape_basis(mesh, anatomy):
    """Names and (V, 3, S) displacements of the identity components."""
    a = anatomy
    p, x, y, z = a.points, a.x, a.y, a.z
    ax, sign = np.abs(x), np.sign(x)
    front = face_front(a)
    theta = azimuth(p)
    outward = np.stack([np.sin(theta), np.zeros_like(theta), np.cos(theta)], axis=-1)

    nose_root = np.array([0.0, 0.002, 0.080])
    nose = np.clip(nose_relief(x, y) / 0.006, 0.0, 1.0) * front
    ear_root = np.stack([sign * 0.068, np.full_like(x, EAR_CENTER[1]), np.full_like(x, EAR_CENTER[2])], axis=-1)
    ear = np.clip(ear_relief(p) / 0.008, 0.0, 1.0)
    eye_region = smoothstep(0.030, 0.016, np.hypot(ax - EYE_CENTER[0], y - EYE_CENTER[1])) * front
    lips = lips_band(a, 0.009)

    shapes = {
        "head_width": field(x, vec(0.045, 0, 0)),
        "face_length": field(np.clip(EYE_CENTER[1] - y, 0.0, 0.14), vec(0, -0.05, 0)),
        "nose_size": 0.15 * (p - nose_root) * nose[:, None],
        "jaw_width": field(
            sign * smoothstep(0.02, 0.055, ax) * gauss(y + 0.07, 0.03) * smoothstep(-0.03, 0.0, z), vec(0.0055, 0, 0)
        ),
        "lip_fullness": field(lips, vec(0, 0, 0.0014)) + field(0.14 * a.above_slit * lips, vec(0, 1.0, 0)),
        "eye_spacing": field(sign * eye_region, vec(0.0022, 0, 0)),
        "chin": field(blob(x, y, 0.0, -0.095, 0.02, 0.016) * front, vec(0, -0.0012, 0.0042)),
        "cheek_fullness": 0.0032 * (blob(ax, y, 0.045, -0.025, 0.02, 0.025) * front)[:, None] * outward,
        "brow_prominence": field(gauss(y - 0.050, 0.009) * gauss(ax - 0.022, 0.03) * front, vec(0, 0, 0.0025)),
        "ear_size": 0.14 * (p - ear_root) * ear[:, None],
    }
    names = list(shapes)
    deltas = []
    for name in names:
        delta = np.array(shapes[name], dtype=np.float64)
        # Eyeballs move rigidly (by the field's mean over them), so they stay round; eye_spacing moves them
        # by exactly its full amount.
        for eye, side in ((mesh.eye_left, 1.0), (mesh.eye_right, -1.0)):
            delta[eye] = vec(side * 0.0022, 0, 0) if name == "eye_spacing" else np.mean(delta[eye], axis=0)
        deltas.append(delta)
    return names, np.stack(deltas, axis=-1)


# ---------------------------------------------------------------------------------------------------------
# Pose correctives
# ---------------------------------------------------------------------------------------------------------
def pose_feature_index(joint, row, col):
    """Column of posedirs driven by entry (row, col) of (R - I) of ``joint`` (1..4), FLAME's layout."""
    return (joint - 1) * 9 + 3 * row + col


def pose_correctives(mesh, anatomy):
    """(V, 3, 36) pose-corrective blendshapes, per unit of the driving (R - I) entry.

    Opening the jaw (R[2][1] = sin(angle) of the jaw) draws the lip corners in and hollows the cheeks a
    little (both lips alike, so that mouthClose still closes them); pitching the head down (the neck's
    R[2][1]) pushes the soft tissue under the chin forward.
    """
    a = anatomy
    posedirs = np.zeros((len(mesh.vertices), 3, 36))
    theta = azimuth(a.points)
    outward = np.stack([np.sin(theta), np.zeros_like(theta), np.cos(theta)], axis=-1)
    corners_in = np.zeros_like(a.points)
    corners_in[:, 0] = -0.12 * a.x * mouth_area(a, 1.8, 0.012)
    cheeks = blob(np.abs(a.x), a.y, 0.045, a.mouth.slit_y + 0.008, 0.014, 0.016) * face_front(a)
    jaw_open = corners_in - 0.006 * cheeks[:, None] * outward
    posedirs[:, :, pose_feature_index(2, 2, 1)] = finish_expression(mesh, jaw_open)
    under_chin = blob(a.x, a.y - head_neck_boundary(a.z), 0.0, 0.004, 0.03, 0.012) * smoothstep(0.0, 0.03, a.z)
    posedirs[:, :, pose_feature_index(1, 2, 1)] = field(under_chin, vec(0, -0.002, 0.008))
    return posedirs


# ---------------------------------------------------------------------------------------------------------
# Named vertex sets and landmarks
# ---------------------------------------------------------------------------------------------------------
def vertex_sets(mesh, anatomy):
    """The named vertex sets every head exposes (docs/head_format.md), as sorted index arrays."""
    layout, grid, slit = mesh.layout, mesh.grid, mesh.layout.slit_row
    columns = layout.mouth_columns
    upper_inner = grid[slit, columns]
    lower_inner = mesh.lower_slit
    upper_rows = grid[slit : slit + UPPER_LIP_ROWS + 1][:, columns]
    lower_rows = grid[slit - LOWER_LIP_ROWS : slit][:, columns]
    lips_upper = np.union1d(upper_rows.ravel(), [])
    lips_lower = np.union1d(lower_rows.ravel(), lower_inner)
    corner_columns = grid[slit - LOWER_LIP_ROWS : slit + UPPER_LIP_ROWS + 1][:, columns[[0, -1]]]
    lips_outer = np.union1d(
        np.union1d(grid[slit + UPPER_LIP_ROWS, columns], grid[slit - LOWER_LIP_ROWS, columns]), corner_columns.ravel()
    )
    skin = np.flatnonzero(anatomy.part == PART_SKIN)
    x, y, z = anatomy.x[skin], anatomy.y[skin], anatomy.z[skin]
    above = anatomy.above_slit[skin]
    mouth_region = skin[(np.abs(x) < 0.038) & (above > -0.032) & (above < 0.017) & (z > 0.05)]
    face = skin[(np.abs(azimuth(anatomy.points[skin])) < 1.22) & (y > -0.118) & (y < 0.095) & (z > 0.0)]
    upper_face = face[anatomy.y[face] > 0.012]
    sets = {
        "lips": np.union1d(lips_upper, lips_lower),
        "lips_upper": lips_upper,
        "lips_lower": lips_lower,
        "lips_inner": np.union1d(upper_inner, lower_inner),
        "lips_outer": lips_outer,
        "lips_upper_inner": np.sort(upper_inner),
        "lips_lower_inner": np.sort(lower_inner),
        "mouth_region": np.union1d(mouth_region, np.union1d(lips_upper, lips_lower)),
        "face": np.union1d(face, np.union1d(lips_upper, lips_lower)),
        "upper_face": upper_face,
        "eyes": np.union1d(mesh.eye_left, mesh.eye_right),
        "eye_left": np.sort(mesh.eye_left),
        "eye_right": np.sort(mesh.eye_right),
    }
    return sets


def landmarks(mesh):
    """Named landmark vertices: the inner lip centres (two coincident copies) and the mouth corners."""
    layout = mesh.layout
    middle = len(layout.mouth_columns) // 2
    return {
        "upper_lip_center": int(mesh.grid[layout.slit_row, layout.mouth_columns[middle]]),
        "lower_lip_center": int(mesh.lower_slit[middle]),
        "mouth_corner_left": int(mesh.lower_slit[-1]),
        "mouth_corner_right": int(mesh.lower_slit[0]),
    }


# ---------------------------------------------------------------------------------------------------------
# Assembly and output
# ---------------------------------------------------------------------------------------------------------
def build_head():
    """Every array of the built-in head, keyed and typed as in docs/head_format.md."""
    layout = make_layout()
    mesh = build_mesh(layout)
    anatomy = make_anatomy(mesh)
    weights = skinning_weights(mesh, anatomy)
    expression_names, expressions = expression_basis(mesh, anatomy, weights)
    shape_names, shapes = shape_basis(mesh, anatomy)

    arrays = {
        "v_template": mesh.vertices.astype(np.float32),
        "f": mesh.faces.astype(np.int32),
        "shapedirs": np.concatenate([shapes, expressions], axis=-1).astype(np.float32),
        "posedirs": pose_correctives(mesh, anatomy).astype(np.float32),
        "J_regressor": joint_regressor(mesh, anatomy).astype(np.float32),
        "weights": weights.astype(np.float32),
        "kintree_table": np.array([KINTREE_PARENTS, range(len(JOINT_NAMES))], dtype=np.int32),
        "n_shape": np.array(len(shape_names), dtype=np.int32),
        "expression_names": np.array(expression_names),
        "shape_names": np.array(shape_names),
        "face_region": mesh.face_region.astype(np.int32),
        "face_region_names": np.array(REGION_NAMES),
        "head_name": np.array(HEAD_NAME),
    }
    for name, indices in vertex_sets(mesh, anatomy).items():
        arrays[VSET_PREFIX + name] = np.asarray(indices, dtype=np.int32)
    for name, index in landmarks(mesh).items():
        arrays[LANDMARK_PREFIX + name] = np.array(index, dtype=np.int32)
    return arrays


def main(argv=None):
    parser = argparse.ArgumentParser(description="Generate the built-in head (" + HEAD_NAME + ").")
    parser.add_argument("output", nargs="?", default=str(DEFAULT_OUTPUT), help="where to write the .npz")
    args = parser.parse_args(argv)
    arrays = build_head()
    path = write_npz(args.output, arrays)
    vertices, faces = arrays["v_template"], arrays["f"]
    print(f"wrote {path}: {len(vertices)} vertices, {len(faces)} triangles, "
          f"{int(arrays['n_shape'])} shape and {len(arrays['expression_names'])} expression components")  # fmt: skip


if __name__ == "__main__":
    main()
