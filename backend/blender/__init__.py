"""Code that runs under a Python with ``bpy`` (Blender as a module): preview renders and exports.

Nothing here imports bpy at module import time; each function imports it when it runs.
"""
