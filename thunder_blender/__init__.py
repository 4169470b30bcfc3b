"""Thunder's Blender extension: speech-driven FLAME talking heads with takes.

Runs in Blender's own Python (bpy and numpy only, never torch). The engine is Thunder's backend, in the
user's own Python environment, started as a subprocess that talks JSON lines over stdin/stdout
(docs/service_protocol.md); link/ (backend_process.py, jobs.py) holds that link and has no bpy in it.

    properties.py   what is saved in the .blend: heads, takes, the panel's settings
    head_build.py   the head from the backend's arrays: mesh, shape keys, armature, skinning
    rig_math.py     a take's per-frame parameters as shape-key values and bone channels (numpy)
    take_actions.py one slotted action per take; activate, delete
    take_file.py    reading a take file (numpy only; the backend's reader shares its rule)
    arkit.py        a take as ARKit's 52 weights, shape-key name matching, the Live Link CSV (numpy only; shared too)
    character.py    Drive character: a user's ARKit character follows a head's takes
    sound.py        the audio seconds and first frame of a sound strip or file
    export.py       FBX, Alembic and USD
    headless.py     the one module the backend's Blender code uses: a scene built without the panel
    api.py          the Python API (what the operators call)
    operators.py    bpy.ops.thunder.*;  ui.py: the sidebar panels and the preferences
    session.py      the job manager, polled by a timer

Importing the package imports none of them: Blender's register() does, so the backend's headless scene and
the plain-Python tests of link/ load only what they use.
"""

import importlib

_REGISTERED = ("properties", "operators", "ui", "session")   # in registration order
_PUBLIC = ("api", *_REGISTERED)


def __getattr__(name):
    """thunder_blender.api (the Python API) and the registered modules, imported when first asked for."""
    if name in _PUBLIC:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register():
    for name in _REGISTERED:
        importlib.import_module(f"{__name__}.{name}").register()


def unregister():
    for name in reversed(_REGISTERED):
        importlib.import_module(f"{__name__}.{name}").unregister()
