"""The backend as a child process: find its Python, start `thunder serve`, talk JSON lines, stop it for good.

Plain Python (standard library only, no bpy), so it runs in Blender's Python 3.11 and 3.13 and in plain
Python for the tests. docs/service_protocol.md is the protocol; jobs.py drives it.

    python = find_backend_python(preference)   # BackendError (one sentence) when there is none
    process = BackendProcess(python, ["--device", "cpu"])
    process.start()
    request_id = process.send("hello")
    events = process.events()                  # never blocks; the UI polls it from a timer
    process.stop()                             # shutdown, then the whole process group: no orphans

Two daemon threads drain the child's stdout (one JSON event per line, into a queue) and stderr (the last
lines, for error sentences and bug reports), so a full pipe can never stall the child. When stdout closes
the reader queues {"event": "exit"}. The child leads its own process group (a new session on POSIX, a new
process group on Windows), so stop() also ends whatever the backend started.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time

from ..errors import ThunderError

STDERR_LINES = 200
ENV_VAR = "THUNDER_BACKEND_PYTHON"
INSTALL_HINT = "pip install thunder-talking-heads"
WHERE_TO_SET = "Preferences > Add-ons > Thunder"
# Where an environment's folder keeps its python: venv and conda on POSIX, venv and conda on Windows.
ENV_PYTHONS = (("bin", "python3"), ("bin", "python"), ("Scripts", "python.exe"), ("python.exe",))


class BackendError(ThunderError):
    """Something about the backend process went wrong; str() is one sentence an animator can act on."""


# ------------------------------------------------------------------------------------------ finding Python
def _is_executable_file(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _looks_like_python(path: str) -> bool:
    return re.match(r"(python|pypy)", os.path.basename(path).lower()) is not None


def _interpreter_of(line: str) -> str:
    """The program a shebang line (without its '#!') names: its first word, or a quoted path."""
    line = line.strip()
    if line.startswith('"'):
        return line[1:].split('"', 1)[0]
    words = line.split()
    if not words:
        return ""
    if os.path.basename(words[0]) == "env" and len(words) > 1:  # #!/usr/bin/env python3
        return shutil.which(words[1]) or ""
    return words[0]


def script_python(path: str) -> str | None:
    """The Python interpreter a pip console script (such as `thunder`) runs with, or None when `path` is not
    one. Reads the shebang; also pip's `#!/bin/sh` form for long paths and the shebang inside a Windows .exe
    launcher."""
    try:
        with open(path, "rb") as file:
            data = file.read(1 << 20)
    except OSError:
        return None
    if data.startswith(b"#!"):
        first, _, rest = data[2:].partition(b"\n")
        interpreter = _interpreter_of(first.decode("utf-8", "replace"))
        if os.path.basename(interpreter) == "sh":  # '''exec' "/a very long/path/bin/python" "$0" "$@"
            match = re.search(rb"^'''exec' (\"[^\"\n]+\"|\S+)", rest, re.MULTILINE)
            interpreter = match.group(1).decode("utf-8", "replace").strip('"') if match else ""
    elif data.startswith(b"MZ"):  # a Windows launcher: the script, with its shebang, is appended to the .exe
        start = data.rfind(b"#!")
        if start < 0:
            return None
        interpreter = _interpreter_of(data[start + 2:].split(b"\n", 1)[0].decode("utf-8", "replace"))
    else:
        return None
    if interpreter and _looks_like_python(interpreter) and _is_executable_file(interpreter):
        return interpreter
    return None


def find_backend_python(preference: str = "") -> str:
    """The Python executable that runs Thunder's backend.

    In order: `preference` (the add-on's Backend Python setting; it must be an executable file; an
    environment's folder stands for its python, and a `thunder` console script chosen by mistake is followed
    to its Python), the THUNDER_BACKEND_PYTHON
    environment variable, then the Python of a `thunder` command on PATH. BackendError otherwise."""
    if preference:
        path = os.path.abspath(os.path.expanduser(preference))
        if os.path.isdir(path):  # the environment's folder rather than its python
            path = next((candidate for candidate in (os.path.join(path, *parts) for parts in ENV_PYTHONS)
                         if _is_executable_file(candidate)), path)
        if not _is_executable_file(path):
            raise BackendError(f"the Backend Python {path} is not an executable file: in {WHERE_TO_SET}, set "
                               "Backend Python to the python of the environment where Thunder is installed")
        return script_python(path) or path
    from_env = os.environ.get(ENV_VAR, "")
    if from_env:
        path = os.path.abspath(os.path.expanduser(from_env))
        if not _is_executable_file(path):
            raise BackendError(f"{ENV_VAR} is set to {path}, which is not an executable file: point it at the "
                               "python of the environment where Thunder is installed, or unset it")
        return path
    thunder = shutil.which("thunder")
    if thunder:
        python = script_python(thunder)
        if python:
            return python
    raise BackendError(f"Thunder's backend Python is not set: in {WHERE_TO_SET}, set Backend Python to the "
                       f"python of the environment where Thunder is installed ({INSTALL_HINT})")


# ------------------------------------------------------------------------------------------ explaining failures
def _status_words(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def stopped_sentence(returncode: int | None, stderr: str) -> str:
    """Why a backend that was running stopped: its exit status and the last thing it wrote to stderr."""
    last = _last_line(stderr)
    return f"the backend stopped unexpectedly ({_status_words(returncode)})" + (f": {last}" if last else "")


def explain_start_failure(python: str, returncode: int | None, stderr: str) -> str:
    """One sentence for a backend that stopped before it was ready, from its exit status and stderr."""
    missing = re.search(r"No module named '?([\w.]+)'?", stderr or "")
    if missing:
        module = missing.group(1)
        if module.split(".")[0] == "backend":
            return (f"the backend Python {python} cannot run Thunder's backend: it has no 'backend' module "
                    f"(install Thunder in that environment: {INSTALL_HINT})")
        return (f"the backend Python {python} cannot run Thunder's backend: it has no '{module}' module "
                f"(install Thunder and its requirements in that environment: {INSTALL_HINT})")
    pythonish = _looks_like_python(python) or "Traceback" in (stderr or "") or "python" in (stderr or "").lower()
    if not pythonish:
        return (f"{python} is not a Python interpreter (it ended with {_status_words(returncode)} without "
                f"starting Thunder): in {WHERE_TO_SET}, set Backend Python to the python of Thunder's environment")
    last = _last_line(stderr)
    return f"the backend stopped while starting ({_status_words(returncode)})" + (f": {last}" if last else "")


def _json_default(value):
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} cannot go into a request")


# ------------------------------------------------------------------------------------------ the process
class BackendProcess:
    """One running `python -m backend.cli serve [args]` child and its two reader threads.

    command: the whole command line instead of the default (the tests run a fake backend script).
    env: environment variables to set on top of this process's own."""

    def __init__(self, python: str, args: list[str] = (), env: dict | None = None,
                 command: list[str] | None = None):
        self.python = python
        self.command = list(command) if command else [python, "-m", "backend.cli", "serve", *map(str, args)]
        self.env = dict(env or {})
        self._popen: subprocess.Popen | None = None
        self._events: queue.Queue = queue.Queue()
        self._held: list[dict] = []  # events wait_event read past, handed out first by events()
        self._stderr: collections.deque = collections.deque(maxlen=STDERR_LINES)
        self._threads: list[threading.Thread] = []
        self._send_lock = threading.Lock()
        self._next_id = 0
        self._stopped = False

    # -------------------------------------------------------------------------------------- start
    def start(self) -> None:
        """Start the child; BackendError (one sentence) when the program cannot be run at all."""
        if self._popen is not None:
            return
        options = {}
        if os.name == "nt":
            options["creationflags"] = (subprocess.CREATE_NEW_PROCESS_GROUP
                                        | getattr(subprocess, "CREATE_NO_WINDOW", 0))
        else:
            options["start_new_session"] = True  # its own process group, which stop() ends as a whole
        env = {**os.environ, "PYTHONIOENCODING": "utf-8", "PYTHONUNBUFFERED": "1", **self.env}
        program = self.command[0]
        try:
            self._popen = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
                                           bufsize=1, env=env, **options)
        except FileNotFoundError:
            raise BackendError(f"the backend Python {program} does not exist: in {WHERE_TO_SET}, set Backend "
                               "Python to the python of the environment where Thunder is installed") from None
        except OSError as exc:  # not executable, not a program (Exec format error), ...
            raise BackendError(f"{program} cannot be run as a program ({exc.strerror or exc}): in "
                               f"{WHERE_TO_SET}, set Backend Python to the python of Thunder's environment") from None
        for target, stream, name in ((self._read_stdout, self._popen.stdout, "thunder-backend-stdout"),
                                     (self._read_stderr, self._popen.stderr, "thunder-backend-stderr")):
            thread = threading.Thread(target=target, args=(stream,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _read_stdout(self, stream) -> None:
        try:
            for line in stream:
                line = line.strip()
                if not line:
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None
                if not isinstance(event, dict) or "event" not in event:
                    event = {"event": "garbage", "line": line}
                self._events.put(event)
        except (OSError, ValueError):  # the pipe was closed under us
            pass
        finally:
            self._events.put({"event": "exit"})

    def _read_stderr(self, stream) -> None:
        try:
            for line in stream:
                self._stderr.append(line.rstrip("\r\n"))
        except (OSError, ValueError):
            pass

    # -------------------------------------------------------------------------------------- state
    @property
    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    def stderr_tail(self, n: int = 20) -> str:
        """The last n lines the backend wrote to stderr."""
        lines = list(self._stderr)
        return "\n".join(lines[-n:] if n > 0 else [])

    def stopped_sentence(self) -> str:
        return stopped_sentence(self.returncode, self.stderr_tail())

    # -------------------------------------------------------------------------------------- messages
    def send(self, type: str, **fields) -> int:
        """Write one request line with a fresh integer id, and return the id."""
        if self._popen is None:
            raise BackendError("the backend is not running; start it first")
        with self._send_lock:
            self._next_id += 1
            request_id = self._next_id
            line = json.dumps({"id": request_id, "type": type, **fields}, default=_json_default) + "\n"
            try:
                if self._popen.poll() is not None:
                    raise BrokenPipeError
                self._popen.stdin.write(line)
                self._popen.stdin.flush()
            except (OSError, ValueError):  # BrokenPipeError, or stdin already closed
                try:
                    self._popen.wait(1.0)  # so the sentence can give the exit status
                except subprocess.TimeoutExpired:
                    pass
                raise BackendError(self.stopped_sentence()) from None
        return request_id

    def events(self) -> list[dict]:
        """Every event received so far and not yet handed out, oldest first; never blocks."""
        events, self._held = self._held, []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    def wait_event(self, predicate, timeout: float) -> dict | None:
        """Block up to `timeout` seconds for the first event for which predicate(event) is true, and return
        it; None when the time is up. Events read past stay for events(). BackendError when the backend's
        output ends first (unless the predicate accepts the exit event)."""
        deadline = time.monotonic() + timeout
        for index, event in enumerate(self._held):
            if predicate(event):
                return self._held.pop(index)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                event = self._events.get(timeout=left)
            except queue.Empty:
                return None
            if predicate(event):
                return event
            self._held.append(event)
            if event["event"] == "exit":
                try:
                    self._popen.wait(1.0)
                except subprocess.TimeoutExpired:
                    pass
                raise BackendError(self.stopped_sentence())

    # -------------------------------------------------------------------------------------- stop
    def stop(self, timeout: float = 5.0) -> None:
        """Ask the backend to shut down and wait up to `timeout`; then terminate its whole process group, then
        kill it. Idempotent, and quiet about a process that is already gone."""
        popen = self._popen
        if popen is None or self._stopped:
            return
        self._stopped = True
        if popen.poll() is None:
            try:
                self.send("shutdown")
            except BackendError:
                pass
            self._wait(popen, timeout)
        if os.name == "nt":
            self._stop_windows(popen)
        else:
            self._stop_group(popen, timeout)
        try:
            popen.stdin.close()
        except (OSError, ValueError):  # BrokenPipeError while flushing: it is gone anyway
            pass
        # The readers end when the pipes close; stdout and stderr are not closed here, because closing a file
        # another thread is reading blocks until that read returns (forever, if something escaped the group).
        for thread in self._threads:
            thread.join(1.0)

    @staticmethod
    def _wait(popen: subprocess.Popen, timeout: float) -> bool:
        try:
            popen.wait(max(timeout, 0.0))
            return True
        except subprocess.TimeoutExpired:
            return False

    @staticmethod
    def _signal_group(group: int, signum: int) -> bool:
        """Send a signal to the process group; False once the group has no process left."""
        try:
            os.killpg(group, signum)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:  # on some systems, a group left with only zombies
            return False

    def _stop_group(self, popen: subprocess.Popen, timeout: float) -> None:
        group = popen.pid  # start_new_session made the child the leader of its own group
        if self._signal_group(group, signal.SIGTERM):
            if popen.poll() is None:
                self._wait(popen, timeout)
            # Give the rest of the group a moment to go on SIGTERM, then kill whatever is left.
            deadline = time.monotonic() + min(0.5, max(timeout, 0.0))
            while time.monotonic() < deadline and self._signal_group(group, 0):
                time.sleep(0.02)
            self._signal_group(group, signal.SIGKILL)
        if popen.poll() is None:
            self._wait(popen, timeout)

    @staticmethod
    def _stop_windows(popen: subprocess.Popen) -> None:
        if popen.poll() is None:
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(popen.pid)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
            if popen.poll() is None:
                popen.kill()
        popen.wait()
