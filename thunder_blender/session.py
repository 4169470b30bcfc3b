"""The add-on's one link to the backend: a JobManager (plain Python, jobs.py) polled from Blender's main thread.

In the UI a timer polls it every 0.2 s while something is going on, so Blender never blocks; the job's
callbacks (writing keyframes) then run on the main thread, as Blender requires. In background mode, and in
bpy as a Python module, timers never fire: there the api runs each job to its end synchronously.
"""

from __future__ import annotations

import atexit

import bpy

from .link.jobs import JobManager

POLL_SECONDS = 0.2
_manager: JobManager | None = None


def preferences():
    """The add-on's preferences (its package name differs once installed: bl_ext.<repo>.thunder)."""
    addon = bpy.context.preferences.addons.get(__package__)
    return addon.preferences if addon is not None else None


def backend_settings() -> dict:
    prefs = preferences()
    if prefs is None:
        return {"python": "", "checkpoint": None, "device": "auto", "threads": None}
    return {"python": bpy.path.abspath(prefs.backend_python), "checkpoint": bpy.path.abspath(prefs.checkpoint) or None,
            "device": prefs.device, "threads": prefs.threads or None}


def manager() -> JobManager:
    global _manager
    if _manager is None:
        _manager = JobManager(backend_settings)
    return _manager


def interactive() -> bool:
    """Whether timers fire: Blender with a UI. Background mode and bpy as a module have none."""
    return not bpy.app.background


def _redraw() -> None:
    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "SEQUENCE_EDITOR", "PREFERENCES"):
                area.tag_redraw()


def _tick():
    busy = manager().poll()
    _redraw()
    return POLL_SECONDS if busy else None


def start_polling() -> None:
    """Poll the manager from a timer until it is idle (the UI's way)."""
    if interactive() and not bpy.app.timers.is_registered(_tick):
        bpy.app.timers.register(_tick, first_interval=POLL_SECONDS)


def shutdown() -> None:
    """Stop the backend, process group and all: on unregister and when Blender quits."""
    if _manager is not None:
        _manager.shutdown()
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)


def register():
    atexit.register(shutdown)


def unregister():
    shutdown()
    atexit.unregister(shutdown)
