"""The head every other part of Thunder uses: `load_head("builtin")` or `load_head("path/to/flame.pkl")`.

`Head` is a thin torch module: it holds a head's buffers and calls `backend.lbs.lbs`. Parameters per frame:

| name | shape | meaning |
| --- | --- | --- |
| expression | (T, E') | expression coefficients, E' <= head.n_expression (missing trailing ones are 0) |
| jaw | (T, 3) | jaw rotation, axis-angle; +x opens the mouth |
| neck | (T, 3) | head rotation on the neck, axis-angle |
| eyes | (T, 6) | left then right eyeball rotation, axis-angle |
| shape | (S',) or (T, S') | identity coefficients, S' <= head.n_shape |
| global_pose | (T, 3) | rotation of the whole head and neck about the root |
| translation | (T, 3) | metres |

All but expression and jaw default to zero. Returns vertices (T, V, 3) in metres.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import torch

from backend.errors import HeadFileError, HeadInputError
from backend.flame_file import JOINT_NAMES, HeadData, load_head_file
from backend.head_regions import derive_regions
from backend.lbs import lbs, vertices_to_joints
from backend.motion import POSE_PARTS

BUILTIN_HEAD_PATH = Path(__file__).parent / "builtin_head" / "builtin_head.npz"
VERTEX_SET_NAMES = ("lips", "lips_upper", "lips_lower", "lips_inner", "lips_outer", "mouth_region",
                    "face", "upper_face", "eyes", "eye_left", "eye_right")
LANDMARK_NAMES = ("upper_lip_center", "lower_lip_center", "mouth_corner_left", "mouth_corner_right")


class Head(torch.nn.Module):
    """A FLAME-structured head: buffers plus names. Move it with `.to(device)`; it works in float32."""

    joint_names = JOINT_NAMES

    def __init__(self, data: HeadData, vertex_indices=None):
        super().__init__()
        self.name = data.name
        self.source = data.source
        self.faces = data.faces.copy()
        self.n_shape = data.shapedirs.shape[2]
        self.n_expression = data.exprdirs.shape[2]
        self.expression_names = data.expression_names or [f"exp{i:03d}" for i in range(self.n_expression)]
        self.shape_names = data.shape_names or [f"shape{i:03d}" for i in range(self.n_shape)]
        self._regions = (dict(data.vertex_sets), dict(data.landmarks)) if data.vertex_sets else None
        self.face_region = data.face_region
        self.face_region_names = data.face_region_names

        # Joint blendshapes: the regressor applied once to the template and to every blend direction.
        regressor = torch.from_numpy(data.joint_regressor)
        directions = torch.from_numpy(np.concatenate([data.shapedirs, data.exprdirs], axis=2))
        self.register_buffer("joint_template", vertices_to_joints(regressor, torch.from_numpy(data.v_template)[None])[0])
        self.register_buffer("joint_directions", torch.einsum("jv,vck->jck", regressor, directions))
        self.register_buffer("parents", torch.from_numpy(data.parents))

        # Vertex buffers, for all vertices or only the chosen ones (the joints do not depend on which).
        keep = np.arange(data.v_template.shape[0]) if vertex_indices is None else np.asarray(vertex_indices)
        self.vertex_indices = None if vertex_indices is None else keep
        self.register_buffer("v_template", torch.from_numpy(data.v_template[keep]))
        self.register_buffer("directions", directions[keep].clone())
        # FLAME's (V, 3, P) layout, as the (P, V * 3) matrix that the pose features multiply.
        self.register_buffer("posedirs", torch.from_numpy(data.posedirs[keep].reshape(len(keep) * 3, -1).T.copy()))
        self.register_buffer("lbs_weights", torch.from_numpy(data.weights[keep]))
        self.data = data

    @property
    def vertex_sets(self) -> dict[str, np.ndarray]:
        """Named vertex index arrays (VERTEX_SET_NAMES); derived from FLAME's topology on first use."""
        return self._named_regions()[0]

    @property
    def landmarks(self) -> dict[str, int]:
        """Named landmark vertex indices (LANDMARK_NAMES)."""
        return self._named_regions()[1]

    def _named_regions(self):
        if self._regions is None:
            try:
                regions = derive_regions(self.data.v_template, self.data.faces, self.data.weights)
            except HeadFileError as exc:
                raise HeadFileError(f"{self.source}: {exc}") from None
            self._regions = regions
        vertex_sets, landmarks = self._regions
        missing = [n for n in VERTEX_SET_NAMES if n not in vertex_sets]
        missing += [n for n in LANDMARK_NAMES if n not in landmarks]
        if missing:
            raise HeadFileError(f"{self.source}: the head file lacks the vertex sets or landmarks "
                                f"{', '.join(missing)}")
        return vertex_sets, landmarks

    def subset(self, vertex_indices) -> "Head":
        """The same head computing only the given vertices: forward returns (T, len(vertex_indices), 3),
        equal to the full forward's vertices at those indices, at a fraction of the cost. Names, faces and
        vertex sets still describe the full mesh."""
        part = Head(self.data, vertex_indices=vertex_indices)
        part._regions = self._regions
        return part.to(self.v_template.device)

    @property
    def n_vertices(self) -> int:
        """Vertices of the full mesh (a subset head's forward returns fewer)."""
        return int(self.data.v_template.shape[0])

    @property
    def identity(self) -> str:
        """A short fingerprint of the head's geometry and expression basis."""
        digest = hashlib.sha256()
        for array in (self.data.v_template, self.data.faces, self.data.exprdirs):
            digest.update(np.ascontiguousarray(array).tobytes())
        return f"{self.name}:{digest.hexdigest()[:12]}"

    @property
    def takes_identity(self) -> str:
        """The identity that models and takes for this head carry: its own, or for a retargeted FLAME head
        (retarget_head) the built-in head's, whose parameters drive it."""
        return self.data.takes_identity or self.identity

    def forward(self, expression=None, jaw=None, neck=None, eyes=None, shape=None, global_pose=None,
                translation=None, return_joints: bool = False):
        """Per-frame parameters (see the module docstring) to vertices (T, V, 3), and joints (T, 5, 3)."""
        widths = {"expression": self.n_expression, **dict(POSE_PARTS), "global_pose": 3, "translation": 3}
        given = {"expression": expression, "jaw": jaw, "neck": neck, "eyes": eyes,
                 "global_pose": global_pose, "translation": translation}
        for name, value in given.items():
            if value is not None and np.ndim(value) != 2:
                want = f"up to {widths[name]}" if name == "expression" else widths[name]
                raise HeadInputError(f"{name} must have shape (frames, {want}) for this head; "
                                     f"got {tuple(np.shape(value))}")
        frames = {int(np.shape(v)[0]) for v in given.values() if v is not None}
        if len(frames) > 1:
            raise HeadInputError(f"the parameters disagree on the number of frames: {sorted(frames)}")
        if not frames:
            raise HeadInputError("give at least one per-frame parameter as a (frames, n) array, "
                                 f"for example expression of shape (T, {self.n_expression})")
        n_frames = frames.pop()
        device, dtype = self.v_template.device, self.v_template.dtype

        def per_frame(name, value, width, at_most=False):
            if value is None:
                return torch.zeros(n_frames, width, device=device, dtype=dtype)
            value = torch.as_tensor(value, device=device, dtype=dtype)
            ok = value.ndim == 2 and (value.shape[1] <= width if at_most else value.shape[1] == width)
            if not ok:
                want = f"(frames, up to {width})" if at_most else f"(frames, {width})"
                raise HeadInputError(f"{name} must have shape {want} for this head; got {tuple(value.shape)}")
            if value.shape[1] < width:
                value = torch.nn.functional.pad(value, (0, width - value.shape[1]))
            return value

        expression = per_frame("expression", expression, self.n_expression, at_most=True)
        pose = torch.cat([per_frame(name, value, widths[name]) for name, value in
                          (("global_pose", global_pose), ("neck", neck), ("jaw", jaw), ("eyes", eyes))], dim=1)
        translation = per_frame("translation", translation, 3)
        if shape is None:
            shape = torch.zeros(n_frames, self.n_shape, device=device, dtype=dtype)
        else:
            shape = torch.as_tensor(shape, device=device, dtype=dtype)
            if shape.ndim == 1:
                shape = shape.expand(n_frames, -1)
            shape = per_frame("shape", shape, self.n_shape, at_most=True)

        coefficients = torch.cat([shape, expression], dim=1)
        vertices, joints = lbs(coefficients, pose, self.v_template, self.directions, self.posedirs,
                               self.joint_template, self.joint_directions, self.parents, self.lbs_weights)
        vertices = vertices + translation[:, None, :]
        if return_joints:
            return vertices, joints + translation[:, None, :]
        return vertices


def load_head(spec: str | Path = "builtin") -> Head:
    """"builtin" for the head that ships with Thunder, or the path of a FLAME `.pkl` / `.npz` file."""
    if str(spec) == "builtin":
        if not BUILTIN_HEAD_PATH.exists():
            raise HeadFileError(f"{BUILTIN_HEAD_PATH}: the built-in head is missing from this installation; "
                                "regenerate it with: python -m backend.builtin_head.build")
        return Head(load_head_file(BUILTIN_HEAD_PATH))
    return Head(load_head_file(spec))


def retarget_head(head: Head, onto: Head, cache_folder: str | Path | None = None) -> Head:
    """`head` (a FLAME file's) with `onto`'s expression components (the built-in head's 39 ARKit-named ones)
    retargeted onto its own expression basis (backend/retarget.py), so that takes made for `onto` drive it:
    the one place where a FLAME head becomes a head the shipped model's takes play on. The map is solved once
    per pair of heads and cached (retarget.cached_expression_map)."""
    from backend.retarget import RetargetError, cached_expression_map, retargeted_basis, solve_retarget

    def solve():
        return solve_retarget(_flame_like_surface(onto), onto.data.exprdirs, _flame_like_surface(head),
                              head.data.exprdirs)[0]

    try:
        expression_map = cached_expression_map(onto.identity, head.identity, onto.n_expression, head.n_expression,
                                               solve, cache_folder)
        vertex_sets, landmarks = head.vertex_sets, head.landmarks   # derived now when the map came from the cache
    except HeadFileError as exc:   # the FLAME head's regions cannot be found
        raise RetargetError(f"{exc}; without its lips Thunder cannot retarget the built-in head's expressions "
                            "onto it") from None
    data = dataclasses.replace(head.data, exprdirs=retargeted_basis(head.data.exprdirs, expression_map)
                               .astype(np.float32), expression_names=list(onto.expression_names),
                               vertex_sets=dict(vertex_sets), landmarks=dict(landmarks),
                               takes_identity=onto.takes_identity)
    return Head(data)


def _flame_like_surface(head: Head):
    """The head's skin at rest with its regions as FLAME's topology gives them (head_regions.derive_regions), so
    that both heads of a retarget name their lips by the same rule. The built-in head's mouth cavity goes first:
    FLAME has none, its mouth is a hole."""
    from backend.retarget import HeadSurface

    faces = head.faces
    if head.face_region is not None and "mouth_interior" in (head.face_region_names or []):
        faces = faces[head.face_region != head.face_region_names.index("mouth_interior")]
        vertex_sets, landmarks = derive_regions(head.data.v_template, faces, head.data.weights)
    else:
        vertex_sets, landmarks = head.vertex_sets, head.landmarks
    return HeadSurface(head.data.v_template, faces, vertex_sets, landmarks)


def load_head_for_takes(spec: str | Path = "builtin", takes_identity: str | None = None) -> Head:
    """The head as takes drive it: `spec` as load_head reads it when its identity is `takes_identity` (the head
    a model was trained for; default the built-in head) or it is the built-in head; any other head retargeted
    to the built-in head's expressions (retarget_head). A model for another head then refuses the result
    with its own sentence (load_model)."""
    head = load_head(spec)
    builtin = head if str(spec) == "builtin" else load_head("builtin")
    if head.identity in (takes_identity or builtin.identity, builtin.identity):
        return head
    return retarget_head(head, builtin)


def head_mesh_arrays(head, shape=None) -> dict[str, np.ndarray]:
    """What the add-on needs to build the head with numpy alone: the rest mesh, the expression and pose-corrective
    bases, the joints at rest and how expressions move them, the skinning weights, the joint tree, and the face
    regions (for materials) when the head has them.

    shape: identity coefficients (at most the head's shape components) baked into the rest mesh and joints; the
    expression basis is the same whatever the shape, so takes made for the head fit the shaped head too."""
    data = head.data
    regressor = data.joint_regressor.astype(np.float64)
    vertices = data.v_template.astype(np.float64)
    if shape is not None:
        coefficients = np.asarray(shape, dtype=np.float64)
        if coefficients.ndim != 1 or len(coefficients) > data.shapedirs.shape[2] or not np.isfinite(coefficients).all():
            raise HeadInputError(f"an identity shape must be at most {data.shapedirs.shape[2]} finite numbers for the "
                               f"head {head.name}; got {len(coefficients) if coefficients.ndim == 1 else coefficients.shape}")
        vertices = vertices + data.shapedirs[:, :, :len(coefficients)].astype(np.float64) @ coefficients
    arrays = {
        "vertices": vertices.astype(np.float32),                                         # (V, 3)
        "faces": data.faces.astype(np.int32),                                            # (F, 3)
        "expression_basis": data.exprdirs.astype(np.float32),                            # (V, 3, E)
        "pose_basis": data.posedirs.astype(np.float32),                                  # (V, 3, 36)
        "joints": (regressor @ vertices).astype(np.float32),                             # (J, 3)
        "joint_expression_basis": np.einsum("jv,vce->jce", regressor, data.exprdirs).astype(np.float32),
        "weights": data.weights.astype(np.float32),                                      # (V, J)
        "parents": data.parents.astype(np.int32),                                        # (J,), -1 at the root
    }
    if head.face_region is not None:
        arrays["face_region"] = np.asarray(head.face_region, dtype=np.int32)            # (F,)
    try:   # the inner-lip centres, for the add-on's closure-keeping smoothing (thunder_blender/strengths.py)
        landmarks = head.landmarks
        arrays["lip_centers"] = np.array([landmarks["upper_lip_center"], landmarks["lower_lip_center"]],
                                         dtype=np.int32)                                 # (2,)
    except HeadFileError:   # a head whose mouth cannot be found: smoothing is refused there
        pass
    return arrays


def head_description(head, shape=None) -> dict:
    """What the `head` reply says about a head besides its arrays; the add-on builds a head from this and the
    arrays (thunder_blender.head_build), and so does the headless scene (backend/blender/scene.py, through
    thunder_blender.headless)."""
    return {"name": head.name, "identity": head.takes_identity, "mesh_identity": head.identity,
            "source": str(head.source), "shape": shape,
            "expression_names": list(head.expression_names), "joint_names": list(head.joint_names),
            "face_region_names": list(head.face_region_names or [])}
