"""`thunder serve`: the long-lived process the Blender add-on talks to, in JSON lines over stdin and stdout.

docs/service_protocol.md is the specification (protocol version 1); this is how it is carried out.

Why a process and this shape: the add-on runs in Blender's Python, which has no torch, so it starts this
service in the backend's own environment once and keeps it (the model loads once, not per request). Large
arrays never travel in the JSON: takes, samples and the head mesh go through files in a temp folder.

Threads (after Dream Textures' generator process and Rhubarb's async job):
- a reader thread turns stdin lines into a queue, so the main loop can also notice that the parent died;
- the main loop answers requests one by one; quick ones (hello, load, head, cancel) on the spot;
- a generate runs in a worker thread, so that a cancel can be read while it samples. The worker streams
  progress events and ends with exactly one of result, cancelled or error. One generate at a time: a second
  one gets the error "busy".

Every reply is one line of JSON with an "event" and the "id" of the request it answers. A request that fails
gets an error event with one sentence and the traceback, and the service stays up: a ThunderError is the
user's problem (code "input"), anything else is a bug (code "internal"). Stdout carries protocol lines only:
`serve_stdio` points file descriptor 1 and sys.stdout at stderr, so a stray print cannot corrupt the stream.
The service exits when stdin closes, on a shutdown request, or when its parent process dies.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import queue
import shutil
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from backend import __version__
from backend.errors import ThunderError
from backend.files import prepare_output_folder, refuse_existing, write_atomically

PROTOCOL_VERSION = 1
MAX_REQUEST_BYTES = 1 << 20  # a request line longer than this is refused unread (requests are small JSON)
PARENT_POLL_SECONDS = 0.5
STOP_WAIT_SECONDS = 30.0

# The fields each request may have, besides "id" and "type". Anything else is refused, so a misspelt field
# is an error rather than a silently ignored wish.
REQUEST_FIELDS = {
    "hello": set(),
    "load": {"head", "checkpoint", "device"},
    "generate": {"audio", "samples", "sample_rate", "start", "end", "fps", "takes", "seed", "seeds", "settings",
                 "out", "constraints", "from_take", "range", "only", "best_of"},
    "listen": {"take", "out"},
    "cancel": {"target"},
    "head": {"head", "shape"},
    "shutdown": set(),
}


class RequestError(ThunderError):
    """A request the service cannot read: not JSON, no id, an unknown type or field, a field of the wrong kind."""


class BusyError(ThunderError):
    """A generate (or load) asked for while a generate is running."""


@dataclass
class GenerateJob:
    """The one generate in progress: its request id, its cancel flag and its worker thread."""

    request_id: object
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


def _field(request: dict, name: str, kind, what: str, default=None):
    """request[name] if it is of `kind` (bool never counts as a number), else RequestError; `default` if absent
    or null."""
    value = request.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, kind):
        raise RequestError(f"the {request['type']} request's '{name}' must be {what}, not {json.dumps(value)}")
    return value


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""


class Service:
    """One service session: reads requests from `requests`, writes events to `replies`.

    defaults: the checkpoint, head, device and max_seconds used when a request does not name them (the
    command line's); work_folder: where takes, head files and anything else too big for a line go."""

    def __init__(self, requests: TextIO, replies: TextIO, defaults: dict | None = None,
                 work_folder: str | Path | None = None, watch_parent: bool = True):
        self.requests, self.replies = requests, replies
        self.defaults = {"checkpoint": None, "head": "builtin", "device": "auto", "max_seconds": 600.0,
                         **(defaults or {})}
        self.work_folder = Path(work_folder or tempfile.mkdtemp(prefix="thunder-serve-"))
        self.work_folder.mkdir(parents=True, exist_ok=True)
        self.inbox: queue.Queue = queue.Queue()
        self.parent_pid = os.getppid() if watch_parent else None
        self.generator = None
        self.heads: dict = {}   # heads asked for by source, without a model (see _head)
        self.job: GenerateJob | None = None
        self.send_lock = threading.Lock()
        self.stopping = False
        self.generate_count = 0
        self.handlers = {"hello": self.on_hello, "load": self.on_load, "generate": self.on_generate,
                         "cancel": self.on_cancel, "head": self.on_head, "shutdown": self.on_shutdown,
                         "listen": self.on_listen}

    # ------------------------------------------------------------------------------------------ the loop
    def run(self) -> int:
        """Serve until stdin closes, a shutdown request, or the parent's death; then clean up. Returns 0."""
        threading.Thread(target=self._read_requests, name="thunder-requests", daemon=True).start()
        self.send({"event": "ready", "id": None, "protocol": PROTOCOL_VERSION, "thunder": __version__,
                   "pid": os.getpid(), "work_folder": str(self.work_folder)})
        try:
            while not self.stopping and not self._parent_died():
                try:
                    line = self.inbox.get(timeout=PARENT_POLL_SECONDS)
                except queue.Empty:
                    continue
                if line is None:  # stdin closed: the client is gone
                    break
                if isinstance(line, RequestError):
                    self.send(self.error_event(None, None, line))
                elif line.strip():
                    self.handle_line(line)
        finally:
            self.close()
        return 0

    def _read_requests(self) -> None:
        """Queue each line of `requests` (bytes, decoded per line by handle_line, so that one line of invalid
        UTF-8 is one bad request and not the end of the stream); a line longer than MAX_REQUEST_BYTES is
        skipped to its end and queued as the RequestError it gets. None marks the end of the stream."""
        try:
            while True:
                line = self.requests.readline(MAX_REQUEST_BYTES + 1)
                if not line:
                    break
                if len(line) > MAX_REQUEST_BYTES and not line.endswith(b"\n" if isinstance(line, bytes) else "\n"):
                    while line and not line.endswith(b"\n" if isinstance(line, bytes) else "\n"):
                        line = self.requests.readline(MAX_REQUEST_BYTES)
                    self.inbox.put(RequestError(f"a request line is longer than {MAX_REQUEST_BYTES:,} bytes; "
                                                "requests are small JSON objects (large data goes through files)"))
                    continue
                self.inbox.put(line)
        except (OSError, ValueError):  # the stream was closed under us
            pass
        finally:
            self.inbox.put(None)

    def _parent_died(self) -> bool:
        """True once the process that started us is gone (we were handed to another parent)."""
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    def close(self) -> None:
        """Stop a running generate between two sampler steps, wait for it, and remove the work folder."""
        self.stopping = True
        job = self.job
        if job is not None:
            job.cancel.set()
            if job.thread is not None:
                job.thread.join(STOP_WAIT_SECONDS)
        shutil.rmtree(self.work_folder, ignore_errors=True)

    # ------------------------------------------------------------------------------------------ messages
    def send(self, message: dict) -> None:
        """One event as one JSON line; safe from any thread. A client that went away is not an error."""
        line = json.dumps(message, allow_nan=False) + "\n"
        with self.send_lock:
            try:
                self.replies.write(line)
                self.replies.flush()
            except (BrokenPipeError, ValueError, OSError):
                self.stopping = True

    @staticmethod
    def error_event(request_id, request_type, exc: BaseException) -> dict:
        """The error event for a request that raised `exc`: one sentence, a code, and the traceback."""
        if isinstance(exc, BusyError):
            code, message = "busy", str(exc)
        elif isinstance(exc, RequestError):
            code, message = "bad_request", str(exc)
        elif isinstance(exc, ThunderError):
            code, message = "input", str(exc)
        else:
            code = "internal"
            message = (f"the {request_type or 'unreadable'} request failed inside Thunder "
                       f"({type(exc).__name__}: {_one_line(exc) or 'no message'})")
        return {"event": "error", "id": request_id, "request": request_type, "code": code,
                "message": _one_line(message),
                "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))}

    def handle_line(self, line: str | bytes) -> None:
        """Parse and answer one request line (UTF-8 bytes or text); whatever goes wrong becomes an error
        event."""
        request_id = request_type = None
        try:
            if isinstance(line, bytes):
                try:
                    line = line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise RequestError(f"a request line is not valid UTF-8 (byte {exc.start} is "
                                       f"{line[exc.start:exc.start + 1]!r})") from None
            try:
                request = json.loads(line)
            except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python's stack
                raise RequestError(f"a request line is not JSON: {line.strip()[:80]!r}") from None
            if not isinstance(request, dict):
                raise RequestError("a request must be a JSON object with an 'id' and a 'type'")
            request_id = request.get("id")
            if isinstance(request_id, bool) or not isinstance(request_id, (int, str)):
                request_id = None
                raise RequestError("every request needs an 'id' (a number or a string)")
            if not isinstance(request.get("type"), str) or request["type"] not in REQUEST_FIELDS:
                raise RequestError(f"unknown request type {json.dumps(request.get('type'))}; the service knows "
                                   f"{', '.join(REQUEST_FIELDS)}")
            request_type = request["type"]
            unknown = sorted(set(request) - REQUEST_FIELDS[request_type] - {"id", "type"})
            if unknown:
                raise RequestError(f"the {request_type} request has unknown fields: {', '.join(unknown)}")
            self.handlers[request_type](request)
        except Exception as exc:  # the service outlives every request, bugs included
            self.send(self.error_event(request_id, request_type, exc))

    # ------------------------------------------------------------------------------------------ requests
    def on_hello(self, request: dict) -> None:
        import torch

        info = self.generator.info() if self.generator is not None else {"model": None, "head": None}
        job = self.job
        self.send({"event": "hello", "id": request["id"], "protocol": PROTOCOL_VERSION, "thunder": __version__,
                   "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
                   "cuda": torch.cuda.is_available(),
                   "device": info.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"),
                   "model": info["model"], "head": info["head"], "busy": job.request_id if job else None,
                   "defaults": {k: str(v) if isinstance(v, Path) else v for k, v in self.defaults.items()},
                   "work_folder": str(self.work_folder)})

    def on_load(self, request: dict) -> None:
        from backend.generate import Generator

        if self.job is not None:
            raise BusyError(f"the service is busy with generate request {self.job.request_id}; "
                            "cancel it or wait for its result before loading another model")
        checkpoint = _field(request, "checkpoint", str, "a folder path", self.defaults["checkpoint"])
        head = _field(request, "head", str, "'builtin' or a FLAME file path", self.defaults["head"])
        device = _field(request, "device", str, "auto, cpu or cuda", self.defaults["device"])
        self.generator = Generator(checkpoint, head, device, self.defaults["max_seconds"])
        self.send({"event": "loaded", "id": request["id"], **self.generator.info()})

    def _loaded_generator(self):
        """The loaded model, or the defaults loaded now when no load request came first."""
        if self.generator is None:
            from backend.generate import Generator

            d = self.defaults
            self.generator = Generator(d["checkpoint"], d["head"], d["device"], d["max_seconds"])
        return self.generator

    def on_head(self, request: dict) -> None:
        from backend.head import head_description, head_mesh_arrays

        source = _field(request, "head", str, "'builtin' or a FLAME file path")
        head = self._head(source) if source is not None else self._loaded_generator().head
        shape = _field(request, "shape", list, "a list of identity coefficients")
        if shape is not None and not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in shape):
            raise RequestError(f"the head request's 'shape' must be a list of numbers, not {json.dumps(shape)[:80]}")
        arrays = head_mesh_arrays(head, shape)
        digest = hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:8] if shape else "template"
        path = self.work_folder / f"head-{head.identity.replace(':', '-')}-{digest}.npz"
        if not path.exists():
            def write(tmp: Path):
                with open(tmp, "wb") as file:
                    np.savez(file, **arrays)

            write_atomically(path, write)
        self.send({"event": "head", "id": request["id"], "file": str(path), **head_description(head, shape),
                   "arrays": {name: list(value.shape) for name, value in arrays.items()}})

    def _head(self, source: str):
        """A head by its source ('builtin' or a FLAME file) as takes drive it, without loading a model: a FLAME
        file's head retargeted to the built-in head's expressions (backend.head.load_head_for_takes), unless the
        loaded model was trained for that head itself. Each source is loaded once per model head."""
        from backend.head import load_head_for_takes

        takes_identity = self.generator.model.head_identity if self.generator is not None else None
        if (source, takes_identity) not in self.heads:
            self.heads[source, takes_identity] = load_head_for_takes(source, takes_identity)
        return self.heads[source, takes_identity]

    def on_listen(self, request: dict) -> None:
        """What a take's lips say: M2S's mel of the take, vocoded (Griffin-Lim), as a 16 kHz WAV ("out", or
        beside the take as <take>.lips.wav); never over an existing file. Answered on the spot (a few seconds
        for a minute of speech)."""
        from backend.audio import SAMPLE_RATE, write_wav
        from backend.generate import GenerateError
        from backend.m2s.reading import take_lips_audio
        from backend.take_file import load_take

        take_path = _field(request, "take", str, "a take file path")
        if not take_path:
            raise RequestError("a listen request needs 'take', the path of a take file")
        out = _field(request, "out", str, "a WAV file path")
        take = load_take(take_path)   # a take file, so its path has a name to put the WAV beside
        out = Path(out) if out else Path(take_path).with_suffix(".lips.wav")
        refuse_existing([out], "sound files")
        prepare_output_folder(out.parent, "the listen request's out folder")
        generator = self._loaded_generator()
        m2s = generator.m2s_model()
        if m2s is None:
            raise GenerateError(f"there is no M2S model for the head {generator.head.name}, so Thunder cannot "
                                "hear its lips")
        samples = take_lips_audio(m2s, take)
        write_atomically(out, lambda tmp: write_wav(tmp, samples))
        self.send({"event": "listen", "id": request["id"], "file": str(out), "take": str(take_path),
                   "seconds": len(samples) / SAMPLE_RATE, "start": take.audio.get("start", 0.0)})

    def on_cancel(self, request: dict) -> None:
        target = request.get("target")
        # The target is echoed in the reply: a value no request id can be (Infinity, a list) is refused here,
        # where it used to fail the reply's JSON as an internal error.
        if target is not None and (isinstance(target, bool) or not isinstance(target, (int, str))):
            raise RequestError(f"the cancel request's 'target' must be the id of a generate request (a whole "
                               f"number or a string), not {json.dumps(target)[:80]}")
        job = self.job
        running = job is not None and (target is None or target == job.request_id)
        if running:
            job.cancel.set()
        self.send({"event": "cancel", "id": request["id"], "target": job.request_id if running else target,
                   "running": running})

    def on_shutdown(self, request: dict) -> None:
        self.stopping = True
        self.send({"event": "bye", "id": request["id"]})

    def on_generate(self, request: dict) -> None:
        """Check the request here (so its mistakes come back at once), then sample in a worker thread."""
        from backend.audio_io import check_sample_rate
        from backend.frame_rate import check_fps
        from backend.generate import best_of_keep, take_seeds
        from backend.take_file import take_file_name

        if self.job is not None:  # only this thread starts jobs, so the check cannot go stale before the start
            raise BusyError(f"the service is busy with generate request {self.job.request_id}; "
                            "cancel it or wait for its result")
        generator = self._loaded_generator()
        audio = _field(request, "audio", str, "an audio file path")
        samples = _field(request, "samples", str, "the path of a .npy file of samples")
        if (audio is None) == (samples is None):
            raise RequestError("a generate request needs either 'audio' (a file path) or 'samples' "
                               "(a .npy file path), not both or neither")
        sample_rate = _field(request, "sample_rate", int, "a whole number of samples per second", 16000)
        if samples is not None:
            check_sample_rate(sample_rate, f"the samples {samples}")
        options = {"start": _field(request, "start", (int, float), "a number of seconds", 0.0),
                   "end": _field(request, "end", (int, float), "a number of seconds"),
                   "fps": _field(request, "fps", (int, float), "a number of frames per second", 25.0),
                   "takes": _field(request, "takes", int, "a whole number", 1),
                   "seed": _field(request, "seed", int, "a whole number", 0),
                   "seeds": _field(request, "seeds", list, "a list of whole numbers")}
        changes = _field(request, "settings", dict, "an object of sampling settings", {})
        options["constraints"] = _field(request, "constraints", list, "a list of constraint objects", [])
        direct = self._range_request(request, generator, options)
        if direct is not None:
            settings = direct.pop("settings_of")(changes)
        else:
            settings = generator.settings(changes)
        options["fps"] = check_fps(options["fps"])
        best_of = _field(request, "best_of", int, "a whole number of candidates")
        if best_of is not None and direct is not None:
            raise RequestError("a range resample ('from_take') makes its takes without best of N; leave out "
                               "'best_of'")
        keep = options.pop("takes")
        if best_of is not None:   # sample best_of candidates, keep the `takes` best of them
            keep = best_of_keep(best_of, keep, options["seeds"])
            seeds = take_seeds(best_of, options.pop("seed"), options.pop("seeds"))
        else:
            seeds = take_seeds(keep, options.pop("seed"), options.pop("seeds"))
        self.generate_count += 1
        out = Path(_field(request, "out", str, "a folder path") or self.work_folder / f"takes-{self.generate_count}")
        out = prepare_output_folder(out, "the generate request's out folder")
        stem = Path(audio or samples).stem
        paths = [out / take_file_name(stem, k + 1, seed) for k, seed in enumerate(seeds)]
        if best_of is not None:   # which seeds are kept is known after scoring: refuse every name they may get
            paths = [out / take_file_name(stem, k + 1, seed) for k in range(keep) for seed in seeds]
            options.update(best_of=best_of, takes=keep)
        refuse_existing(paths, "take files")

        job = GenerateJob(request["id"])
        job.thread = threading.Thread(target=self._run_generate, name=f"thunder-generate-{request['id']}",
                                      args=(job, generator, audio, samples, sample_rate, settings, seeds, options,
                                            out, stem, direct), daemon=True)
        self.job = job
        job.thread.start()

    @staticmethod
    def _range_request(request: dict, generator, options: dict) -> dict | None:
        """A generate request's "from_take", "range" and "only" (a range resample), checked now: None when it
        has no "from_take". Its constraints are checked now too; with a take, None keeps the take's."""
        from backend import directing
        from backend.take_file import load_take

        constraints = directing.constraints_from_json(options["constraints"])
        take = _field(request, "from_take", str, "a take file path")
        if take is None:
            if request.get("range") is not None or request.get("only") is not None:
                raise RequestError("the generate request's 'range' and 'only' resample part of a take: name it "
                                   "in 'from_take'")
            return None
        given = [name for name in ("start", "end", "fps") if request.get(name) is not None]
        if given:
            raise RequestError(f"a generate request with 'from_take' keeps the take's audio range and frame rate; "
                               f"leave out {', '.join(given)}")
        frames = _field(request, "range", list, "[start, end] take frames")
        if frames is None or len(frames) != 2 or not all(isinstance(v, int) and not isinstance(v, bool)
                                                         for v in frames):
            raise RequestError("a generate request with 'from_take' needs 'range': [start, end], whole take frames "
                               "(start .. end - 1 are sampled anew)")
        old = load_take(take)
        sampling, _ = directing.split_take_settings(old.settings)
        known = {k: v for k, v in sampling.items() if k in generator.default_settings.__dataclass_fields__}
        return {"old": old, "start": frames[0], "end": frames[1],
                "only": _field(request, "only", str, "lips, upper or head"),
                "constraints": constraints if request.get("constraints") is not None else None,
                "settings_of": lambda changes: generator.settings({**known, **changes})}

    def _run_generate(self, job: GenerateJob, generator, audio, samples, sample_rate, settings, seeds, options,
                      out: Path, stem: str, direct=None) -> None:
        """The worker: audio, sampling with progress and cancel, the take files, then one final event."""
        from backend.diffusion.samplers import Cancelled
        from backend.take_file import save_take, take_file_name

        started = time.monotonic()

        def on_step(step) -> None:
            if job.cancel.is_set() or self.stopping:
                raise Cancelled()
            self.send({"event": "progress", "id": job.request_id, "stage": "sampling", "step": step.index + 1,
                       "total": step.total})

        try:
            self.send({"event": "progress", "id": job.request_id, "stage": "audio", "step": 0, "total": None})
            if samples is not None:
                audio = _read_samples_file(samples)
            if direct is not None:
                takes = generator.resample_range(direct["old"], audio, direct["start"], direct["end"],
                                                 only=direct["only"], seeds=seeds, settings=settings,
                                                 constraints=direct["constraints"], callback=on_step,
                                                 sample_rate=sample_rate)
            else:
                takes = generator.generate(audio, seeds=seeds, settings=settings, callback=on_step,
                                           sample_rate=sample_rate, **options)
            if job.cancel.is_set():
                raise Cancelled()
            # Each take named by its place and seed (best of N: the kept ones, best first).
            paths = [out / take_file_name(stem, k + 1, take.seed) for k, take in enumerate(takes)]
            for path, take in zip(paths, takes):
                save_take(path, take)
            final = {"event": "result", "id": job.request_id, "folder": str(out),
                     "takes": [{"path": str(p), "take": k + 1, "seed": t.seed, "frames": t.n_frames, "fps": t.fps,
                                "scores": t.scores}
                               for k, (p, t) in enumerate(zip(paths, takes))],
                     "audio": takes[0].audio, "model": takes[0].model, "seconds": time.monotonic() - started}
        except Cancelled:
            final = {"event": "cancelled", "id": job.request_id}
        except Exception as exc:  # reported to the client; the service goes on
            final = self.error_event(job.request_id, "generate", exc)
        # Free the service before the last event, so a client may send its next generate as soon as it reads it.
        self.job = None
        self.send(final)


def _read_samples_file(path: str) -> np.ndarray:
    """The samples a client passed through a .npy file (float, (N,) or (N, channels))."""
    from backend.audio_io import AudioFileError

    file = Path(path)
    if not file.is_file():
        raise AudioFileError(f"the samples file {file} does not exist")
    try:
        return np.load(file, allow_pickle=False)
    except Exception as exc:  # numpy raises several kinds for a file that is not an .npy array
        raise AudioFileError(f"{file} is not a readable .npy array of samples ({type(exc).__name__})") from None


def serve_stdio(checkpoint=None, head: str = "builtin", device: str = "auto", max_seconds: float | None = 600.0
                ) -> int:
    """Run the service on this process's stdin and stdout (the `thunder serve` command)."""
    # Stdout is the protocol's: keep a private descriptor for it and send fd 1 (C libraries, stray prints)
    # and sys.stdout to stderr.
    sys.stdout.flush()
    protocol_fd = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    replies = os.fdopen(protocol_fd, "w", encoding="utf-8", newline="\n")
    requests = open(sys.stdin.fileno(), "rb", closefd=False)  # bytes: each line is decoded on its own
    service = Service(requests, replies, {"checkpoint": checkpoint, "head": head, "device": device,
                                          "max_seconds": max_seconds})
    return service.run()
