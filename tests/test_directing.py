"""Directing a take (backend/directing.py): the known-value denoiser, range resample and constraints, from the
sampler up to `thunder generate` and the service. Blender's side: tests/test_blender_addon.py."""

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from backend import directing
from backend.diffusion.denoisers import KnownValueDenoiser
from backend.diffusion.samplers import SAMPLERS
from backend.diffusion.schedules import karras_sigmas
from backend.generate import Generator
from backend.take_file import load_take, save_take

EXAMPLE = Path(__file__).resolve().parents[1] / "backend" / "examples" / "thunder_example.wav"
NAMES = ["eyeBlinkLeft", "eyeBlinkRight", "mouthClose", "mouthSmileLeft", "jawForward", "browInnerUp",
         "cheekPuff", "noseSneerLeft"]


def packed(take) -> np.ndarray:
    return np.concatenate([take.expression, take.jaw, take.neck, take.eyes], axis=1)


# ------------------------------------------------------------------------------------------ the sampler
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_known_values_come_out_exact_and_the_free_ones_are_the_denoisers(sampler):
    """Weight 1 ends at the target exactly, whatever the network predicts; weight 0 is the plain sampler."""
    torch.manual_seed(0)
    def network(x, sigma):   # frames see each other (the mean over time), and nothing of the target
        return 0.3 * x.mean(1, keepdim=True) + 0.1 * torch.sin(x)

    sigmas = karras_sigmas(8, 0.02, 20.0)
    noise = torch.randn(2, 30, 5) * sigmas[0]
    target = torch.randn(2, 30, 5)
    weight = torch.zeros(2, 30, 5)
    weight[:, :10] = 1.0          # whole frames
    weight[:, 20:, 2] = 1.0       # one channel of others
    out = SAMPLERS[sampler](KnownValueDenoiser(network, target, weight), noise, sigmas)
    known = weight == 1
    assert torch.equal(out[known], target[known])
    plain = SAMPLERS[sampler](network, noise, sigmas)
    free = (weight == 0).all(-1).all(0)   # frames 10..19: free in every channel
    assert not torch.allclose(out[:, free], plain[:, free])   # the free frames feel the known ones...
    free_only = KnownValueDenoiser(network, target, torch.zeros_like(weight))
    assert torch.equal(SAMPLERS[sampler](free_only, noise, sigmas), plain)   # ...and weight 0 is no constraint


# ------------------------------------------------------------------------------------------ the rules
def test_channel_groups_follow_the_names_and_the_pose_parts():
    groups = directing.channel_groups(NAMES)
    e = len(NAMES)
    lips = np.flatnonzero(groups["lips"]).tolist()
    upper = np.flatnonzero(groups["upper"]).tolist()
    assert lips == [2, 3, 4, e, e + 1, e + 2]                       # mouth*, jaw* and the jaw joint
    assert upper == [0, 1, 5, 6, 7] + list(range(e + 6, e + 12))   # eye*, brow*, cheek*, nose* and the eyeballs
    assert np.flatnonzero(groups["head"]).tolist() == [e + 3, e + 4, e + 5]
    assert not (groups["lips"] & groups["upper"]).any() and not (groups["head"] & (groups["lips"] | groups["upper"])).any()


@pytest.mark.parametrize("fps", [24.0, 25.0, 30.0, 60.0, 12.5])
def test_a_plan_and_its_splice_keep_every_frame_outside_bit_for_bit(fps):
    rng = np.random.default_rng(1)
    n_frames = 90
    parts = {"expression": rng.normal(size=(n_frames, 4)).astype(np.float32),
             "jaw": rng.normal(size=(n_frames, 3)).astype(np.float32)}
    n_model = int(np.ceil(n_frames * 25 / fps))
    for start, end in ((0, 10), (30, 55), (80, 90), (0, 90), (44, 45)):
        plan = directing.plan_range(start, end, n_frames, fps, n_model)
        assert plan.free.any() and plan.hi - plan.lo <= plan.free.sum() + 2 * directing.RANGE_MARGIN
        free = np.array([True, False, True, False, True, True, False])
        new = {k: rng.normal(size=(end - start, v.shape[1])).astype(np.float32) for k, v in parts.items()}
        out = directing.splice_range(parts, new, plan, free)
        for name, column in (("expression", 0), ("jaw", 4)):
            mask = free[column:column + parts[name].shape[1]]
            outside = np.ones(parts[name].shape, dtype=bool)
            outside[start:end] = ~mask
            assert np.array_equal(out[name][outside], parts[name][outside])
            assert np.array_equal(out[name][start:end][:, mask], new[name][:, mask])
        # The free model frames lie strictly between the kept take frames start - 1 and end.
        times = (np.flatnonzero(plan.free) + plan.lo) / 25.0
        assert (start == 0 or times.min() > (start - 1) / fps) and (end == n_frames or times.max() < end / fps)


def test_constraints_are_imposed_on_the_model_frames_their_take_frames_come_from():
    names = NAMES
    hold = directing.Constraint("hold", pose="mouth_closed", start=10, end=20)
    key = directing.Constraint("key", name="mouthSmileLeft", value=0.8, frame=31)   # 31 / 24 s: between frames
    target, weight = directing.constraint_targets([hold, key], names, 24.0, 50)
    jaw = slice(len(names), len(names) + 3)
    first, last = directing.model_frames_of(10, 20, 24.0)
    assert (weight[first:last + 1, jaw] == 1).all() and (target[first:last + 1, jaw] == 0).all()
    assert (weight[first:last + 1, names.index("mouthClose")] == 1).all()
    assert (weight[:, names.index("mouthSmileLeft")].max() == 1) and weight[first - 1, jaw].max() < 1
    assert (weight[last + directing.SOFT_EDGE_FRAMES + 1:, jaw] == 0).all()      # a soft edge, then nothing
    position = 31 * 25 / 24
    smile = names.index("mouthSmileLeft")
    assert weight[int(np.floor(position)), smile] == 1 and weight[int(np.ceil(position)), smile] == 1
    assert target[int(np.floor(position)), smile] == np.float32(0.8)
    assert weight[:, names.index("browInnerUp")].max() == 0                     # nothing else is touched


@pytest.mark.parametrize("item, words", [
    ({"kind": "hold", "pose": "smile", "start": 0, "end": 5}, ["unknown pose", "mouth_closed"]),
    ({"kind": "hold", "pose": "neutral", "start": 5, "end": 5}, ["empty"]),
    ({"kind": "hold", "pose": "neutral", "start": 1.5, "end": 5}, ["whole frame"]),
    ({"kind": "key", "name": "mouthSmileLeft", "value": 3, "frame": 5}, ["from -1 to 1"]),
    ({"kind": "key", "name": "mouthSmileLeft", "value": 0.5}, ["frame missing"]),
    ({"kind": "pin"}, ["kind 'hold' or 'key'"]),
    ({"kind": "key", "name": "mouthSmileLeft", "value": 0.5, "frame": 2, "colour": 1}, ["colour unknown"]),
])
def test_a_bad_constraint_is_one_sentence(item, words):
    with pytest.raises(directing.DirectingError) as error:
        directing.constraints_from_json([item])
    assert all(w in str(error.value) for w in words) and "\n" not in str(error.value)


def test_the_command_line_forms():
    assert directing.parse_hold("mouth_closed:10:40").to_json() == {"kind": "hold", "pose": "mouth_closed",
                                                                   "start": 10, "end": 40}
    assert directing.parse_hold("3:9", pose="eyes_open").pose == "eyes_open"
    assert directing.parse_key("mouthSmileLeft=0.8@120").to_json() == {"kind": "key", "name": "mouthSmileLeft",
                                                                       "value": 0.8, "frame": 120}
    assert directing.parse_range("100:150") == (100, 150)
    for bad, parse in (("mouth_closed:10", directing.parse_hold), ("smile@3", directing.parse_key),
                       ("1-4", directing.parse_range)):
        with pytest.raises(directing.DirectingError):
            parse(bad)


# ------------------------------------------------------------------------------------------ the generator
@pytest.fixture(scope="module")
def shipped():
    return Generator(device="cpu")


@pytest.fixture(scope="module")
def old_take(shipped):
    return shipped.generate(EXAMPLE, seeds=[3], fps=24.0)[0]


@pytest.mark.parametrize("only", [None, "lips", "upper", "head"])
def test_range_resample_is_the_old_take_outside_the_range(shipped, old_take, only):
    start, end = 40, 90
    new = shipped.resample_range(old_take, EXAMPLE, start, end, only=only, seeds=[11])[0]
    free = directing.channel_groups(shipped.head.expression_names)[only] if only else np.ones(51, dtype=bool)
    a, b = packed(old_take), packed(new)
    outside = np.ones(a.shape, dtype=bool)
    outside[start:end] = ~free
    assert np.array_equal(a[outside], b[outside])
    assert np.abs(a[start:end][:, free] - b[start:end][:, free]).max() > 1e-3
    assert new.fps == old_take.fps and new.audio == old_take.audio and new.seed == 11
    assert new.settings["resampled_from"] == {"seed": 3, "start": start, "end": end, "only": only}


def test_a_take_made_before_the_guidance_interval_is_resampled_as_it_was_guided(shipped):
    """The shipped model now guides the lips at low noise only and stops sampling at noise 0.5; a guided take
    written before those settings existed (its settings lack them) was guided on every step and channel and
    sampled down to the schedule's lowest level, and its range is resampled so."""
    take = shipped.generate(EXAMPLE, seeds=[3], fps=24.0, settings={"guidance": 2.0})[0]
    assert (take.settings["guidance_max_noise"], take.settings["guidance_channels"]) == (2.0, "lips")
    assert take.settings["lowest_noise"] == 0.5
    written_before = dataclasses.replace(take, settings={k: v for k, v in take.settings.items()
                                                         if not k.startswith("guidance_") and k != "lowest_noise"})
    new = shipped.resample_range(written_before, EXAMPLE, 40, 90, seeds=[11])[0]
    assert (new.settings["guidance_max_noise"], new.settings["guidance_channels"]) == (None, "all")
    assert new.settings["lowest_noise"] is None
    kept = shipped.resample_range(take, EXAMPLE, 40, 90, seeds=[11])[0].settings
    assert (kept["guidance_channels"], kept["lowest_noise"]) == ("lips", 0.5)


def test_range_resample_refuses_another_audio_and_a_range_off_the_take(shipped, old_take, tmp_path):
    from generation_fixtures import write_speech

    other = write_speech(tmp_path / "other.wav", seconds=6.0)
    with pytest.raises(directing.DirectingError, match="not the audio the take was made from"):
        shipped.resample_range(old_take, other, 10, 20)
    with pytest.raises(directing.DirectingError, match="not inside the take's frames"):
        shipped.resample_range(old_take, EXAMPLE, 100, old_take.n_frames + 1)
    with pytest.raises(directing.DirectingError, match="unknown part"):
        shipped.resample_range(old_take, EXAMPLE, 10, 20, only="ears")


def test_constraints_are_kept_and_saved_and_resample_keeps_them(shipped, old_take):
    names = list(shipped.head.expression_names)
    constraints = [{"kind": "hold", "pose": "mouth_closed", "start": 20, "end": 45},
                   {"kind": "key", "name": "mouthSmileLeft", "value": 0.8, "frame": 61},
                   {"kind": "hold", "pose": "eyes_open", "start": 0, "end": 100},
                   {"kind": "hold", "pose": "neutral", "start": 110, "end": 120}]
    take = shipped.generate(EXAMPLE, seeds=[4], fps=30.0, constraints=constraints)[0]
    opening = [names.index(n) for n in directing.MOUTH_OPENING]
    blinks = [names.index("eyeBlinkLeft"), names.index("eyeBlinkRight")]
    assert np.abs(take.jaw[20:45]).max() < 1e-6 and np.abs(take.expression[20:45][:, opening]).max() < 1e-6
    assert abs(take.expression[61, names.index("mouthSmileLeft")] - 0.8) < 1e-5
    assert np.abs(take.expression[:100, blinks]).max() < 1e-6
    assert np.abs(take.expression[110:120]).max() < 1e-6 and np.abs(take.jaw[110:120]).max() < 1e-6
    assert take.settings["constraints"] == constraints
    # A range resample with the take's own constraints (none given) keeps them where it samples.
    new = shipped.resample_range(take, EXAMPLE, 30, 70, seeds=[8])[0]
    assert new.settings["constraints"] == constraints
    assert np.abs(new.jaw[30:45]).max() < 1e-6 and abs(new.expression[61, names.index("mouthSmileLeft")] - 0.8) < 1e-5
    # ...and a constraint past the take's end is a sentence.
    with pytest.raises(directing.DirectingError, match="reaches past the take's last frame"):
        shipped.generate(EXAMPLE, seeds=[4], fps=30.0, constraints=[{"kind": "key", "name": "mouthSmileLeft",
                                                                     "value": 0.5, "frame": 10_000}])
    with pytest.raises(directing.DirectingError, match="no expression named 'smile'"):
        shipped.generate(EXAMPLE, seeds=[4], constraints=[{"kind": "key", "name": "smile", "value": 0.5, "frame": 1}])


# ------------------------------------------------------------------------------------------ the surfaces
def test_thunder_generate_resamples_a_range_and_holds(old_take, tmp_path):
    from test_cli import assert_one_line_error, thunder

    old_path = save_take(tmp_path / "old.npz", old_take)
    result = thunder("generate", EXAMPLE, "--out", tmp_path / "new", "--from-take", old_path, "--range", "40:90",
                     "--only", "lips", "--seed", "21", "--hold", "mouth_closed:50:60", "--key",
                     "mouthSmileLeft=0.5@70", "--eyes-open", "40:90", "--quiet")
    assert result.returncode == 0, result.stderr
    new = load_take(result.stdout.strip().splitlines()[0])
    assert new.seed == 21 and new.fps == 24.0 and new.settings["resampled_from"]["only"] == "lips"
    assert [c["kind"] for c in new.settings["constraints"]] == ["hold", "hold", "key"]
    assert np.array_equal(packed(new)[:40], packed(old_take)[:40]) and np.abs(new.jaw[50:60]).max() < 1e-6
    assert_one_line_error(thunder("generate", EXAMPLE, "--out", tmp_path / "x", "--range", "1:4"), "--from-take")
    assert_one_line_error(thunder("generate", EXAMPLE, "--out", tmp_path / "x", "--key", "smile"), "NAME=VALUE@FRAME")


def test_the_service_resamples_a_range(old_take, head, tmp_path):
    from test_serve import Client, start_service

    old_path = save_take(tmp_path / "old.npz", old_take)
    process = start_service("--device", "cpu", stderr=open(tmp_path / "log.txt", "w"))
    client = Client(process.stdin, process.stdout)
    try:
        assert client.event()["event"] == "ready"
        bad = client.ask("generate", audio=str(EXAMPLE), from_take=str(old_path), range=[40, 90], fps=24)
        assert bad["event"] == "error" and bad["code"] == "bad_request" and "leave out fps" in bad["message"]
        bad = client.ask("generate", audio=str(EXAMPLE), constraints=[{"kind": "hold", "pose": "x", "start": 0,
                                                                       "end": 2}])
        assert bad["event"] == "error" and bad["code"] == "input" and "unknown pose" in bad["message"]
        done = client.ask("generate", audio=str(EXAMPLE), from_take=str(old_path), range=[40, 90], only="head",
                          seeds=[5], out=str(tmp_path / "out"),
                          constraints=[{"kind": "hold", "pose": "eyes_open", "start": 40, "end": 90}])
        assert done["event"] == "result", done
        new = load_take(done["takes"][0]["path"])
        # Only the head moves anew; the eyes-open hold acts on resampled channels only, so none here.
        free = directing.channel_groups(head.expression_names)["head"]
        assert np.array_equal(packed(new)[:, ~free], packed(old_take)[:, ~free])
        assert not np.array_equal(packed(new)[40:90, free], packed(old_take)[40:90, free])
        assert new.settings["constraints"] == [{"kind": "hold", "pose": "eyes_open", "start": 40, "end": 90}]
    finally:
        client.ask("shutdown")
        process.wait(60)
