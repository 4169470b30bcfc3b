"""The add-on's one base class for problems a user can act on. Plain Python (no bpy, no numpy), so the backend
link (link/backend_process.py, link/jobs.py) can use it in plain-Python tests too."""


class ThunderError(Exception):
    """A problem the user can act on; its text is one sentence, the one the panel shows."""
