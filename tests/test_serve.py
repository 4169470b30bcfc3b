"""`thunder serve`: the JSON-lines service the Blender add-on drives (docs/service_protocol.md).

Most tests talk to one real `thunder serve` process, as the add-on would, against a tiny THUNDER model
trained in the fixture: hello and load, generate with progress and results, seeds, frame rates, raw samples,
the head mesh, cancel, busy, and every bad input answered with an error event while the service stays up.
A crash inside a request is provoked in an in-process service (monkeypatching needs the same process).
Two more processes check that the service exits when stdin closes and when its parent dies.
"""

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import backend.generate
from backend.service import Service
from backend.take_file import load_take
from generation_fixtures import BAD_AUDIO_WORDS, write_bad_audio, write_speech
from processes import wait_for_end

pytestmark = pytest.mark.usefixtures("one_thread")

SERVICE_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TIMEOUT = 30.0


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    return write_speech(tmp_path_factory.mktemp("audio") / "hello.wav", 3.3)


class Client:
    """The client side of the protocol over a pair of text streams: send requests, read events in order."""

    def __init__(self, requests, replies):
        self.requests, self.events, self.next_id = requests, queue.Queue(), 0
        self.lines = []    # every line the service wrote, to check that each is protocol
        self.backlog = []  # events read while waiting for another request's, in order
        threading.Thread(target=self._read, args=(replies,), daemon=True).start()

    def _read(self, replies):
        for line in iter(replies.readline, ""):
            self.lines.append(line)
            self.events.put(json.loads(line))
        self.events.put(None)

    def send(self, kind, **fields) -> int:
        self.next_id += 1
        self.requests.write(json.dumps({"id": self.next_id, "type": kind, **fields}) + "\n")
        self.requests.flush()
        return self.next_id

    def event(self, timeout=TIMEOUT) -> dict:
        event = self.events.get(timeout=timeout)
        assert event is not None, "the service closed its output"
        return event

    def until(self, request_id, final=("result", "cancelled", "error", "hello", "loaded", "head", "cancel", "bye"),
              timeout=TIMEOUT) -> tuple[dict, list[dict]]:
        """The events for `request_id` up to a final one (or a progress event whose stage is in `final`):
        (that event, the progress events before it). Other requests' events wait in the backlog."""
        progress, deadline = [], time.monotonic() + timeout
        while True:
            mine = [e for e in self.backlog if e["id"] == request_id]
            event = mine[0] if mine else self.event(deadline - time.monotonic())
            if mine:
                self.backlog.remove(event)
            elif event["id"] != request_id:
                self.backlog.append(event)
                continue
            if event["event"] == "progress" and event["stage"] not in final:
                progress.append(event)
            elif event["event"] in final or event.get("stage") in final:
                return event, progress

    def ask(self, kind, **fields) -> dict:
        return self.until(self.send(kind, **fields))[0]


def start_service(*args, **popen):
    return subprocess.Popen([sys.executable, "-m", "backend.cli", "serve", "--threads", "1", *map(str, args)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=SERVICE_ENV, **popen)


@pytest.fixture(scope="module")
def service(tiny_model, tmp_path_factory):
    """One `thunder serve` process for the module, with the tiny model as its default checkpoint."""
    log = open(tmp_path_factory.mktemp("service") / "stderr.txt", "w")
    process = start_service("--checkpoint", tiny_model, "--device", "cpu", stderr=log)
    client = Client(process.stdin, process.stdout)
    ready = client.event()
    assert ready["event"] == "ready" and ready["protocol"] == 1
    client.work_folder = Path(ready["work_folder"])
    yield client
    # A shutdown request ends the process cleanly and removes its work folder.
    assert client.ask("shutdown")["event"] == "bye"
    assert process.wait(TIMEOUT) == 0
    assert not client.work_folder.exists()
    assert all(json.loads(line) for line in client.lines)  # stdout carried protocol lines only
    log.close()


def assert_still_up(client):
    assert client.ask("hello")["event"] == "hello"


# ------------------------------------------------------------------------------------------ hello, load
def test_hello_reports_versions_and_load_loads_the_model(service, tiny_model):
    hello = service.ask("hello")
    assert hello["protocol"] == 1 and hello["thunder"] and hello["torch"] and hello["busy"] is None
    loaded = service.ask("load", checkpoint=str(tiny_model), device="cpu")
    assert loaded["event"] == "loaded", loaded
    assert loaded["model"]["name"] == "tiny-thunder" and loaded["model"]["emotions"] == ["neutral", "happy", "sad"]
    assert loaded["head"]["name"] == "thunder-builtin-v1" and loaded["device"] == "cpu"
    hello = service.ask("hello")
    assert hello["model"]["hash"] == loaded["model"]["hash"] and hello["head"] == loaded["head"]


# ------------------------------------------------------------------------------------------ generate
def test_generate_streams_progress_then_writes_the_takes(service, speech):
    request = service.send("generate", audio=str(speech), takes=2, seed=11, settings={"steps": 2})
    result, progress = service.until(request)
    assert result["event"] == "result", result
    assert progress[0]["stage"] == "audio"
    steps = [p["step"] for p in progress if p["stage"] == "sampling"]
    assert steps == list(range(1, 9)) and progress[-1]["total"] == 8  # 4 windows x 2 steps
    assert [(t["take"], t["seed"], t["frames"]) for t in result["takes"]] == [(1, 11, 83), (2, 12, 83)]
    assert Path(result["folder"]).parent == service.work_folder
    take = load_take(result["takes"][1]["path"])
    assert take.seed == 12 and take.audio["file"] == "hello.wav" and take.settings["steps"] == 2


def test_the_same_seed_gives_the_same_take(service, speech, tmp_path):
    paths = []
    for folder in ("first", "second"):
        result = service.ask("generate", audio=str(speech), seeds=[7, 3], settings={"steps": 2},
                             out=str(tmp_path / folder))
        assert result["event"] == "result", result
        paths.append([t["path"] for t in result["takes"]])
    assert [Path(p).name for p in paths[0]] == ["hello.take1.seed7.npz", "hello.take2.seed3.npz"]
    for a, b in zip(*paths):
        a, b = load_take(a), load_take(b)
        assert all(np.array_equal(a.parts()[k], b.parts()[k]) for k in a.parts())
    # Asked into the same folder again, the takes exist: an error, and nothing is overwritten.
    again = service.ask("generate", audio=str(speech), seeds=[7, 3], out=str(tmp_path / "first"))
    assert again["event"] == "error" and "already exists" in again["message"]


def test_scene_frame_rates_and_raw_samples(service, speech, tmp_path):
    at_25 = service.ask("generate", audio=str(speech), seed=1, settings={"steps": 2}, start=0.5, end=2.9)
    at_60 = service.ask("generate", audio=str(speech), seed=1, settings={"steps": 2}, start=0.5, end=2.9, fps=60)
    assert at_25["takes"][0]["frames"] == 60 and at_60["takes"][0]["frames"] == 144
    a, b = load_take(at_25["takes"][0]["path"]), load_take(at_60["takes"][0]["path"])
    assert np.array_equal(b.jaw[::12], a.jaw[::5])  # frame 12k at 60 fps is frame 5k at 25 fps
    assert (b.audio["start"], b.audio["end"]) == (0.5, 2.9)

    rate = 8000
    t = np.arange(2 * rate) / rate
    samples = np.stack([0.3 * np.sin(2 * np.pi * 200 * t), 0.3 * np.sin(2 * np.pi * 260 * t)], 1)
    np.save(tmp_path / "clip.npy", samples.astype(np.float32))
    result = service.ask("generate", samples=str(tmp_path / "clip.npy"), sample_rate=rate, fps=24,
                         settings={"steps": 1})
    assert result["event"] == "result", result
    assert result["takes"][0]["frames"] == 48 and result["audio"]["hashed"] == "samples"


def test_head_gives_what_the_add_on_needs_to_build_it(service, head):
    reply = service.ask("head")
    assert reply["event"] == "head" and reply["identity"] == head.identity
    assert reply["expression_names"] == list(head.expression_names)
    with np.load(reply["file"], allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    assert {name: list(a.shape) for name, a in arrays.items()} == reply["arrays"]
    V, E = head.n_vertices, head.n_expression
    assert arrays["vertices"].shape == (V, 3) and arrays["expression_basis"].shape == (V, 3, E)
    assert arrays["weights"].shape == (V, 5) and list(arrays["parents"]) == [-1, 0, 1, 1, 1]
    # With no pose, the mesh is the rest mesh plus the expression basis: numpy alone rebuilds the head.
    expression = np.linspace(-1, 1, E, dtype=np.float32)
    rebuilt = arrays["vertices"] + arrays["expression_basis"] @ expression
    with torch.no_grad():
        posed = head(expression=torch.from_numpy(expression)[None])[0].numpy()
    np.testing.assert_allclose(rebuilt, posed, atol=1e-5)


def test_head_bakes_an_identity_shape_into_the_rest_mesh_and_joints(service, head):
    shape = [1.5, -1.0, 0.5]
    reply = service.ask("head", shape=shape)
    assert reply["event"] == "head" and reply["shape"] == shape and reply["identity"] == head.identity
    with np.load(reply["file"], allow_pickle=False) as npz:
        vertices, joints = npz["vertices"], npz["joints"]
    with torch.no_grad():
        shaped, shaped_joints = head(expression=torch.zeros(1, head.n_expression),
                                     shape=torch.tensor([shape]), return_joints=True)
    np.testing.assert_allclose(vertices, shaped[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(joints, shaped_joints[0].numpy(), atol=1e-5)
    with np.load(service.ask("head")["file"], allow_pickle=False) as npz:
        assert np.abs(vertices - npz["vertices"]).max() > 1e-3  # the template's own file is another one
    bad = service.ask("head", shape=[float(k) for k in range(10_000)])
    assert bad["event"] == "error" and bad["code"] == "input" and "identity shape" in bad["message"]


def test_head_of_another_source_needs_no_model_for_it(service, head, tmp_path, flame_layout_files):
    """A FLAME file's head comes retargeted to the model's head (the built-in one): its takes' identity and the
    built-in expression names, on its own mesh."""
    from flame_fixtures import make_synthetic_flame, write_flame_pickle

    flame, _ = flame_layout_files["flame2023-open-layout"]
    reply = service.ask("head", head=str(flame))
    assert reply["event"] == "head" and reply["identity"] == head.identity, reply
    assert reply["mesh_identity"] != head.identity and reply["expression_names"] == list(head.expression_names)
    assert reply["arrays"]["expression_basis"] == [5023, 3, 39]
    assert service.ask("head")["mesh_identity"] == head.identity   # the loaded model's head is unchanged
    missing = service.ask("head", head=str(tmp_path / "nope.pkl"))
    assert missing["event"] == "error" and missing["code"] == "input" and "nope.pkl" in missing["message"]
    no_lips = write_flame_pickle(tmp_path / "generic_model.pkl", make_synthetic_flame(n_expr=12))
    refused = service.ask("head", head=str(no_lips))
    assert refused["event"] == "error" and refused["code"] == "input" and "cannot retarget" in refused["message"]


def test_generate_for_a_flame_head_makes_takes_of_the_builtin_head(tiny_model, speech, head, flame_layout_files):
    """A service loaded with a FLAME file's head: its takes are the built-in head's, and play on both heads."""
    from backend.head import load_head_for_takes
    from backend.take_file import load_take, take_vertices

    flame, _ = flame_layout_files["flame2020-layout"]
    process = start_service("--checkpoint", tiny_model, "--device", "cpu", "--head", flame, stderr=subprocess.DEVNULL)
    client = Client(process.stdin, process.stdout)
    try:
        assert client.event()["event"] == "ready"
        loaded = client.ask("load")
        assert loaded["event"] == "loaded" and loaded["head"]["identity"] == head.identity, loaded
        assert loaded["head"]["vertices"] == 5023
        result = client.ask("generate", audio=str(speech), takes=2, settings={"steps": 2})
        assert result["event"] == "result", result
        take = load_take(result["takes"][0]["path"])
        assert take.head["identity"] == head.identity and take.expression.shape[1] == 39
        assert take_vertices(take, load_head_for_takes(flame)).shape[1:] == (5023, 3)
        assert take_vertices(take, head).shape[1:] == (head.n_vertices, 3)
        assert client.ask("shutdown")["event"] == "bye"
    finally:
        process.stdin.close()
        process.wait(TIMEOUT)


# ------------------------------------------------------------------------------------------ cancel, busy
def test_cancel_stops_a_long_generate_between_steps(service, speech):
    request = service.send("generate", audio=str(speech), settings={"steps": 1000})
    service.until(request, final=("sampling",), timeout=TIMEOUT)  # the sampler is running
    busy = service.ask("generate", audio=str(speech))
    assert busy["event"] == "error" and busy["code"] == "busy" and f"request {request}" in busy["message"]
    assert service.ask("hello")["busy"] == request
    cancel = service.ask("cancel", target=request)
    assert cancel["running"] is True and cancel["target"] == request
    final, progress = service.until(request)
    assert final["event"] == "cancelled"
    assert not progress or progress[-1]["step"] < progress[-1]["total"]
    assert service.ask("hello")["busy"] is None
    assert service.ask("cancel")["running"] is False  # nothing to cancel now
    assert service.ask("generate", audio=str(speech), settings={"steps": 1})["event"] == "result"


# ------------------------------------------------------------------------------------------ bad inputs
def test_bad_audio_gives_an_error_event_and_the_service_stays_up(service, tmp_path):
    bad = write_bad_audio(tmp_path / "audio")
    for kind, path in bad.items():
        started = time.monotonic()
        reply = service.ask("generate", audio=str(path), settings={"steps": 1})
        if kind == "mp3":  # 8 kHz stereo MP3 is fine
            assert reply["event"] == "result" and reply["takes"][0]["frames"] == 50, reply
            continue
        assert reply["event"] == "error" and reply["code"] == "input", reply
        assert str(path) in reply["message"] and BAD_AUDIO_WORDS[kind] in reply["message"], reply
        assert "\n" not in reply["message"] and "Traceback" in reply["traceback"]
        assert time.monotonic() - started < 10, kind
        assert_still_up(service)


@pytest.mark.parametrize("fields,code,words", [
    ({"fps": 0}, "input", "the frame rate must be a number of frames per second from 1 to 240, not 0"),
    ({"settings": {"emotion": "furious"}}, "input", "unknown emotion 'furious'"),
    ({"settings": {"steps": "many"}}, "input", "'steps' must be a whole number"),
    ({"takes": "two"}, "bad_request", "'takes' must be a whole number, not \"two\""),
    ({"fsp": 24}, "bad_request", "unknown fields: fsp"),
    ({"audio": None}, "bad_request", "needs either 'audio'"),
])
def test_bad_requests_give_an_error_event(service, speech, fields, code, words):
    reply = service.ask("generate", **{"audio": str(speech), **fields})
    assert reply["event"] == "error" and reply["code"] == code and words in reply["message"], reply
    assert_still_up(service)


def test_a_cancel_target_no_id_can_be_is_a_bad_request(service):
    """Infinity (or a list) as the target used to fail the reply's JSON: an internal error."""
    service.requests.write('{"id": 71, "type": "cancel", "target": Infinity}\n')
    service.requests.flush()
    reply, _ = service.until(71)
    assert reply["event"] == "error" and reply["code"] == "bad_request" and "'target'" in reply["message"], reply
    assert service.ask("cancel", target=[1])["code"] == "bad_request"
    assert_still_up(service)


def test_unreadable_lines_and_unknown_requests_are_answered(service):
    service.requests.write("this is not json\n")
    service.requests.flush()
    reply, _ = service.until(None)
    assert reply["event"] == "error" and "not JSON" in reply["message"]
    reply = service.ask("dance")
    assert reply["code"] == "bad_request" and "unknown request type \"dance\"" in reply["message"]
    reply = service.ask("load", checkpoint="/nonexistent/model")
    assert reply["event"] == "error" and "not a checkpoint" in reply["message"]
    assert service.ask("hello")["model"]["name"] == "tiny-thunder"  # the loaded model is kept


# ------------------------------------------------------------------------------------------ crashes
@pytest.fixture
def in_process(tiny_model, tmp_path):
    """A Service in this process, on pipes, so that a test can monkeypatch what it calls."""
    request_read, request_write = os.pipe()
    reply_read, reply_write = os.pipe()
    requests_in, requests_out = os.fdopen(request_read, "r"), os.fdopen(request_write, "w")
    replies_in, replies_out = os.fdopen(reply_read, "r"), os.fdopen(reply_write, "w")
    service = Service(requests_in, replies_out, {"checkpoint": str(tiny_model), "device": "cpu"},
                      tmp_path / "work", watch_parent=False)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    client = Client(requests_out, replies_in)
    assert client.event()["event"] == "ready"
    yield client
    requests_out.close()  # stdin closes: the service ends
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    replies_out.close()


def test_a_crash_inside_a_request_leaves_the_service_usable(in_process, speech, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the sampler fell over\nwith a second line")

    monkeypatch.setattr(backend.generate.Generator, "generate", broken)
    reply = in_process.ask("generate", audio=str(speech))
    assert reply["event"] == "error" and reply["code"] == "internal", reply
    assert reply["message"] == ("the generate request failed inside Thunder (RuntimeError: the sampler fell "
                                "over)")
    assert "broken" in reply["traceback"] and "RuntimeError" in reply["traceback"]
    monkeypatch.setattr("backend.head.head_mesh_arrays", lambda head, shape=None: 1 / 0)  # a bug on the main thread
    reply = in_process.ask("head")
    assert reply["code"] == "internal" and "ZeroDivisionError" in reply["message"]
    monkeypatch.undo()
    assert in_process.ask("hello")["model"]["name"] == "tiny-thunder"
    assert in_process.ask("generate", audio=str(speech), settings={"steps": 1})["event"] == "result"


# ------------------------------------------------------------------------------------------ exiting
def test_the_service_exits_when_stdin_closes(tmp_path):
    process = start_service(stderr=subprocess.DEVNULL)
    ready = json.loads(process.stdout.readline())
    assert ready["event"] == "ready"
    process.stdin.close()
    assert process.wait(TIMEOUT) == 0
    assert process.stdout.read() == ""
    assert not Path(ready["work_folder"]).exists()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_the_service_exits_when_its_parent_dies(tmp_path):
    """A parent starts the service and dies while the service's stdin stays open (we hold the pipe)."""
    stdin_read, stdin_write = os.pipe()
    parent = (f"import subprocess, sys\n"
              f"p = subprocess.Popen([sys.executable, '-m', 'backend.cli', 'serve', '--threads', '1'], "
              f"stdin={stdin_read}, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)\n"
              f"p.stdout.readline()\n"  # ready: the service watches its parent from now on
              f"print(p.pid, flush=True)\n")
    result = subprocess.run([sys.executable, "-c", parent], pass_fds=(stdin_read,), capture_output=True,
                            text=True, env=SERVICE_ENV, timeout=TIMEOUT)
    os.close(stdin_read)
    pid = int(result.stdout.split()[0])
    try:
        assert wait_for_end(pid, 10), "the service outlived its parent"
    finally:
        os.close(stdin_write)
