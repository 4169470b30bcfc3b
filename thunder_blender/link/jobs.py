"""The job manager: one backend process, one job at a time, polled from Blender's main thread.

Plain Python (standard library only, no bpy). The add-on calls poll() from a bpy timer about every 0.2 s;
in background mode, where timers never fire, run_sync() and request_sync() drive the same machinery in a
loop. Every callback runs inside poll(), on the thread that calls it (Blender's main thread), so callbacks
may touch Blender data.

    manager = JobManager(lambda: {"python": prefs.backend_python, "checkpoint": None, "device": "auto",
                                  "threads": None})
    job = manager.start({"type": "generate", "audio": path, "takes": 2, "out": folder},
                        on_result=build_takes, on_error=report, load={"head": "builtin"})
    manager.poll()      # from a timer, until it returns False; then draw manager.status, message, progress
    manager.cancel()    # the job ends through on_cancelled

A job's life: waiting (for the backend's "ready"), loading (a `load` request first, when the model or head
the job wants is not the one loaded), running (its request sent; progress events), done (exactly one of
on_result, on_error, on_cancelled). The backend survives a request's error; if the process itself dies, the
job fails with a sentence built from its exit status and stderr, status goes to "error", and the next
start() starts a new process.
"""

from __future__ import annotations

import time

from .backend_process import WHERE_TO_SET, BackendError, BackendProcess, explain_start_failure, find_backend_python

PROTOCOL = 1
# How long a starting backend may take to say it is ready (importing torch and reading the model can take a
# while on a slow disk) before the add-on gives up with a sentence: docs/blender_addon.md.
START_TIMEOUT_SECONDS = 120.0
EXIT_GRACE_SECONDS = 1.0  # after the process is seen dead, how long its last output may take to arrive
STAGE_WORDS = {"audio": "Reading the audio", "sampling": "Sampling"}
BUSY_WORDS = {"generate": "generating", "load": "loading a model", "head": "reading the head"}


class Job:
    """One request and its callbacks. After it ends: outcome is "result", "error" or "cancelled", final is the
    last event, message the error sentence and traceback the backend's traceback (for bug reports)."""

    def __init__(self, request: dict, load: dict | None, on_result, on_error, on_cancelled, on_progress):
        if not isinstance(request.get("type"), str):
            raise ValueError(f"a request needs a 'type': {request!r}")
        self.request = dict(request)
        self.type = self.request.pop("type")
        self.request.pop("id", None)
        self.load = load
        self.on_result, self.on_error = on_result, on_error
        self.on_cancelled, self.on_progress = on_cancelled, on_progress
        self.state = "waiting"  # waiting -> (loading ->) running -> done
        self.id: int | None = None
        self.load_id: int | None = None
        self.cancel_requested = False
        self.outcome: str | None = None
        self.final: dict | None = None
        self.message = ""
        self.traceback: str | None = None

    @property
    def done(self) -> bool:
        return self.state == "done"

    def __repr__(self) -> str:
        return f"<Job {self.type} id={self.id} {self.state} {self.outcome or ''}>"


class JobManager:
    """Starts the backend on first use, sends one job at a time, and turns events into status and callbacks.

    settings_getter() returns {"python": str, "checkpoint": str|None, "device": "auto"|"cpu"|"cuda",
    "threads": int|None}; it is read each time the backend starts. process_factory(python, args) makes the
    process (BackendProcess by default; the tests give a fake backend).

    What the panel draws: status ("stopped", "starting", "ready", "busy" or "error"), message (one sentence:
    the error, or what is going on), progress (0..1) and backend_info (the hello answer, updated by each
    `loaded`; None until the backend has said hello)."""

    def __init__(self, settings_getter, process_factory=None, start_timeout: float = START_TIMEOUT_SECONDS):
        self.settings_getter = settings_getter
        self.start_timeout = start_timeout
        self._started_at = 0.0
        self.process_factory = process_factory or BackendProcess
        self.process: BackendProcess | None = None
        self.status, self.message, self.progress = "stopped", "", 0.0
        self.backend_info: dict | None = None
        self.job: Job | None = None
        self._python = ""
        self._defaults: dict = {}   # the checkpoint and device the running backend was started with
        self._loaded: dict | None = None  # what the backend has loaded, as a normalized load wish
        self._loads: dict = {}      # load request id -> its normalized wish
        self._hello_id: int | None = None
        self._inbox: list[dict] = []
        self._dead_since: float | None = None

    # -------------------------------------------------------------------------------------- the process
    def start_backend(self) -> None:
        """Start the backend unless it is running; non-blocking (poll() sees it become ready). BackendError,
        with status "error", when it cannot be started at all."""
        if self.process is not None and self.status in ("starting", "ready", "busy"):
            return
        if self.process is not None:  # a dead one: make sure nothing of it is left
            self.process.stop(timeout=1.0)
        settings = dict(self.settings_getter() or {})
        args = []
        if settings.get("checkpoint"):
            args += ["--checkpoint", str(settings["checkpoint"])]
        if settings.get("device"):
            args += ["--device", str(settings["device"])]
        if settings.get("threads"):
            args += ["--threads", str(int(settings["threads"]))]
        self.process = None
        self._reset_session()
        try:
            self._python = find_backend_python(settings.get("python") or "")
            process = self.process_factory(self._python, args)
            process.start()
        except BackendError as exc:
            self._set("error", str(exc))
            raise
        self.process = process
        self._defaults = {"checkpoint": settings.get("checkpoint"), "device": settings.get("device") or "auto"}
        self._started_at = time.monotonic()
        self._set("starting", "Starting Thunder's backend")

    def stop_backend(self) -> None:
        """Cancel any job (it ends through on_cancelled) and stop the process and its process group."""
        process, job = self.process, self.job
        self.process, self.job = None, None
        self._reset_session()
        self._set("stopped", "Thunder's backend is stopped")
        if process is not None:
            process.stop()
        if job is not None:
            self._finish(job, "cancelled", {"event": "cancelled", "id": job.id})

    def shutdown(self) -> None:
        """For unregister and Blender's exit: stop everything, call no callback, never raise."""
        self.job = None
        try:
            self.stop_backend()
        except Exception:  # at exit, nothing is worth an exception
            pass

    def _reset_session(self) -> None:
        self.backend_info, self._loaded, self._loads, self._hello_id = None, None, {}, None
        self._inbox, self._dead_since = [], None

    def _set(self, status: str, message: str, progress: float = 0.0) -> None:
        self.status, self.message, self.progress = status, message, progress

    # -------------------------------------------------------------------------------------- jobs
    def start(self, request: dict, on_result, on_error=None, on_cancelled=None, on_progress=None,
              load: dict | None = None) -> Job:
        """Queue one request ({"type": "generate", ...}) and start the backend if it is not running.

        load: the head/checkpoint/device the job needs ({"head": "builtin" or a path, ...}); a `load` is
        sent first unless that is what is loaded. BackendError when a job is already running or the backend
        cannot be started."""
        self.poll()  # notice a backend that died while idle, and deliver what is pending
        if self.job is not None:
            raise BackendError(f"Thunder is busy {BUSY_WORDS.get(self.job.type, 'with a request')}; "
                               "cancel it or wait")
        job = Job(request, load, on_result, on_error, on_cancelled, on_progress)
        if self.process is None or self.status in ("stopped", "error"):
            self.start_backend()
        self.job = job
        self._advance(job)
        return job

    def cancel(self) -> bool:
        """Cancel the job: a running generate stops between two sampler steps and a job still waiting for the
        backend or its model is dropped; either ends through on_cancelled (a quick request already sent just
        finishes). False when there was no job."""
        job = self.job
        if job is None:
            return False
        job.cancel_requested = True
        if job.state == "running":
            if job.type == "generate":
                self.message = "Cancelling"
                self._send("cancel", target=job.id)
        else:
            self._finish(job, "cancelled", {"event": "cancelled", "id": job.id})
        return True

    def poll(self) -> bool:
        """Read what the backend said, update status, message and progress, and call the job's callbacks on
        this thread. Never blocks. True while something is going on (a timer should keep polling)."""
        process = self.process
        if process is not None and self.status in ("starting", "ready", "busy"):
            self._inbox.extend(process.events())
            # One event at a time, so a callback that raises loses none of the others.
            while self._inbox and self.process is process and self.status != "error":
                self._handle(self._inbox.pop(0))
            if self.process is process and self.status != "error" and process.returncode is not None:
                # Dead, but its output has not ended yet: give the last events a moment to arrive.
                self._dead_since = self._dead_since or time.monotonic()
                if time.monotonic() - self._dead_since > EXIT_GRACE_SECONDS:
                    self._backend_died()
            if self.process is process and self.status == "starting" and \
                    time.monotonic() - self._started_at > self.start_timeout:
                self._start_timed_out()
        return self.status == "starting" or self.job is not None

    def run_sync(self, request: dict, on_result=None, on_error=None, on_cancelled=None, on_progress=None,
                 load: dict | None = None, timeout: float = 600.0) -> dict:
        """start() and poll until the job ends (for background mode and scripts). Returns the final event;
        BackendError with the sentence when the job fails, is cancelled or takes longer than `timeout`."""
        job = self.start(request, on_result, on_error, on_cancelled, on_progress, load=load)
        deadline = time.monotonic() + timeout
        while not job.done and time.monotonic() < deadline:
            self.poll()
            if not job.done:
                time.sleep(0.02)
        if not job.done:
            self.cancel()
            grace = time.monotonic() + 10.0
            while not job.done and time.monotonic() < grace:
                self.poll()
                time.sleep(0.02)
            if not job.done:  # a backend that answers nothing at all
                self.stop_backend()
            raise BackendError(f"Thunder's backend did not finish the {job.type} request within {timeout:g} s")
        if job.outcome == "result":
            return job.final
        raise BackendError(job.message or f"the {job.type} request was cancelled")

    def request_sync(self, type: str, timeout: float = 60.0, load: dict | None = None, **fields) -> dict:
        """A quick request (hello, head, load) run to its answer, after a load when `load` asks for one (as in
        start); see run_sync."""
        return self.run_sync({"type": type, **fields}, load=load, timeout=timeout)

    # -------------------------------------------------------------------------------------- inside
    def _wish(self, fields: dict) -> dict:
        """What a load with these fields leaves loaded; missing fields are the backend's start-up defaults."""
        return {"head": str(fields.get("head") or "builtin"),
                "checkpoint": str(fields.get("checkpoint") or self._defaults.get("checkpoint") or ""),
                "device": str(fields.get("device") or self._defaults.get("device") or "auto")}

    def _send(self, type: str, **fields) -> int | None:
        """Send a request; None (and the death handled) when the backend has stopped."""
        try:
            request_id = self.process.send(type, **fields)
        except BackendError:
            self._backend_died()
            return None
        if type == "load":
            self._loads[request_id] = self._wish(fields)
        return request_id

    def _advance(self, job: Job) -> None:
        """Move a job on once the backend can take it: its load first if needed, then its request."""
        if job is not self.job or self.status not in ("ready", "busy") or job.state not in ("waiting", "loading"):
            return
        if job.load is not None and job.state == "waiting" and self._loaded != self._wish(job.load):
            job.load_id = self._send("load", **job.load)
            if job.load_id is not None:
                job.state = "loading"
                self._set("busy", "Loading the model")
            return
        job.id = self._send(job.type, **job.request)
        if job.id is not None:
            job.state = "running"
            self._set("busy", "Generating" if job.type == "generate" else f"Asking the backend ({job.type})")

    def _handle(self, event: dict) -> None:
        kind, request_id = event.get("event"), event.get("id")
        if kind == "exit":
            self._backend_died()
            return
        if kind == "ready" and self.status == "starting":
            self._on_ready(event)
            return
        if kind == "garbage" or request_id is None:
            return
        if request_id == self._hello_id:
            self._hello_id = None
            if kind == "hello":
                self.backend_info = {k: v for k, v in event.items() if k not in ("event", "id")}
            return
        if request_id in self._loads:
            wish = self._loads.pop(request_id)
            if kind == "loaded":
                self._loaded = wish
                self.backend_info = {**(self.backend_info or {}),
                                     **{k: event.get(k) for k in ("model", "head", "device")}}
        job = self.job
        if job is None:
            return
        if request_id == job.load_id and job.state == "loading":
            if kind == "loaded":
                self._advance(job)
            else:
                self._finish(job, "error", event)
        elif request_id == job.id and job.state == "running":
            if kind == "progress":
                self._on_progress(job, event)
            else:
                self._finish(job, {"error": "error", "cancelled": "cancelled"}.get(kind, "result"), event)

    def _on_ready(self, event: dict) -> None:
        if event.get("protocol") != PROTOCOL:
            sentence = (f"the backend speaks protocol {event.get('protocol')} but this add-on speaks {PROTOCOL}: "
                        "install the same version of Thunder in Blender and in the backend's environment")
            self._fail(sentence)
            return
        self._set("ready", "Thunder's backend is ready")
        self._hello_id = self._send("hello")
        if self.job is not None:
            self._advance(self.job)

    def _on_progress(self, job: Job, event: dict) -> None:
        stage, step, total = event.get("stage") or "working", event.get("step"), event.get("total")
        words = STAGE_WORDS.get(stage, stage.capitalize())
        if total:
            self.progress = min(max(float(step or 0) / float(total), 0.0), 1.0)
            words = f"{words} {step}/{total}"
        self.message = "Cancelling" if job.cancel_requested else words
        if job.on_progress is not None:
            job.on_progress(event)

    def _finish(self, job: Job, outcome: str, event: dict) -> None:
        """End the job: state first, then exactly one callback (which may raise; the state is already right)."""
        job.state, job.outcome, job.final = "done", outcome, event
        if self.job is job:
            self.job = None
        if outcome == "error":
            job.message = event.get("message") or f"the {job.type} request failed"
            job.traceback = event.get("traceback")
        if self.status == "busy":
            if outcome == "result":
                takes = event.get("takes")
                done = (f"Made {len(takes)} take{'s' if len(takes) != 1 else ''} in {event.get('seconds', 0):.1f} s"
                        if isinstance(takes, list) else "Thunder's backend is ready")
                self._set("ready", done, 1.0)
            else:
                self._set("ready", job.message if outcome == "error" else "Cancelled")
        if outcome == "result" and job.on_result is not None:
            job.on_result(event)
        elif outcome == "error" and job.on_error is not None:
            job.on_error(job.message, event)
        elif outcome == "cancelled" and job.on_cancelled is not None:
            job.on_cancelled()

    def _fail(self, sentence: str, traceback: str | None = None) -> None:
        """The backend cannot go on: stop what is left of it, status "error", and fail the job."""
        process = self.process
        if process is not None:
            process.stop(timeout=1.0)
        self._set("error", sentence)
        job = self.job
        if job is not None:
            self._finish(job, "error", {"event": "error", "id": job.id, "request": job.type, "code": "stopped",
                                        "message": sentence, "traceback": traceback})

    def _start_timed_out(self) -> None:
        """A backend that runs but never says it is ready: stop it and say so (it would stay "starting")."""
        last = [line.strip() for line in self.process.stderr_tail(20).splitlines() if line.strip()]
        self._fail(f"Thunder's backend did not say it was ready within {self.start_timeout:g} s, so it was "
                   f"stopped: check Backend Python in {WHERE_TO_SET}" + (f" (it last said: {last[-1]})" if last else ""),
                   self.process.stderr_tail(200))

    def _backend_died(self) -> None:
        """The process ended (its output closed, or it is gone): say why in one sentence."""
        process = self.process
        if process is None or self.status == "error":
            return
        starting = self.status == "starting"
        process.stop(timeout=1.0)  # reaps it, ends the rest of its group and lets the readers finish
        stderr = process.stderr_tail(200)
        if starting:
            sentence = explain_start_failure(self._python, process.returncode, stderr)
        else:
            sentence = process.stopped_sentence()
        self._fail(sentence, stderr)
