"""FLAME-layout heads that are not the built-in head, to test and measure the retarget (backend/retarget.py).

No FLAME file can be had here, so these stand in for one: the built-in head without its mouth cavity (FLAME's
mouth is a hole), decimated to FLAME's 5023 vertices (another topology, its vertices shuffled), with an identity
shape, a size and a shift, and a FLAME-style expression basis that mixes the built-in components with components
the built-in head cannot make. `make_flame_layout_head` returns the model in FLAME's keys (tests write it as
FLAME's pickles with tests/flame_fixtures.write_flame_pickle, the report as an .npz) and what a perfect retarget
would give. TEST_HEADS are the heads the tests and `python -m training.retarget_report` use.
"""

from __future__ import annotations

import numpy as np

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

    Returns (model, truth): model in FLAME's keys (write it with tests/flame_fixtures.write_flame_pickle, or np.savez); truth["arkit"] (V, 3, 39),
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


# name: (seed, expression components, noise components). 39 + 30 <= 100: the built-in components lie in the first
# head's basis; 39 + 70 > 100: in the second's, part of the noise cannot be cancelled.
TEST_HEADS = {"flame2020-layout": (0, 100, 30), "flame2023-open-layout": (1, 100, 70)}


def make_test_head(name: str) -> tuple[dict, dict]:
    seed, n_expr, n_noise = TEST_HEADS[name]
    return make_flame_layout_head(seed=seed, n_expr=n_expr, n_noise=n_noise)
