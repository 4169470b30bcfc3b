"""Thunder's Blender extension: speech-driven FLAME talking heads with takes.

Runs in Blender's own Python (bpy and numpy only, never torch). The engine is Thunder's backend, in the
user's own Python environment, started as a subprocess that talks JSON lines over stdin/stdout
(docs/service_protocol.md); backend_process.py and jobs.py hold that link and have no bpy in them.

    properties.py   what is saved in the .blend: heads, takes, the panel's settings
    head_build.py   the head from the backend's arrays: mesh, shape keys, armature, skinning
    rig_math.py     a take's per-frame parameters as shape-key values and bone channels (numpy)
    takes.py        one slotted action per take; activate, delete
    sound.py        the audio seconds and first frame of a sound strip or file
    export.py       FBX, Alembic and USD
    api.py          the Python API (what the operators call)
    operators.py    bpy.ops.thunder.*;  ui.py: the sidebar panels and the preferences
    session.py      the job manager, polled by a timer
"""

from . import api, operators, properties, session, ui  # noqa: F401  (api: the Python API, thunder.api)

_modules = (properties, operators, ui, session)


def register():
    for module in _modules:
        module.register()


def unregister():
    for module in reversed(_modules):
        module.unregister()
