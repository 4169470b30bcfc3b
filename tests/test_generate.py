"""Generating takes: the take file, frame-rate resampling, `Generator`, and `thunder generate`.

Against a tiny THUNDER model trained in the fixture (a few seconds, one CPU thread): seeds that reproduce a
take bit for bit, several files in one call with one model load, takes at 24/30/60 fps whose frames at
shared times are the 25 fps take's, and a clear one-line error for every bad input while the other files go
on.
"""

import dataclasses
import json
import math
import time

import numpy as np
import pytest

import backend.generate
from backend.audio_io import AudioFileError
from backend.cli import main as thunder
from backend.frame_rate import FrameRateError, check_fps, frames_for_seconds, resample_motion
from backend.generate import GenerateError, Generator, speech_from_samples
from backend.take_sampling import SamplingError
from backend.take_file import TakeFileError, load_take, save_take, take_vertices
from generation_fixtures import BAD_AUDIO_WORDS, write_bad_audio, write_speech

pytestmark = pytest.mark.usefixtures("one_thread")

FEW_STEPS = {"steps": 2}


@pytest.fixture(scope="module")
def generator(tiny_model):
    return Generator(tiny_model, device="cpu")


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """3.3 s: 83 model frames, four 24-frame windows, and a length that is a whole frame count at no rate."""
    return write_speech(tmp_path_factory.mktemp("audio") / "hello.wav", 3.3)


def run_cli(capsys, *args):
    status = thunder(["generate", *map(str, args)])
    captured = capsys.readouterr()
    return status, captured.out.splitlines(), [line for line in captured.err.splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------ seeds
def test_the_same_seed_gives_the_same_take_and_seeds_count_up(generator, speech):
    first = generator.generate(speech, takes=2, seed=5, settings=FEW_STEPS)
    again = generator.generate(speech, takes=2, seed=5, settings=FEW_STEPS)
    assert [t.seed for t in first] == [5, 6]
    for a, b in zip(first, again):
        for name in ("expression", "jaw", "neck", "eyes"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert np.abs(first[0].expression - first[1].expression).max() > 1e-4  # another seed, another take
    explicit = generator.generate(speech, seeds=[6, 5], settings=FEW_STEPS)
    assert np.array_equal(explicit[1].jaw, first[0].jaw) and np.array_equal(explicit[0].jaw, first[1].jaw)


def test_a_take_records_how_it_was_made(generator, speech, head):
    take = generator.generate(speech, seed=3, settings={"steps": 2, "emotion": "happy"})[0]
    assert take.n_frames == 83 and take.fps == 25.0
    assert take.expression.shape == (83, head.n_expression) and take.eyes.shape == (83, 6)
    assert take.settings["steps"] == 2 and take.settings["emotion"] == "happy"
    assert take.settings["intensity"] == 1.0  # an emotion asked for without an intensity is shown fully
    assert take.head == {"name": head.name, "identity": head.identity}
    assert take.model["name"] == "tiny-thunder" and len(take.model["hash"]) == 12
    assert take.audio["file"] == "hello.wav" and take.audio["hashed"] == "file"
    assert len(take.audio["sha256"]) == 64 and take.audio["seconds"] == pytest.approx(3.3)
    assert (take.audio["start"], take.audio["end"]) == (0.0, pytest.approx(3.3))


def test_a_time_range_samples_that_part_of_the_audio(generator, speech):
    take = generator.generate(speech, settings=FEW_STEPS, start=1.0, end=2.5, fps=30)[0]
    assert take.n_frames == 45 and (take.audio["start"], take.audio["end"]) == (1.0, 2.5)
    for start, end, words in ((2.0, 1.0, "is empty"), (0.0, 9.0, "goes past the end of hello.wav"),
                              (-1.0, None, "before the start")):
        with pytest.raises(GenerateError, match=words):
            generator.generate(speech, settings=FEW_STEPS, start=start, end=end)


# ------------------------------------------------------------------------------------------ take files
def test_take_files_round_trip_and_are_never_overwritten(generator, speech, head, tmp_path):
    take = generator.generate(speech, settings=FEW_STEPS, fps=24)[0]
    path = save_take(tmp_path / "hello.take1.seed0.npz", take)
    loaded = load_take(path)
    assert loaded.fps == 24.0 and loaded.seed == 0 and loaded.settings == take.settings
    assert loaded.audio == take.audio and loaded.model == take.model and loaded.head == take.head
    assert all(np.array_equal(loaded.parts()[k], v) for k, v in take.parts().items())
    with np.load(path, allow_pickle=False) as npz:  # what Blender's numpy sees
        meta = json.loads(str(npz["meta"]))
        assert (meta["format"], meta["version"], meta["n_frames"]) == ("thunder-take", 1, take.n_frames)
        assert npz["jaw"].dtype == np.float32
    with pytest.raises(TakeFileError, match="already exists"):
        save_take(path, take)
    save_take(path, dataclasses.replace(take, seed=9), overwrite=True)
    assert load_take(path).seed == 9
    assert not list(tmp_path.glob("*.part"))

    vertices = take_vertices(loaded, head)
    assert vertices.shape == (take.n_frames, head.n_vertices, 3) and np.isfinite(vertices).all()
    with pytest.raises(TakeFileError, match="made for the head other:1234"):
        take_vertices(dataclasses.replace(loaded, head={"name": "other", "identity": "other:1234"}), head)


def test_damaged_take_files_are_refused_naming_the_file(generator, speech, tmp_path):
    take = generator.generate(speech, settings=FEW_STEPS)[0]
    cases = {
        "text.npz": ("not a .npz \\(zip\\) file", lambda p: p.write_text("hello")),
        "nan.npz": ("jaw has NaN", lambda p: _write_raw(p, take, jaw=np.full_like(take.jaw, np.nan))),
        "short.npz": ("disagree on the number of frames", lambda p: _write_raw(p, take, eyes=take.eyes[:-1])),
        "fps.npz": ("frame rate 0", lambda p: _write_raw(p, take, meta={"fps": 0})),
        "version.npz": ("version 7; this Thunder reads only version 1", lambda p: _write_raw(p, take, meta={"version": 7})),
        "other.npz": ("not a Thunder take file", lambda p: _write_raw(p, take, meta={"format": "x"})),
    }
    for name, (words, write) in cases.items():
        path = tmp_path / name
        write(path)
        with pytest.raises(TakeFileError, match=words) as error:
            load_take(path)
        assert str(path) in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(TakeFileError, match="does not exist"):
        load_take(tmp_path / "nothing.npz")


def _write_raw(path, take, meta=None, **arrays):
    parts = {**take.parts(), **arrays}
    np.savez(path, meta=np.array(json.dumps({**take.meta(), **(meta or {})})), **parts)


# ------------------------------------------------------------------------------------------ frame rates
def test_resampling_keeps_shared_frames_and_interpolates_between():
    from scipy.spatial.transform import Rotation, Slerp

    rng = np.random.default_rng(0)
    source = {"expression": rng.normal(size=(50, 4)).astype(np.float32),
              "jaw": rng.normal(0, 0.3, size=(50, 3)).astype(np.float32)}
    resampled = resample_motion(source, 25, 50, 100)
    for name, out in resampled.items():
        assert out.dtype == np.float32
        assert np.array_equal(out[::2], source[name])  # every other frame is a source frame, bit for bit
        assert np.array_equal(out[-1], source[name][-1])  # past the last source frame: held
        assert np.array_equal(resample_motion(source, 25, 25, 50)[name], source[name])
    expression, jaw = source["expression"], source["jaw"].astype(np.float64)
    np.testing.assert_allclose(resampled["expression"][1:-1:2], (expression[:-1] + expression[1:]) / 2,
                               rtol=1e-6, atol=1e-7)   # coefficients: linear
    halfway = Slerp(np.arange(50), Rotation.from_rotvec(jaw))(np.arange(49) + 0.5).as_rotvec()
    np.testing.assert_allclose(resampled["jaw"][1:-1:2], halfway, rtol=1e-5, atol=1e-6)   # rotations: Slerp
    assert frames_for_seconds(3.2, 25) == 80 and frames_for_seconds(3.3, 24) == 80
    assert frames_for_seconds(1.0, 29.97) == 30
    for bad in (0, -24, float("nan"), 1e9, "fast", True):
        with pytest.raises(FrameRateError, match="frame rate"):
            check_fps(bad)


@pytest.mark.parametrize("fps", [24, 30, 60])
def test_takes_at_scene_rates_match_the_25_fps_take_at_shared_times(generator, speech, fps):
    model_rate = generator.generate(speech, seed=2, settings=FEW_STEPS)[0]
    scene_rate = generator.generate(speech, seed=2, settings=FEW_STEPS, fps=fps)[0]
    assert scene_rate.fps == fps and scene_rate.n_frames == math.ceil(3.3 * fps)
    step = {24: 24, 30: 6, 60: 12}[fps]  # frame k at fps and frame k * 25 / fps at 25 fps share a time
    shared = np.arange(0, scene_rate.n_frames, step)
    for name in ("expression", "jaw", "neck", "eyes"):
        assert np.array_equal(getattr(scene_rate, name)[shared],
                              getattr(model_rate, name)[shared * 25 // fps]), name


# ------------------------------------------------------------------------------------------ audio in memory
def test_samples_in_memory_are_checked_like_files(generator):
    rate = 8000
    t = np.arange(2 * rate) / rate
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 200 * t), 0.2 * np.sin(2 * np.pi * 300 * t)], 1).astype(np.float32)
    take = generator.generate(stereo, settings=FEW_STEPS, sample_rate=rate)[0]
    assert take.n_frames == 50 and take.audio["hashed"] == "samples" and take.audio["file"] is None
    stereo[100, 1] = np.nan
    with pytest.raises(AudioFileError, match="NaN or infinite values"):
        speech_from_samples(stereo, rate)
    with pytest.raises(AudioFileError, match="longer than the limit of 1 s"):
        speech_from_samples(np.zeros(3 * rate, np.float32), rate, max_seconds=1.0)
    with pytest.raises(AudioFileError, match="not floating-point"):
        speech_from_samples(np.zeros(100, np.int16))


# ------------------------------------------------------------------------------------------ the command
def test_several_files_share_one_model_load(tiny_model, speech, tmp_path, capsys, monkeypatch):
    loads = []
    real_load = backend.generate.load_model
    monkeypatch.setattr(backend.generate, "load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    other = write_speech(tmp_path / "other.flac", 1.7, pitch=240.0)
    status, out, err = run_cli(capsys, speech, other, "--out", tmp_path / "takes", "--takes", "2", "--seed", "4",
                               "--steps", "2", "--checkpoint", tiny_model, "--device", "cpu", "--fps", "30")
    assert status == 0, err
    assert len(loads) == 1
    names = sorted(p.name for p in (tmp_path / "takes").iterdir())
    assert names == ["hello.take1.seed4.npz", "hello.take2.seed5.npz", "other.take1.seed4.npz",
                     "other.take2.seed5.npz"]
    assert sorted(out) == sorted(str(tmp_path / "takes" / n) for n in names)
    assert any("hello.wav [" in line and "8/8" in line for line in err)  # a progress bar per file
    take = load_take(tmp_path / "takes" / "other.take2.seed5.npz")
    assert (take.fps, take.seed, take.n_frames, take.settings["steps"]) == (30.0, 5, 51, 2)

    # The same call again: the takes exist, each file fails on its own line, nothing is overwritten.
    status, out, err = run_cli(capsys, speech, other, "--out", tmp_path / "takes", "--checkpoint", tiny_model,
                               "--takes", "2", "--seed", "4", "--quiet")
    assert status == 1 and out == []
    assert len(err) == 2 and all("already exists" in line for line in err), err
    assert err[0].startswith(f"thunder: {speech}: ")


def test_bad_audio_files_fail_one_line_each_and_the_rest_go_on(tiny_model, tmp_path, capsys):
    bad = write_bad_audio(tmp_path / "audio")
    started = time.monotonic()
    status, out, err = run_cli(capsys, *bad.values(), "--out", tmp_path / "takes", "--checkpoint", tiny_model,
                               "--steps", "2", "--quiet")
    assert time.monotonic() - started < 20  # the hour-long file is refused from its header, not decoded
    assert status == 1
    assert out == [str(tmp_path / "takes" / "stereo8k.take1.seed0.npz")]  # the 8 kHz stereo MP3 works
    assert load_take(out[0]).n_frames == 50
    assert len(err) == len(BAD_AUDIO_WORDS), err
    for line, (kind, words) in zip(err, BAD_AUDIO_WORDS.items()):
        assert line.startswith(f"thunder: {bad[kind]}: ") and words in line, (kind, line)
        assert "Traceback" not in line


@pytest.mark.parametrize("args,words", [
    (["--fps", "0"], "the frame rate must be a number of frames per second from 1 to 240, not 0"),
    (["--fps", "-24"], "not -24"),
    (["--emotion", "furious"], "unknown emotion 'furious'; this model knows neutral, happy, sad"),
    (["--intensity", "3"], "intensity 3.0 is outside 0..1"),
    (["--takes", "0"], "the number of takes must be a whole number from 1 to 64"),
    (["--device", "cpu", "--checkpoint", "/nonexistent/model"], "not a checkpoint"),
])
def test_bad_arguments_stop_before_any_audio_is_read(tiny_model, tmp_path, capsys, args, words):
    # The audio file does not exist: the argument's error must come first.
    status, out, err = run_cli(capsys, tmp_path / "missing.wav", "--out", tmp_path / "takes",
                               "--checkpoint", tiny_model, *args)
    assert status == 2 and out == []
    assert len(err) == 1 and err[0].startswith("thunder: error: ") and words in err[0], err


def test_settings_are_checked_against_the_model(generator):
    with pytest.raises(SamplingError, match="unknown emotion 'furious'"):
        generator.settings({"emotion": "furious"})
    with pytest.raises(GenerateError, match="unknown sampling setting 'stesp'"):
        generator.settings({"stesp": 3})
    with pytest.raises(GenerateError, match="'steps' must be a whole number, not 'ten'"):
        generator.settings({"steps": "ten"})


def test_the_backend_and_the_take_reader_agree_on_the_motion_layout():
    """backend/motion.py's POSE_PARTS (the models' packed frames) and the take rule's part widths (the add-on's
    reader) are the same layout: expression, jaw 3, neck 3, eyes 6."""
    from backend.frame_rate import ROTATION_PARTS
    from backend.motion import POSE_PARTS
    from backend.take_file import PART_WIDTHS

    assert PART_WIDTHS == {"expression": None, **dict(POSE_PARTS)}
    assert ROTATION_PARTS == tuple(name for name, _ in POSE_PARTS)   # resampled by Slerp
