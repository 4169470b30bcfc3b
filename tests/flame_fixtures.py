"""Files in the layout of the FLAME site's downloads, made by the tests (no FLAME file is ever committed).

FLAME 2020's generic_model.pkl is a Python 2 pickle of a dict whose arrays are chumpy `Ch` objects (state:
a dict with the array under 'x'), whose J_regressor is a scipy `csc_matrix`, and whose kintree_table stores
the root's parent as 2**32 - 1. `write_flame_pickle` reproduces that byte layout without chumpy or scipy:
it registers stand-in modules named `chumpy.ch` and `scipy.sparse.csc` only while pickling, so the pickle
names the same classes a real file names, then removes them again.
"""

from __future__ import annotations

import contextlib
import pickle
import sys
import types
from pathlib import Path

import numpy as np


class _Ch:
    """Pickles like chumpy.ch.Ch: NEWOBJ/reconstructor plus a state dict from __getstate__."""

    def __init__(self, x):
        self.x = np.asarray(x, dtype=np.float64)

    def __getstate__(self):
        return {"x": self.x, "_dirty_vars": set(), "_itr": None, "_depends_on_deps": {},
                "_make_dense": False, "_make_sparse": False}


class _CscMatrix:
    """Pickles like scipy.sparse.csc.csc_matrix (scipy < 1.8 module path)."""

    def __init__(self, dense):
        dense = np.asarray(dense, dtype=np.float64)
        cols = [np.flatnonzero(dense[:, c]) for c in range(dense.shape[1])]
        self.indices = np.concatenate(cols).astype(np.int32)
        self.indptr = np.cumsum([0] + [len(c) for c in cols]).astype(np.int32)
        self.data = np.concatenate([dense[c, i] for i, c in enumerate(cols)])
        self._shape = dense.shape

    def __getstate__(self):
        return {"_shape": self._shape, "maxprint": 50, "indices": self.indices, "indptr": self.indptr,
                "data": self.data}


@contextlib.contextmanager
def _stand_in_modules():
    names = {"chumpy": None, "chumpy.ch": ("Ch", _Ch), "scipy": None, "scipy.sparse": None,
             "scipy.sparse.csc": ("csc_matrix", _CscMatrix)}
    saved = {n: sys.modules.get(n) for n in names}
    try:
        for name, member in names.items():
            module = types.ModuleType(name)
            if member:
                cls_name, cls = member
                cls.__module__, cls.__qualname__, cls.__name__ = name, cls_name, cls_name
                setattr(module, cls_name, cls)
            sys.modules[name] = module
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def write_flame_pickle(path: Path, model: dict, protocol: int = 2, chumpy: bool = True) -> Path:
    """Write `model` (plain arrays, FLAME keys) as the FLAME site's pickle: chumpy arrays and a csc matrix.

    protocol 2 is what FLAME 2020 uses (NEWOBJ); protocol 1 exercises copy_reg._reconstructor.
    """
    content = dict(model)
    if chumpy:
        for key in ("v_template", "shapedirs", "posedirs", "weights", "J"):
            if key in content:
                content[key] = _Ch(content[key])
    content["J_regressor"] = _CscMatrix(content["J_regressor"])
    kintree = np.asarray(content["kintree_table"]).astype(np.int64)
    kintree[0, 0] = 2**32 - 1
    content["kintree_table"] = kintree.astype(np.uint32)
    content["bs_style"], content["bs_type"] = "lbs", "lrotmin"
    with _stand_in_modules():
        data = pickle.dumps(content, protocol=protocol, fix_imports=True)
    path.write_bytes(data)
    return path


def make_synthetic_flame(n_verts: int = 120, n_shape: int = 300, n_expr: int = 20, seed: int = 0) -> dict:
    """A small random model in FLAME's keys and layouts (random geometry, a valid tree, real structure).

    Vertices with x < 0 carry no jaw weight and no jaw pose-corrective, so a jaw rotation must leave them
    in place; the others blend the neck and jaw joints. Eye joints get their own vertices.
    """
    rng = np.random.default_rng(seed)
    v_template = rng.normal(scale=0.05, size=(n_verts, 3))
    faces = np.stack([np.arange(n_verts - 2), np.arange(1, n_verts - 1), np.arange(2, n_verts)], 1)
    weights = np.zeros((n_verts, 5))
    weights[:, 0] = 0.1
    on_jaw = v_template[:, 0] >= 0
    weights[on_jaw, 2] = rng.uniform(0.2, 0.9, on_jaw.sum())
    weights[:, 1] = 0.9 - weights[:, 2]
    eye_l, eye_r = np.arange(0, n_verts, 17), np.arange(8, n_verts, 17)
    for eye, joint in ((eye_l, 3), (eye_r, 4)):
        weights[eye] = 0.0
        weights[eye, joint] = 1.0
    on_jaw[eye_l] = on_jaw[eye_r] = False
    regressor = rng.uniform(size=(5, n_verts))
    regressor /= regressor.sum(1, keepdims=True)
    posedirs = rng.normal(scale=1e-3, size=(n_verts, 3, 36))
    posedirs[~on_jaw, :, 9:18] = 0.0  # jaw features are (joint 2 - 1) * 9 .. + 9
    return {
        "v_template": v_template,
        "f": faces.astype(np.uint32),
        "shapedirs": rng.normal(scale=1e-3, size=(n_verts, 3, n_shape + n_expr)),
        "posedirs": posedirs,
        "J_regressor": regressor,
        "weights": weights,
        "kintree_table": np.array([[-1, 0, 1, 1, 1], [0, 1, 2, 3, 4]]),
        "J": regressor @ v_template,
    }


# --- a FLAME-layout head that is not the built-in head -----------------------------------------------------
FLAME_VERTICES = 5023   # FLAME 2020's and 2023's mesh


def _edges(faces: np.ndarray) -> np.ndarray:
    pairs = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.unique(np.sort(pairs, axis=1), axis=0)


def _boundary_vertices(faces: np.ndarray) -> np.ndarray:
    pairs = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    edges, counts = np.unique(pairs, axis=0, return_counts=True)
    return np.unique(edges[counts == 1])


def decimate(attributes: dict, faces: np.ndarray, locked: np.ndarray, n_vertices: int, rng) -> tuple[dict, np.ndarray]:
    """Collapse edges (shortest first, lengths jittered by `rng`) until the mesh has `n_vertices` vertices.

    attributes: per-vertex arrays (first axis V); an edge's two vertices merge into their mean, except
    "regressor" (V, J), whose columns add (a joint regressor keeps its sums). locked: (V,) bool, vertices never
    moved (boundaries stay where they are). Each pass collapses edges that share no one-ring, each only when the
    two one-rings share exactly two vertices (the link condition: the surface stays a manifold)."""
    attributes = {k: np.array(v, dtype=np.float64) for k, v in attributes.items()}
    faces = np.asarray(faces, dtype=np.int64)
    locked = np.array(locked, dtype=bool)
    while len(locked) > n_vertices:
        boundary = np.zeros(len(locked), dtype=bool)
        boundary[_boundary_vertices(faces)] = True
        edges = _edges(faces)
        position = attributes["position"]
        length = np.linalg.norm(position[edges[:, 0]] - position[edges[:, 1]], axis=1) * rng.uniform(0.7, 1.3, len(edges))
        neighbours = [set() for _ in range(len(locked))]
        for a, b in edges.tolist():
            neighbours[a].add(b)
            neighbours[b].add(a)
        touched = locked | boundary
        keep, drop = [], []
        for k in np.argsort(length).tolist():
            a, b = edges[k].tolist()
            if touched[a] or touched[b] or len(neighbours[a] & neighbours[b]) != 2:
                continue
            if min(len(neighbours[a]), len(neighbours[b])) <= 3:
                continue
            keep.append(a)
            drop.append(b)
            touched[[a, b, *neighbours[a], *neighbours[b]]] = True
            if len(locked) - len(drop) <= n_vertices:
                break
        if not drop:
            raise RuntimeError("no edge can be collapsed any more")
        keep, drop = np.asarray(keep), np.asarray(drop)
        for name, values in attributes.items():
            if name == "regressor":
                values[keep] += values[drop]
            else:
                values[keep] = 0.5 * (values[keep] + values[drop])
        remap = np.arange(len(locked))
        remap[drop] = keep
        faces = remap[faces]
        faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])]
        alive = np.ones(len(locked), dtype=bool)
        alive[drop] = False
        index = np.cumsum(alive) - 1
        faces = index[faces]
        attributes = {k: v[alive] for k, v in attributes.items()}
        locked = locked[alive]
    return attributes, faces


def smooth_random_fields(vertices: np.ndarray, centres: np.ndarray, count: int, rng, radius: float = 0.012,
                         amplitude: float = 0.003) -> np.ndarray:
    """`count` displacement fields (V, 3, count), each a few Gaussian bumps of random direction around random
    centres: shapes a face could make that are no mix of the built-in head's components."""
    fields = np.zeros((len(vertices), 3, count))
    for k in range(count):
        for centre in centres[rng.integers(0, len(centres), 3)]:
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            bump = np.exp(-0.5 * (np.linalg.norm(vertices - centre, axis=1) / radius) ** 2)
            fields[:, :, k] += amplitude * bump[:, None] * direction
    return fields


def make_flame_layout_head(seed: int = 0, n_expr: int = 100, n_noise: int = 30, scale: float = 1.04,
                           shape_std: float = 1.5) -> tuple[dict, dict]:
    """A head in FLAME's keys and layouts that is not the built-in head, and what it should do.

    The built-in head without its mouth cavity (FLAME's mouth is a hole), decimated to FLAME's 5023 vertices
    (another topology; vertices shuffled), given an identity (the built-in shape components with random weights),
    scaled by `scale` and shifted by a millimetre. Its expression basis (`n_expr` components, after FLAME's 300
    shape components) mixes the built-in head's 39 components, carried onto the new mesh, with a random matrix,
    plus `n_noise` smooth random fields the built-in head cannot make. With 39 + n_noise <= n_expr the built-in
    components lie in its span; above, the noise cannot be cancelled everywhere.

    Returns (model, truth): model in FLAME's keys (write it with write_flame_pickle); truth["arkit"] (V, 3, 39),
    the built-in components on this head (what a perfect retarget gives), and truth["names"]."""
    from backend.flame_file import FLAME_N_SHAPE, load_head_file
    from backend.head import BUILTIN_HEAD_PATH

    rng = np.random.default_rng(seed)
    data = load_head_file(BUILTIN_HEAD_PATH)
    cavity = data.face_region_names.index("mouth_interior")
    faces = data.faces[data.face_region != cavity]
    used = np.zeros(len(data.v_template), dtype=bool)
    used[faces] = True
    index = np.cumsum(used) - 1
    faces = index[faces]
    n = int(used.sum())
    attributes = {"position": data.v_template[used], "weights": data.weights[used],
                  "posedirs": data.posedirs[used].reshape(n, -1), "shapedirs": data.shapedirs[used].reshape(n, -1),
                  "exprdirs": data.exprdirs[used].reshape(n, -1), "regressor": data.joint_regressor[:, used].T}
    eyes = (data.weights[used, 3] > 0.5) | (data.weights[used, 4] > 0.5)
    attributes, faces = decimate(attributes, faces, eyes, FLAME_VERTICES, rng)
    order = rng.permutation(FLAME_VERTICES)            # FLAME's vertex order is its own
    attributes = {k: v[order] for k, v in attributes.items()}
    faces = np.argsort(order)[faces]

    v = FLAME_VERTICES
    shapedirs = attributes["shapedirs"].reshape(v, 3, -1)
    betas = rng.normal(0.0, shape_std, shapedirs.shape[2])
    template = scale * (attributes["position"] + shapedirs @ betas) + rng.normal(0.0, 0.001, 3)
    arkit = scale * attributes["exprdirs"].reshape(v, 3, -1)
    face = template[:, 2] > np.percentile(template[:, 2], 60)
    noise = smooth_random_fields(template, template[face], n_noise, rng)
    mixing = rng.normal(0.0, 1.0, (arkit.shape[2], n_expr)) / np.sqrt(arkit.shape[2])
    noise_mixing = rng.normal(0.0, 1.0, (n_noise, n_expr)) / np.sqrt(max(n_noise, 1))
    exprdirs = arkit @ mixing + noise @ noise_mixing
    all_shapes = np.zeros((v, 3, FLAME_N_SHAPE + n_expr))
    all_shapes[:, :, :shapedirs.shape[2]] = scale * shapedirs
    all_shapes[:, :, FLAME_N_SHAPE:] = exprdirs
    weights = attributes["weights"] / attributes["weights"].sum(1, keepdims=True)
    regressor = attributes["regressor"].T
    model = {
        "v_template": template,
        "f": faces.astype(np.uint32),
        "shapedirs": all_shapes,
        "posedirs": scale * attributes["posedirs"].reshape(v, 3, -1),
        "J_regressor": regressor,
        "weights": weights,
        "kintree_table": np.array([[-1, 0, 1, 1, 1], [0, 1, 2, 3, 4]]),
        "J": regressor @ template,
    }
    return model, {"arkit": arkit, "names": list(data.expression_names)}
