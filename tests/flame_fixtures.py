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
