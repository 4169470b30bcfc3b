"""Thunder's Python API in Blender: what the panel's buttons and `bpy.ops.thunder.*` do, callable from scripts.

    import bl_ext.user_default.thunder as thunder          # as installed; `thunder_blender` from a checkout
    head = thunder.api.add_head()                           # the built-in head (or source="flame")
    thunder.api.generate(head, strip="voice", takes=4, emotion="happy")
    thunder.api.activate_take(head, 2)
    thunder.api.resample(head)                              # new seeds for every take not kept
    thunder.api.resample_range(head, 120, 170, only="lips") # a new take, new inside frames 120..170 only
    thunder.api.generate(head, strip="voice", constraints=[{"kind": "hold", "pose": "mouth_closed",
                         "start": 40, "end": 60}, {"kind": "key", "name": "mouthSmileLeft", "value": 0.8, "frame": 120}])
    thunder.api.export(head, "/tmp/out", formats=("fbx", "usd"), every_take=True)
    thunder.api.drive_character(body_mesh, head, armature=rig, jaw_bone="jaw")   # an ARKit character follows
    thunder.api.export_arkit(head, "/tmp/out")                # the take as a Live Link Face CSV and a JSON

In Blender with a UI, generate and resample return at once and finish while you work (a timer polls the
backend); pass wait=True to block. In background mode (`blender -b`, or bpy as a module), where timers
never fire, they run to the end before returning, unless wait=False: then call api.poll() until it
returns False. Problems raise ThunderError (every error class of the add-on derives from it, the take reader's
TakeReadError too) with one sentence; the same sentence is what the panel shows. Nothing the user had is overwritten: see `generate`.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import bpy

from . import character, head_build, session, take_actions
from .properties import LIMITS
from .errors import ThunderError
from .export import check_folder, export_takes
from .head_build import check_head, head_of
from .sound import AudioSourceError, file_audio, scene_fps, strip_audio
from .take_file import read_take

MAX_SEED = LIMITS["seed"][1]


@dataclass
class Notice:
    """The last thing the panel should say besides the backend's status: an error or a result."""

    level: str = "INFO"   # INFO or ERROR
    text: str = ""


notice = Notice()


def _say(level: str, text: str) -> None:
    notice.level, notice.text = level, text


# ---------------------------------------------------------------------------------------------- the backend
def backend_start() -> None:
    """Start the backend: in the background with a UI (the panel shows it starting), else until it answers."""
    if session.interactive():
        session.manager().start_backend()
        session.start_polling()
    else:
        session.manager().request_sync("hello", timeout=120)   # BackendError with the sentence if it cannot


def backend_stop() -> None:
    session.manager().stop_backend()


def backend_status() -> tuple[str, str, float]:
    """(status, message, progress): stopped/starting/ready/busy/error, one sentence, 0..1."""
    m = session.manager()
    return m.status, m.message, m.progress


def cancel() -> None:
    """Stop the running job between two sampler steps; its callbacks then say it was cancelled."""
    session.manager().cancel()


def poll() -> bool:
    """Deliver what the backend said (keyframes are written here); True while a job is going on. The UI's
    timer calls this; a script that started a job with wait=False calls it until it returns False."""
    return session.manager().poll()


def _load_wish(head_source: str) -> dict:
    settings = session.backend_settings()
    return {"head": head_source, "checkpoint": settings["checkpoint"], "device": settings["device"]}


# ---------------------------------------------------------------------------------------------- heads
def add_head(source: str = "builtin", shape=None, name: str | None = None, context=None):
    """Build a head from the backend's data and return its armature object (selected and active).

    source: "builtin" for Thunder's own head, "flame" for the FLAME file set in the preferences, or a FLAME
    file's path. shape: optional identity coefficients baked into the rest mesh."""
    context = context or bpy.context
    if source == "flame":
        prefs = session.preferences()
        flame = bpy.path.abspath(prefs.flame_model) if prefs is not None else ""
        if not flame:
            raise ThunderError("set your FLAME model file in Preferences > Add-ons > Thunder first (FLAME is free "
                               "for research after registering at flame.is.tue.mpg.de)")
        if not os.path.isfile(flame):
            raise ThunderError(f"the FLAME model file {flame} does not exist; fix it in Preferences > Add-ons > Thunder")
        source = flame
    fields = {"shape": [float(x) for x in shape]} if shape is not None else {}
    # The head alone, as takes drive it: a FLAME file comes retargeted to the built-in head (docs/retarget.md).
    reply = session.manager().request_sync("head", head=source, **fields)
    reply.setdefault("source", source)
    head = head_build.build_head(reply["file"], reply, name=name or _head_name(reply, source),
                                 collection=context.scene.collection, location=tuple(context.scene.cursor.location))
    head.thunder.source = source
    for obj in context.view_layer.objects:
        obj.select_set(False)
    head.select_set(True)
    context.view_layer.objects.active = head
    context.scene.thunder.head = head
    _say("INFO", f"added {head.name} ({reply['name']}, {len(reply['expression_names'])} expressions)")
    return head


def _head_name(reply: dict, source: str) -> str:
    return "Thunder head" if source == "builtin" else f"FLAME head ({Path(source).stem})"


def resolve_head(head=None, context=None):
    """The Thunder head to act on: `head`, else the scene's chosen head, else the active object's."""
    context = context or bpy.context
    candidate = head or context.scene.thunder.head or context.view_layer.objects.active
    found = head_of(candidate) if candidate is not None else None
    if found is None:
        if candidate is None:
            raise ThunderError("choose a Thunder head first (Add Thunder head makes one)")
        raise ThunderError(f"'{candidate.name}' is not a Thunder head: add one with Add Thunder head, "
                           "or pick one in the Head field")
    if found.thunder.mesh is None or found.thunder.mesh.data.shape_keys is None:
        raise ThunderError(f"'{found.name}' has lost its Thunder mesh or shape keys; add the head again")
    return found


# ---------------------------------------------------------------------------------------------- generate
def generate(head=None, strip: str | None = None, audio_file: str | None = None, takes: int = 2, seed=None,
             emotion: str = "neutral", intensity: float = 1.0, guidance: float | None = None,
             steps: int | None = None,
             replace_animation: bool = False, wait: bool | None = None, context=None, constraints=None,
             best_of: int | None = None):
    """Sample `takes` takes for a sound strip (by name) or an audio file, key them on the head, and play the
    last. seed None draws random seeds; a number gives seed, seed + 1, ... guidance and steps None: the
    model's own (the backend's defaults, what `thunder generate` uses). constraints: holds and keys the
    takes keep, in scene frames (`take_constraints`). best_of N: sample N takes and keep the `takes` whose lips
    read best (M2S's score, docs/take_format.md).

    Nothing is lost: takes are added beside the head's other takes; if the head plays animation that is not
    a Thunder take, generate refuses unless replace_animation, and then keeps that animation (fake user,
    restored when the last take is deleted). Returns the job (interactive) or the new takes' names."""
    context = context or bpy.context
    head = resolve_head(head, context)
    check_head(head)
    audio = strip_audio(context.scene, strip) if strip is not None else file_audio(context.scene, audio_file or "")
    extra = {}
    if best_of:   # None or 0: every take sampled is kept
        best_of = checked_number("takes", best_of, integer=True, label="best of")
        takes = checked_number("takes", takes, integer=True, high=best_of, label="the takes kept of the best of")
        extra = {"best_of": best_of, "takes": takes}
    seeds = _seeds(best_of or takes, seed)
    chosen = {"steps": steps, "guidance": guidance}
    settings = _checked_settings({**{k: v for k, v in chosen.items() if v is not None}, "emotion": emotion,
                                  "intensity": intensity if emotion != "neutral" else 0.0})
    if constraints:
        extra["constraints"] = take_constraints(constraints, audio.frame_start)
    return _start_generate(context, head, audio.path, audio.start, audio.end, audio.frame_start, audio.fps, seeds,
                           settings, replace_animation, wait, replacing=[], extra=extra)


def _head_with_takes(head, context):
    """The head to resample (resolve_head, check_head), or ThunderError when it has no takes."""
    head = resolve_head(head, context)
    check_head(head)
    if not len(head.thunder.takes):
        raise ThunderError(f"{head.name} has no takes to resample; Generate first")
    return head


def resample(head=None, wait: bool | None = None, context=None):
    """New seeds, same settings: every take that is not kept is sampled again and replaced (after the new
    takes arrive, so a failure loses nothing). With every take kept, one new take is added with the active
    take's settings."""
    context = context or bpy.context
    head = _head_with_takes(head, context)
    thunder = head.thunder
    replacing = [item.name for item in thunder.takes if not item.kept]
    model = thunder.takes[thunder.active_take] if thunder.active_take >= 0 else thunder.takes[0]
    if replacing:
        model = next(item for item in thunder.takes if item.name == replacing[0])
    if not os.path.isfile(model.audio):
        raise AudioSourceError(f"the audio of {model.name}, {model.audio}, does not exist any more")
    try:
        settings = json.loads(model.settings)
    except ValueError:
        settings = None
    if not isinstance(settings, dict):
        raise ThunderError(f"the settings of {model.name} are damaged; Generate again instead")
    # The take's constraints go again (so Resample keeps them); where a range resample came from does not.
    constraints = settings.pop("constraints", None)
    settings.pop("resampled_from", None)
    settings = _checked_settings(settings, f"{model.name}'s ")
    seeds = _seeds(max(1, len(replacing)), None, avoid={item.seed for item in thunder.takes})
    end = model.audio_end if model.audio_end > model.audio_start else None
    fps = scene_fps(context.scene)
    return _start_generate(context, head, model.audio, model.audio_start, end, model.frame_start, fps, seeds,
                           settings, True, wait, replacing=replacing,
                           extra={"constraints": constraints} if constraints else None)


# ---------------------------------------------------------------------------------------------- directing
RANGE_PARTS = ("lips", "upper", "head")


def take_constraints(constraints, frame_start: float) -> list[dict]:
    """Constraints in scene frames, as the API and the panel give them, in the take format's frames (0: the
    take's first frame; docs/take_format.md):

        {"kind": "hold", "pose": "mouth_closed" | "neutral" | "eyes_open", "start": FIRST, "end": LAST}
        {"kind": "key", "name": "mouthSmileLeft", "value": 0.8, "frame": FRAME}

    A hold covers FIRST to LAST, both included, as Blender's frame ranges do. The backend checks the rest
    (poses, names, values, frames past the take's end) and says what is wrong in one sentence."""
    out = []
    for item in constraints or []:
        if not isinstance(item, dict) or item.get("kind") not in ("hold", "key"):
            raise ThunderError(f"a constraint must be a dict with kind 'hold' or 'key', not {item!r}")
        item = dict(item)
        names = ("start", "end") if item["kind"] == "hold" else ("frame",)
        for name in names:
            frame = checked_number("frame", item.get(name), integer=True, low=-2**31, high=2**31,
                                   label=f"the {item['kind']}'s {name}")
            if frame < frame_start:
                raise ThunderError(f"the {item['kind']} at frame {frame} is before the take's first frame "
                                   f"{frame_start:g}")
            item[name] = int(round(frame - frame_start)) + (1 if name == "end" else 0)
        out.append(item)
    return out


def scene_constraints(context=None) -> list[dict]:
    """The panel's constraints (scene.thunder.constraints) as the API takes them, in scene frames."""
    context = context or bpy.context
    out = []
    for c in context.scene.thunder.constraints:
        if c.kind == "hold":
            out.append({"kind": "hold", "pose": c.pose, "start": c.start, "end": c.end})
        else:
            out.append({"kind": "key", "name": c.expression, "value": round(c.value, 6), "frame": c.frame})
    return out


def scene_range(context=None) -> tuple[int, int]:
    """The frames Resample range uses: the timeline's preview range when it is on, else the two selected
    markers (or the scene's only two markers). First and last frame, both included."""
    scene = (context or bpy.context).scene
    if scene.use_preview_range:
        return scene.frame_preview_start, scene.frame_preview_end
    markers = [m for m in scene.timeline_markers if m.select]
    if len(markers) != 2:
        markers = list(scene.timeline_markers) if len(scene.timeline_markers) == 2 else []
    if not markers:
        raise ThunderError("choose the frames to resample: turn on the timeline's preview range, or select two "
                           "markers")
    first, last = sorted(m.frame for m in markers)
    return first, last


def resample_range(head=None, start: int | None = None, end: int | None = None, only: str | None = None,
                   constraints=None, take=None, seed=None, wait: bool | None = None, context=None):
    """A new take that is the active take (or `take`, by index or name) outside frames start..end (scene
    frames, both included; default: `scene_range`) and sampled anew inside them, joining both sides. only:
    "lips", "upper" or "head" resamples that part alone. constraints: None keeps the take's own; a list (scene
    frames, `take_constraints`) replaces them. seed None draws one. The old take is kept; the new one is added
    and played."""
    context = context or bpy.context
    head = _head_with_takes(head, context)
    thunder = head.thunder
    index = _take_index(head, take) if take is not None else max(thunder.active_take, 0)
    item = thunder.takes[index]
    if start is None or end is None:
        start, end = scene_range(context)
    first = checked_number("frame", start, integer=True, low=-2**31, high=2**31, label="the range's first frame")
    last = checked_number("frame", end, integer=True, low=-2**31, high=2**31, label="the range's last frame")
    if last < first:
        raise ThunderError(f"the range from frame {first} to {last} is empty")
    take_first = max(0, int(round(first - item.frame_start)))
    take_end = min(item.frames, int(round(last - item.frame_start)) + 1)
    if take_end <= take_first:
        raise ThunderError(f"frames {first} to {last} are not on {item.name} (its frames are {item.frame_start:g} "
                           f"to {item.frame_start + item.frames - 1:g})")
    if only not in (None, *RANGE_PARTS):
        raise ThunderError(f"unknown part '{only}' to resample; choose {', '.join(RANGE_PARTS)} (or None: all)")
    for path, what in ((item.file, "take file"), (item.audio, "audio")):
        if not os.path.isfile(path):
            raise AudioSourceError(f"the {what} of {item.name}, {path}, does not exist any more")
    direct = {"from_take": item.file, "range": [take_first, take_end]}
    if only is not None:
        direct["only"] = only
    if constraints is not None:
        direct["constraints"] = take_constraints(constraints, item.frame_start)
    seeds = _seeds(1, seed, avoid={t.seed for t in thunder.takes})
    label = f"{item.name} {int(round(item.frame_start)) + take_first}-{int(round(item.frame_start)) + take_end - 1}"
    return _start_generate(context, head, item.audio, None, None, item.frame_start, scene_fps(context.scene), seeds,
                           {}, True, wait, replacing=[], extra=direct, label=label)


def checked_number(name: str, value, integer: bool = False, low=None, high=None, label: str | None = None):
    """`value` as a number within LIMITS[name] (or low..high), else ThunderError naming it: the one check of
    every number the add-on sends to the backend."""
    low = LIMITS[name][0] if low is None else low
    high = LIMITS[name][1] if high is None else high
    try:
        number = float(value)
        if isinstance(value, bool) or (integer and number != int(number)):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        number = None
    if number is None or not low <= number <= high:   # NaN fails the comparison too
        kind = "a whole number" if integer else "a number"
        shown = (f"{int(low)} to {int(high)}" if integer else f"{low:g} to {high:g}")
        raise ThunderError(f"{label or name} must be {kind} from {shown}, not {value!r}")
    return int(number) if integer else number


def _checked_settings(settings: dict, whose: str = "") -> dict:
    """The sampling settings with the steps, guidance and intensity they give checked (other keys pass
    through; one not given is left to the model's own default, in the backend)."""
    checked = dict(settings)
    for name in ("steps", "guidance", "intensity"):
        if name in settings:
            checked[name] = checked_number(name, settings[name], integer=name == "steps", label=f"{whose}{name}")
    if not isinstance(settings.get("emotion", "neutral"), str):
        raise ThunderError(f"{whose}emotion must be a name, not {settings.get('emotion')!r}")
    return checked


def _seeds(count: int, seed, avoid=frozenset()) -> list[int]:
    count = checked_number("takes", count, integer=True)
    if seed is not None:
        seed = checked_number("seed", seed, integer=True, high=MAX_SEED - count + 1)
        return [seed + k for k in range(count)]
    draw = random.SystemRandom()
    seeds: list[int] = []
    while len(seeds) < count:
        candidate = draw.randrange(MAX_SEED)
        if candidate not in avoid and candidate not in seeds:
            seeds.append(candidate)
    return seeds


def takes_folder() -> Path:
    """Where take files go: beside the saved .blend (thunder_takes/), else in the add-on's user folder."""
    if bpy.data.filepath:
        base = Path(bpy.path.abspath("//thunder_takes"))
    else:
        base = Path(bpy.utils.extension_path_user(__package__, path="takes", create=True)) \
            if __package__.startswith("bl_ext.") else Path(bpy.app.tempdir or "/tmp") / "thunder_takes"
    return base / f"{time.strftime('%Y%m%d-%H%M%S')}-{random.randrange(16**6):06x}"


def _start_generate(context, head, audio_path, start, end, frame_start, fps, seeds, settings, replace_animation,
                    wait, replacing, extra=None, label=None):
    foreign = take_actions.foreign_animation(head)
    if foreign and not replace_animation:
        raise ThunderError(f"{head.name} already plays animation that is not a Thunder take ({', '.join(foreign)}); "
                           "tick Replace existing animation to keep it aside (it is never deleted)")
    fps = checked_number("fps", fps, label="the scene's frame rate (Frame Rate / Base, in frames per second)")
    out = takes_folder()
    check_folder(out.parent, "the takes folder")   # before sampling: a folder that cannot take files is a sentence
    # The callbacks run later, from a timer: hold names, not the operator's context or its datablocks.
    head_name, scene_name = head.name, context.scene.name
    request = {"type": "generate", "audio": audio_path, "seeds": seeds, "settings": settings, "out": str(out)}
    if not (extra or {}).get("from_take"):   # a range resample keeps its take's audio range and frame rate
        request.update(start=float(start), fps=fps)
    if end is not None:
        request["end"] = float(end)
    request.update(extra or {})
    added: list[str] = []

    def on_result(event):
        try:
            _key_result(event)
        except ThunderError as exc:   # the takes are safe on disk; say where, and why they are not on the head
            _say("ERROR", f"{exc} (the take files are in {event['folder']})")

    def _key_result(event):
        target = bpy.data.objects.get(head_name)
        if target is None or head_of(target) is None:
            _say("ERROR", f"the head {head_name} was removed while Thunder was generating; "
                          f"the takes are in {event['folder']}")
            return
        mesh = target.thunder.mesh
        if mesh is None or not mesh.users_collection:
            _say("ERROR", f"the mesh of the head {head_name} was deleted while Thunder was generating; nothing "
                          f"was changed, and the take files are in {event['folder']}")
            return
        try:
            check_head(target)
        except ThunderError as exc:
            _say("ERROR", f"{exc} (it changed while Thunder was generating; the take files are in "
                          f"{event['folder']})")
            return
        # Every take is read and checked before the head changes, so a bad one changes nothing.
        arrived = [read_take(entry["path"]) for entry in event["takes"]]
        for take in arrived:
            take_actions.take_fields(take)
        take_actions.keep_original_animation(target)
        thunder = target.thunder
        thunder.batches += 1
        # The takes to replace, by name, looked up when the result arrives: a take kept, renamed or deleted
        # meanwhile is left alone (the new take is then added instead).
        places = [name for name in replacing
                  if any(item.name == name and not item.kept for item in thunder.takes)]
        for take in arrived:
            if places:
                name = places.pop(0)
                index = next(k for k, item in enumerate(thunder.takes) if item.name == name)
                item = take_actions.replace_take(target, index, take, frame_start, thunder.batches, audio_path)
            else:
                item = take_actions.add_take(target, take, frame_start, thunder.batches, audio_path,
                                      label=_unique_label(thunder, label))
            added.append(item.name)
        scene = bpy.data.scenes.get(scene_name)
        if scene is not None:
            _extend_scene(scene, frame_start, max(entry["frames"] for entry in event["takes"]))
        _say("INFO", f"{len(added)} take{'s' if len(added) > 1 else ''} on {head_name}: {', '.join(added)}")
        _undo_push(f"Thunder: {len(added)} takes")

    def on_error(message, event=None):
        _say("ERROR", message)

    def on_cancelled():
        _say("INFO", "cancelled; nothing was changed")

    manager = session.manager()
    # Without a UI nothing would poll a job left running, so background mode waits unless told not to
    # (wait=False: the caller polls with api.poll(), as the tests of cancel and crashes do).
    sync = wait if wait is not None else not session.interactive()
    load = _load_wish(head.thunder.source)
    _say("INFO", f"generating {len(seeds)} take{'s' if len(seeds) > 1 else ''} for {head_name}"
                 + (f", keeping the {request['takes']} best" if "best_of" in request else ""))
    if sync:
        manager.run_sync(request, on_result=on_result, on_error=on_error, on_cancelled=on_cancelled, load=load)
        if notice.level == "ERROR":   # the takes arrived but could not be keyed
            raise ThunderError(notice.text)
        return added
    job = manager.start(request, on_result=on_result, on_error=on_error, on_cancelled=on_cancelled, load=load)
    session.start_polling()
    return job


def _unique_label(thunder, wanted: str | None) -> str:
    names = {item.name for item in thunder.takes}
    if wanted and wanted not in names:
        return wanted
    number = len(thunder.takes) + 1
    while f"Take {number}" in names:
        number += 1
    return f"Take {number}"


def _extend_scene(scene, frame_start: float, frames: int) -> None:
    """Make the scene's frame range reach the end of the take (never shorter than it was)."""
    last = int(frame_start + frames - 1 + 0.999)
    if scene.frame_end < last:
        scene.frame_end = last


def _undo_push(message: str) -> None:
    """Make the new takes one undo step: they arrive from a timer, outside any operator's own undo step."""
    try:
        bpy.ops.ed.undo_push(message=message)
    except RuntimeError:   # no undo stack (undo turned off in the preferences)
        pass


# ---------------------------------------------------------------------------------------------- takes
def _take_index(head, take) -> int:
    thunder = head.thunder
    if isinstance(take, str):
        for index, item in enumerate(thunder.takes):
            if item.name == take:
                return index
        raise ThunderError(f"{head.name} has no take named '{take}'")
    if not 0 <= int(take) < len(thunder.takes):
        raise ThunderError(f"{head.name} has {len(thunder.takes)} takes; there is no take number {take}")
    return int(take)


def activate_take(head, take) -> None:
    """Play a take (by index or name)."""
    head = resolve_head(head)
    take_actions.activate(head, _take_index(head, take))   # refuses an edited head (head_build.check_head)


def delete_take(head, take) -> None:
    head = resolve_head(head)
    take_actions.delete(head, _take_index(head, take))


def keep_take(head, take, keep: bool = True) -> None:
    head = resolve_head(head)
    head.thunder.takes[_take_index(head, take)].kept = keep


def rename_take(head, take, name: str) -> None:
    head = resolve_head(head)
    index = _take_index(head, take)
    if not name.strip():
        raise ThunderError("a take needs a name")
    if any(item.name == name for k, item in enumerate(head.thunder.takes) if k != index):
        raise ThunderError(f"{head.name} already has a take named '{name}'")
    head.thunder.takes[index].name = name


def takes_by_score(head=None) -> list[str]:
    """The head's take names, the best-reading lips first (the lowest M2S mel L1; takes without a score
    last, in list order): the order the takes list shows."""
    head = resolve_head(head)
    return [head.thunder.takes[k].name for k in score_order(head.thunder.takes)]


def score_order(takes) -> list[int]:
    """Indices of `takes` (ThunderTake entries), best M2S score first, unscored last; ties keep list order."""
    return sorted(range(len(takes)), key=lambda k: (not takes[k].has_m2s_score, takes[k].m2s_mel_l1, k))


def set_strengths(head=None, take=None, **strengths) -> None:
    """Set a take's strengths (by index or name; None: the active take) and key it again from its file, no
    sampling: lips_jaw, brows, blinks, cheeks_nose, head_motion (0..2, 1: as sampled) and smoothing (0..1;
    /p b m/ closures are kept). Values not given stay; all 1 and smoothing 0 give the take exactly as sampled."""
    head = resolve_head(head)
    check_head(head)
    index = head.thunder.active_take if take is None else _take_index(head, take)
    if not 0 <= index < len(head.thunder.takes):
        raise ThunderError(f"{head.name} has no take to set strengths on; Generate first")
    take_actions.set_strengths(head, index, strengths)


# ---------------------------------------------------------------------------------------------- listen
def listen(head=None, take=None, context=None):
    """Hear what a take's lips say: the backend's M2S turns the take (by index or name; None: the active
    take) back into speech, vocoded with Griffin-Lim, and it is added as a muted sound strip beside the
    take's audio in the Sequencer (unmute it, and mute the original, to listen). Returns the strip."""
    from .sound import add_listen_strip

    context = context or bpy.context
    head = resolve_head(head, context)
    index = head.thunder.active_take if take is None else _take_index(head, take)
    if not 0 <= index < len(head.thunder.takes):
        raise ThunderError(f"{head.name} has no take to listen to; Generate first")
    item = head.thunder.takes[index]
    if not os.path.isfile(item.file):
        raise ThunderError(f"the take file of {item.name}, {item.file}, does not exist any more")
    out = Path(item.file).with_suffix(f".lips-{random.randrange(16**6):06x}.wav")
    reply = session.manager().request_sync("listen", take=item.file, out=str(out), timeout=300,
                                           load=_load_wish(head.thunder.source))
    strip = add_listen_strip(context.scene, reply["file"], f"{item.name} lips", item.frame_start,
                             context.scene.thunder.strip if context.scene.thunder.audio_source == "STRIP" else "")
    _say("INFO", f"added the muted strip {strip.name}: what the lips of {item.name} say (unmute it to hear)")
    return strip


# ---------------------------------------------------------------------------------------------- export
def export(head=None, folder: str | None = None, formats=("fbx", "abc", "usd"), every_take: bool = False,
           overwrite: bool = False) -> list[Path]:
    """Export the active take (or every take, one file each) to FBX, Alembic and/or USD in `folder`."""
    head = resolve_head(head)
    check_head(head)
    if not len(head.thunder.takes):
        raise ThunderError(f"{head.name} has no takes to export; Generate first")
    folder = bpy.path.abspath(folder or bpy.context.scene.thunder.export_folder)
    if not folder or folder.startswith("//"):
        raise ThunderError("save the .blend first, or choose an absolute export folder")
    paths = export_takes(head, folder, formats=tuple(formats), every_take=every_take, overwrite=overwrite)
    _say("INFO", f"exported {len(paths)} file{'s' if len(paths) > 1 else ''} to {folder}")
    return paths


# ---------------------------------------------------------------------------------------------- characters
def drive_character(mesh, head=None, armature=None, jaw_bone: str = "", eye_left_bone: str = "",
                    eye_right_bone: str = "", head_bone: str = "", head_target: str = "NONE",
                    head_strength: float = 1.0, jaw_open_angle=None, mapping: dict | None = None) -> list[str]:
    """Let the head's takes (every one, and every new one) play on `mesh`, a character with ARKit-named shape
    keys and optionally an armature whose jaw, eye and head bones turn with the take. Its shape keys are
    matched to ARKit's names (character.match) unless `mapping` is given. Returns the ARKit names it lacks.

        thunder.api.drive_character(bpy.data.objects["Body"], head, armature=rig, jaw_bone="jaw")
    """
    head = resolve_head(head)
    missing = character.bind(mesh, head, armature, jaw_bone, eye_left_bone, eye_right_bone, head_bone,
                             head_target, head_strength, jaw_open_angle, mapping)
    kept = [action.name for action in (mesh.thunder_character.original_key_action,
                                       mesh.thunder_character.original_object_action) if action is not None]
    _say("INFO", f"{mesh.name} follows {head.name}'s takes: {52 - len(missing)} of ARKit's 52 shapes mapped"
                 + (f"; missing {', '.join(missing[:6])}{', ...' if len(missing) > 6 else ''}" if missing else "")
                 + (f"; its own animation ({', '.join(kept)}) is kept aside until Release" if kept else ""))
    return missing


def update_character(mesh) -> None:
    """Key the takes on the character again after its mapping, bones, strength or calibration changed."""
    character.rekey(mesh)
    _say("INFO", f"{mesh.name} keyed again from {len(mesh.thunder_character.head.thunder.takes)} takes")


def release_character(mesh) -> None:
    """Stop driving the character; its own animation plays again."""
    character.release(mesh)
    _say("INFO", f"{mesh.name} is no longer driven by Thunder")


def calibrate_character_jaw(mesh) -> float:
    """Measure the character's jawOpen shape key's jaw angle (its jawOpen = 1); takes are keyed again."""
    angle, residual = character.calibrate_jaw(mesh)
    if mesh.thunder_character.is_character:
        character.rekey(mesh)
    _say("INFO", f"{mesh.name}'s jawOpen turns the jaw by {angle:.3f} rad (a turn explains "
                 f"{1 - min(residual, 1):.0%} of it)")
    return angle


def export_character(mesh, folder: str | None = None, formats=("fbx",), every_take: bool = False,
                     overwrite: bool = False) -> list[Path]:
    """Export the character (its mesh and armature) with the active take (or every take) of its head, one file
    per take and format, named `<mesh>_<take>.<ext>`."""
    from .export import export_character_take, planned_paths

    binding = getattr(mesh, "thunder_character", None)
    if binding is None or not binding.is_character or binding.head is None:
        raise ThunderError(f"{getattr(mesh, 'name', mesh)} is not driven by a Thunder head; Drive character first")
    thunder = binding.head.thunder
    indices = list(range(len(thunder.takes))) if every_take else \
        ([thunder.active_take] if 0 <= thunder.active_take < len(thunder.takes) else [])
    if not indices:
        raise ThunderError(f"{binding.head.name} has no takes to export; Generate first")
    folder = bpy.path.abspath(folder or bpy.context.scene.thunder.export_folder)
    if not folder or folder.startswith("//"):
        raise ThunderError("save the .blend first, or choose an absolute export folder")
    paths = planned_paths(folder, mesh.name, [thunder.takes[k].name for k in indices], formats)
    existing = [path for path in paths if path.exists()]
    if existing and not overwrite:
        raise ThunderError(f"{existing[0]} already exists; Thunder does not replace files unless asked to overwrite")
    jobs = [(k, fmt) for k in indices for fmt in formats]
    written = [export_character_take(mesh, k, fmt, path, overwrite=overwrite) for (k, fmt), path in zip(jobs, paths)]
    _say("INFO", f"exported {len(written)} file{'s' if len(written) > 1 else ''} of {mesh.name} to {folder}")
    return written


def export_arkit(head=None, folder: str | None = None, formats=("csv", "json"), every_take: bool = False,
                 overwrite: bool = False) -> list[Path]:
    """Write the active take (or every take) as per-frame ARKit weights: the Live Link Face app's CSV (for
    Unreal's Live Link) and a JSON for scripts, `<head>_<take>.arkit.csv` / `.arkit.json` in `folder`."""
    head = resolve_head(head)
    folder = bpy.path.abspath(folder or bpy.context.scene.thunder.export_folder)
    if not folder or folder.startswith("//"):
        raise ThunderError("save the .blend first, or choose an absolute export folder")
    paths = character.export_arkit(head, folder, every_take=every_take, formats=tuple(formats), overwrite=overwrite)
    _say("INFO", f"wrote {len(paths)} ARKit file{'s' if len(paths) > 1 else ''} to {folder}")
    return paths


def save_character_mapping(mesh, path, overwrite: bool = False) -> Path:
    return character.save_mapping(mesh, path, overwrite=overwrite)


def load_character_mapping(mesh, path) -> dict:
    return character.load_mapping(mesh, path)
