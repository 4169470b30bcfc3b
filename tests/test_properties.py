"""Property-based tests (Hypothesis) of the three places where bytes from outside come in: the service's
request lines, the audio loader and the take readers. Whatever arrives, the answer is a sentence (an error
event with a user's code, an AudioFileError, a TakeFileError naming the file) or a good result; never a
traceback, an `internal` error or a dead service, and memory stays bounded.

Profiles (tests/conftest.py): `ci`, the default, is derandomized (the same examples on every run) with the
example counts below; `dev` draws new examples each run; `thorough` runs ten times as many. Choose one with
HYPOTHESIS_PROFILE=dev. The examples each test runs in `ci` (about 30 s together on 2 cores; pytest
--hypothesis-show-statistics prints them):

    service lines (random bytes)                    100   SERVICE_BYTES
    service requests (random JSON, any type)        100   SERVICE_JSON
    service requests (every field, nasty numbers)   300   SERVICE_FIELDS
    audio files (random bytes)                      100   AUDIO_BYTES
    WAV headers (rate, channels, bits, sizes)       400   WAV_HEADERS
    damaged take files, both readers                300   TAKES
"""

import io
import json
import os
import struct
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.audio_io import AudioFileError, load_audio
from backend.take_sampling import SamplingSettings
from backend.service import REQUEST_FIELDS, Service
from backend.take_file import TakeFileError, load_take, save_take
from generation_fixtures import write_speech
from test_trust import _addon_reader

pytestmark = pytest.mark.usefixtures("one_thread")

SERVICE_BYTES, SERVICE_JSON, SERVICE_FIELDS = 100, 100, 300
AUDIO_BYTES, WAV_HEADERS, TAKES = 100, 400, 300
USER_CODES = {"bad_request", "input", "busy"}
MAX_AUDIO_PEAK_BYTES = 300 * 2**20
SLOW = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large]


def examples(n):
    """`n` examples in the `ci` profile (ten times as many in `thorough`)."""
    from hypothesis import settings as current

    factor = 10 if current.get_current_profile_name() == "thorough" else 1
    return settings(max_examples=n * factor, deadline=None, suppress_health_check=SLOW)


# ------------------------------------------------------------------------------------------ the service
class Replies:
    """The service's stdout: each line parsed as it is written (a line that is not JSON fails the test)."""

    def __init__(self):
        self.events = []

    def write(self, text):
        for line in text.splitlines():
            self.events.append(json.loads(line))

    def flush(self):
        pass


@pytest.fixture(scope="module")
def service(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("service")
    replies = Replies()
    service = Service(io.BytesIO(), replies, {"checkpoint": str(tiny_model), "device": "cpu"}, folder / "work",
                      watch_parent=False)
    speech = write_speech(folder / "speech.wav", 1.0)
    np.save(folder / "samples.npy", np.zeros(8000, dtype=np.float32))
    a_file = folder / "a_file"
    a_file.write_text("x")
    service.paths = {"audio": str(speech), "samples": str(folder / "samples.npy"), "out": str(folder / "out"),
                     "a_file": str(a_file), "checkpoint": str(tiny_model), "head": "builtin"}
    yield service
    service.close()


def answer(service, line: bytes) -> list[dict]:
    """Hand `line` to the service's request handler; if it started a generate, cancel it at once and wait for
    its final event. Returns the events the line caused."""
    before = len(service.replies.events)
    service.handle_line(line)
    job = service.job
    if job is not None:
        job.cancel.set()
        job.thread.join(60)
        assert not job.thread.is_alive()
    return service.replies.events[before:]


def assert_answered_and_alive(service, line: bytes):
    events = answer(service, line)
    assert events, f"no reply to {line[:200]!r}"
    final = events[-1]
    assert final["event"] != "error" or final["code"] in USER_CODES, final
    assert all(e["event"] != "error" or "\n" not in e["message"] for e in events)
    pong = answer(service, b'{"id": "ping", "type": "hello"}\n')
    assert [e["event"] for e in pong] == ["hello"], pong


@examples(SERVICE_BYTES)
@given(st.binary(max_size=300))
def test_any_bytes_line_is_answered(service, line):
    assert_answered_and_alive(service, line.replace(b"\n", b" ") + b"\n")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@examples(SERVICE_JSON)
@given(json_values, st.sampled_from(sorted(REQUEST_FIELDS) + [None]))
def test_any_json_line_is_answered(service, value, kind):
    if kind is not None and isinstance(value, dict):
        value = {**value, "id": 1, "type": kind}
    assert_answered_and_alive(service, json.dumps(value).encode() + b"\n")


# Numbers a careless or hostile client sends: edges, huge, tiny, negative, not finite, not whole.
nasty_numbers = st.one_of(
    st.sampled_from([0, -1, 1, 2, 25, 240, 241, 1000, 16000, 2**31 - 1, 2**63, -2**63, 10**12, 10**400 // 10**300,
                     0.5, -0.0, 1e-300, 1e308, 1e30, float("inf"), float("-inf"), float("nan")]),
    st.integers(), st.floats())


def field_values(service, name):
    """What a client may put in field `name`: the right kind of thing, numbers of any size, or anything."""
    paths = service.paths
    specific = {
        "audio": st.sampled_from([paths["audio"], paths["a_file"], "/nonexistent.wav", "/proc/self/status"]),
        "samples": st.sampled_from([paths["samples"], paths["audio"], "/nonexistent.npy"]),
        "out": st.sampled_from([paths["out"], paths["a_file"], paths["a_file"] + "/x", "/proc/thunder", ""]),
        "checkpoint": st.sampled_from([paths["checkpoint"], paths["a_file"], "/nonexistent"]),
        "head": st.sampled_from(["builtin", paths["a_file"], "/nonexistent.npz"]),
        "device": st.sampled_from(["cpu", "cuda", "auto", "tpu"]),
        "settings": st.dictionaries(st.sampled_from(sorted(SamplingSettings.__dataclass_fields__) + ["stesp"]),
                                    nasty_numbers | st.sampled_from(["neutral", "happy", "ddim", "karras", "x"]),
                                    max_size=4).map(lambda d: {"steps": 1, **d} if "steps" not in d else d),
        "seeds": st.lists(nasty_numbers, max_size=3),
        "shape": st.lists(nasty_numbers, max_size=5),
        "target": nasty_numbers | st.text(max_size=5),
    }
    return specific.get(name, nasty_numbers) | nasty_numbers | json_values


@st.composite
def requests(draw, service):
    kind = draw(st.sampled_from(sorted(REQUEST_FIELDS)))
    names = draw(st.lists(st.sampled_from(sorted(REQUEST_FIELDS[kind]) or ["x"]), unique=True, max_size=6))
    request = {"id": draw(st.integers(0, 10**6) | st.text(max_size=5)), "type": kind}
    if kind == "generate" and draw(st.booleans()):
        request["audio"] = service.paths["audio"]
        request["settings"] = {"steps": 1}
    for name in names:
        if kind in REQUEST_FIELDS and name in REQUEST_FIELDS[kind]:
            request[name] = draw(field_values(service, name))
    if kind == "shutdown":  # a shutdown is honoured; it is tested by test_serve.py
        request["type"] = "hello"
    return request


@examples(SERVICE_FIELDS)
@given(st.data())
def test_any_numbers_in_any_field_are_answered(service, data):
    request = data.draw(requests(service))
    assert_answered_and_alive(service, json.dumps(request).encode() + b"\n")
    service.stopping = False


# ------------------------------------------------------------------------------------------ the audio loader
def check_loads_or_refuses(path: Path):
    """load_audio gives 16 kHz float32 in [-1, 1] or an AudioFileError naming the file, within the memory bound."""
    tracemalloc.start()
    try:
        audio = load_audio(path, max_seconds=600)
    except AudioFileError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
    else:
        assert audio.dtype == np.float32 and audio.ndim == 1 and audio.size > 0
        assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < MAX_AUDIO_PEAK_BYTES, f"{path}: {peak / 2**20:.0f} MiB"


@examples(AUDIO_BYTES)
@given(st.binary(max_size=2000) | st.binary(max_size=200).map(lambda b: b"RIFF" + b + b"WAVEfmt " + b))
def test_any_bytes_as_an_audio_file(tmp_path_factory, data):
    path = tmp_path_factory.getbasetemp() / "random.wav"
    path.write_bytes(data)
    check_loads_or_refuses(path)


@st.composite
def wav_files(draw):
    """A RIFF/WAVE header with random fields (format tag, channels, rate, bits, block align, chunk sizes),
    then some bytes of data, more or fewer than the header says."""
    tag = draw(st.sampled_from([1, 3, 6, 7, 0xFFFE, 0, 2]) | st.integers(0, 0xFFFF))
    channels = draw(st.sampled_from([1, 2, 6]) | st.integers(0, 0xFFFF))
    rate = draw(st.sampled_from([8000, 16000, 44100, 48000, 383999, 384001, 1, 0, 2**31 - 1])
                | st.integers(0, 2**32 - 1))
    bits = draw(st.sampled_from([8, 16, 24, 32, 64]) | st.integers(0, 0xFFFF))
    block = draw(st.just(max(1, channels * bits // 8) & 0xFFFF) | st.integers(0, 0xFFFF))
    data = draw(st.binary(max_size=4000))
    declared = draw(st.just(len(data)) | st.sampled_from([0, 0xFFFFFFFF]) | st.integers(0, 2**32 - 1))
    fmt_size = draw(st.sampled_from([16, 18, 40]) | st.integers(0, 64))
    fmt = struct.pack("<HHIIHH", tag, channels, rate, (rate * block) & 0xFFFFFFFF, block, bits)
    fmt = (fmt + bytes(max(0, fmt_size - len(fmt))))[:fmt_size]
    body = b"WAVE" + b"fmt " + struct.pack("<I", fmt_size) + fmt + b"data" + struct.pack("<I", declared) + data
    return b"RIFF" + struct.pack("<I", draw(st.just(len(body)) | st.integers(0, 2**32 - 1))) + body


@examples(WAV_HEADERS)
@given(wav_files())
def test_any_wav_header(tmp_path_factory, data):
    path = tmp_path_factory.getbasetemp() / "header.wav"
    path.write_bytes(data)
    check_loads_or_refuses(path)


# ------------------------------------------------------------------------------------------ the take readers
@pytest.fixture(scope="module")
def take_parts(tiny_model, tmp_path_factory):
    from backend.generate import Generator

    speech = write_speech(tmp_path_factory.mktemp("take") / "s.wav", 0.6)
    take = Generator(tiny_model, device="cpu").generate(speech, settings={"steps": 1})[0]
    return take.meta(), {name: np.asarray(value) for name, value in take.parts().items()}


def _filled(shape, kind, fill):
    with np.errstate(invalid="ignore"):  # NaN cast to integers is one of the damages wanted here
        return np.full(shape, fill).astype(kind)


arrays = st.builds(_filled,
                   st.lists(st.integers(0, 5), max_size=3).map(tuple),
                   st.sampled_from(["float32", "float64", "int32", "bool", "float16", "U3", "complex64"]),
                   st.sampled_from([0.0, 1.0, np.nan, np.inf, -1.0]))


@st.composite
def damaged_takes(draw, take_parts):
    meta, original = take_parts
    meta, parts = dict(meta), dict(original)
    for key in draw(st.lists(st.sampled_from(sorted(meta)), max_size=3)):
        meta[key] = draw(json_values | nasty_numbers)
    for key in draw(st.lists(st.sampled_from(sorted(meta)), max_size=2)):
        meta.pop(key, None)
    for name in draw(st.lists(st.sampled_from(sorted(parts)), max_size=2)):
        parts[name] = draw(arrays | st.just(original[name][: draw(st.integers(0, 3))]))
    for name in draw(st.lists(st.sampled_from(sorted(parts)), max_size=1)):
        parts.pop(name)
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array(json.dumps(meta)), **parts)
    data = buffer.getvalue()
    cut = draw(st.none() | st.integers(0, len(data)))
    return data if cut is None else data[:cut]


@examples(TAKES)
@given(st.data())
def test_both_take_readers_agree_on_any_damaged_take(take_parts, tmp_path_factory, data):
    path = tmp_path_factory.getbasetemp() / "damaged.npz"
    path.write_bytes(data.draw(damaged_takes(take_parts)))
    addon = _addon_reader()
    outcomes = []
    for read, error in ((load_take, TakeFileError), (addon.read_take, addon.TakeReadError)):
        try:
            read(path)
            outcomes.append(None)
        except error as exc:
            assert str(path) in str(exc) and "\n" not in str(exc), str(exc)
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1]  # one rule: the same verdict, in the same words


def test_a_take_that_passes_saves_and_reads_back(take_parts, tmp_path):
    """The good take the damaged ones start from is valid for both readers (the properties above are not
    vacuous)."""
    meta, parts = take_parts
    np.savez(tmp_path / "good.npz", meta=np.array(json.dumps(meta)), **parts)
    take = load_take(tmp_path / "good.npz")
    assert _addon_reader().read_take(tmp_path / "good.npz").n_frames == take.n_frames > 0
    save_take(tmp_path / "again.npz", take)
    assert zipfile.is_zipfile(tmp_path / "again.npz") and os.path.getsize(tmp_path / "again.npz") > 0
