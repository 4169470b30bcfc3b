"""Retargeting the built-in head's expressions onto a FLAME file's head: pure numpy, solved once per head.

The shipped model speaks the built-in head's parameters: 39 ARKit-named expression components plus FLAME's jaw,
neck and eye rotations. A FLAME file has the same joints, scale and placement but its own mesh and a PCA
expression basis (`exp000`...). To drive it with the same takes, each built-in component k gets a FLAME
coefficient vector M[k] whose FLAME shape reproduces it; the FLAME head then carries the 39 deltas
`exprdirs @ M[k]` as its expression components, under the built-in names, and is keyed exactly like the built-in
head. Jaw, neck and eyes need nothing: the joints are FLAME's on both heads.

    correspondence = find_correspondence(source, target)      # built-in (source) and FLAME (target) surfaces
    wanted = correspondence.carry(source_deltas)               # (N, 3, K) what each built-in component does there
    M = solve_expression_map(target_exprdirs, correspondence, wanted)   # (K, E) ridge least squares
    basis = retargeted_basis(target_exprdirs, M)               # (V, 3, K) the FLAME head's new components

How:
1. Alignment. Both heads are in FLAME's frame, but a FLAME identity differs in size and proportions. A similarity
   transform (scale, rotation, translation; Umeyama's closed form) is fitted on landmarks both heads have from
   their regions (backend/head_regions.py): the inner-lip centres, the mouth corners and the eyeball centres.
2. Correspondence. Every FLAME face vertex, moved into the built-in head's frame, takes the closest point on the
   built-in skin; upper-lip vertices look only on the built-in upper lip and lower-lip vertices only on the lower
   lip, so no vertex at the mouth slit lands on the other lip (which would tear the lips apart on a closure).
   A built-in delta at that point is the barycentric mix of its triangle's vertex deltas, brought back into the
   FLAME head's frame (the similarity's inverse rotation and scale: a bigger face moves more).
3. Solve. For each component, ridge-regularized least squares over the corresponding vertices, the lips weighted
   LIP_WEIGHT times the rest of the face: min |W^1/2 (E x - d_k)|^2 + lambda |x|^2, all 39 in one solve.
   What the FLAME basis cannot express is left out (the residual), rather than faked with huge coefficients:
   that is what the ridge term is for.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
from scipy.spatial import cKDTree

from backend.errors import ThunderError
from backend.files import write_atomically

RETARGET_VERSION = 1   # bump when the method changes: cached maps of older versions are then solved again
LIP_WEIGHT = 10.0      # how much more a lip vertex counts than another face vertex
RIDGE = 1e-4           # lambda, relative to the mean diagonal of the normal equations
CANDIDATE_TRIANGLES = 12   # nearest triangle centroids searched for each point's closest point
ALIGNMENT_LANDMARKS = ("upper_lip_center", "lower_lip_center", "mouth_corner_left", "mouth_corner_right")


class RetargetError(ThunderError):
    """A head the built-in head's expressions cannot be retargeted onto; one sentence."""


@dataclasses.dataclass(frozen=True)
class Similarity:
    """x -> scale * rotation @ x + translation."""

    scale: float
    rotation: np.ndarray      # (3, 3)
    translation: np.ndarray   # (3,)

    def apply(self, points: np.ndarray) -> np.ndarray:
        return self.scale * points @ self.rotation.T + self.translation

    def inverse_delta(self, deltas: np.ndarray) -> np.ndarray:
        """Displacements (..., 3) in the transform's output frame, as displacements in its input frame."""
        return deltas @ self.rotation / self.scale


def fit_similarity(from_points: np.ndarray, to_points: np.ndarray) -> Similarity:
    """The similarity that maps `from_points` (N, 3) closest to `to_points` (N, 3) in least squares
    (Umeyama 1991), a proper rotation (no reflection)."""
    a, b = np.asarray(from_points, np.float64), np.asarray(to_points, np.float64)
    mean_a, mean_b = a.mean(0), b.mean(0)
    a0, b0 = a - mean_a, b - mean_b
    u, s, vt = np.linalg.svd(b0.T @ a0 / len(a))
    d = np.ones(3)
    d[2] = np.sign(np.linalg.det(u @ vt)) or 1.0
    rotation = u @ np.diag(d) @ vt
    scale = float((s * d).sum() / (a0 ** 2).sum(1).mean())
    return Similarity(scale, rotation, mean_b - scale * rotation @ mean_a)


def closest_points_on_triangles(points: np.ndarray, vertices: np.ndarray, triangles: np.ndarray,
                                candidates: int = CANDIDATE_TRIANGLES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each point (N, 3), the closest point on the mesh (vertices, triangles (F, 3)), searched among the
    `candidates` triangles with the nearest centroids. Returns the triangle index (N,), the barycentric
    coordinates of the closest point in it (N, 3) and the distance (N,)."""
    points = np.asarray(points, np.float64)
    corners = vertices[triangles]                                 # (F, 3, 3)
    k = min(candidates, len(triangles))
    _, near = cKDTree(corners.mean(1)).query(points, k=k)
    near = near.reshape(len(points), k)
    bary = _closest_barycentric(points[:, None, :], corners[near])   # (N, k, 3)
    on_triangle = np.einsum("nkc,nkcd->nkd", bary, corners[near])
    distance = np.linalg.norm(on_triangle - points[:, None, :], axis=-1)
    best = distance.argmin(1)
    rows = np.arange(len(points))
    return near[rows, best], bary[rows, best], distance[rows, best]


def _closest_barycentric(p: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Barycentric coordinates (..., 3) of the point of each triangle (..., 3, 3) closest to p (..., 3)
    (Ericson, Real-Time Collision Detection 5.1.5: the Voronoi regions of the vertices, edges and face)."""
    a, b, c = tri[..., 0, :], tri[..., 1, :], tri[..., 2, :]
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = (ab * ap).sum(-1), (ac * ap).sum(-1)
    bp, cp = p - b, p - c
    d3, d4 = (ab * bp).sum(-1), (ac * bp).sum(-1)
    d5, d6 = (ab * cp).sum(-1), (ac * cp).sum(-1)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = va + vb + vc
        v_face, w_face = vb / denom, vc / denom
        t_ab = d1 / (d1 - d3)
        t_ac = d2 / (d2 - d6)
        t_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6))
    out = np.stack([1 - v_face - w_face, v_face, w_face], -1)
    zero = np.zeros_like(d1)

    def put(mask, u, v, w):
        out[mask] = np.stack([u, v, w], -1)[mask]

    # Ericson tests A, B, AB, C, AC, BC in this order and returns at the first match: here each later region
    # overwrites the earlier ones, so they are put in the reverse order, over the face's default.
    put((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), zero, 1 - t_bc, t_bc)
    put((vb <= 0) & (d2 >= 0) & (d6 <= 0), 1 - t_ac, zero, t_ac)
    put((d6 >= 0) & (d5 <= d6), zero, zero, zero + 1)
    put((vc <= 0) & (d1 >= 0) & (d3 <= 0), 1 - t_ab, t_ab, zero)
    put((d3 >= 0) & (d4 <= d3), zero, zero + 1, zero)
    put((d1 <= 0) & (d2 <= 0), zero + 1, zero, zero)
    return np.nan_to_num(out, nan=1.0 / 3.0)


@dataclasses.dataclass(frozen=True)
class HeadSurface:
    """What the retarget needs of a head at rest: its mesh, named vertex sets and landmarks (head_regions)."""

    vertices: np.ndarray          # (V, 3)
    faces: np.ndarray             # (F, 3)
    vertex_sets: dict             # lips_upper, lips_lower, face, mouth_region, eye_left, eye_right, ...
    landmarks: dict               # ALIGNMENT_LANDMARKS

    def alignment_points(self) -> np.ndarray:
        """The lip landmarks and the eyeball centres, (6, 3)."""
        points = [self.vertices[self.landmarks[name]] for name in ALIGNMENT_LANDMARKS]
        points += [self.vertices[self.vertex_sets[eye]].mean(0) for eye in ("eye_left", "eye_right")]
        return np.asarray(points)

    def triangles_within(self, indices) -> np.ndarray:
        """The faces all of whose corners are in `indices`."""
        inside = np.zeros(len(self.vertices), dtype=bool)
        inside[np.asarray(indices)] = True
        return self.faces[inside[self.faces].all(1)]


@dataclasses.dataclass(frozen=True)
class Correspondence:
    """Target vertices and the source surface points that correspond to them."""

    target_vertices: np.ndarray   # (N,) indices into the target mesh
    source_corners: np.ndarray    # (N, 3) the source vertices of the triangle each one lands on
    barycentric: np.ndarray       # (N, 3)
    is_lip: np.ndarray            # (N,) bool
    distance: np.ndarray          # (N,) metres, in the source's frame after alignment
    alignment: Similarity         # target frame -> source frame

    def carry(self, source_deltas: np.ndarray) -> np.ndarray:
        """Source displacements (V_source, 3, K) at the corresponding points, in the target's frame: (N, 3, K)."""
        at_points = np.einsum("nc,ncdk->ndk", self.barycentric, source_deltas[self.source_corners])
        return np.einsum("ndk,de->nek", at_points, self.alignment.rotation) / self.alignment.scale


def find_correspondence(source: HeadSurface, target: HeadSurface) -> Correspondence:
    """Corresponding points (module docstring, steps 1 and 2) for the target's face and lip vertices."""
    alignment = fit_similarity(target.alignment_points(), source.alignment_points())
    moved = alignment.apply(target.vertices)
    eyes = set(np.concatenate([source.vertex_sets["eye_left"], source.vertex_sets["eye_right"]]).tolist())
    skin = np.setdiff1d(np.arange(len(source.vertices)), np.fromiter(eyes, dtype=np.int64))
    lips_upper, lips_lower = (np.asarray(target.vertex_sets[name]) for name in ("lips_upper", "lips_lower"))
    lips = np.union1d(lips_upper, lips_lower)
    rest = np.setdiff1d(np.union1d(target.vertex_sets["face"], target.vertex_sets["mouth_region"]), lips)
    source_lips = np.union1d(source.vertex_sets["lips_upper"], source.vertex_sets["lips_lower"])
    # Near the corners a vertex belongs to both lips (head_regions): it looks on both.
    groups = [(np.setdiff1d(lips_upper, lips_lower), source.triangles_within(source.vertex_sets["lips_upper"]), True),
              (np.setdiff1d(lips_lower, lips_upper), source.triangles_within(source.vertex_sets["lips_lower"]), True),
              (np.intersect1d(lips_upper, lips_lower), source.triangles_within(source_lips), True),
              (rest, _skin_triangles(source, skin), False)]
    parts = []
    for indices, triangles, is_lip in groups:
        if len(indices) == 0 or len(triangles) == 0:
            raise RetargetError("the head has no vertices in a region the retarget needs (lips or face)")
        triangle, bary, distance = closest_points_on_triangles(moved[indices], source.vertices, triangles)
        parts.append((indices, triangles[triangle], bary, np.full(len(indices), is_lip), distance))
    columns = [np.concatenate(column) for column in zip(*parts)]
    return Correspondence(*columns, alignment=alignment)


def _skin_triangles(source: HeadSurface, skin: np.ndarray) -> np.ndarray:
    """The source's skin faces near the face (no eyeballs; the mouth's inside is not in the face or mouth sets)."""
    near_face = np.union1d(source.vertex_sets["face"], source.vertex_sets["mouth_region"])
    return source.triangles_within(np.intersect1d(near_face, skin))


def solve_expression_map(target_exprdirs: np.ndarray, correspondence: Correspondence, wanted: np.ndarray,
                         lip_weight: float = LIP_WEIGHT, ridge: float = RIDGE) -> np.ndarray:
    """M (K, E): the target coefficients that best reproduce each wanted displacement field (N, 3, K) at the
    corresponding vertices (module docstring, step 3)."""
    basis = np.asarray(target_exprdirs, np.float64)[correspondence.target_vertices]    # (N, 3, E)
    n, _, e = basis.shape
    weight = np.where(correspondence.is_lip, lip_weight, 1.0)
    a = basis.reshape(n * 3, e) * np.repeat(np.sqrt(weight), 3)[:, None]
    b = np.asarray(wanted, np.float64).reshape(n * 3, -1) * np.repeat(np.sqrt(weight), 3)[:, None]
    normal = a.T @ a
    lam = ridge * float(np.trace(normal)) / e
    return np.linalg.solve(normal + lam * np.eye(e), a.T @ b).T


def retargeted_basis(target_exprdirs: np.ndarray, expression_map: np.ndarray) -> np.ndarray:
    """The target's new expression components (V, 3, K): component k is `exprdirs @ M[k]`."""
    return np.einsum("vce,ke->vck", np.asarray(target_exprdirs, np.float64), expression_map)


def retarget_errors(target_exprdirs: np.ndarray, correspondence: Correspondence, wanted: np.ndarray,
                    expression_map: np.ndarray) -> np.ndarray:
    """Per component, the largest distance (metres) between what the retargeted component does at a
    corresponding lip vertex and what the source component does there: (K,)."""
    got = retargeted_basis(target_exprdirs, expression_map)[correspondence.target_vertices]
    miss = np.linalg.norm(got - wanted, axis=1)[correspondence.is_lip]    # (N_lips, K)
    return miss.max(0)


def solve_retarget(source: HeadSurface, source_exprdirs: np.ndarray, target: HeadSurface,
                   target_exprdirs: np.ndarray) -> tuple[np.ndarray, Correspondence, np.ndarray]:
    """Steps 1-3 for two heads: (M (K, E), the correspondence, the wanted displacements (N, 3, K))."""
    correspondence = find_correspondence(source, target)
    wanted = correspondence.carry(np.asarray(source_exprdirs, np.float64))
    return solve_expression_map(target_exprdirs, correspondence, wanted), correspondence, wanted


def default_cache_folder() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "thunder" / "retarget"


def cached_expression_map(source_identity: str, target_identity: str, n_source: int, n_target: int,
                          solve: Callable[[], np.ndarray], folder: str | Path | None = None) -> np.ndarray:
    """M (n_source, n_target) for two heads, from `folder` (default ~/.cache/thunder/retarget) when it was solved
    before, else `solve()` and written there atomically. A cache file that cannot be read is solved again; a
    folder that cannot be written only costs the next load the solve."""
    folder = Path(folder) if folder is not None else default_cache_folder()
    key = hashlib.sha256(f"{source_identity}|{target_identity}|{RETARGET_VERSION}".encode()).hexdigest()[:24]
    path = folder / f"{key}.npz"
    try:
        with np.load(path, allow_pickle=False) as cached:
            expression_map = cached["expression_map"]
        if expression_map.shape == (n_source, n_target) and np.isfinite(expression_map).all():
            return expression_map
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        pass
    expression_map = solve()

    def write(tmp: Path):
        with open(tmp, "wb") as file:
            np.savez(file, expression_map=expression_map, source=np.array(source_identity),
                     target=np.array(target_identity), version=np.array(RETARGET_VERSION))

    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomically(path, write)
    except OSError:
        pass
    return expression_map
