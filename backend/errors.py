"""Errors a user can cause, each carrying one sentence that names the problem.

The CLI prints the sentence and exits with status 2 (`thunder generate`: status 1, per failing file); the
service (`thunder serve`) sends it back in an error event.
Anything that is not a ThunderError is a bug and keeps its traceback.
"""


class ThunderError(Exception):
    """A problem with the user's input or environment, described in one sentence."""


class HeadFileError(ThunderError):
    """A head file (FLAME .pkl/.npz or the built-in asset) is missing, damaged or not a head."""


class HeadInputError(ThunderError):
    """Parameters given to a head have the wrong shape, type or values."""
