"""The animator's scene, built headless: the head rigged by the add-on, every take keyed on it, the audio as a
sound strip, a camera and Workbench settings. Then the same scene saved, exported, rendered to a preview video
with its sound, or rendered at chosen frames into one grid image.

    scene = build_take_scene(head, "voice.wav", ["voice.take1.seed0.npz", ...], fps=25, name="voice head")
    scene.save_blend("voice.blend")                    # never replaces a file
    scene.export("out/", formats=("fbx", "abc", "usd")) # one file per take and format (thunder_blender.export)
    scene.render_preview("voice.preview.mp4", resolution=512)
    scene.render_frames([12, 40], "frames.png", columns=2, captions=["0.44 s B", "1.56 s AA"])

Everything in Blender goes through the add-on's own door for headless scene building (thunder_blender.headless:
the head from arrays, the sound strip, takes, settings, exports), so a .blend made here is what the add-on would
have made: its takes list and actions, switchable in the panel.
The video and the grid come from one scene, one camera and one set of render settings (preview.py's
setup_workbench and aim_camera): the grid's frames are stills of the video's frames.

Runs under a Python with bpy (Blender as a module) and the backend (torch); bpy is imported when the scene is
built, so importing this module needs no Blender.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from backend.blender.preview import (CAPTION_COLOR, CameraView, add_caption, aim_camera, place_caption, read_png,
                                     remove_caption, reset_blender, setup_workbench, tile_images, write_png)
from backend.errors import ThunderError
from backend.files import refuse_existing

FORMATS = ("fbx", "abc", "usd")
FRAME_START = 1
# Front, a little above the eyes' height looking down; the whole head and the top of the neck at 85 mm.
TAKE_VIEW = CameraView(target=(0.0, -0.02, 0.02), distance=0.76, azimuth=0.0, elevation=6.0, focal_length_mm=85.0)
DEFAULT_RESOLUTION = 512
PACK_LIMIT_BYTES = 64 * 2**20   # sounds up to this size are packed into the saved .blend


class SceneError(ThunderError):
    """The take scene cannot be built, saved, exported or rendered as asked; one sentence."""


@contextlib.contextmanager
def add_on_errors():
    """The add-on's one-sentence errors (export, head, take, audio) as SceneError, so callers see ThunderError."""
    from thunder_blender import headless

    try:
        yield
    except headless.ThunderError as exc:
        raise SceneError(str(exc)) from None


@contextlib.contextmanager
def blender_output_silenced():
    """Blender writes its progress (render frames, exporters, EGL warnings) straight to file descriptors 1 and 2;
    point them at /dev/null while it works, so the command's own output stays readable.
    THUNDER_BLENDER_VERBOSE=1 keeps Blender's output."""
    if os.environ.get("THUNDER_BLENDER_VERBOSE"):
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def set_scene_fps(scene, fps: float) -> None:
    """A checked frame rate (check_fps): fps = round(fps), fps_base = round(fps) / fps (23.976 is 24 / 1.001)."""
    whole = max(1, round(fps))
    scene.render.fps = whole
    scene.render.fps_base = whole / fps


@dataclass
class TakeScene:
    """The scene build_take_scene made: the head (its armature object), the sound strip, the takes' names and
    frames. Its methods save, export and render it."""

    scene: object
    head: object
    strip: object
    take_names: list[str]
    frames: int                   # frames of every take; they play from FRAME_START
    fps: float
    audio_path: Path
    audio_start: float            # seconds into the audio of the takes' first frame
    camera: object = None
    resolution: int = DEFAULT_RESOLUTION
    timings: dict = field(default_factory=dict)
    take_data: list = field(default_factory=list)   # the takes as the add-on read them, in the list's order

    @property
    def frame_end(self) -> int:
        return FRAME_START + self.frames - 1

    # ------------------------------------------------------------------------------------------ files
    def save_blend(self, path) -> Path:
        """Save the scene as a .blend (never replacing a file). The sound is packed into it, so the .blend can
        move away from the audio file, unless the file is over PACK_LIMIT_BYTES: then it stays a link."""
        import bpy

        path = Path(path).resolve()
        refuse_existing([path], error=SceneError)
        path.parent.mkdir(parents=True, exist_ok=True)
        sound = self.strip.sound
        if sound.packed_file is None and Path(self.audio_path).stat().st_size <= PACK_LIMIT_BYTES:
            sound.pack()
        with blender_output_silenced():
            bpy.ops.wm.save_as_mainfile(filepath=str(path), check_existing=False, copy=True)
        return path

    def export(self, folder, formats: Sequence[str] = FORMATS, every_take: bool = True) -> list[Path]:
        """Every take (or the playing one) to `folder`, one file per take and format, named by the add-on's
        exporter `<head>_<take>.<ext>`. An existing file stops it before anything is written."""
        from thunder_blender import headless

        with add_on_errors(), blender_output_silenced():
            return headless.export_takes(self.head, folder, formats=tuple(formats), every_take=every_take)

    def export_paths(self, folder, formats: Sequence[str] = FORMATS) -> list[Path]:
        """The files export() writes for every take, without writing them."""
        from thunder_blender import headless

        return headless.planned_paths(folder, self.head.name, self.take_names, formats)

    def add_head(self, head, name: str, offset=(0.0, 0.0, 0.0)):
        """Another head (a backend Head; a FLAME file's retargeted, as load_head_for_takes gives it) playing the
        same takes, `offset` metres from the first (FLAME coordinates): one take on several heads in one render.
        Its armature object; the scene's own head stays the one the panel animates."""
        from backend.blender.preview import flame_to_blender

        return key_takes(head, self.take_data, self.audio_path, name, flame_to_blender(offset))

    # ------------------------------------------------------------------------------------------ renders
    def image_position(self, point) -> tuple[float, float]:
        """Where a point of the head at rest (FLAME coordinates) shows in the image: (row, column) fractions
        from the top left."""
        from bpy_extras.object_utils import world_to_camera_view
        from mathutils import Vector

        world = self.head.matrix_world @ Vector(tuple(float(c) for c in point))
        x, y, _ = world_to_camera_view(self.scene, self.camera, world)
        return 1.0 - y, x

    @contextlib.contextmanager
    def _rendering(self, resolution: int | None):
        """The render settings of this scene at `resolution` (square), put back afterwards."""
        render = self.scene.render
        saved = (render.resolution_x, render.resolution_y, render.filepath, self.scene.frame_current)
        size = int(resolution or self.resolution)
        render.resolution_x = render.resolution_y = size
        try:
            yield
        finally:
            render.resolution_x, render.resolution_y, render.filepath = saved[:3]
            _still_output(self.scene)
            self.scene.frame_set(saved[3])

    def render_preview(self, path, resolution: int | None = None, progress: Callable | None = None) -> Path:
        """Render the playing take (the scene's frame range) to an H.264 MP4 with the sound strip's audio (AAC),
        with Blender's own FFMPEG output; where this Blender has none, PNG frames joined by the system's
        ffmpeg. `progress(done, total)` after each frame. Never replaces a file."""
        import bpy

        path = Path(path).resolve()
        refuse_existing([path], error=SceneError)
        path.parent.mkdir(parents=True, exist_ok=True)
        scene, total = self.scene, self.frames

        def on_frame(*_args):
            if progress:
                progress(scene.frame_current - scene.frame_start + 1, total)

        bpy.app.handlers.render_write.append(on_frame)
        try:
            with self._rendering(resolution):
                if _video_output(scene):
                    scene.render.filepath = str(path)
                    scene.render.use_file_extension = False
                    with blender_output_silenced():
                        bpy.ops.render.render(animation=True)
                else:
                    self._render_preview_with_ffmpeg(path)
        finally:
            bpy.app.handlers.render_write.remove(on_frame)
        if not path.is_file() or path.stat().st_size == 0:
            raise SceneError(f"Blender wrote no video to {path}")
        return path

    def _render_preview_with_ffmpeg(self, path: Path) -> None:
        import bpy

        from backend.blender.video import encode_frames

        if not shutil.which("ffmpeg"):
            raise SceneError("this Blender cannot write video and there is no ffmpeg on PATH to join the frames; "
                             "install ffmpeg (Debian: apt-get install ffmpeg)")
        with tempfile.TemporaryDirectory(prefix="thunder-preview-") as tmp:
            self.scene.render.filepath = str(Path(tmp) / "frame_")
            self.scene.render.use_file_extension = True
            with blender_output_silenced():
                bpy.ops.render.render(animation=True)
            first = self.scene.frame_start
            encode_frames(Path(tmp) / "frame_%04d.png", self.fps, path, audio=self.audio_path,
                          audio_start=self.audio_start, start_number=first)

    def render_frames(self, frames: Sequence[int], out_png, columns: int | None = None,
                      captions: Sequence[str] | None = None, crop=None, resolution: int | None = None,
                      caption_size: float = 0.0375, caption_color=CAPTION_COLOR, caption_band: bool = False) -> Path:
        """Render the scene at `frames` (scene frame numbers) and tile the images into one PNG, row by row.
        `captions`: one text per frame, drawn at the bottom of each image (font size `caption_size` times the
        image's height, linear RGB `caption_color`, on a band of the background's colour with `caption_band`);
        `crop` = (top, bottom, left, right) fractions of the image to keep (the captions go into the kept part)."""
        import bpy

        frames = [int(f) for f in frames]
        if not frames:
            raise SceneError("choose at least one frame to render")
        outside = [f for f in frames if not FRAME_START <= f <= self.frame_end]
        if outside:
            raise SceneError(f"frame {outside[0]} is outside the take (frames {FRAME_START} to {self.frame_end})")
        if captions is not None and len(captions) != len(frames):
            raise SceneError(f"{len(captions)} captions for {len(frames)} frames")
        box = tuple(crop) if crop else (0.0, 1.0, 0.0, 1.0)
        images = []
        with self._rendering(resolution), tempfile.TemporaryDirectory(prefix="thunder-frames-") as tmp:
            caption = (add_caption(self.scene, self.camera, "thunder caption", caption_color, caption_band)
                       if captions else None)
            try:
                if caption is not None:
                    place_caption(caption, self.scene, self.camera, box, caption_size)
                for k, frame in enumerate(frames):
                    self.scene.frame_set(frame)
                    if caption is not None:
                        caption.data.body = captions[k]
                    self.scene.render.filepath = str(Path(tmp) / f"frame_{k:04d}.png")
                    with blender_output_silenced():
                        bpy.ops.render.render(write_still=True)
                    image = read_png(self.scene.render.filepath)
                    h, w = image.shape[:2]
                    images.append(image[int(box[0] * h):int(box[1] * h), int(box[2] * w):int(box[3] * w)])
            finally:
                if caption is not None:
                    remove_caption(caption)
            columns = columns or math.ceil(math.sqrt(len(images)))
            out = Path(out_png).resolve()
            out.parent.mkdir(parents=True, exist_ok=True)
            return write_png(tile_images(images, columns), out)


def _video_output(scene) -> bool:
    """Switch the scene's output to an H.264 MP4 with AAC audio; False when this Blender has no FFMPEG output."""
    from thunder_blender import headless

    settings = scene.render.image_settings
    try:
        headless.set_media_type(settings, "VIDEO")
        settings.file_format = "FFMPEG"
    except TypeError:                           # not in the enum: built without FFmpeg
        _still_output(scene)
        return False
    ffmpeg = scene.render.ffmpeg
    ffmpeg.format = "MPEG4"
    ffmpeg.codec = "H264"
    ffmpeg.constant_rate_factor = "HIGH"
    ffmpeg.ffmpeg_preset = "GOOD"
    ffmpeg.audio_codec = "AAC"
    ffmpeg.audio_channels = "MONO"
    ffmpeg.audio_bitrate = 128
    return True


def _still_output(scene) -> None:
    from thunder_blender import headless

    settings = scene.render.image_settings
    headless.set_media_type(settings, "IMAGE")
    settings.file_format = "PNG"
    settings.color_mode = "RGB"


def take_labels(count: int) -> list[str]:
    """The names takes get in the head's list: Take 1, Take 2, ..."""
    return [f"Take {k + 1}" for k in range(count)]


def head_object_name(stem: str) -> str:
    """The name of the head (its armature object) for an audio file's stem; short enough for Blender's 63-byte
    names, with room for the mesh's " mesh"."""
    return f"{stem[:40]} head"


def key_takes(head, take_data: Sequence, audio_path, name: str, location=(0.0, 0.0, 0.0),
              strengths: dict | None = None):
    """`head` (a backend Head) rigged by the add-on as `name` with its root at `location` (Blender's
    coordinates), every take of `take_data` (the add-on's TakeData) keyed on it from FRAME_START as Take 1,
    Take 2, ..., with `strengths` (thunder_blender/strengths.py) when given, and take 1 playing: the head's
    armature object."""
    from backend.head import head_description, head_mesh_arrays
    from thunder_blender import headless

    with add_on_errors():
        head_object = headless.build_head(head_mesh_arrays(head), head_description(head), name=name,
                                          location=tuple(location))
        for take, label in zip(take_data, take_labels(len(take_data))):
            headless.add_take(head_object, take, float(FRAME_START), batch=1, audio_path=str(audio_path),
                              label=label)
            if strengths:
                headless.set_strengths(head_object, len(head_object.thunder.takes) - 1, dict(strengths))
        headless.activate(head_object, 0)
    return head_object


def build_take_scene(head, audio_path, take_paths: Sequence, fps: float, name: str = "Thunder head",
                     view: CameraView = TAKE_VIEW, resolution: int = DEFAULT_RESOLUTION,
                     strengths: dict | None = None) -> TakeScene:
    """A fresh scene (factory settings, empty) holding `head` (a backend Head, or what load_head_for_takes takes:
    a FLAME file's head comes retargeted to the built-in head's expressions) rigged by
    the add-on, every take keyed on it from frame 1 and take 1 playing, the audio as a sound strip whose second
    `start` (where the takes begin) plays at frame 1, the frame range of the takes, a camera framing the face
    and the Workbench render settings. All takes must be at `fps` and cover the same seconds of the audio.
    strengths: the add-on's take strengths ({"brows": 0.5, "smoothing": 0.3, ...}) given to every take."""
    import bpy

    from backend.frame_rate import check_fps
    from backend.head import load_head_for_takes
    from thunder_blender import headless

    started = time.monotonic()
    fps = check_fps(fps)   # the one check of a frame rate (a FrameRateError is a ThunderError)
    head = load_head_for_takes(head) if isinstance(head, (str, Path)) else head
    audio_path = Path(audio_path).resolve()
    if not audio_path.is_file():
        raise SceneError(f"the audio file {audio_path} does not exist")
    if not take_paths:
        raise SceneError("there are no takes to put in the scene")
    with add_on_errors():
        take_data = [headless.read_take(p) for p in take_paths]
    first = take_data[0]
    for take in take_data:
        if abs(take.fps - fps) > 1e-6 * fps:
            raise SceneError(f"the take {take.path.name} is at {take.fps:g} fps, not the scene's {fps:g}")
        if take.n_frames != first.n_frames or take.meta["audio"].get("start") != first.meta["audio"].get("start"):
            raise SceneError(f"the takes {first.path.name} and {take.path.name} cover different parts of the audio")
    audio = first.meta["audio"]
    start = float(audio.get("start", 0.0))
    end = audio.get("end")
    trimmed_end = end is not None and float(end) < float(audio.get("seconds", end)) - 1e-6

    reset_blender()
    headless.register_properties()
    scene = bpy.context.scene
    set_scene_fps(scene, fps)
    setup_workbench(scene, resolution, resolution, "8")
    _still_output(scene)
    scene.frame_start, scene.frame_end = FRAME_START, FRAME_START + first.n_frames - 1
    with add_on_errors():
        strip = headless.add_sound_strip(scene, audio_path, start, float(end) if trimmed_end else None,
                                         FRAME_START, first.n_frames)
    scene.sync_mode = "AUDIO_SYNC"   # playback in the viewport keeps to the sound

    head_object = key_takes(head, take_data, audio_path, name, strengths=strengths)
    headless.animate_from_strip(scene, strip, head_object)

    camera = bpy.data.objects.new("Thunder camera", bpy.data.cameras.new("Thunder camera"))
    scene.collection.objects.link(camera)
    scene.camera = camera
    aim_camera(camera, view)
    scene.frame_set(FRAME_START)
    result = TakeScene(scene, head_object, strip, take_labels(len(take_data)), first.n_frames, fps, audio_path, start,
                       camera, resolution, take_data=take_data)
    result.timings["build"] = time.monotonic() - started
    return result


# ------------------------------------------------------------------------------------------ the command's job
@dataclass(frozen=True)
class SceneOutputs:
    """Which files the command makes from an audio file's takes."""

    blend: bool | str = False     # True: <stem>.blend in the output folder; a path: that file
    formats: tuple = ()
    preview: bool = False
    resolution: int = DEFAULT_RESOLUTION
    strengths: tuple = ()         # (name, value) pairs: the add-on's take strengths, for every take

    def __bool__(self) -> bool:
        return bool(self.blend or self.formats or self.preview)


def blend_path(out, stem: str, outputs: SceneOutputs) -> Path:
    """Where the .blend goes: the path --blend named, else <stem>.blend in the output folder."""
    return Path(outputs.blend) if isinstance(outputs.blend, str) else Path(out) / f"{stem}.blend"


def check_strengths(strengths: dict) -> None:
    """SceneError (the add-on's sentence) unless `strengths` are take strengths in range."""
    from thunder_blender import headless

    with add_on_errors():
        headless.check_strengths(strengths)


def scene_output_paths(out, stem: str, n_takes: int, outputs: SceneOutputs) -> list[Path]:
    """The files write_take_scene makes for audio `stem` with `n_takes` takes, in the order it makes them."""
    out = Path(out)
    paths = [blend_path(out, stem, outputs)] if outputs.blend else []
    if outputs.formats:
        from thunder_blender import headless

        paths += headless.planned_paths(out, head_object_name(stem), take_labels(n_takes), outputs.formats)
    if outputs.preview:
        paths.append(out / f"{stem}.preview.mp4")
    return paths


def write_take_scene(head, audio_path, take_paths: Sequence, fps: float, out, outputs: SceneOutputs,
                     report: Callable[[object, float], None] | None = None, show_progress: bool = False) -> list[Path]:
    """Build the take scene of one audio file and write what `outputs` asks for into `out`:
    `<stem>.blend`, the exports (every take, one file per format), `<stem>.preview.mp4`. Any of these files
    existing already stops it before anything is built.

    report(what, seconds): after building the scene (`what` a sentence) and after each file (`what` its Path;
    an export file gets its format's time shared evenly among the takes). show_progress: a progress bar on
    stderr while the preview renders."""
    from backend.progress import ProgressBar

    stem = Path(audio_path).stem
    planned = scene_output_paths(out, stem, len(take_paths), outputs)
    refuse_existing(planned, error=SceneError)
    report = report or (lambda what, seconds: None)
    with blender_output_silenced():
        scene = build_take_scene(head, audio_path, take_paths, fps, name=head_object_name(stem),
                                 resolution=outputs.resolution, strengths=dict(outputs.strengths))
    report(f"built the scene: the head, {len(take_paths)} take(s) keyed, the sound strip, the camera",
           scene.timings["build"])
    written = []
    if outputs.blend:
        t = time.monotonic()
        written.append(scene.save_blend(blend_path(out, stem, outputs)))
        report(written[-1], time.monotonic() - t)
    for fmt in outputs.formats:
        t = time.monotonic()
        files = scene.export(out, (fmt,))
        seconds = time.monotonic() - t
        for path in files:
            written.append(path)
            report(path, seconds / len(files))
    if outputs.preview:
        t = time.monotonic()
        # The bar writes to a copy of stderr's descriptor: Blender's own output to descriptor 2 is silenced.
        stream = os.fdopen(os.dup(2), "w") if show_progress else None
        bar = ProgressBar(scene.frames, "preview", stream=stream) if stream else None
        try:
            written.append(scene.render_preview(Path(out) / f"{stem}.preview.mp4", outputs.resolution,
                                                progress=(lambda done, total: bar.update(done)) if bar else None))
        finally:
            if bar:
                bar.close()
                stream.close()
        report(written[-1], time.monotonic() - t)
    return written
