"""Writing files so that an interrupted process never leaves a half-written file under the real name."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def write_atomically(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` on `<name>.part` beside `path`, then rename it over `path` (atomic on one file
    system). If writing fails, the partial file is removed and the error propagates; `path` is untouched."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
