"""Takes you can trust (issue 12, the backend's part): nothing of the user's is lost, and every bad input a
user or a file can give the CLI, the service or the take readers is one sentence, never a traceback.

- temporary files never collide with a user's file (a unique name beside the target);
- every number has a range checked at the edge: frame rates, threads, guidance, sample rates in WAV headers
  and in service requests, truncated WAVs, time ranges;
- --out (and the service's out) is checked before any sampling;
- a checkpoint config.json that lacks keys or is not an object;
- the service reads bytes: a line of invalid UTF-8 is a bad_request and the running job goes on;
- one take validation rule for the backend's reader and the add-on's (the same damaged files, both readers,
  on every Blender Python too).

The property-based side (random lines, headers, takes) is tests/test_properties.py.
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

import backend.generate
from backend.audio_io import AudioFileError, load_audio
from backend.cli import main as thunder
from backend.errors import ThunderError
from backend.files import write_atomically
from backend.flame_file import load_head_file
from backend.generate import Generator
from backend.take_file import TakeFileError, load_take, save_take
from blender_harness import blender_pythons
from generation_fixtures import write_speech
from test_serve import Client, in_process  # noqa: F401  (in_process: a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    return write_speech(tmp_path_factory.mktemp("audio") / "hello.wav", 1.2)


@pytest.fixture(scope="module")
def generator(tiny_model):
    return Generator(tiny_model, device="cpu")


@pytest.fixture(scope="module")
def good_take(generator, speech):
    return generator.generate(speech, settings={"steps": 1})[0]


def run_cli(capsys, *args):
    status = thunder([*map(str, args)])
    captured = capsys.readouterr()
    return status, captured.out.splitlines(), [line for line in captured.err.splitlines() if line.strip()]


def assert_one_sentence(err, *words):
    assert len(err) == 1 and "Traceback" not in err[0], err
    for word in words:
        assert word in err[0], (word, err)


# ------------------------------------------------------------------------------------------ temporary files
def test_a_users_file_named_like_the_old_temporary_file_is_untouched(good_take, tmp_path):
    path = tmp_path / "hello.take1.seed0.npz"
    mine = tmp_path / "hello.take1.seed0.npz.part"
    mine.write_text("my notes")
    save_take(path, good_take)
    assert mine.read_text() == "my notes"  # it used to be overwritten, then renamed over the take
    assert load_take(path).n_frames == good_take.n_frames
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, mine.name]
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # what open() would have given


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_failed_write_leaves_nothing_and_parallel_writes_do_not_collide(tmp_path):
    def fail(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(tmp_path / "a.json", fail)
    assert list(tmp_path.iterdir()) == []
    names = []

    def write(k):
        write_atomically(tmp_path / "same.json", lambda tmp: (names.append(tmp.name), tmp.write_text(str(k))))

    threads = [threading.Thread(target=write, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(names)) == 8 and [p.name for p in tmp_path.iterdir()] == ["same.json"]


def test_thunder_generate_keeps_a_users_part_file(tiny_model, speech, tmp_path, capsys):
    out = tmp_path / "takes"
    out.mkdir()
    (out / "hello.take1.seed0.npz.part").write_text("mine")
    status, printed, err = run_cli(capsys, "generate", speech, "--out", out, "--checkpoint", tiny_model,
                                   "--steps", "1", "--quiet")
    assert status == 0, err
    assert (out / "hello.take1.seed0.npz.part").read_text() == "mine" and load_take(printed[0])


# ------------------------------------------------------------------------------------------ numbers
@pytest.mark.parametrize("args,words", [
    (["--fps", "1e9"], "from 1 to 240, not 1e+09"),
    (["--fps", "nan"], "from 1 to 240, not nan"),
    (["--threads", "-1"], "--threads must be a whole number from 1 to 1024, not -1"),
    (["--threads", "0"], "not 0"),
    (["--max-seconds", "nan"], "--max-seconds must be 0 (no limit) or a number of seconds"),
    (["--guidance", "1e30"], "the guidance scale 1e+30 is outside 0..10"),
    (["--steps", "100000"], "choose between 1 and 1000"),
    (["--seed", "-1"], "a seed must be a whole number from 0"),
    (["--takes", "1000"], "from 1 to 64"),
    (["--start", "1e308"], "the time range from 1e+308 s"),
    (["--end", "1e308"], "goes past the end of hello.wav"),
    (["--start", "inf"], "must be a number of seconds"),
])
def test_numbers_out_of_range_are_one_sentence(tiny_model, speech, tmp_path, capsys, args, words):
    status, out, err = run_cli(capsys, "generate", speech, "--out", tmp_path / "takes", "--checkpoint",
                               tiny_model, "--quiet", "--steps", "1", *args)
    assert status in (1, 2) and out == []
    assert_one_sentence(err, words)
    assert "damaged" not in err[0]


def _wav_header(rate: int, data_bytes: int, channels: int = 1, bits: int = 16) -> bytes:
    block = channels * bits // 8
    return (b"RIFF" + struct.pack("<I", min(36 + data_bytes, 0xFFFFFFFF)) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, bits)
            + b"data" + struct.pack("<I", data_bytes))


@pytest.mark.parametrize("name,header_and_data,words", [
    ("huge_rate.wav", _wav_header(2_147_483_647, 3200) + bytes(3200), "sample rate 2147483647"),
    ("tiny_rate.wav", _wav_header(100, 3200) + bytes(3200), "sample rate 100"),
    ("truncated.wav", _wav_header(16000, 6 * 32000) + bytes(100), "is truncated or damaged"),
    ("unfinished.wav", _wav_header(16000, 0xFFFFFFFE) + bytes(32000), "is truncated or damaged"),
])
def test_audio_files_that_lie_in_their_header_are_refused(tmp_path, name, header_and_data, words):
    path = tmp_path / name
    path.write_bytes(header_and_data)
    with pytest.raises(AudioFileError, match=words) as error:
        load_audio(path)
    assert str(path) in str(error.value)


def test_a_text_file_named_npz_as_a_head_is_called_not_a_npz(tmp_path):
    path = tmp_path / "head.npz"
    path.write_text("not a head at all\n")
    with pytest.raises(ThunderError, match="is not a .npz file") as error:
        load_head_file(path)
    assert "Python objects" not in str(error.value)


def test_range_checks_happen_at_the_edge_once(generator, speech):
    """Generator.generate (the Python API's edge) refuses what the CLI and the service refuse."""
    for fields, words in (({"fps": 1e9}, "from 1 to 240"), ({"start": 1e308}, "is empty"),
                          ({"settings": {"guidance": float("inf")}}, "'guidance' must be a finite number"),
                          ({"settings": {"window": 10**6}}, "a window of 1000000 frames"),
                          ({"settings": {"guidance_max_noise": "low"}},
                           "'guidance_max_noise' must be a finite number, not 'low'"),
                          ({"settings": {"guidance": 2, "guidance_max_noise": -1}},
                           "guidance noise limit -1 must be 0 or more"),
                          ({"settings": {"lowest_noise": 0}}, "lowest noise level 0 is outside 0..10")):
        with pytest.raises(ThunderError, match=words):
            generator.generate(speech, **{"settings": {"steps": 1}, **fields})
    # an optional setting given as None is its default (guidance at every step), not a refusal
    assert generator.settings({"guidance_max_noise": None}).guidance_max_noise is None
    assert generator.settings({"lowest_noise": None}).lowest_noise is None
    with pytest.raises(AudioFileError, match="sample rate 1000000000000"):
        generator.generate(np.zeros(1600, dtype=np.float32), sample_rate=10**12)


# ------------------------------------------------------------------------------------------ --out
def _unusable_outs(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    return {"a file": (a_file, "is a file, not a folder"), "under a file": (a_file / "takes", "a file stands"),
            "/proc": (Path("/proc/thunder-takes"), "cannot be made"),
            "/sys": (Path("/sys/kernel"), "cannot be written into")}  # read-only, even for root


def test_an_unusable_out_is_refused_before_the_model_loads(tmp_path, speech, capsys, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(backend.generate.Generator, "__init__", never)
    for what, (out, words) in _unusable_outs(tmp_path).items():
        status, printed, err = run_cli(capsys, "generate", speech, "--out", out, "--quiet")
        assert status == 2 and printed == [], what
        assert_one_sentence(err, "--out", str(out), words)


# ------------------------------------------------------------------------------------------ checkpoint config
@pytest.fixture
def broken_checkpoints(tiny_model, tmp_path):
    """Copies of the tiny model whose config.json lacks a key, lacks a nested key, or is not an object."""
    config = json.loads((Path(tiny_model) / "config.json").read_text())
    cases = {"no-denoiser": ({k: v for k, v in config.items() if k != "denoiser"}, "lacks 'denoiser'"),
             "no-identity": ({**config, "head": {"name": "x"}}, "lacks 'head.identity'"),
             "stats-text": ({**config, "motion_stats": "none"}, "'motion_stats' as \"none\", not an object"),
             "a-list": ([1, 2, 3], "not an object"),
             "bad-denoiser": ({**config, "denoiser": {**config["denoiser"], "colour": 3}}, "Thunder can build")}
    folders = {}
    for name, (data, words) in cases.items():
        folder = tmp_path / name
        shutil.copytree(tiny_model, folder)
        (folder / "config.json").write_text(json.dumps(data))
        folders[name] = (folder, words)
    return folders


def test_a_broken_checkpoint_config_is_one_sentence_everywhere(broken_checkpoints, speech, tmp_path, capsys):
    for name, (folder, words) in broken_checkpoints.items():
        status, _, err = run_cli(capsys, "generate", speech, "--out", tmp_path / "takes", "--checkpoint", folder,
                                 "--quiet", "--device", "cpu")
        assert status == 2, name
        assert_one_sentence(err, str(folder), words)
        status, _, err = run_cli(capsys, "eval", folder, "--audio", speech.parent, "--takes", "1")
        assert status == 2, name
        assert_one_sentence(err, words)


# ------------------------------------------------------------------------------------------ the service
def test_invalid_utf8_is_a_bad_request_and_the_running_job_goes_on(tiny_model, speech, tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "backend.cli", "serve", "--threads", "1", "--checkpoint",
                                str(tiny_model), "--device", "cpu"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        client = Client(_TextOver(process.stdin), _LinesOf(process.stdout))
        assert client.event()["event"] == "ready"
        job = client.send("generate", audio=str(speech), settings={"steps": 20}, out=str(tmp_path / "takes"))
        for nasty in (b"\xff\xfe not utf-8\n", b'{"id": 7, "type": "hello"\x80}\n', b"\xc3\n",
                      b"x" * (2 << 20) + b"\n", b"[" * 100000 + b"\n"):
            process.stdin.write(nasty)
            process.stdin.flush()
            reply, _ = client.until(None, final=("error",))
            assert reply["code"] == "bad_request", reply
        assert client.ask("hello")["event"] == "hello"
        result, _ = client.until(job)
        assert result["event"] == "result", result
        assert load_take(result["takes"][0]["path"])
    finally:
        process.stdin.close()
        assert process.wait(30) == 0


class _TextOver:
    """Client writes text; the service's stdin is bytes."""

    def __init__(self, binary):
        self.binary = binary

    def write(self, text):
        self.binary.write(text.encode())

    def flush(self):
        self.binary.flush()


class _LinesOf:
    def __init__(self, binary):
        self.binary = binary

    def readline(self):
        return self.binary.readline().decode()


@pytest.mark.parametrize("kind,fields,code,words", [
    ("generate", {"fps": 1e9}, "input", "from 1 to 240"),
    ("generate", {"start": 1e308}, "input", "is empty"),
    ("generate", {"end": 1e308}, "input", "goes past the end"),
    ("generate", {"settings": {"guidance": 1e30}}, "input", "outside 0..10"),
    ("generate", {"out": "/proc/thunder"}, "input", "cannot be made"),
    ("generate", {"samples": "x.npy", "audio": None, "sample_rate": 10**12}, "input", "sample rate"),
    ("head", {"shape": ["a", 1]}, "bad_request", "list of numbers"),
    ("head", {"shape": [1.0] * 1000}, "input", "an identity shape must be at most"),
    ("load", {"checkpoint": "BROKEN"}, "input", "lacks 'denoiser'"),
])
def test_user_mistakes_are_input_errors_not_internal(in_process, speech, broken_checkpoints, kind, fields, code,
                                                     words):
    if kind == "generate":
        fields = {"audio": str(speech), "settings": {"steps": 1}, **fields}
    if fields.get("checkpoint") == "BROKEN":
        fields["checkpoint"] = str(broken_checkpoints["no-denoiser"][0])
    reply = in_process.ask(kind, **{k: v for k, v in fields.items() if v is not None})
    assert reply["event"] == "error" and reply["code"] == code and words in reply["message"], reply
    assert "inside Thunder" not in reply["message"]
    assert in_process.ask("hello")["event"] == "hello"


# ------------------------------------------------------------------------------------------ one take rule
def _damaged_takes(folder: Path, take) -> dict[str, str]:
    """Damaged take files, by name, with the words both readers' sentences must hold."""
    meta = take.meta()
    parts = {name: np.asarray(value) for name, value in take.parts().items()}

    def write(name, meta_changes=None, drop=(), **arrays):
        entries = {**parts, **arrays}
        fields = {k: v for k, v in {**meta, **(meta_changes or {})}.items() if k not in drop}
        np.savez(folder / name, meta=np.array(json.dumps(fields)),
                 **{k: v for k, v in entries.items() if k not in drop})

    cases = {}
    (folder / "text.npz").write_text("hello")
    cases["text.npz"] = "not a .npz (zip) file"
    write("no_fps.npz", drop=("fps",))
    cases["no_fps.npz"] = "lacks fps"
    write("fps0.npz", {"fps": 0})
    cases["fps0.npz"] = "frame rate 0 is not a positive number"
    write("fps_nan.npz", {"fps": float("nan")})
    cases["fps_nan.npz"] = "frame rate nan"
    write("fps_text.npz", {"fps": "25"})
    cases["fps_text.npz"] = "frame rate '25'"
    write("no_identity.npz", {"head": {"name": "x"}})
    cases["no_identity.npz"] = "does not say which head"
    write("n_frames.npz", {"n_frames": take.n_frames + 5})
    cases["n_frames.npz"] = f"says it has {take.n_frames + 5} frames but holds {take.n_frames}"
    write("int_expression.npz", expression=np.zeros(parts["expression"].shape, dtype=np.int32))
    cases["int_expression.npz"] = "expression holds int32 values"
    write("no_columns.npz", expression=np.zeros((take.n_frames, 0), dtype=np.float32))
    cases["no_columns.npz"] = "expression has shape"
    write("no_seed.npz", drop=("seed",))
    cases["no_seed.npz"] = "lacks seed"
    write("seed_float.npz", {"seed": 1.5})
    cases["seed_float.npz"] = "seed 1.5"
    write("version2.npz", {"version": 2})
    cases["version2.npz"] = "format version 2; this Thunder reads only version 1"
    write("no_version.npz", drop=("version",))
    cases["no_version.npz"] = "does not say which version"
    write("other_format.npz", {"format": "x"})
    cases["other_format.npz"] = "not a Thunder take file"
    write("nan_jaw.npz", jaw=np.full_like(parts["jaw"], np.nan))
    cases["nan_jaw.npz"] = "jaw has NaN"
    write("short_eyes.npz", eyes=parts["eyes"][:-1])
    cases["short_eyes.npz"] = "disagree on the number of frames"
    write("no_frames.npz", {"n_frames": 0}, **{k: v[:0] for k, v in parts.items()})
    cases["no_frames.npz"] = "has no frames"
    write("no_neck.npz", drop=("neck",))
    cases["no_neck.npz"] = "lacks neck"
    write("settings_list.npz", {"settings": [1]})
    cases["settings_list.npz"] = "settings must be a JSON object"
    np.savez(folder / "meta_array.npz", meta=np.arange(3), **parts)
    cases["meta_array.npz"] = "meta entry is not a JSON string"
    np.savez(folder / "meta_text.npz", meta=np.array("{not json"), **parts)
    cases["meta_text.npz"] = "meta entry is not valid JSON"
    cases["missing.npz"] = "does not exist"
    return cases


@pytest.fixture(scope="module")
def damaged_takes(good_take, tmp_path_factory):
    folder = tmp_path_factory.mktemp("damaged")
    save_take(folder / "good.npz", good_take)
    return folder, _damaged_takes(folder, good_take)


DAMAGED_NAMES = ["text.npz", "no_fps.npz", "fps0.npz", "fps_nan.npz", "fps_text.npz", "no_identity.npz",
                 "n_frames.npz", "int_expression.npz", "no_columns.npz", "no_seed.npz", "seed_float.npz",
                 "version2.npz", "no_version.npz", "other_format.npz", "nan_jaw.npz", "short_eyes.npz",
                 "no_frames.npz", "no_neck.npz", "settings_list.npz", "meta_array.npz", "meta_text.npz",
                 "missing.npz"]


def _addon_reader():
    """The add-on's reader as Blender runs it, without bpy: the module the extension zip ships."""
    from thunder_blender import take_file

    return take_file


@pytest.mark.parametrize("name", DAMAGED_NAMES)
def test_both_take_readers_refuse_the_same_damaged_file_naming_it(damaged_takes, name):
    folder, cases = damaged_takes
    assert sorted(cases) == sorted(DAMAGED_NAMES)
    path, words = folder / name, cases[name]
    with pytest.raises(TakeFileError) as backend_error:
        load_take(path)
    addon = _addon_reader()
    with pytest.raises(addon.TakeReadError) as addon_error:
        addon.read_take(path)
    for error in (backend_error, addon_error):
        message = str(error.value)
        assert str(path) in message and words in message and "\n" not in message, message


def test_both_readers_accept_the_good_take_and_save_take_checks_by_the_same_rule(damaged_takes, good_take):
    folder, _ = damaged_takes
    assert load_take(folder / "good.npz").n_frames == _addon_reader().read_take(folder / "good.npz").n_frames
    import dataclasses

    with pytest.raises(TakeFileError, match="does not say which head"):
        save_take(folder / "never.npz", dataclasses.replace(good_take, head={"name": "x"}))
    assert not (folder / "never.npz").exists()


def test_the_add_on_reader_refuses_them_under_every_blender_python(damaged_takes):
    """The shipped take_file.py under each Blender's own Python (numpy, no torch, no backend)."""
    folder, cases = damaged_takes
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(ROOT)!r})
        from thunder_blender import take_file as module
        assert "torch" not in sys.modules and "backend" not in sys.modules
        out = {{}}
        for name in {sorted(cases)!r} + ["good.npz"]:
            try:
                module.read_take({str(folder)!r} + "/" + name)
                out[name] = None
            except module.TakeReadError as exc:
                out[name] = str(exc)
        print(json.dumps(out))
    """)
    for python in blender_pythons():
        result = subprocess.run([python, "-c", script], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        messages = json.loads(result.stdout.strip().splitlines()[-1])
        assert messages.pop("good.npz") is None, python
        for name, words in cases.items():
            assert words in messages[name] and str(folder / name) in messages[name], (python, name, messages[name])


# ------------------------------------------------------------------------------------------ bpy lookup
def test_the_cli_asks_whether_bpy_exists_without_importing_it(tmp_path, speech):
    script = ("import sys, backend.cli as cli\n"
              "cli.require_blender()\n"
              "print('bpy' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
