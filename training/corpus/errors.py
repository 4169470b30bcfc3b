"""Errors a user can cause while making, reading or converting a corpus: each carries one sentence."""

from backend.errors import ThunderError


class CorpusError(ThunderError):
    """A corpus folder or one of its clips is missing, damaged or inconsistent."""


class ClipError(CorpusError):
    """One clip is bad; the message names the clip. A corpus reader reports and skips such clips."""

    def __init__(self, clip_id: str, problem: str):
        super().__init__(f"clip {clip_id}: {problem}")
        self.clip_id = clip_id
        self.problem = problem


class EngineMissingError(ThunderError):
    """A speech engine (espeak-ng, flite, festival) or a tool it needs is not installed."""


class VoiceMissingError(ThunderError):
    """A requested voice is not installed for its engine."""


class OutputFolderError(ThunderError):
    """The output folder cannot be created or written."""


class AlignmentError(ThunderError):
    """Forced alignment failed: the text has words that are not in the dictionary, or the audio does not fit."""
