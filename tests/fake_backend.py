"""A stand-in for `thunder serve` (docs/service_protocol.md, protocol 1) for the add-on's job-manager tests.

numpy and the standard library only: no torch, no model. It answers hello, load, head, generate (progress
events, then real take files in the take format, docs/take_format.md), cancel and shutdown. Its behaviour
comes from the FAKE_BACKEND_MODE environment variable:

    normal         everything works; sampling steps 0.01 s apart
    slow           sampling steps 0.2 s apart (to cancel mid-job)
    crash_mid_job  os._exit(3) after two progress events of a generate
    import_error   a ModuleNotFoundError traceback for torch on stderr, exit status 1, before "ready"
    spawn_child    starts `sleep 600` in its process group (its pid is in ready and hello as child_pid)
    stubborn       ignores SIGTERM and the shutdown request (only SIGKILL ends it)
    silent         starts, writes a line to stderr, and never says "ready" (nor anything else)

Run as `python tests/fake_backend.py [serve options, ignored]`.
"""

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import wave

import numpy as np

MODE = os.environ.get("FAKE_BACKEND_MODE", "normal")
STEP_SECONDS = 0.2 if MODE == "slow" else 0.01
EXPRESSIONS = 39
MODEL = {"name": "fake-thunder", "hash": "0123456789ab", "emotions": ["neutral", "happy", "sad"], "fps": 25}
FIELDS = {"hello": set(), "load": {"head", "checkpoint", "device"}, "head": set(), "cancel": {"target"},
          "shutdown": set(),
          "generate": {"audio", "samples", "sample_rate", "start", "end", "fps", "takes", "seed", "seeds",
                       "settings", "out"}}

send_lock = threading.Lock()
work_folder = tempfile.mkdtemp(prefix="fake-thunder-serve-")
state = {"head": None, "device": "cpu", "loads": 0, "job": None, "child": None}


def send(message: dict) -> None:
    with send_lock:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()


def error(request_id, request_type, code: str, message: str) -> dict:
    return {"event": "error", "id": request_id, "request": request_type, "code": code, "message": message,
            "traceback": f"Traceback (most recent call last):\nFakeError: {message}\n"}


def head_info(head: str) -> dict:
    name = "thunder-builtin-v1" if head == "builtin" else os.path.splitext(os.path.basename(head))[0]
    identity = f"{name}:{hashlib.sha256(name.encode()).hexdigest()[:12]}"
    return {"name": name, "identity": identity, "source": head, "vertices": 4, "expressions": EXPRESSIONS}


def loaded_info() -> dict:
    if state["head"] is None:
        return {"model": None, "head": None}
    return {"device": state["device"], "model": MODEL, "head": head_info(state["head"])}


def ensure_loaded() -> None:
    if state["head"] is None:
        state["head"] = "builtin"


def wav_seconds(path: str) -> float:
    with wave.open(path, "rb") as file:
        return file.getnframes() / file.getframerate()


def write_take(path: str, n_frames: int, fps: float, seed: int, settings: dict, audio: dict) -> None:
    """One take file in the take format, written under a temporary name and renamed."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames, dtype=np.float64)[:, None] / fps
    arrays = {"expression": 0.2 * np.sin(2 * np.pi * (t + rng.random(EXPRESSIONS))),
              "jaw": np.abs(0.1 * np.sin(2 * np.pi * 3 * t)) * np.array([1.0, 0.0, 0.0]),
              "neck": 0.02 * rng.standard_normal((n_frames, 3)), "eyes": np.zeros((n_frames, 6))}
    head = head_info(state["head"])
    meta = {"format": "thunder-take", "version": 1, "fps": float(fps), "seed": int(seed), "n_frames": n_frames,
            "settings": settings, "model": {"name": MODEL["name"], "hash": MODEL["hash"]},
            "head": {"name": head["name"], "identity": head["identity"]}, "audio": audio}
    part = path + ".part"
    with open(part, "wb") as file:
        np.savez(file, meta=np.array(json.dumps(meta)),
                 **{name: value.astype(np.float32) for name, value in arrays.items()})
    os.replace(part, path)


def run_generate(request_id, request: dict, cancel: threading.Event) -> None:
    try:
        send({"event": "progress", "id": request_id, "stage": "audio", "step": 0, "total": None})
        audio_path = request["audio"]
        try:
            seconds = wav_seconds(audio_path)
        except (OSError, EOFError, wave.Error):
            raise ValueError(f"the audio file {audio_path} is not a readable audio file") from None
        start = float(request.get("start") or 0.0)
        end = float(request["end"]) if request.get("end") is not None else seconds
        fps = float(request.get("fps") or 25.0)
        seeds = request.get("seeds") or [int(request.get("seed") or 0) + k for k in range(request.get("takes") or 1)]
        settings = {"steps": 10, "sampler": "dpmpp_2m", **(request.get("settings") or {})}
        total = int(settings["steps"])
        for step in range(1, total + 1):
            time.sleep(STEP_SECONDS)
            if cancel.is_set():
                state["job"] = None
                send({"event": "cancelled", "id": request_id})
                return
            send({"event": "progress", "id": request_id, "stage": "sampling", "step": step, "total": total})
            if MODE == "crash_mid_job" and step == 2:
                sys.stderr.write("fake backend: the sampler crashed (on purpose)\n")
                sys.stderr.flush()
                os._exit(3)
        out = request.get("out") or tempfile.mkdtemp(prefix="takes-", dir=work_folder)
        os.makedirs(out, exist_ok=True)
        with open(audio_path, "rb") as file:
            digest = hashlib.sha256(file.read()).hexdigest()
        audio = {"sha256": digest, "hashed": "file", "file": os.path.basename(audio_path), "seconds": seconds,
                 "start": start, "end": end}
        n_frames = math.ceil((end - start) * fps)
        stem = os.path.splitext(os.path.basename(audio_path))[0]
        takes = []
        for k, seed in enumerate(seeds, 1):
            path = os.path.join(out, f"{stem}.take{k}.seed{seed}.npz")
            write_take(path, n_frames, fps, seed, settings, audio)
            takes.append({"path": path, "take": k, "seed": seed, "frames": n_frames, "fps": fps})
        final = {"event": "result", "id": request_id, "folder": out, "takes": takes, "audio": audio,
                 "model": {"name": MODEL["name"], "hash": MODEL["hash"]}, "seconds": 0.1}
    except ValueError as exc:
        final = error(request_id, "generate", "input", str(exc))
    state["job"] = None
    send(final)


def handle(request: dict) -> bool:
    """Answer one request; False after a shutdown that should end the process."""
    request_id, kind = request.get("id"), request.get("type")
    if kind not in FIELDS:
        send(error(request_id, kind, "bad_request", f"unknown request type {json.dumps(kind)}"))
        return True
    unknown = sorted(set(request) - FIELDS[kind] - {"id", "type"})
    if unknown:
        send(error(request_id, kind, "bad_request", f"the {kind} request has unknown fields: {', '.join(unknown)}"))
        return True
    job = state["job"]
    if kind == "hello":
        send({"event": "hello", "id": request_id, "protocol": 1, "thunder": "0.1.0-fake", "python": sys.version.split()[0],
              "torch": None, "numpy": np.__version__, "cuda": False, "device": state["device"],
              **loaded_info(), "busy": job[0] if job else None, "work_folder": work_folder, "loads": state["loads"],
              "child_pid": state["child"].pid if state["child"] else None})
    elif kind == "load":
        if job:
            send(error(request_id, kind, "busy", f"the service is busy with generate request {job[0]}"))
        elif request.get("head") not in (None, "builtin") and not os.path.isfile(request["head"]):
            send(error(request_id, kind, "input", f"the FLAME file {request['head']} does not exist"))
        else:
            state["head"] = request.get("head") or "builtin"
            state["device"] = "cpu" if request.get("device") in (None, "auto") else request["device"]
            state["loads"] += 1
            send({"event": "loaded", "id": request_id, **loaded_info()})
    elif kind == "head":
        ensure_loaded()
        path = os.path.join(work_folder, "head-fake.npz")
        vertices = np.array([[0, 0, 0], [0.1, 0, 0], [0, 0.1, 0], [0, 0, 0.1]], np.float32)
        np.savez(path, vertices=vertices, faces=np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]], np.int32))
        send({"event": "head", "id": request_id, "file": path, **head_info(state["head"]),
              "arrays": {"vertices": [4, 3], "faces": [4, 3]}})
    elif kind == "generate":
        if job:
            send(error(request_id, kind, "busy", f"the service is busy with generate request {job[0]}"))
        elif not request.get("audio"):
            send(error(request_id, kind, "bad_request", "a generate request needs 'audio'"))
        else:
            ensure_loaded()
            cancel = threading.Event()
            state["job"] = (request_id, cancel)
            threading.Thread(target=run_generate, args=(request_id, request, cancel), daemon=True).start()
    elif kind == "cancel":
        running = job is not None and request.get("target") in (None, job[0])
        if running:
            job[1].set()
        send({"event": "cancel", "id": request_id, "target": job[0] if running else request.get("target"),
              "running": running})
    elif kind == "shutdown":
        send({"event": "bye", "id": request_id})
        return MODE == "stubborn"
    return True


def main() -> int:
    if MODE == "import_error":
        sys.stderr.write('Traceback (most recent call last):\n  File "<frozen runpy>", line 198, in '
                         '_run_module_as_main\n  File "backend/cli.py", line 12, in <module>\n    import torch\n'
                         "ModuleNotFoundError: No module named 'torch'\n")
        return 1
    if MODE == "silent":
        sys.stderr.write("fake backend: waiting for something that never comes (on purpose)\n")
        sys.stderr.flush()
        for _ in sys.stdin:   # reads requests and answers none, until stdin closes
            pass
        return 0
    if MODE == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if MODE == "spawn_child":
        state["child"] = subprocess.Popen(["sleep", "600"])
    send({"event": "ready", "id": None, "protocol": 1, "thunder": "0.1.0-fake", "pid": os.getpid(),
          "work_folder": work_folder, "child_pid": state["child"].pid if state["child"] else None})
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except ValueError:
            send(error(None, None, "bad_request", f"a request line is not JSON: {line.strip()[:80]}"))
            continue
        if not handle(request):
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
