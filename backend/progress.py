"""A one-line progress bar on stderr, redrawn at most twice a second, with time left."""

from __future__ import annotations

import sys
import time


class ProgressBar:
    def __init__(self, total: int, label: str = "", stream=None, width: int = 28):
        self.total, self.label, self.width = max(int(total), 1), label, width
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self.last = 0.0

    def update(self, done: int, text: str = "") -> None:
        """Show `done` of total, with `text` after the bar; the last update is always drawn."""
        now = time.monotonic()
        if now - self.last < 0.5 and done < self.total:
            return
        self.last = now
        filled = int(self.width * min(done, self.total) / self.total)
        elapsed = now - self.start
        eta = elapsed / max(done, 1) * (self.total - done)
        label = f"{self.label} " if self.label else ""
        self.stream.write(f"\r{label}[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} "
                          f"{text}  ETA {eta / 60:.0f} min ")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()
