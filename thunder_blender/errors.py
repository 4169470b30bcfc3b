"""The add-on's one base class for problems a user can act on. Plain Python (no bpy, no numpy), so the backend
link (link/backend_process.py, link/jobs.py) can use it in plain-Python tests too."""


class ThunderError(Exception):
    """A problem the user can act on; its text is one sentence, the one the panel shows."""


def __getattr__(name):
    """USER_ERRORS: what the add-on's callers catch as "the user's problem": every add-on error, and the take
    reader's own TakeReadError and the ARKit rule's ArkitError (take_file.py and arkit.py are also loaded by path
    from the backend, so their errors cannot derive from ThunderError). Built on first use, so that importing ThunderError needs no numpy."""
    if name == "USER_ERRORS":
        from .arkit import ArkitError
        from .take_file import TakeReadError

        return (ThunderError, TakeReadError, ArkitError)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
