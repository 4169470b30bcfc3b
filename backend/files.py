"""Writing files so that an interrupted process never leaves a half-written file under the real name, and
never touches any other file the user has."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from backend.errors import ThunderError

# The permissions a plain open() would give a new file (mkstemp makes it 0600). Read once, at import,
# because os.umask can only be read by setting it, which is not safe once other threads run.
_UMASK = os.umask(0)
os.umask(_UMASK)
NEW_FILE_MODE = 0o666 & ~_UMASK


def temporary_file_beside(path: str | Path) -> Path:
    """A new, empty file with a unique name (`.<name>.<random>.part`) in `path`'s folder: on the same file
    system, so it can be renamed over `path`, and never the name of a file that already exists there."""
    path = Path(path)
    descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(descriptor)
    tmp = Path(name)
    os.chmod(tmp, NEW_FILE_MODE)
    return tmp


def write_atomically(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` on a unique temporary file beside `path` (temporary_file_beside), then rename it over
    `path` (atomic on one file system). If writing fails, the temporary file is removed and the error
    propagates; `path` and every other file are untouched."""
    path = Path(path)
    tmp = temporary_file_beside(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


class ExistingFileError(ThunderError):
    """A file Thunder was asked to write exists already."""


def refuse_existing(paths, what: str = "files", advice: str = "", error: type = ExistingFileError) -> None:
    """The one "never overwrite" rule: raise `error` naming the first of `paths` that exists (before anything
    is written), in one sentence: "<path> already exists; Thunder does not overwrite <what><advice>"."""
    existing = [Path(p) for p in paths if Path(p).exists()]
    if existing:
        raise error(f"{existing[0]} already exists; Thunder does not overwrite {what}{advice}")


class OutputFolderError(ThunderError):
    """A folder Thunder is asked to write into that cannot be made or written into."""


def prepare_output_folder(folder: str | Path, what: str = "the output folder") -> Path:
    """Make `folder` (with its parents) and check that a file can be written into it, so that an unusable
    folder (a file, a file on its way, read-only, /proc) is one sentence before any work, not a traceback
    after it. `what` names the folder in the sentence ("--out", "the generate request's out")."""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputFolderError(f"{what} {folder} is a file, not a folder") from None
    except NotADirectoryError:
        raise OutputFolderError(f"{what} {folder} cannot be made: a file stands in its path") from None
    except OSError as exc:
        raise OutputFolderError(f"{what} {folder} cannot be made ({exc.strerror or exc})") from None
    try:
        temporary_file_beside(folder / "thunder-write-check").unlink()
    except OSError as exc:
        raise OutputFolderError(f"{what} {folder} cannot be written into ({exc.strerror or exc})") from None
    return folder
