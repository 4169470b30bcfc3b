"""What M2S reads: motion turned into per-frame feature vectors, one way per input kind.

Vertex inputs ("mouth", "face") keep the head's named vertex set, as offsets from the rest positions in
centimetres. "expression" takes the expression coefficients and the jaw pose. Motion comes in either as
parameters (`from_motion`: only the needed vertices are computed, through `Head.subset`) or as full vertices
(`from_vertices`). The adapter remembers its head, so motion from another head is refused.
"""

from __future__ import annotations

import torch
from torch import nn

from backend.errors import ThunderError

VERTEX_SET_FOR_INPUT = {"mouth": "mouth_region", "face": "face"}
METRES_TO_CM = 100.0


class MotionInputError(ThunderError):
    """Motion that does not fit the M2S model (another head, wrong shape)."""


class MotionFeatures(nn.Module):
    """Turns motion into M2S input features (B, T, D) for one head and one input kind."""

    def __init__(self, kind: str, head):
        super().__init__()
        if kind not in ("mouth", "face", "expression"):
            raise MotionInputError(f"unknown M2S input '{kind}'; choose mouth, face or expression")
        self.kind = kind
        self.head_identity = head.identity
        self.n_vertices = head.n_vertices
        self.n_expression = head.n_expression
        if kind == "expression":
            self.register_buffer("indices", torch.zeros(0, dtype=torch.long))
            self.register_buffer("rest", torch.zeros(0, 3))
            self.part = None
            self.dim = head.n_expression + 3
        else:
            indices = torch.as_tensor(head.vertex_sets[VERTEX_SET_FOR_INPUT[kind]], dtype=torch.long)
            self.register_buffer("indices", indices)
            self.register_buffer("rest", torch.from_numpy(head.data.v_template)[indices].clone())
            self.part = head.subset(indices.numpy())  # computes only these vertices
            self.dim = 3 * len(indices)

    def from_motion(self, expression: torch.Tensor, jaw: torch.Tensor) -> torch.Tensor:
        """expression (B, T, E) and jaw (B, T, 3), in the head's frame (no neck or global pose: M2S hears the
        lips relative to the head). Returns features (B, T, D)."""
        if self.kind == "expression":
            return self.from_parameters(expression, jaw)
        if expression.shape[-1] > self.n_expression:
            raise MotionInputError(f"the motion has {expression.shape[-1]} expression components; the head "
                                   f"{self.head_identity} has {self.n_expression}: it comes from a different head")
        batch, frames = expression.shape[:2]
        vertices = self.part(expression=expression.reshape(batch * frames, -1), jaw=jaw.reshape(batch * frames, 3))
        return (vertices.reshape(batch, frames, -1, 3) - self.rest).flatten(2) * METRES_TO_CM

    def from_vertices(self, vertices: torch.Tensor) -> torch.Tensor:
        """vertices: (B, T, V, 3) in metres, from this head. Returns (B, T, 3 * n_selected) in cm."""
        if self.kind == "expression":
            raise MotionInputError("this M2S model reads expression parameters, not vertices")
        if vertices.ndim != 4 or vertices.shape[-1] != 3:
            raise MotionInputError(f"vertices must have shape (batch, frames, vertices, 3); got {tuple(vertices.shape)}")
        if vertices.shape[2] != self.n_vertices:
            raise MotionInputError(f"this M2S model was trained on the head {self.head_identity} with "
                                   f"{self.n_vertices} vertices; the motion has {vertices.shape[2]}: "
                                   "it comes from a different head")
        selected = vertices[:, :, self.indices] - self.rest
        return selected.flatten(2) * METRES_TO_CM

    def from_parameters(self, expression: torch.Tensor, jaw: torch.Tensor) -> torch.Tensor:
        """expression: (B, T, E), jaw: (B, T, 3). Returns (B, T, E + 3)."""
        if self.kind != "expression":
            raise MotionInputError(f"this M2S model reads {self.kind} vertices, not expression parameters")
        if expression.shape[-1] != self.n_expression:
            raise MotionInputError(f"this M2S model was trained on {self.n_expression} expression components "
                                   f"of the head {self.head_identity}; the motion has {expression.shape[-1]}")
        return torch.cat([expression, jaw], dim=-1)
