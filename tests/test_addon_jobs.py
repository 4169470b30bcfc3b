"""The add-on's link to the backend, in plain Python: thunder_blender/link/ (backend_process.py and jobs.py).

Most tests drive the job manager against tests/fake_backend.py (protocol 1 with numpy only; FAKE_BACKEND_MODE
picks a crash, an import error, a slow or stubborn backend, or one that spawns a child). One test drives the
real `python -m backend.cli serve` with the shipped model, as Blender would.

They are imported as thunder_blender.link: the add-on's __init__ imports none of its bpy modules, and
test_the_link_imports_without_bpy checks that they work without bpy.
"""

import json
import subprocess
import math
import stat
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from processes import process_ended

from thunder_blender.link import backend_process, jobs

ROOT = Path(__file__).resolve().parent.parent
FAKE_BACKEND = Path(__file__).with_name("fake_backend.py")
BackendError, BackendProcess = backend_process.BackendError, backend_process.BackendProcess
JobManager = jobs.JobManager


def test_the_link_imports_without_bpy():
    """The link is plain Python: importing it (and so the add-on's package) loads neither bpy nor numpy."""
    code = ("import sys; import thunder_blender.link.jobs; "
            "print(sorted(m for m in ('bpy', 'numpy') if m in sys.modules))")
    found = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]", found.stdout + found.stderr


# ------------------------------------------------------------------------------------------ helpers
def write_wav(path: Path, seconds: float, rate: int = 16000) -> Path:
    """Tone bursts, 16-bit mono, written with the standard library."""
    t = np.arange(int(seconds * rate)) / rate
    wave_ = 0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0)
    with wave.open(str(path), "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes((wave_ * 32767).astype("<i2").tobytes())
    return path


def make_executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def wait_until(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def drive(manager, until, timeout: float = 20.0) -> None:
    """Poll the manager as the add-on's timer would, until `until()` is true."""
    assert wait_until(lambda: (manager.poll(), until())[1], timeout), (manager.status, manager.message)


class Recorder:
    """The callbacks of one job, recorded."""

    def __init__(self):
        self.calls = []

    def result(self, event):
        self.calls.append(("result", event))

    def error(self, message, event):
        self.calls.append(("error", message, event))

    def cancelled(self):
        self.calls.append(("cancelled",))

    def progress(self, event):
        self.calls.append(("progress", event))

    def callbacks(self):
        return {"on_result": self.result, "on_error": self.error, "on_cancelled": self.cancelled,
                "on_progress": self.progress}

    def finals(self):
        return [call for call in self.calls if call[0] != "progress"]


SETTINGS = {"python": sys.executable, "checkpoint": None, "device": "cpu", "threads": 1}


def fake_manager(*modes, spy=None, **options):
    """A JobManager whose backends are fake_backend.py in the given modes, one per start (the last repeats);
    options go to JobManager (start_timeout)."""
    modes = list(modes) or ["normal"]

    def factory(python, args):
        mode = modes.pop(0) if len(modes) > 1 else modes[0]
        process = BackendProcess(python, args, env={"FAKE_BACKEND_MODE": mode},
                                 command=[sys.executable, str(FAKE_BACKEND), *args])
        if spy is not None:
            spy.append(process)
        return process

    return JobManager(lambda: dict(SETTINGS), process_factory=factory, **options)


@pytest.fixture
def managers():
    """Managers made in a test are shut down after it, whatever happened."""
    made = []
    yield made
    for manager in made:
        manager.shutdown()


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    return write_wav(tmp_path_factory.mktemp("audio") / "hello.wav", 1.0)


# ------------------------------------------------------------------------------------------ finding Python
@pytest.fixture
def empty_path(tmp_path, monkeypatch):
    """No THUNDER_BACKEND_PYTHON and a PATH with nothing on it but what a test puts in the returned folder."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.delenv("THUNDER_BACKEND_PYTHON", raising=False)
    monkeypatch.setenv("PATH", str(folder))
    return folder


def test_the_preference_comes_first_and_must_be_an_executable(tmp_path, empty_path, monkeypatch):
    chosen = make_executable(tmp_path / "python3", "#!/bin/sh\n")
    other = make_executable(tmp_path / "python-env", "#!/bin/sh\n")
    monkeypatch.setenv("THUNDER_BACKEND_PYTHON", str(other))
    assert backend_process.find_backend_python(str(chosen)) == str(chosen)
    # an environment's folder stands for its python
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    in_venv = make_executable(tmp_path / "venv" / "bin" / "python3", "#!/bin/sh\n")
    assert backend_process.find_backend_python(str(tmp_path / "venv")) == str(in_venv)
    for wrong in (tmp_path / "missing" / "python", tmp_path / "venv" / "bin"):  # nothing there; a folder
        with pytest.raises(BackendError) as error:
            backend_process.find_backend_python(str(wrong))
        assert str(wrong) in str(error.value) and "Backend Python" in str(error.value)
    plain = tmp_path / "python.txt"
    plain.write_text("not a program")
    with pytest.raises(BackendError, match="not an executable file"):
        backend_process.find_backend_python(str(plain))


def test_the_environment_variable_comes_next(tmp_path, empty_path, monkeypatch):
    python = make_executable(tmp_path / "python3.11", "#!/bin/sh\n")
    monkeypatch.setenv("THUNDER_BACKEND_PYTHON", str(python))
    assert backend_process.find_backend_python("") == str(python)
    monkeypatch.setenv("THUNDER_BACKEND_PYTHON", str(tmp_path / "nope"))
    with pytest.raises(BackendError, match="THUNDER_BACKEND_PYTHON"):
        backend_process.find_backend_python()


def test_the_thunder_command_on_path_gives_its_python(tmp_path, empty_path):
    (tmp_path / "env" / "bin").mkdir(parents=True)
    python = make_executable(tmp_path / "env" / "bin" / "python3", "#!/bin/sh\n")
    make_executable(empty_path / "thunder", f"#!{python}\n# -*- coding: utf-8 -*-\nimport sys\n"
                                            "from backend.cli import main\nsys.exit(main())\n")
    assert backend_process.find_backend_python() == str(python)
    # pip's form for long paths or paths with spaces: a /bin/sh script that execs the Python
    (tmp_path / "env with space" / "bin").mkdir(parents=True)
    python = make_executable(tmp_path / "env with space" / "bin" / "python3", "#!/bin/sh\n")
    make_executable(empty_path / "thunder", f"#!/bin/sh\n'''exec' \"{python}\" \"$0\" \"$@\"\n' '''\nimport sys\n")
    assert backend_process.find_backend_python() == str(python)
    # the thunder command itself chosen as Backend Python: followed to its Python
    assert backend_process.find_backend_python(str(empty_path / "thunder")) == str(python)
    # a thunder that is not a Python script is no help
    make_executable(empty_path / "thunder", "#!/bin/sh\necho thunder\n")
    with pytest.raises(BackendError, match="backend Python is not set"):
        backend_process.find_backend_python()


def test_nothing_found_is_one_sentence_saying_where_to_set_it(empty_path):
    with pytest.raises(BackendError) as error:
        backend_process.find_backend_python("")
    sentence = str(error.value)
    assert "Preferences > Add-ons > Thunder" in sentence and "Backend Python" in sentence
    assert "pip install thunder-talking-heads" in sentence and "\n" not in sentence


def test_start_failures_are_explained_in_one_sentence():
    explain = backend_process.explain_start_failure
    traceback = 'Traceback (most recent call last):\n  File "x", line 1\nModuleNotFoundError: No module named '
    sentence = explain("/x/bin/python", 1, "/x/bin/python: Error while finding module specification for "
                                            "'backend.cli' (ModuleNotFoundError: No module named 'backend')")
    assert sentence == ("the backend Python /x/bin/python cannot run Thunder's backend: it has no 'backend' "
                        "module (install Thunder in that environment: pip install thunder-talking-heads)")
    assert "it has no 'torch' module" in explain("/x/bin/python", 1, traceback + "'torch'\n")
    assert "it has no 'safetensors' module" in explain("/x/bin/python", 1, traceback + "'safetensors'\n")
    not_python = explain("/usr/bin/ls", 2, "ls: cannot access 'backend.cli': No such file or directory")
    assert not_python.startswith("/usr/bin/ls is not a Python interpreter") and "exit status 2" in not_python
    generic = explain("/x/bin/python3", 1, "Traceback (most recent call last):\nSyntaxError: invalid syntax\n")
    assert generic == "the backend stopped while starting (exit status 1): SyntaxError: invalid syntax"
    assert "killed by signal SIGKILL" in explain("/x/bin/python3", -9, "")


# ------------------------------------------------------------------------------------------ the process
@pytest.mark.timeout(60)
def test_the_process_reads_events_keeps_stderr_and_marks_garbage(tmp_path):
    script = make_executable(tmp_path / "chatty.py", "import sys, json\nprint('not json')\n"
                                                     "print(json.dumps({'event': 'ready', 'id': None}))\n"
                                                     "sys.stderr.write('a warning\\nthe last words\\n')\n")
    process = BackendProcess(sys.executable, command=[sys.executable, str(script)])
    process.start()
    ready = process.wait_event(lambda e: e["event"] == "ready", timeout=20)
    assert ready == {"event": "ready", "id": None}
    assert process.wait_event(lambda e: e["event"] == "exit", timeout=20) == {"event": "exit"}
    assert process.events() == [{"event": "garbage", "line": "not json"}]  # read past, kept in order
    assert wait_until(lambda: process.returncode == 0)
    assert wait_until(lambda: process.stderr_tail(1) == "the last words")
    assert process.stderr_tail() == "a warning\nthe last words" and not process.alive
    with pytest.raises(BackendError, match="the backend stopped unexpectedly \\(exit status 0\\)"):
        process.send("hello")
    process.stop()
    process.stop()  # idempotent


@pytest.mark.timeout(60)
def test_requests_get_fresh_ids_and_answers(tmp_path):
    process = BackendProcess(sys.executable, command=[sys.executable, str(FAKE_BACKEND)])
    process.start()
    try:
        assert process.wait_event(lambda e: e["event"] == "ready", 20)["protocol"] == 1
        first, second = process.send("hello"), process.send("load", head="builtin", checkpoint=tmp_path)
        assert second == first + 1
        loaded = process.wait_event(lambda e: e.get("id") == second, 20)
        assert loaded["event"] == "loaded" and loaded["head"]["name"] == "thunder-builtin-v1"
        assert [e["event"] for e in process.events()] == ["hello"]
        assert process.alive and process.pid > 0 and process.returncode is None
    finally:
        process.stop()
    assert process.returncode == 0 and not process.alive  # it left after the shutdown request


@pytest.mark.timeout(60)
def test_stop_kills_a_backend_that_ignores_shutdown_and_sigterm():
    process = BackendProcess(sys.executable, env={"FAKE_BACKEND_MODE": "stubborn"},
                             command=[sys.executable, str(FAKE_BACKEND)])
    process.start()
    assert process.wait_event(lambda e: e["event"] == "ready", 20)
    started = time.monotonic()
    process.stop(timeout=0.5)
    assert process.returncode == -9 and process_ended(process.pid)
    assert time.monotonic() - started < 5
    process.stop()


# ------------------------------------------------------------------------------------------ the job manager
@pytest.mark.timeout(60)
def test_start_backend_becomes_ready_and_says_hello(managers):
    manager = fake_manager()
    managers.append(manager)
    assert manager.status == "stopped" and manager.poll() is False
    manager.start_backend()
    assert manager.status == "starting" and manager.poll() is True
    drive(manager, lambda: manager.status == "ready" and manager.backend_info is not None)
    assert manager.backend_info["protocol"] == 1 and manager.backend_info["thunder"] == "0.1.0-fake"
    assert manager.message == "Thunder's backend is ready" and manager.poll() is False
    manager.start_backend()  # already running: nothing happens
    assert manager.status == "ready"
    manager.stop_backend()
    assert manager.status == "stopped" and manager.process is None


@pytest.mark.timeout(60)
def test_generate_streams_progress_then_the_take_files(managers, speech, tmp_path):
    from backend.take_file import load_take

    spy = []
    manager = fake_manager(spy=spy)
    managers.append(manager)
    seen, record = [], Recorder()
    record.progress = lambda event: seen.append((event["step"], manager.progress, manager.message))
    job = manager.start({"type": "generate", "audio": str(speech), "takes": 2, "seed": 7, "fps": 30,
                         "settings": {"steps": 6}, "out": str(tmp_path / "takes")},
                        load={"head": "builtin"}, **record.callbacks())
    assert manager.status == "starting" and job.state == "waiting"  # the request waits for ready
    drive(manager, lambda: job.done)
    assert [call[0] for call in record.calls] == ["result"], record.calls
    result = record.calls[0][1]
    assert seen[0] == (0, 0.0, "Reading the audio")
    assert seen[1:] == [(k, pytest.approx(k / 6), f"Sampling {k}/6") for k in range(1, 7)]
    assert manager.status == "ready" and manager.progress == 1.0 and manager.message.startswith("Made 2 takes")
    assert job.outcome == "result" and job.final is result
    paths = [Path(take["path"]) for take in result["takes"]]
    assert [p.name for p in paths] == ["hello.take1.seed7.npz", "hello.take2.seed8.npz"]
    for path, seed in zip(paths, (7, 8)):
        take = load_take(path)  # the fake writes the real take format
        assert take.seed == seed and take.n_frames == 30 and take.fps == 30.0
        with np.load(path, allow_pickle=False) as arrays:
            assert json.loads(str(arrays["meta"]))["format"] == "thunder-take"
    assert manager.backend_info["head"]["name"] == "thunder-builtin-v1"

    # The same head again: no second load. Another head: loaded first.
    sent = []
    process = spy[0]
    original = process.send
    process.send = lambda type, **fields: (sent.append(type), original(type, **fields))[1]
    again = manager.run_sync({"type": "generate", "audio": str(speech), "settings": {"steps": 2}},
                             load={"head": "builtin"}, timeout=30)
    assert again["event"] == "result" and sent == ["generate"]
    other_head = tmp_path / "my_flame.npz"
    other_head.write_bytes(b"fake")
    manager.run_sync({"type": "generate", "audio": str(speech), "settings": {"steps": 2}},
                     load={"head": str(other_head)}, timeout=30)
    assert sent == ["generate", "load", "generate"]
    assert manager.backend_info["head"]["name"] == "my_flame"
    assert manager.request_sync("hello")["loads"] == 2
    head = manager.request_sync("head", load={"head": "builtin"})  # the head of the job's load wish
    assert head["name"] == "thunder-builtin-v1" and sent[-2:] == ["load", "head"]


@pytest.mark.timeout(60)
def test_cancel_mid_job_ends_through_on_cancelled_and_writes_nothing(managers, speech, tmp_path):
    manager = fake_manager("slow")
    managers.append(manager)
    record = Recorder()
    out = tmp_path / "takes"
    job = manager.start({"type": "generate", "audio": str(speech), "settings": {"steps": 50}, "out": str(out)},
                        **record.callbacks())
    drive(manager, lambda: manager.message == "Sampling 2/50")
    assert manager.status == "busy" and manager.progress == pytest.approx(2 / 50)
    assert manager.cancel() is True
    assert manager.message == "Cancelling"
    drive(manager, lambda: job.done, timeout=10)
    assert record.finals() == [("cancelled",)] and job.outcome == "cancelled"
    assert manager.status == "ready" and manager.message == "Cancelled"
    assert not out.exists() or not list(out.iterdir())
    assert manager.cancel() is False  # nothing left to cancel
    # the backend is still up for the next job
    result = manager.run_sync({"type": "generate", "audio": str(speech), "settings": {"steps": 2},
                               "out": str(out)}, timeout=30)
    assert [Path(t["path"]).exists() for t in result["takes"]] == [True]


@pytest.mark.timeout(60)
def test_cancel_before_ready_drops_the_job(managers, speech):
    manager = fake_manager()
    managers.append(manager)
    record = Recorder()
    job = manager.start({"type": "generate", "audio": str(speech)}, **record.callbacks())
    assert job.state == "waiting" and manager.cancel() is True
    assert record.calls == [("cancelled",)] and job.done and manager.job is None
    drive(manager, lambda: manager.status == "ready")
    assert manager.request_sync("hello")["busy"] is None  # the dropped request never reached the backend


@pytest.mark.timeout(60)
def test_a_crash_mid_job_is_an_error_sentence_and_the_next_start_restarts(managers, speech, tmp_path):
    spy = []
    manager = fake_manager("crash_mid_job", "normal", spy=spy)
    managers.append(manager)
    record = Recorder()
    job = manager.start({"type": "generate", "audio": str(speech), "settings": {"steps": 10}},
                        **record.callbacks())
    drive(manager, lambda: job.done)
    sentence = ("the backend stopped unexpectedly (exit status 3): "
                "fake backend: the sampler crashed (on purpose)")
    assert manager.status == "error" and manager.message == sentence
    assert [c[:2] for c in record.finals()] == [("error", sentence)]
    assert job.final["code"] == "stopped" and "crashed (on purpose)" in job.traceback
    assert [c[1]["step"] for c in record.calls if c[0] == "progress"] == [0, 1, 2]
    assert manager.poll() is False and process_ended(spy[0].pid)
    # The next start() starts a new backend, and it works.
    result = manager.run_sync({"type": "generate", "audio": str(speech), "settings": {"steps": 2},
                               "out": str(tmp_path)}, timeout=30)
    assert result["event"] == "result" and len(spy) == 2 and spy[1].pid != spy[0].pid
    assert manager.status == "ready" and Path(result["takes"][0]["path"]).exists()


@pytest.mark.timeout(60)
def test_an_import_error_names_the_missing_module(managers, speech):
    manager = fake_manager("import_error")
    managers.append(manager)
    record = Recorder()
    manager.start({"type": "generate", "audio": str(speech)}, **record.callbacks())
    drive(manager, lambda: manager.status == "error")
    expected = (f"the backend Python {sys.executable} cannot run Thunder's backend: it has no 'torch' module "
                "(install Thunder and its requirements in that environment: pip install thunder-talking-heads)")
    assert manager.message == expected and record.finals()[0][:2] == ("error", expected)
    with pytest.raises(BackendError) as error:  # the same in background mode
        manager.request_sync("hello", timeout=20)
    assert str(error.value) == expected


def test_a_backend_that_never_says_ready_times_out_with_a_sentence(managers, speech):
    """It runs but answers nothing: after start_timeout the panel says so (not "starting" forever), the job
    fails through on_error, the process is stopped, and background mode gets the same sentence."""
    spy = []
    manager = fake_manager("silent", spy=spy, start_timeout=1.0)
    managers.append(manager)
    assert jobs.START_TIMEOUT_SECONDS >= 30   # the default leaves a slow disk time to import torch
    record = Recorder()
    manager.start({"type": "generate", "audio": str(speech)}, **record.callbacks())
    drive(manager, lambda: manager.status == "error", timeout=15)
    assert manager.message.startswith("Thunder's backend did not say it was ready within 1 s, so it was stopped")
    assert "Backend Python" in manager.message and "never comes (on purpose)" in manager.message
    assert record.finals() == [("error", manager.message, record.finals()[0][2])]
    assert wait_until(lambda: process_ended(spy[0].pid), 10), "the silent backend was left running"
    assert manager.poll() is False   # nothing left to poll: the UI's timer stops
    with pytest.raises(BackendError, match="did not say it was ready within 1 s"):
        manager.request_sync("hello", timeout=20)


@pytest.mark.timeout(60)
def test_a_request_error_leaves_the_backend_up(managers, tmp_path):
    manager = fake_manager()
    managers.append(manager)
    record = Recorder()
    notes = tmp_path / "notes.wav"
    notes.write_text("not audio")
    job = manager.start({"type": "generate", "audio": str(notes)}, **record.callbacks())
    drive(manager, lambda: job.done)
    message = f"the audio file {notes} is not a readable audio file"
    assert record.finals()[0][:2] == ("error", message) and job.traceback.startswith("Traceback")
    assert manager.status == "ready" and manager.message == message
    with pytest.raises(BackendError, match="unknown fields: colour"):
        manager.request_sync("hello", colour="red")
    assert manager.request_sync("hello")["event"] == "hello"


@pytest.mark.timeout(60)
def test_one_job_at_a_time(managers, speech):
    manager = fake_manager("slow")
    managers.append(manager)
    job = manager.start({"type": "generate", "audio": str(speech), "settings": {"steps": 50}}, on_result=None)
    with pytest.raises(BackendError) as error:
        manager.start({"type": "generate", "audio": str(speech)}, on_result=None)
    assert str(error.value) == "Thunder is busy generating; cancel it or wait"
    manager.cancel()
    drive(manager, lambda: job.done)
    assert job.outcome == "cancelled"


@pytest.mark.timeout(60)
def test_stop_kills_the_backends_process_group(managers):
    manager = fake_manager("spawn_child")
    managers.append(manager)
    hello = manager.request_sync("hello", timeout=20)
    child, backend = hello["child_pid"], manager.process.pid
    assert child and not process_ended(child) and not process_ended(backend)
    manager.stop_backend()
    assert manager.status == "stopped"
    assert process_ended(backend) and wait_until(lambda: process_ended(child), 5), "the backend's child outlived it"
    manager.stop_backend()  # again: nothing to do, no error


@pytest.mark.timeout(60)
def test_a_wrong_python_path_is_a_sentence(managers, tmp_path):
    settings = dict(SETTINGS, python=str(tmp_path / "no" / "python"))
    manager = JobManager(lambda: settings)
    managers.append(manager)
    with pytest.raises(BackendError) as error:
        manager.start({"type": "hello"}, on_result=None)
    assert str(error.value) == manager.message and manager.status == "error"
    assert str(tmp_path / "no" / "python") in manager.message and "not an executable file" in manager.message
    # an executable that is not a Python at all
    settings["python"] = "/bin/echo"
    with pytest.raises(BackendError) as error:
        manager.request_sync("hello", timeout=20)
    assert str(error.value).startswith("/bin/echo is not a Python interpreter") and manager.status == "error"
    # fixed in the preferences: the next start works
    settings["python"] = sys.executable
    manager.process_factory = fake_manager().process_factory
    assert manager.request_sync("hello", timeout=20)["protocol"] == 1


@pytest.mark.timeout(60)
def test_a_backend_of_another_protocol_is_refused(managers, tmp_path):
    script = make_executable(tmp_path / "future.py", "import json, sys\n"
                             "print(json.dumps({'event': 'ready', 'id': None, 'protocol': 2}), flush=True)\n"
                             "sys.stdin.read()\n")
    spy = []

    def factory(python, args):
        spy.append(BackendProcess(python, args, command=[sys.executable, str(script)]))
        return spy[-1]

    manager = JobManager(lambda: dict(SETTINGS), process_factory=factory)
    managers.append(manager)
    with pytest.raises(BackendError) as error:
        manager.request_sync("hello", timeout=20)
    assert str(error.value) == manager.message and manager.status == "error"
    assert manager.message.startswith("the backend speaks protocol 2 but this add-on speaks 1")
    assert not spy[0].alive and process_ended(spy[0].pid)


# ------------------------------------------------------------------------------------------ the real backend
@pytest.mark.timeout(300)
def test_the_real_backend_generates_a_take(managers, tmp_path):
    """`python -m backend.cli serve --threads 1` with the shipped model, driven as the add-on drives it."""
    from backend.take_file import load_take

    wav = write_wav(tmp_path / "line.wav", 1.0)
    manager = JobManager(lambda: dict(SETTINGS),
                         process_factory=lambda python, args: BackendProcess(
                             python, args, env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}))
    managers.append(manager)
    record = Recorder()
    result = manager.run_sync({"type": "generate", "audio": str(wav), "takes": 1, "seed": 3,
                               "settings": {"steps": 2}, "out": str(tmp_path / "takes")},
                              load={"head": "builtin"}, timeout=240, **record.callbacks())
    assert manager.process.command[1:] == ["-m", "backend.cli", "serve", "--device", "cpu", "--threads", "1"]
    assert result["event"] == "result" and record.finals()[0][0] == "result"
    assert [c[1]["stage"] for c in record.calls if c[0] == "progress"][0] == "audio"
    take = load_take(result["takes"][0]["path"])
    assert take.seed == 3 and take.n_frames == math.ceil(1.0 * 25) and take.model["name"] == "thunder"
    assert manager.backend_info["model"]["name"] == "thunder" and manager.backend_info["torch"]
    pid = manager.process.pid
    manager.stop_backend()
    assert process_ended(pid)
