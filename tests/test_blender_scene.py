"""The headless take scene (backend/blender/scene.py) through `thunder generate --blend --fbx --abc --usd --preview`
and `thunder demo`: what the .blend holds when opened again, the export files, the preview video's streams and
frame count, the timing of the sound strip, refusing to overwrite, and the sentence when bpy is missing.

Every Blender step runs in its own process (Blender keeps global state): the command, then a fresh Python that
opens the .blend. The takes come from the shipped model on one CPU thread.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backend.frame_rate import frames_for_seconds
from backend.head import load_head
from generation_fixtures import write_speech
from thunder_blender import strengths
from thunder_blender.take_file import read_take

ROOT = Path(__file__).resolve().parents[1]
BLENDER_NEEDED = ("--blend, --fbx, --abc, --usd and --preview need Blender as a Python module "
                  "(pip install bpy==5.0.1 on Python 3.11)")


def thunder(*args, timeout=480, env=None):
    return subprocess.run([sys.executable, "-m", "backend.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env=env)


def take_frames(path: Path) -> tuple[int, dict]:
    with np.load(path, allow_pickle=False) as npz:
        return len(npz["jaw"]), json.loads(str(npz["meta"]))


# Opens a .blend in a fresh Blender and prints what the tests check, as JSON.
READ_BLEND = r"""
import json, sys
import bpy
from thunder_blender import compat, properties, sound
properties.register()
bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
scene = bpy.context.scene
heads = [o for o in bpy.data.objects if o.type == "ARMATURE" and o.thunder.is_head]
head = heads[0]
mesh = head.thunder.mesh
keys = mesh.data.shape_keys
strips = compat.sound_strips(scene)
strip = strips[0]
timing = compat.strip_timing(strip)
heard = sound.strip_audio(scene, strip.name)
takes = []
for take in head.thunder.takes:
    action = take.action
    slots = {slot.target_id_type: len(compat.slot_fcurves(action, slot)) for slot in action.slots}
    takes.append({"name": take.name, "seed": take.seed, "frames": take.frames, "frame_start": take.frame_start,
                  "action": action.name, "fake_user": action.use_fake_user, "slots": slots,
                  "key_range": list(action.frame_range), "audio": take.audio})
print("RESULT " + json.dumps({
    "heads": len(heads), "head": head.name, "identity": head.thunder.identity, "mesh": mesh.name,
    "shape_keys": len(keys.key_blocks), "playing": compat.assigned_action(keys).name,
    "playing_armature": compat.assigned_action(head).name, "active_take": head.thunder.active_take,
    "takes": takes, "fps": scene.render.fps, "fps_base": scene.render.fps_base,
    "frame_start": scene.frame_start, "frame_end": scene.frame_end, "strips": len(strips),
    "sound_file": bpy.path.abspath(strip.sound.filepath), "sound_packed": strip.sound.packed_file is not None,
    "content_start": timing.content_start,
    "left": timing.left, "right": timing.right, "sound_offset": timing.sound_offset,
    "heard_start": heard.start, "heard_end": heard.end, "heard_frame": heard.frame_start,
    "camera": scene.camera is not None and scene.camera.type == "CAMERA", "engine": scene.render.engine,
    "settings_strip": scene.thunder.strip, "settings_head": scene.thunder.head.name if scene.thunder.head else None,
}))
"""

# Without ffprobe: the video's frames and its sound, as Blender's Sequencer loads them.
READ_MOVIE = r"""
import json, sys
import bpy
scene = bpy.context.scene
editor = scene.sequence_editor_create()
movie = editor.strips.new_movie("video", sys.argv[1], 1, 1)
sound = editor.strips.new_sound("audio", sys.argv[1], 2, 1)
print("RESULT " + json.dumps({"video_frames": movie.frame_duration, "audio": sound.sound is not None,
                              "width": movie.elements[0].orig_width if movie.elements else None}))
"""


def run_python(code: str, *args) -> dict:
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def probe_video(path: Path) -> dict:
    """The video's frame count, width and whether it has sound: ffprobe's count, or Blender's."""
    if shutil.which("ffprobe"):
        result = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                                 "stream=codec_type,codec_name,nb_read_frames,width", "-of", "json", str(path)],
                                capture_output=True, text=True, timeout=120, check=True)
        streams = json.loads(result.stdout)["streams"]
        video = [s for s in streams if s["codec_type"] == "video"]
        audio = [s for s in streams if s["codec_type"] == "audio"]
        assert len(video) == 1 and video[0]["codec_name"] == "h264", streams
        assert len(audio) == 1 and audio[0]["codec_name"] == "aac", streams
        return {"video_frames": int(video[0]["nb_read_frames"]), "audio": True, "width": video[0]["width"]}
    return run_python(READ_MOVIE, path)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """`thunder generate` with every scene output, on 1.5 s of speech at 24 fps from its second 0.3: the strip's
    content must start before frame 1, with audio second 0.3 at frame 1. The speech is 1.5 s of the example
    clip (a voice, so that the shipped model moves the lips: on tone bursts it barely opens them)."""
    import soundfile

    folder = tmp_path_factory.mktemp("scene")
    samples, rate = soundfile.read(ROOT / "backend" / "examples" / "thunder_example.wav", dtype="float32")
    audio = folder / "speech.wav"
    soundfile.write(audio, samples[int(0.4 * rate):int(1.9 * rate)], rate)
    out = folder / "out"
    result = thunder("generate", audio, "--out", out, "--takes", "2", "--seed", "5", "--fps", "24", "--start", "0.3",
                     "--threads", "1", "--quiet", "--blend", "--fbx", "--abc", "--usd", "--preview",
                     "--preview-resolution", "64")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return audio, out, result


def test_generate_writes_takes_blend_exports_and_preview(generated):
    audio, out, result = generated
    printed = [Path(line) for line in result.stdout.splitlines()]
    takes = [out / "speech.take1.seed5.npz", out / "speech.take2.seed6.npz"]
    exports = [out / f"speech_head_Take_{k}.{ext}" for k in (1, 2) for ext in ("fbx", "abc", "usd")]
    expected = takes + [out / "speech.blend"] + exports + [out / "speech.preview.mp4"]
    assert sorted(printed) == sorted(expected), result.stdout
    for path in expected:
        assert path.is_file() and path.stat().st_size > 1000, path
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in expected)   # nothing else
    assert "Traceback" not in result.stderr and result.stderr.strip() == "", result.stderr[-2000:]


def test_blend_holds_the_head_takes_and_sound(generated):
    audio, out, _ = generated
    frames, meta = take_frames(out / "speech.take1.seed5.npz")
    assert frames == frames_for_seconds(1.5 - 0.3, 24) and meta["audio"]["start"] == pytest.approx(0.3)
    info = run_python(READ_BLEND, out / "speech.blend")
    assert info["heads"] == 1 and info["head"] == "speech head" and info["identity"] == meta["head"]["identity"]
    head = load_head("builtin")
    pose_correctives = 9 * (len(head.joint_names) - 1)                  # 36: a rotation matrix per posed joint
    assert info["shape_keys"] == 1 + head.n_expression + pose_correctives    # Basis, expressions, correctives
    assert [t["name"] for t in info["takes"]] == ["Take 1", "Take 2"]
    assert [t["seed"] for t in info["takes"]] == [5, 6]
    for take in info["takes"]:
        assert take["frames"] == frames and take["frame_start"] == 1.0 and take["fake_user"]
        assert Path(take["audio"]) == audio.resolve()   # what Resample samples again
        assert take["key_range"] == [1.0, float(frames)]
        # A curve per shape key (the Basis aside) and a quaternion and location per bone (the root aside).
        assert take["slots"] == {"KEY": head.n_expression + pose_correctives,
                                 "OBJECT": 7 * (len(head.joint_names) - 1)}
    assert info["active_take"] == 0
    assert info["playing"] == info["playing_armature"] == info["takes"][0]["action"]
    assert (info["fps"], info["fps_base"]) == (24, 1.0)
    assert (info["frame_start"], info["frame_end"]) == (1, frames)
    # The sound: one strip of the file, trimmed to start at frame 1, where the takes' first second (0.3) plays.
    assert info["strips"] == 1 and Path(info["sound_file"]).resolve() == audio.resolve()
    assert info["sound_packed"], "the .blend does not carry its sound"
    assert info["left"] == 1.0 and info["content_start"] < 1.0
    assert info["content_start"] + (0.3 + info["sound_offset"]) * 24 == pytest.approx(1.0, abs=1e-5)
    assert info["heard_start"] == pytest.approx(0.3, abs=1e-5) and info["heard_frame"] == pytest.approx(1.0)
    assert info["heard_end"] is None   # the takes go on to the file's end
    assert info["settings_strip"] == "speech.wav" and info["settings_head"] == "speech head"
    assert info["camera"] and info["engine"] == "BLENDER_WORKBENCH"


def test_preview_video_has_every_frame_and_the_sound(generated):
    _, out, _ = generated
    frames, _ = take_frames(out / "speech.take1.seed5.npz")
    video = probe_video(out / "speech.preview.mp4")
    assert video["video_frames"] == frames and video["audio"] and video["width"] == 64


# The grid of frames from the same scene: build it from the generated takes, render two frames captioned and
# cropped, and report the grid's size, how the tiles differ, and what the scene holds afterwards.
RENDER_GRID = r"""
import json, sys
import bpy
import numpy as np
from backend.blender.preview import read_png
from backend.blender.scene import build_take_scene
audio, take1, take2, out = sys.argv[1:5]
scene = build_take_scene("builtin", audio, [take1, take2], 24.0, resolution=64)
objects = sorted(o.name for o in bpy.data.objects)
# The take's most closed and most open lips (take 1 plays): frames where the mouth must look different, whatever
# the model makes of the first and last frames (silence, where any model may hold the same pose).
from backend.head import load_head
from backend.take_file import load_take, take_vertices
from training.metrics import lip_distance
take = load_take(take1)
head = load_head("builtin")
gap = lip_distance(take_vertices(take, head), head.landmarks)
picked = [int(np.argmin(gap)), int(np.argmax(gap))]
frames = [min(scene.frame_end, 1 + round(k * 24.0 / take.fps)) for k in picked]
scene.render_frames(frames, out, columns=2, captions=["shut", "open"], crop=(0.25, 1.0, 0.0, 1.0),
                    caption_band=True)
grid = read_png(out)
left, right = grid[:36, :64, :3], grid[:36, 68:, :3]   # above the captions
print("RESULT " + json.dumps({"shape": list(grid.shape), "differ": float(np.abs(left - right).mean()),
                              "spread": float(left.std()), "objects_before": objects,
                              "objects_after": sorted(o.name for o in bpy.data.objects),
                              "frame": bpy.context.scene.frame_current,
                              "format": bpy.context.scene.render.image_settings.file_format}))
"""


def test_frames_grid_comes_from_the_same_scene_and_leaves_it_as_it_was(generated, tmp_path):
    audio, out, _ = generated
    grid = tmp_path / "grid.png"
    info = run_python(RENDER_GRID, audio, out / "speech.take1.seed5.npz", out / "speech.take2.seed6.npz", grid)
    assert info["shape"] == [48, 64 * 2 + 4, 4]        # two 64 px renders cropped to their lower 3/4, a 4 px gap
    assert info["spread"] > 0.02 and info["differ"] > 0.002   # a face, not a blank frame; the mouth moved
    assert info["objects_after"] == info["objects_before"]    # the caption and its band are gone again
    assert info["frame"] == 1 and info["format"] == "PNG"


ADD_HEAD = r"""
import json, sys
import bpy
import numpy as np
from backend.blender.scene import build_take_scene
from backend.head import load_head
from backend.take_file import load_take
audio, take1, take2 = sys.argv[1:4]
scene = build_take_scene("builtin", audio, [take1, take2], 24.0, resolution=64)
second = scene.add_head(load_head("builtin"), "second head", offset=(0.3, 0.0, 0.0))
take = load_take(take1)
frame = min(scene.frame_end, 1 + int(np.argmax(take.jaw[:, 0])))


def world_vertices(armature):
    mesh = next(c for c in armature.children if c.type == "MESH")
    evaluated = mesh.evaluated_get(bpy.context.evaluated_depsgraph_get())
    data = evaluated.to_mesh()
    co = np.array([evaluated.matrix_world @ v.co for v in data.vertices])
    evaluated.to_mesh_clear()
    return co


scene.scene.frame_set(frame)
first_open, second_open = world_vertices(scene.head), world_vertices(second)
scene.scene.frame_set(1)
moved = float(np.abs(world_vertices(second) - second_open).max())
print("RESULT " + json.dumps({"shift": (second_open - first_open).mean(axis=0).tolist(),
                              "apart": float(np.abs(second_open - first_open - [0.3, 0.0, 0.0]).max()),
                              "moved": moved, "takes": [t.name for t in second.thunder.takes],
                              "animated": bpy.context.scene.thunder.head.name}))
"""


def test_another_head_plays_the_same_takes_beside_the_first(generated):
    """TakeScene.add_head (the figure of one take on several heads): the second head moves as the first, shifted."""
    audio, out, _ = generated
    info = run_python(ADD_HEAD, audio, out / "speech.take1.seed5.npz", out / "speech.take2.seed6.npz")
    # FLAME's x is Blender's x; the same pose to Blender's single precision (0.1 mm), a pose that moved.
    assert info["shift"] == pytest.approx([0.3, 0.0, 0.0], abs=1e-4)
    assert info["apart"] < 1e-4 and info["moved"] > 1e-3
    assert info["takes"] == ["Take 1", "Take 2"] and info["animated"] == "Thunder head"


def test_scene_at_a_fractional_rate_trims_both_ends_of_the_sound(tmp_path):
    """23.976 fps (24 / 1.001) over seconds 0.25 to 1.2 of the audio: the strip plays exactly those."""
    audio = write_speech(tmp_path / "clip.wav", 1.5)
    result = thunder("generate", audio, "--out", tmp_path, "--fps", "23.976", "--start", "0.25", "--end", "1.2",
                     "--threads", "1", "--quiet", "--blend")
    assert result.returncode == 0, result.stderr[-3000:]
    frames, _ = take_frames(tmp_path / "clip.take1.seed0.npz")
    info = run_python(READ_BLEND, tmp_path / "clip.blend")
    assert info["fps"] == 24 and info["fps"] / info["fps_base"] == pytest.approx(23.976)
    assert info["heard_start"] == pytest.approx(0.25, abs=1e-5) and info["heard_frame"] == pytest.approx(1.0)
    assert info["right"] == 1 + frames and info["heard_end"] == pytest.approx(0.25 + frames / 23.976, abs=1e-4)
    assert (info["frame_start"], info["frame_end"]) == (1, frames)
    assert [t["name"] for t in info["takes"]] == ["Take 1"]


def test_generate_refuses_to_overwrite_scene_files_before_any_work(tmp_path):
    audio = write_speech(tmp_path / "speech.wav", 1.0)
    out = tmp_path / "out"
    out.mkdir()
    (out / "speech.preview.mp4").write_bytes(b"mine")
    result = thunder("generate", audio, "--out", out, "--threads", "1", "--quiet", "--blend", "--preview")
    assert result.returncode == 1
    assert f"{out / 'speech.preview.mp4'} already exists" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["speech.preview.mp4"]   # not even the takes
    assert (out / "speech.preview.mp4").read_bytes() == b"mine"


def test_blend_takes_a_path_for_one_audio_file(tmp_path):
    """`--blend OUT.blend` as in the issue: the scene goes where the user says; with several audio files a single
    path is refused before any work, and so is a name that is not a .blend."""
    audio = write_speech(tmp_path / "speech.wav", 1.0)
    scene_file = tmp_path / "scenes" / "shot_010.blend"
    result = thunder("generate", audio, "--out", tmp_path / "takes", "--threads", "1", "--quiet",
                     "--blend", scene_file)
    assert result.returncode == 0, result.stderr[-2000:]
    assert scene_file.is_file() and not (tmp_path / "takes" / "speech.blend").exists()
    assert str(scene_file) in result.stdout
    both = thunder("generate", audio, audio, "--out", tmp_path / "two", "--quiet", "--blend", tmp_path / "x.blend")
    assert both.returncode == 2 and "names one .blend, but 2 audio files" in both.stderr
    wrong = thunder("generate", audio, "--out", tmp_path / "three", "--quiet", "--blend", tmp_path / "x.fbx")
    assert wrong.returncode == 2 and "ends in .blend" in wrong.stderr
    assert not (tmp_path / "two").exists() and not (tmp_path / "three").exists()


READ_STRENGTHS = r"""
import json, sys
import bpy
import numpy as np
from thunder_blender import compat, properties
properties.register()
bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
head = next(o for o in bpy.data.objects if o.type == "ARMATURE" and o.thunder.is_head)
names = list(head.data["thunder_expression_names"])
takes = []
for take in head.thunder.takes:
    slot = compat.find_slot(take.action, "KEY")
    values = {}
    for curve in compat.slot_fcurves(take.action, slot):
        co = np.empty(2 * len(curve.keyframe_points), dtype=np.float32)
        curve.keyframe_points.foreach_get("co", co)
        values[curve.data_path] = co[1::2].tolist()
    takes.append({"file": take.file, "brows": take.strength_brows, "smoothing": take.smoothing,
                  "lips_jaw": take.strength_lips_jaw,
                  "keys": {n: values[f'key_blocks["{n}"].value'] for n in names}})
print("RESULT " + json.dumps({"takes": takes, "names": names}))
"""


def test_scene_strengths_from_the_command_line(tmp_path):
    """--strength shapes every take in the scene (so its exports) and is saved with the takes in the .blend;
    the take files stay as sampled. Bad strengths are one sentence, before any work."""
    audio = write_speech(tmp_path / "speech.wav", 1.0)
    out = tmp_path / "out"
    result = thunder("generate", audio, "--out", out, "--threads", "1", "--quiet", "--blend", "--takes", "2",
                     "--strength", "brows=0", "--strength", "lips_jaw=1.5", "--strength", "smoothing=0.4")
    assert result.returncode == 0, result.stderr[-3000:]
    info = run_python(READ_STRENGTHS, out / "speech.blend")
    assert len(info["takes"]) == 2
    for take in info["takes"]:
        assert (take["brows"], take["lips_jaw"], take["smoothing"]) == (0.0, 1.5, pytest.approx(0.4))
        sampled = read_take(take["file"])
        expression = sampled.parts["expression"]
        # Outside the mouth (whose closures smoothing keeps) a channel is the Gaussian of the take file's one,
        # unscaled; a looser "close to the take" bound failed on a quiet channel that flickers.
        smoothed = strengths.gaussian_smooth(expression, 0.4 * strengths.SMOOTHING_MAX_SECONDS * sampled.fps)
        for k, name in enumerate(info["names"]):
            keyed = np.asarray(take["keys"][name])
            if name.startswith("brow"):
                assert np.abs(keyed).max() == 0, name
            elif not name.startswith("mouth"):
                np.testing.assert_allclose(keyed, smoothed[:, k], atol=1e-6, err_msg=name)
        assert np.abs(expression[:, [info["names"].index(n) for n in info["names"] if n.startswith("brow")]]).max() > 0

    for args, words in ((["--blend", "--strength", "chin=1"], "unknown strength chin"),
                        (["--blend", "--strength", "brows=3"], "the strength brows must be a number from 0 to 2"),
                        (["--strength", "brows=0"], "--strength shapes the takes in the Blender scene"),
                        (["--blend", "--strength", "brows"], "'brows' is not NAME=VALUE")):
        refused = thunder("generate", tmp_path / "missing.wav", "--out", tmp_path / "bad", "--quiet", *args)
        assert refused.returncode == 2 and words in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
        assert not (tmp_path / "bad").exists()


NO_BPY = r"""
import sys
sys.modules["bpy"] = None       # `import bpy` now raises ImportError, as where Blender is not installed
from backend.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("flag", ["--blend", "--fbx", "--abc", "--usd", "--preview"])
def test_without_bpy_the_scene_flags_give_one_sentence(tmp_path, flag):
    audio = write_speech(tmp_path / "speech.wav", 1.0)
    result = subprocess.run([sys.executable, "-c", NO_BPY, "generate", str(audio), "--out", str(tmp_path / "out"),
                             "--threads", "1", flag], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip() == f"thunder: error: {BLENDER_NEEDED}"
    assert not (tmp_path / "out").exists()   # stopped before any work


def test_without_bpy_the_demo_gives_one_sentence(tmp_path):
    result = subprocess.run([sys.executable, "-c", NO_BPY, "demo", "--out", str(tmp_path / "demo")],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2 and result.stderr.strip() == f"thunder: error: {BLENDER_NEEDED}"
    assert not (tmp_path / "demo").exists()


def test_demo_writes_everything_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "demo"
    result = thunder("demo", "--out", out, "--threads", "1", "--preview-resolution", "128", "--quiet", timeout=560)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    stem = "thunder_example"
    expected = ([out / f"{stem}.take1.seed0.npz", out / f"{stem}.take2.seed1.npz", out / f"{stem}.blend"]
                + [out / f"{stem}_head_Take_{k}.{ext}" for ext in ("fbx", "abc", "usd") for k in (1, 2)]
                + [out / f"{stem}.preview.mp4"])
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in expected)
    lines = result.stdout.splitlines()
    for path in expected:   # each file printed with its time
        assert path.stat().st_size > 1000, path
        line = next(line for line in lines if line.startswith(str(path)))
        assert line.rstrip().endswith(" s") and float(line.split()[-2]) >= 0.0, line
    frames, meta = take_frames(expected[0])
    assert meta["audio"]["file"] == "thunder_example.wav" and frames == frames_for_seconds(meta["audio"]["seconds"], 25)
    video = probe_video(out / f"{stem}.preview.mp4")
    assert video["video_frames"] == frames and video["audio"] and video["width"] == 128
    info = run_python(READ_BLEND, out / f"{stem}.blend")
    assert [t["seed"] for t in info["takes"]] == [0, 1] and info["heard_start"] == 0.0

    # Again into the same folder: refused before any work, naming a file; nothing changed.
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = thunder("demo", "--out", out, "--threads", "1", "--quiet")
    assert again.returncode == 2
    assert again.stderr.startswith(f"thunder: error: {expected[0]} already exists"), again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
