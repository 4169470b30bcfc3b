"""Reading and writing head files: FLAME's pickles, `.npz` conversions and the built-in head.

FLAME's pickles were written by Python 2 with chumpy arrays and scipy sparse matrices inside. A plain
`pickle.load` would need chumpy and would run whatever code a file names. `_RestrictedUnpickler` instead
maps the handful of classes those files contain onto inert stand-ins and refuses everything else, so a
malicious file cannot execute code and no chumpy or scipy is needed. The layout is documented in
docs/head_format.md.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

from backend.errors import HeadFileError
from backend.files import write_atomically

JOINT_NAMES = ("global", "neck", "jaw", "eye_left", "eye_right")
FLAME_N_SHAPE = 300  # FLAME 2020 and 2023 put 300 shape components before the expression components.
VSET_PREFIX = "vset__"
LANDMARK_PREFIX = "landmark__"
REQUIRED_KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")


@dataclasses.dataclass
class HeadData:
    """A head model as plain numpy arrays (FLAME's structure), plus what Thunder knows about it.

    v_template (V, 3), faces (F, 3), shapedirs (V, 3, S), exprdirs (V, 3, E), posedirs (V, 3, 36),
    joint_regressor (J, V), weights (V, J), parents (J,) with -1 for the root.
    """

    v_template: np.ndarray
    faces: np.ndarray
    shapedirs: np.ndarray
    exprdirs: np.ndarray
    posedirs: np.ndarray
    joint_regressor: np.ndarray
    weights: np.ndarray
    parents: np.ndarray
    name: str
    source: str
    expression_names: list[str] | None = None
    shape_names: list[str] | None = None
    vertex_sets: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    landmarks: dict[str, int] = dataclasses.field(default_factory=dict)
    face_region: np.ndarray | None = None
    face_region_names: list[str] | None = None
    # The identity of the head whose parameters drive this one, when that is another head: set on a FLAME head
    # retargeted to the built-in head's expressions (backend/retarget.py), whose takes are the built-in head's.
    takes_identity: str | None = None


# --- the restricted unpickler ---------------------------------------------------------------------


class _PickledObject:
    """Inert stand-in for a chumpy array or a scipy sparse matrix: it only records its pickled state."""

    kind = "object"

    def __setstate__(self, state):
        self.state = state


class _ChumpyArray(_PickledObject):
    kind = "chumpy"


class _SparseMatrix(_PickledObject):
    kind = "sparse"


class _RefusedPickle(pickle.UnpicklingError):
    """The pickle names something a FLAME model never contains."""


def _reconstructor(cls, base, state):
    """Python 2's copy_reg._reconstructor, for the stand-ins only."""
    if not (isinstance(cls, type) and issubclass(cls, _PickledObject)) or base is not object:
        raise _RefusedPickle("copy_reg._reconstructor is allowed only for chumpy and scipy objects")
    return object.__new__(cls)


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """_codecs.encode restricted to the one codec Python uses to pickle bytes."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise _RefusedPickle(f"it encodes data with the codec {encoding!r}, which a FLAME model never uses")
    return text.encode("latin1")


_NUMPY_CLASSES = {"_reconstruct", "scalar", "ndarray", "dtype"}
_SPARSE_MODULES = {"scipy.sparse.csc", "scipy.sparse._csc", "scipy.sparse.csr", "scipy.sparse._csr"}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module in ("numpy.core.multiarray", "numpy._core.multiarray", "numpy") and name in _NUMPY_CLASSES:
            return getattr(np, name) if module == "numpy" else _numpy_multiarray_attr(name)
        if module.split(".")[0] == "chumpy":
            return _ChumpyArray
        if module in _SPARSE_MODULES and name in ("csc_matrix", "csr_matrix"):
            return _SparseMatrix
        if (module, name) in (("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor")):
            return _reconstructor
        if (module, name) in (("__builtin__", "object"), ("builtins", "object")):
            return object
        if (module, name) in (("__builtin__", "set"), ("builtins", "set")):
            return set
        if (module, name) == ("_codecs", "encode"):  # how Python 3 writes bytes in protocol 2
            return _latin1_encode
        raise _RefusedPickle(f"it refers to {module}.{name}, which a FLAME model never contains")


def _numpy_multiarray_attr(name: str):
    # numpy 2 moved numpy.core to numpy._core; both spellings appear in pickles.
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    return getattr(multiarray, name) if name in ("_reconstruct", "scalar") else getattr(np, name)


def _to_array(value, key: str, path: Path) -> np.ndarray:
    """Turn what a pickle holds for `key` (array, chumpy array, sparse matrix) into a numpy array."""
    if isinstance(value, _ChumpyArray):
        state = value.state if isinstance(value.state, dict) else {}
        if "x" not in state:
            raise HeadFileError(f"{path}: '{key}' is a computed chumpy expression, not stored values; "
                                "re-save the model with plain arrays (see docs/head_format.md)")
        value = state["x"]
    if isinstance(value, _SparseMatrix):
        return _dense_from_sparse_state(value.state, key, path)
    try:
        return np.asarray(value)
    except Exception as exc:  # an object numpy cannot read as an array
        raise HeadFileError(f"{path}: '{key}' is not an array ({type(value).__name__})") from exc


def _dense_from_sparse_state(state, key: str, path: Path) -> np.ndarray:
    if not isinstance(state, dict):
        raise HeadFileError(f"{path}: '{key}' is a sparse matrix in a layout Thunder cannot read")
    shape = state.get("_shape", state.get("shape"))
    fmt = state.get("format", "csc")
    try:
        data, indices, indptr = (np.asarray(state[k]) for k in ("data", "indices", "indptr"))
        rows, cols = int(shape[0]), int(shape[1])
        dense = np.zeros((rows, cols), dtype=np.float64)
        major = cols if fmt == "csc" else rows
        for m in range(major):
            sl = slice(int(indptr[m]), int(indptr[m + 1]))
            if fmt == "csc":
                dense[indices[sl], m] = data[sl]
            else:
                dense[m, indices[sl]] = data[sl]
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise HeadFileError(f"{path}: '{key}' is a damaged sparse matrix ({exc})") from exc
    return dense


def _read_pickle(path: Path) -> dict:
    raw = path.read_bytes()
    try:
        content = _RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except _RefusedPickle as exc:
        raise HeadFileError(f"{path}: refusing to load this pickle: {exc}") from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as exc:
        raise HeadFileError(f"{path}: the file is truncated or damaged and cannot be read as a FLAME "
                            f"model ({type(exc).__name__}: {exc})") from exc
    if not isinstance(content, dict):
        raise HeadFileError(f"{path}: this pickle holds a {type(content).__name__}, not a FLAME model "
                            "(a dict of arrays)")
    return content


def _first_bytes(path: Path, n: int) -> bytes:
    with open(path, "rb") as file:
        return file.read(n)


def _read_npz(path: Path) -> dict:
    try:
        # np.load reads a file that is not a zip as a pickle, and calls that "object arrays" below.
        if not zipfile.is_zipfile(path) and _first_bytes(path, 2) != b"PK":  # PK: a zip cut short, below
            raise HeadFileError(f"{path} is not a .npz file (a .npz is a zip archive of arrays; this file is not "
                                "a zip archive)")
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except ValueError as exc:  # object arrays need pickle, which we refuse
        raise HeadFileError(f"{path}: the .npz holds Python objects, which Thunder does not load "
                            f"({exc})") from exc
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise HeadFileError(f"{path}: the file is truncated or damaged and cannot be read as an .npz "
                            f"({exc})") from exc


# --- reading ----------------------------------------------------------------------------------------


def load_head_file(path: str | Path) -> HeadData:
    """Read a FLAME `.pkl`, a FLAME `.npz` conversion, or a Thunder head `.npz`, and check it."""
    path = Path(path).expanduser()
    if not path.exists():
        raise HeadFileError(f"{path}: no such file; give the path to a FLAME model "
                            "(generic_model.pkl or flame2023*.pkl) or 'builtin'")
    if path.is_dir():
        raise HeadFileError(f"{path}: is a folder; give the FLAME model file inside it")
    suffix = path.suffix.lower()
    if suffix == ".pkl":
        raw = _read_pickle(path)
    elif suffix == ".npz":
        raw = _read_npz(path)
    else:
        raise HeadFileError(f"{path}: unknown head file type '{suffix}'; expected a FLAME .pkl or an .npz")
    return _head_data_from_dict(raw, path)


def _head_data_from_dict(raw: dict, path: Path) -> HeadData:
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise HeadFileError(f"{path}: not a FLAME model: missing {', '.join(missing)}")
    arrays = {k: _to_array(raw[k], k, path) for k in REQUIRED_KEYS}

    def as_float(key: str) -> np.ndarray:
        try:
            out = np.asarray(arrays[key], dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise HeadFileError(f"{path}: '{key}' does not hold numbers") from exc
        if not np.isfinite(out).all():
            raise HeadFileError(f"{path}: '{key}' contains NaN or infinite values")
        return out

    v_template = as_float("v_template")
    shapedirs = as_float("shapedirs")
    posedirs = as_float("posedirs")
    joint_regressor = as_float("J_regressor")
    weights = as_float("weights")
    faces = arrays["f"]
    kintree = arrays["kintree_table"]

    _check(v_template.ndim == 2 and v_template.shape[1] == 3, path, f"v_template has shape {v_template.shape}, expected (V, 3)")
    n_verts = v_template.shape[0]
    _check(faces.ndim == 2 and faces.shape[1] == 3 and np.issubdtype(faces.dtype, np.integer), path,
           f"f has shape {faces.shape} and type {faces.dtype}, expected (F, 3) integers")
    _check(faces.size > 0 and faces.min() >= 0 and faces.max() < n_verts, path,
           f"f indexes vertices outside 0..{n_verts - 1}")
    _check(kintree.ndim == 2 and kintree.shape[0] == 2, path, f"kintree_table has shape {kintree.shape}, expected (2, J)")
    n_joints = kintree.shape[1]
    _check(n_joints == len(JOINT_NAMES), path, f"has {n_joints} joints; FLAME has {len(JOINT_NAMES)} "
           "(global, neck, jaw, left eye, right eye)")
    parents = kintree[0].astype(np.int64)
    parents[parents >= n_joints] = -1  # Python 2 pickles store the root's parent as 2**32 - 1.
    _check(parents[0] == -1 and all(0 <= parents[j] < j for j in range(1, n_joints)), path,
           f"kintree_table parents {parents.tolist()} are not a tree rooted at joint 0")
    _check(shapedirs.ndim == 3 and shapedirs.shape[:2] == (n_verts, 3), path,
           f"shapedirs has shape {shapedirs.shape}, expected ({n_verts}, 3, K)")
    if posedirs.ndim == 2 and posedirs.shape[0] == n_verts * 3:  # some conversions flatten the vertex axis
        posedirs = posedirs.reshape(n_verts, 3, -1)
    n_pose = (n_joints - 1) * 9
    _check(posedirs.shape == (n_verts, 3, n_pose), path,
           f"posedirs has shape {posedirs.shape}, expected ({n_verts}, 3, {n_pose})")
    _check(joint_regressor.shape == (n_joints, n_verts), path,
           f"J_regressor has shape {joint_regressor.shape}, expected ({n_joints}, {n_verts})")
    _check(weights.shape == (n_verts, n_joints), path, f"weights has shape {weights.shape}, expected ({n_verts}, {n_joints})")
    _check(np.allclose(weights.sum(1), 1.0, atol=1e-3), path, "skinning weights do not sum to 1 for every vertex")

    n_shape = int(np.asarray(raw["n_shape"])) if "n_shape" in raw else FLAME_N_SHAPE
    _check(0 <= n_shape < shapedirs.shape[2], path,
           f"shapedirs has {shapedirs.shape[2]} components, too few for {n_shape} shape components "
           "plus expression components")

    extras = _read_extras(raw, path, n_verts, faces.shape[0], shapedirs.shape[2] - n_shape, n_shape)
    return HeadData(
        v_template=v_template,
        faces=faces.astype(np.int64),
        shapedirs=np.ascontiguousarray(shapedirs[:, :, :n_shape]),
        exprdirs=np.ascontiguousarray(shapedirs[:, :, n_shape:]),
        posedirs=posedirs,
        joint_regressor=joint_regressor,
        weights=weights,
        parents=parents,
        name=str(np.asarray(raw["head_name"])) if "head_name" in raw else f"flame:{path.name}",
        source=str(path),
        **extras,
    )


def _read_extras(raw: dict, path: Path, n_verts: int, n_faces: int, n_expr: int, n_shape: int) -> dict:
    """Names, vertex sets, landmarks and face regions, where the file carries them."""
    extras: dict = {}
    for key, count in (("expression_names", n_expr), ("shape_names", n_shape)):
        if key in raw:
            names = [str(n) for n in np.asarray(raw[key]).tolist()]
            _check(len(names) == count, path, f"{key} has {len(names)} names for {count} components")
            extras[key] = names
    vertex_sets, landmarks = {}, {}
    for key, value in raw.items():
        if key.startswith(VSET_PREFIX):
            idx = np.asarray(value).astype(np.int64).ravel()
            _check(idx.size > 0 and idx.min() >= 0 and idx.max() < n_verts, path, f"vertex set {key} is out of range")
            vertex_sets[key[len(VSET_PREFIX):]] = idx
        elif key.startswith(LANDMARK_PREFIX):
            index = int(np.asarray(value))
            _check(0 <= index < n_verts, path, f"landmark {key} is out of range")
            landmarks[key[len(LANDMARK_PREFIX):]] = index
    extras["vertex_sets"], extras["landmarks"] = vertex_sets, landmarks
    if "face_region" in raw:
        region = np.asarray(raw["face_region"]).astype(np.int64)
        names = [str(n) for n in np.asarray(raw["face_region_names"]).tolist()]
        _check(region.shape == (n_faces,) and region.min() >= 0 and region.max() < len(names), path,
               "face_region does not match the faces and face_region_names")
        extras["face_region"], extras["face_region_names"] = region, names
    return extras


def _check(condition: bool, path: Path, problem: str) -> None:
    if not condition:
        raise HeadFileError(f"{path}: {problem}")


# --- writing ----------------------------------------------------------------------------------------


def head_data_to_arrays(data: HeadData) -> dict[str, np.ndarray]:
    """The `.npz` keys for a head (docs/head_format.md), FLAME's names and layouts first."""
    parents = data.parents.copy()
    arrays = {
        "v_template": data.v_template.astype(np.float32),
        "f": data.faces.astype(np.int32),
        "shapedirs": np.concatenate([data.shapedirs, data.exprdirs], axis=2).astype(np.float32),
        "posedirs": data.posedirs.astype(np.float32),
        "J_regressor": data.joint_regressor.astype(np.float32),
        "weights": data.weights.astype(np.float32),
        "kintree_table": np.stack([parents, np.arange(len(parents))]).astype(np.int64),
        "n_shape": np.asarray(data.shapedirs.shape[2], dtype=np.int64),
        "head_name": np.asarray(data.name),
    }
    if data.expression_names is not None:
        arrays["expression_names"] = np.asarray(data.expression_names)
    if data.shape_names is not None:
        arrays["shape_names"] = np.asarray(data.shape_names)
    for name, idx in data.vertex_sets.items():
        arrays[VSET_PREFIX + name] = np.asarray(idx, dtype=np.int32)
    for name, index in data.landmarks.items():
        arrays[LANDMARK_PREFIX + name] = np.asarray(index, dtype=np.int64)
    if data.face_region is not None:
        arrays["face_region"] = data.face_region.astype(np.int8)
        arrays["face_region_names"] = np.asarray(data.face_region_names)
    return arrays


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write arrays as a compressed .npz whose bytes depend only on the arrays (np.savez_compressed stamps
    the current time into the zip, so the committed built-in head would change on every regeneration)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue())
    return path


def save_head_npz(data: HeadData, path: str | Path) -> Path:
    """Write a head as a compressed `.npz` (docs/head_format.md). Refuses to overwrite an existing file."""
    path = Path(path).expanduser()
    if path.suffix.lower() != ".npz":
        raise HeadFileError(f"{path}: the output must end in .npz")
    if path.exists():
        raise HeadFileError(f"{path}: already exists; choose another name or remove it first")
    if not path.parent.is_dir():
        raise HeadFileError(f"{path.parent}: no such folder")
    try:
        write_atomically(path, lambda tmp: write_npz(tmp, head_data_to_arrays(data)))
    except OSError as exc:
        raise HeadFileError(f"{path}: cannot write the file ({exc.strerror})") from exc
    return path
