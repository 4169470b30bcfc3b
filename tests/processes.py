"""Whether a process has ended, for the tests that check nothing outlives its parent. Standard library only:
tests/blender_cases.py imports it inside Blender's Python too."""

import os
import time


def process_ended(pid: int) -> bool:
    """True once the process no longer runs. A zombie counts as ended: it only waits for a parent (here, often
    an orphan's adopter that never reaps) to collect its status."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:   # someone else's process now holds the number: ours is gone
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def wait_for_end(pid: int, timeout: float = 10.0) -> bool:
    """Wait up to `timeout` seconds for the process to end; whether it did."""
    deadline = time.monotonic() + timeout
    while not process_ended(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return process_ended(pid)
