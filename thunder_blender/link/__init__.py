"""The add-on's link to the backend, in plain Python (no bpy, no numpy): the backend child process
(backend_process.py) and the job manager that drives it (jobs.py). session.py polls it from Blender's main
thread; tests import it without Blender."""
