"""Named vertex sets and landmarks of a FLAME mesh, derived from its topology and skinning weights.

FLAME files carry no names. What they do carry is enough:
- the eyeballs are the vertices skinned (weight > 0.5) to the eye joints (3 left, 4 right);
- FLAME's mouth is a hole in the mesh, whose boundary loop is the inner lip line. It is the one boundary
  loop holding both jaw-skinned vertices (the lower lip) and vertices not skinned to the jaw (the upper
  lip): the neck opening and the eye openings have no jaw-skinned vertices;
- the corners are the loop's extreme vertices in x (+x is the subject's left), the loop between them
  splits into the upper and lower inner lip (the lower one is the chain skinned to the jaw), and the lip centres are the chain vertices nearest the
  midline;
- the lips are the skin within a geodesic distance of 0.2 mouth widths of that loop (about the height of
  the vermilion); the mouth region within 0.75 mouth widths (lips, philtrum, chin and the cheeks near the
  mouth corners, the input of mouth-to-speech);
- the face and upper face are boxes scaled by the distance between the eyeball centres (IOD): the face is
  in front of the eyeball centres less 0.4 IOD, within 1.1 IOD of the midline and from 0.9 IOD below the
  mouth to 1.1 IOD above the eyes; the upper face is the part of it above the point 35% of the way from the
  eyes down to the mouth.
These rules are checked in tests/test_head_regions.py on the built-in head with its mouth cavity removed,
which then has FLAME's topology around the mouth.
"""

from __future__ import annotations

import heapq

import numpy as np

from backend.errors import HeadFileError

JAW, EYE_LEFT, EYE_RIGHT = 2, 3, 4
LIP_BAND = 0.2  # mouth widths
MOUTH_REGION_RADIUS = 0.75  # mouth widths


def boundary_loops(faces: np.ndarray) -> list[np.ndarray]:
    """Closed loops of boundary edges (edges used by one triangle), each as ordered vertex indices."""
    half_edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    present = set(map(tuple, half_edges.tolist()))
    following = {a: b for a, b in half_edges.tolist() if (b, a) not in present}
    loops, seen = [], set()
    for start in sorted(following):
        if start in seen:
            continue
        loop, v = [], start
        while v not in seen and v in following:
            seen.add(v)
            loop.append(v)
            v = following[v]
        if v == start and len(loop) >= 3:
            loops.append(np.asarray(loop, dtype=np.int64))
    return loops


def vertex_neighbours(n_verts: int, faces: np.ndarray) -> list[list[int]]:
    """Adjacency lists of the mesh's edge graph."""
    neighbours: list[set[int]] = [set() for _ in range(n_verts)]
    for a, b, c in faces.tolist():
        neighbours[a].update((b, c))
        neighbours[b].update((a, c))
        neighbours[c].update((a, b))
    return [sorted(n) for n in neighbours]


def geodesic_distance(vertices: np.ndarray, neighbours: list[list[int]], sources: np.ndarray,
                      allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shortest edge-path distance from the nearest source, over allowed vertices (Dijkstra).

    Returns (V,) distances (inf where unreached) and (V,) the index of the nearest source (-1 unreached).
    """
    dist = np.full(len(vertices), np.inf)
    nearest = np.full(len(vertices), -1, dtype=np.int64)
    heap = []
    for s in sources.tolist():
        dist[s], nearest[s] = 0.0, s
        heap.append((0.0, s))
    heapq.heapify(heap)
    while heap:
        d, v = heapq.heappop(heap)
        if d > dist[v]:
            continue
        for u in neighbours[v]:
            if not allowed[u]:
                continue
            nd = d + float(np.linalg.norm(vertices[u] - vertices[v]))
            if nd < dist[u]:
                dist[u], nearest[u] = nd, nearest[v]
                heapq.heappush(heap, (nd, u))
    return dist, nearest


def find_mouth_loop(vertices: np.ndarray, faces: np.ndarray, weights: np.ndarray,
                    eye_center_y: float) -> np.ndarray:
    """The boundary loop of the mouth opening: the one with both jaw-skinned and other vertices, checked
    to look like a mouth (at least 8 vertices, wider than tall, below the eyes, in front of the centroid)."""
    best, best_score = None, 0
    for loop in boundary_loops(faces):
        on_jaw = weights[loop, JAW] > 0.5
        score = int(on_jaw.sum()) * int((~on_jaw).sum())
        if score > best_score:
            best, best_score = loop, score
    if best is None:
        raise HeadFileError("cannot find the mouth opening in this mesh: no boundary loop has both "
                            "jaw-skinned and head-skinned vertices, as FLAME's inner lip line does")
    extent = np.ptp(vertices[best], axis=0)
    looks_like_a_mouth = (len(best) >= 8 and extent[0] > 1.5 * extent[1]
                          and vertices[best, 1].mean() < eye_center_y
                          and vertices[best, 2].mean() > vertices[:, 2].mean())
    if not looks_like_a_mouth:
        raise HeadFileError("cannot find the mouth opening in this mesh: the boundary loop between jaw and "
                            f"head ({len(best)} vertices) is not a mouth-shaped opening below the eyes")
    return best


def derive_regions(vertices: np.ndarray, faces: np.ndarray, weights: np.ndarray
                   ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Vertex sets and landmarks of a FLAME-topology head at rest (see the module docstring)."""
    n_verts = len(vertices)
    eye_left = np.flatnonzero(weights[:, EYE_LEFT] > 0.5)
    eye_right = np.flatnonzero(weights[:, EYE_RIGHT] > 0.5)
    if len(eye_left) == 0 or len(eye_right) == 0:
        raise HeadFileError("cannot find the eyeballs in this mesh: no vertices are skinned to the eye joints")
    skin = np.ones(n_verts, dtype=bool)
    skin[eye_left] = skin[eye_right] = False

    eye_center_left = vertices[eye_left].mean(0)
    eye_center_right = vertices[eye_right].mean(0)
    eye_y = 0.5 * (eye_center_left[1] + eye_center_right[1])
    loop = find_mouth_loop(vertices, faces, weights, eye_y)
    x = vertices[loop, 0]
    i_left, i_right = int(np.argmax(x)), int(np.argmin(x))
    corner_left, corner_right = int(loop[i_left]), int(loop[i_right])
    rolled = np.roll(loop, -i_left)  # starts at the left corner
    k_right = int(np.flatnonzero(rolled == corner_right)[0])
    chain_a, chain_b = rolled[: k_right + 1], np.append(rolled[k_right:], rolled[0])
    # The lower lip is the chain skinned to the jaw (height alone ties when the lips are closed at rest).
    if weights[chain_a, JAW].mean() <= weights[chain_b, JAW].mean():
        upper_inner, lower_inner = chain_a, chain_b
    else:
        upper_inner, lower_inner = chain_b, chain_a
    mid_x = 0.5 * (vertices[corner_left, 0] + vertices[corner_right, 0])
    interior = lambda chain: chain[1:-1] if len(chain) > 2 else chain  # noqa: E731 (corners excluded)
    upper_center = int(min(interior(upper_inner), key=lambda v: abs(vertices[v, 0] - mid_x)))
    lower_center = int(min(interior(lower_inner), key=lambda v: abs(vertices[v, 0] - mid_x)))

    mouth_width = float(np.linalg.norm(vertices[corner_left] - vertices[corner_right]))
    neighbours = vertex_neighbours(n_verts, faces)
    dist, nearest = geodesic_distance(vertices, neighbours, loop, skin)
    lips_mask = dist <= LIP_BAND * mouth_width
    lips = np.flatnonzero(lips_mask)
    upper_sources = np.zeros(n_verts, dtype=bool)
    upper_sources[upper_inner] = True
    lips_upper = lips[upper_sources[nearest[lips]]]
    lower_sources = np.zeros(n_verts, dtype=bool)
    lower_sources[lower_inner] = True
    lips_lower = lips[lower_sources[nearest[lips]]]
    lips_outer = np.asarray([v for v in lips.tolist()
                             if any(skin[u] and not lips_mask[u] for u in neighbours[v])], dtype=np.int64)
    mouth_region = np.flatnonzero(dist <= MOUTH_REGION_RADIUS * mouth_width)

    iod = float(np.linalg.norm(eye_center_left - eye_center_right))
    eye_z = min(eye_center_left[2], eye_center_right[2])
    mid_face_x = 0.5 * (eye_center_left[0] + eye_center_right[0])
    mouth_y = float(vertices[loop, 1].mean())
    face_mask = (skin & (vertices[:, 2] > eye_z - 0.4 * iod)
                 & (np.abs(vertices[:, 0] - mid_face_x) < 1.1 * iod)
                 & (vertices[:, 1] > mouth_y - 0.9 * iod) & (vertices[:, 1] < eye_y + 1.1 * iod))
    upper_face = np.flatnonzero(face_mask & (vertices[:, 1] > eye_y - 0.35 * (eye_y - mouth_y)))

    vertex_sets = {
        "lips": lips,
        "lips_upper": lips_upper,
        "lips_lower": lips_lower,
        "lips_inner": np.sort(loop),
        "lips_upper_inner": upper_inner,
        "lips_lower_inner": lower_inner,
        "lips_outer": lips_outer,
        "mouth_region": mouth_region,
        "face": np.flatnonzero(face_mask),
        "upper_face": upper_face,
        "eyes": np.concatenate([eye_left, eye_right]),
        "eye_left": eye_left,
        "eye_right": eye_right,
    }
    landmarks = {
        "upper_lip_center": upper_center,
        "lower_lip_center": lower_center,
        "mouth_corner_left": corner_left,
        "mouth_corner_right": corner_right,
    }
    return vertex_sets, landmarks
