"""Thunder's inference engine: audio, heads (FLAME and the built-in head), sampling, the `thunder` command.

Runs in the user's own Python environment (torch). Never imports bpy, except in `backend.blender`,
which runs under a Python that has bpy.
"""

__version__ = "0.1.0"
