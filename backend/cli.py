"""The `thunder` command.

Every subcommand is a function taking the parsed arguments. Packages that backend must not import (training)
add their subcommands through the entry-point group "thunder.commands": each entry point is a function
`register(subcommands)` that adds parsers to the argparse subparsers object. A ThunderError (a problem with the user's input)
is printed as one sentence with exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
from importlib.metadata import entry_points

from backend import __version__
from backend.errors import ThunderError


def cmd_head_info(args) -> int:
    from backend.head import load_head

    head = load_head(args.head)
    info = {
        "name": head.name,
        "identity": head.identity,
        "source": head.source,
        "vertices": head.n_vertices,
        "faces": int(len(head.faces)),
        "joints": list(head.joint_names),
        "expression_components": head.expression_names,
        "shape_components": head.shape_names,
        "vertex_sets": {name: int(len(idx)) for name, idx in head.vertex_sets.items()},
        "landmarks": head.landmarks,
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"head        {info['name']}  ({info['identity']})")
    print(f"source      {info['source']}")
    print(f"mesh        {info['vertices']} vertices, {info['faces']} triangles")
    print(f"joints      {', '.join(info['joints'])}")
    print(f"expression  {len(head.expression_names)}: {', '.join(head.expression_names)}")
    print(f"shape       {len(head.shape_names)}: {', '.join(head.shape_names[:12])}"
          + (" ..." if len(head.shape_names) > 12 else ""))
    print("vertex sets " + ", ".join(f"{k} ({v})" for k, v in info["vertex_sets"].items()))
    print("landmarks   " + ", ".join(f"{k} = {v}" for k, v in info["landmarks"].items()))
    return 0


def cmd_head_convert(args) -> int:
    from backend.flame_file import load_head_file, save_head_npz

    out = save_head_npz(load_head_file(args.source), args.output)
    print(f"wrote {out}")
    return 0


BLENDER_NEEDED = ("--blend, --fbx, --abc, --usd and --preview need Blender as a Python module "
                  "(pip install bpy==5.0.1 on Python 3.11)")


def scene_outputs(args):
    """What --blend, --fbx, --abc, --usd and --preview ask for (backend.blender.scene.SceneOutputs), after
    checking that bpy can be imported; None when none of them is given."""
    formats = tuple(fmt for fmt in ("fbx", "abc", "usd") if getattr(args, fmt, False))
    strengths = tuple(getattr(args, "strength", None) or ())
    if not (args.blend or formats or args.preview):
        if strengths:
            raise ThunderError("--strength shapes the takes in the Blender scene; add --blend, --fbx, --abc, --usd "
                               "or --preview (the take files themselves stay as sampled)")
        return None
    require_blender()
    from backend.blender.scene import SceneOutputs, check_strengths

    check_strengths(dict(strengths))

    blend = args.blend
    if isinstance(blend, str):   # --blend OUT.blend: one audio file's scene, saved where the user says
        if len(args.audio) != 1:
            raise ThunderError(f"--blend {blend} names one .blend, but {len(args.audio)} audio files were given; "
                               "use --blend alone to save each as <audio stem>.blend in --out")
        if not blend.endswith(".blend"):
            raise ThunderError(f"--blend {blend}: a Blender file's name ends in .blend")
    return SceneOutputs(blend=blend, formats=formats, preview=args.preview,
                        resolution=preview_resolution(args.preview_resolution), strengths=strengths)


def require_blender() -> None:
    # find_spec looks for bpy without importing it (an import takes seconds and starts Blender's machinery).
    if importlib.util.find_spec("bpy") is None:
        raise ThunderError(BLENDER_NEEDED)


def preview_resolution(pixels: int) -> int:
    """The preview video's width and height: even (H.264 wants it) and at least 16."""
    if pixels < 16 or pixels % 2:
        raise ThunderError(f"--preview-resolution must be an even number of pixels from 16, not {pixels}")
    return pixels


MAX_THREADS = 1024


def check_model_arguments(args) -> None:
    """--threads and --max-seconds (generate, demo, serve): refused in one sentence; a good --threads is set."""
    if args.threads is not None:
        if not 1 <= args.threads <= MAX_THREADS:
            raise ThunderError(f"--threads must be a whole number from 1 to {MAX_THREADS}, not {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    if not math.isfinite(args.max_seconds) or args.max_seconds < 0:
        raise ThunderError(f"--max-seconds must be 0 (no limit) or a number of seconds, not {args.max_seconds:g}")


def cmd_generate(args) -> int:
    """Sample takes for every audio file with one model load. A file that fails is reported in one line
    (`thunder: FILE: sentence`) and the others go on; the exit status is 1 if any failed. Problems with the
    arguments themselves (a frame rate of 0, an unknown emotion, no bpy for --blend) stop everything, before
    any audio is read. With --blend, --fbx, --abc, --usd or --preview, each file's takes then go into a Blender
    scene (backend/blender/scene.py) that is saved, exported or rendered into the same folder."""
    from pathlib import Path

    from backend.files import prepare_output_folder, refuse_existing
    from backend.frame_rate import check_fps
    from backend.generate import Generator, best_of_keep, take_seeds
    from backend.progress import ProgressBar
    from backend.take_file import save_take, take_file_name

    # 1. The arguments (the output folder too), then the model (its emotions decide which settings are
    # valid), then the settings.
    fps = check_fps(args.fps)
    best_of = args.best_of
    if best_of is not None:
        best_of_keep(best_of, args.takes, None)
    seeds = take_seeds(best_of or args.takes, args.seed)   # with --best-of: the candidates' seeds
    outputs = scene_outputs(args)
    check_model_arguments(args)
    out = prepare_output_folder(args.out, "--out")
    constraints, old_take = directing_arguments(args)
    if old_take is not None:
        fps = old_take.fps
    generator = Generator(args.checkpoint, args.head, args.device, args.max_seconds or None)
    changes = {name: getattr(args, name) for name in ("steps", "lowest_noise", "guidance", "guidance_max_noise",
                                                    "guidance_channels", "emotion", "intensity", "smoothing",
                                                    "blinks")
               if getattr(args, name) is not None}
    settings = generator.settings(changes)

    # 2. Each file on its own: its failure is its own.
    failed = 0
    for audio in args.audio:
        stem = Path(audio).stem
        paths = [out / take_file_name(stem, k + 1, seed) for k, seed in enumerate(seeds)]
        if best_of is not None:   # which seeds are kept is known only after scoring: refuse every name they may get
            paths = [out / take_file_name(stem, k + 1, seed) for k in range(args.takes) for seed in seeds]
        bar = None

        def show_progress(step):
            nonlocal bar
            if args.quiet:
                return
            bar = bar or ProgressBar(step.total, Path(audio).name)
            bar.update(step.index + 1)

        written, arkit_files, failure = [], [], None
        try:
            planned = list(paths)
            if outputs:
                from backend.blender.scene import scene_output_paths

                planned += scene_output_paths(out, stem, args.takes if best_of else len(seeds), outputs)
            if args.arkit:
                from backend.arkit_export import arkit_paths

                planned += [p for path in paths for p in arkit_paths(path)]
            refuse_existing(planned)
            if old_take is not None:   # changes, not settings: the old take's settings are the base
                takes = generator.resample_range(old_take, audio, *args.range, only=args.only, seeds=seeds,
                                                 settings=changes, constraints=constraints or None,
                                                 callback=show_progress)
            else:
                takes = generator.generate(audio, takes=args.takes, seeds=seeds, settings=settings, fps=fps,
                                           start=args.start, end=args.end, callback=show_progress,
                                           constraints=constraints, best_of=best_of)
            paths = [out / take_file_name(stem, k + 1, take.seed) for k, take in enumerate(takes)]
            written = [save_take(path, take) for path, take in zip(paths, takes)]
            if args.arkit:
                from backend.arkit_export import write_arkit_files

                for path in written:
                    arkit_files += write_arkit_files(path, head=generator.head)
        except ThunderError as exc:
            failure = str(exc)
        if bar:
            bar.close()
        for path in written + arkit_files:
            print(path, flush=True)
        if written and outputs:
            from backend.blender.scene import write_take_scene

            def report(what, seconds):
                if isinstance(what, Path):
                    print(what, flush=True)

            try:
                write_take_scene(generator.head, audio, written, fps, out, outputs, report=report,
                                 show_progress=not args.quiet)
            except ThunderError as exc:
                failure = str(exc)
        if failure:
            print(f"thunder: {audio}: {failure}", file=sys.stderr, flush=True)
            failed += 1
    return 1 if failed else 0


def directing_arguments(args) -> tuple[list, object]:
    """--hold, --key and --eyes-open as constraints, and --from-take (with --range and --only) as the take to
    resample: checked before the model loads."""
    from backend import directing
    from backend.take_file import load_take

    constraints = ([directing.parse_hold(text) for text in args.hold]
                   + [directing.parse_hold(text, pose="eyes_open") for text in args.eyes_open]
                   + [directing.parse_key(text) for text in args.key])
    if args.from_take is None:
        if args.range is not None or args.only is not None:
            raise ThunderError("--range and --only resample part of a take: name it with --from-take OLD.npz")
        return constraints, None
    if args.range is None:
        raise ThunderError("--from-take needs --range START:END, the take frames to sample anew")
    if args.best_of is not None:
        raise ThunderError("--from-take resamples a range without best of N; leave out --best-of")
    if len(args.audio) != 1:
        raise ThunderError("--from-take resamples one take: give the one audio file it was made from")
    args.range = directing.parse_range(args.range)
    return constraints, load_take(args.from_take)


def cmd_demo(args) -> int:
    """The whole job on the example clip that ships with Thunder (backend/examples): takes, a .blend with every
    take on the rigged head and the sound strip, FBX, Alembic and USD of every take, and a preview video with
    the sound; each file printed with the time it took. Nothing is overwritten: an existing file stops it
    before any work."""
    import time
    from pathlib import Path

    from backend.files import prepare_output_folder, refuse_existing
    from backend.generate import Generator, take_seeds
    from backend.take_file import save_take, take_file_name

    started = time.monotonic()
    require_blender()
    from backend.blender.scene import FORMATS, SceneOutputs, scene_output_paths, write_take_scene

    audio = Path(__file__).resolve().parent / "examples" / "thunder_example.wav"
    if not audio.is_file():
        raise ThunderError(f"the example clip is missing from this installation ({audio})")
    seeds = take_seeds(args.takes, args.seed)
    check_model_arguments(args)
    out = prepare_output_folder(args.out, "--out")
    outputs = SceneOutputs(blend=True, formats=FORMATS, preview=True,
                           resolution=preview_resolution(args.preview_resolution))
    take_paths = [out / take_file_name(audio.stem, k + 1, seed) for k, seed in enumerate(seeds)]
    planned = take_paths + scene_output_paths(out, audio.stem, len(seeds), outputs)
    refuse_existing(planned, advice=" (choose another --out)")

    def report(what, seconds):
        print(f"{str(what):<72} {seconds:6.1f} s", flush=True)

    print(f"thunder demo: {len(seeds)} take(s) of {audio.name} into {out}/", flush=True)
    t = time.monotonic()
    generator = Generator(args.checkpoint, args.head, args.device, args.max_seconds or None)
    report(f"loaded the model {generator.model_identity['name']} and the head {generator.head.name}",
           time.monotonic() - t)
    t = time.monotonic()
    fps = 25.0
    takes = generator.generate(audio, seeds=seeds, fps=fps)
    report(f"sampled {len(takes)} take(s) of {takes[0].jaw.shape[0]} frames at {fps:g} fps on "
           f"{generator.device}", time.monotonic() - t)
    for path, take in zip(take_paths, takes):
        t = time.monotonic()
        save_take(path, take)
        report(path, time.monotonic() - t)
    write_take_scene(generator.head, audio, take_paths, fps, out, outputs, report=report,
                     show_progress=not args.quiet)
    report("thunder demo: done, in all", time.monotonic() - started)
    return 0


def cmd_arkit(args) -> int:
    """A take file as the Live Link Face app's CSV and a JSON of ARKit weights (backend/arkit_export.py)."""
    from backend.arkit_export import write_arkit_files

    for path in write_arkit_files(args.take, args.csv, args.json, overwrite=args.overwrite):
        print(path)
    return 0


def cmd_serve(args) -> int:
    from backend.service import serve_stdio

    check_model_arguments(args)
    return serve_stdio(checkpoint=args.checkpoint, head=args.head, device=args.device,
                       max_seconds=args.max_seconds or None)


def add_model_arguments(parser) -> None:
    """--head, --checkpoint, --device, --max-seconds, --threads: shared by generate and serve."""
    from backend.generate import DEFAULT_MAX_SECONDS

    parser.add_argument("--head", default="builtin", help="'builtin' (default) or a FLAME .pkl/.npz path")
    parser.add_argument("--checkpoint", help="a THUNDER model folder (default: the shipped backend/models/thunder)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto (default) uses a CUDA GPU when there is one")
    parser.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS,
                        help=f"refuse audio longer than this (default {DEFAULT_MAX_SECONDS:g}; 0: no limit)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")


def add_scene_arguments(parser) -> None:
    """--blend, --fbx, --abc, --usd, --preview and --preview-resolution (generate)."""
    parser.add_argument("--blend", nargs="?", const=True, default=False, metavar="OUT.blend",
                        help="also save the rigged head with every take and the sound strip as OUT.blend (one "
                             "audio file), or as <audio stem>.blend in --out")
    parser.add_argument("--fbx", action="store_true", help="also export every take as FBX")
    parser.add_argument("--abc", action="store_true", help="also export every take as Alembic")
    parser.add_argument("--usd", action="store_true", help="also export every take as USD")
    parser.add_argument("--preview", action="store_true",
                        help="also render take 1 with its sound to <audio stem>.preview.mp4")
    parser.add_argument("--preview-resolution", type=int, default=512,
                        help="width and height of the preview video in pixels (default 512)")
    parser.add_argument("--strength", type=strength_argument, action="append", metavar="NAME=VALUE",
                        help="a strength for every take in the scene (and so in its exports): lips_jaw, brows, "
                             "blinks, cheeks_nose or head_motion 0..2 (1: as sampled), or smoothing 0..1 (keeps "
                             "/p b m/ closures); repeat for several")


def strength_argument(text: str) -> tuple[str, float]:
    """--strength NAME=VALUE as (name, value); which names and values are allowed is the add-on's rule."""
    name, equals, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = None
    if not equals or not name or number is None:
        raise argparse.ArgumentTypeError(f"'{text}' is not NAME=VALUE, e.g. brows=0.5 or smoothing=0.3")
    return name.strip(), number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="thunder", description="Speech-driven 3D talking heads (FLAME).")
    parser.add_argument("--version", action="version", version=f"thunder {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    head = commands.add_parser("head", help="inspect or convert a head (the built-in head or a FLAME file)")
    head_commands = head.add_subparsers(dest="head_command", required=True, metavar="ACTION")
    info = head_commands.add_parser("info", help="print a head's mesh, components, vertex sets and landmarks")
    info.add_argument("head", nargs="?", default="builtin", help="'builtin' (default) or a FLAME .pkl/.npz path")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=cmd_head_info)
    convert = head_commands.add_parser("convert", help="convert a FLAME .pkl to a plain .npz (no pickle)")
    convert.add_argument("source", help="FLAME generic_model.pkl or flame2023*.pkl")
    convert.add_argument("output", help="the .npz to write (never overwritten)")
    convert.set_defaults(run=cmd_head_convert)

    generate = commands.add_parser("generate", help="sample takes (head animations) for audio files")
    generate.add_argument("audio", nargs="+", help="WAV, FLAC, OGG Vorbis or MP3 files")
    generate.add_argument("--out", required=True, help="folder for the take files (existing ones are never "
                                                        "overwritten)")
    generate.add_argument("--takes", type=int, default=1, help="takes per file (default 1)")
    generate.add_argument("--seed", type=int, default=0, help="seed of the first take; take k uses seed + k - 1")
    generate.add_argument("--best-of", type=int, metavar="N",
                          help="sample N candidates (seeds seed .. seed + N - 1) and keep the --takes best by how "
                               "well their lips read (M2S's mel agreement with the audio, docs/take_format.md)")
    generate.add_argument("--emotion", help="an emotion the model knows (default: the model's, neutral)")
    generate.add_argument("--intensity", type=float, help="emotion intensity 0..1 (default 1 with --emotion)")
    generate.add_argument("--guidance", type=float, help="classifier-free guidance on audio (1: none)")
    generate.add_argument("--guidance-max-noise", type=float, metavar="SIGMA",
                          help="guidance only at the sampler's noise levels at or below SIGMA (default: the "
                               "model's; every step): closures as crisp, takes less alike (docs/results.md)")
    generate.add_argument("--guidance-channels", choices=("all", "lips"),
                          help="what the audio guidance acts on: every channel, or the mouth and jaw only, "
                               "leaving the head and upper face as free as unguided (default: the model's)")
    generate.add_argument("--steps", type=int, help="sampler steps (default: the model's, 8)")
    generate.add_argument("--lowest-noise", type=float, metavar="SIGMA",
                          help="the noise level of the sampler's last step (default: the model's, 0.5; 0.001 "
                               "goes down to the lowest it was trained on): lower adds frame-to-frame detail")
    generate.add_argument("--smoothing", type=float,
                          help="frames of the flicker filter, which keeps every lip closure (default: the model's, "
                               "1.25; 0: the raw samples)")
    generate.add_argument("--blinks", choices=("natural", "model"),
                          help="natural (default): the model's blinks, topped up to a human rate drawn per take "
                               "(10-25 a minute, at most 30; backend/blinks.py); model: the model's blinks only")
    generate.add_argument("--fps", type=float, default=25.0, help="the scene's frame rate (default 25)")
    generate.add_argument("--start", type=float, default=0.0, help="use the audio from this second")
    generate.add_argument("--end", type=float, help="use the audio up to this second (default: its end)")
    generate.add_argument("--quiet", action="store_true", help="no progress bar")
    direct = generate.add_argument_group("directing (backend/directing.py; frames are the take's, from 0)")
    direct.add_argument("--from-take", metavar="OLD.npz", help="resample a range of this take (made from the "
                        "audio given): a new take, identical outside the range; its fps and settings are kept")
    direct.add_argument("--range", metavar="START:END", help="with --from-take: the frames START .. END - 1")
    direct.add_argument("--only", choices=("lips", "upper", "head"),
                        help="with --from-take: resample only the lips, the upper face or the head")
    direct.add_argument("--hold", action="append", default=[], metavar="POSE:START:END",
                        help="hold mouth_closed, neutral or eyes_open over frames START .. END - 1 (repeatable)")
    direct.add_argument("--key", action="append", default=[], metavar="NAME=VALUE@FRAME",
                        help="an expression weight the take passes through, e.g. mouthSmileLeft=0.8@120")
    direct.add_argument("--eyes-open", action="append", default=[], metavar="START:END",
                        help="no blink over frames START .. END - 1 (--hold eyes_open:START:END)")
    generate.add_argument("--arkit", action="store_true", help="also write each take as ARKit weights: a Live Link "
                                                             "Face CSV and a JSON beside it (as `thunder arkit`)")
    add_scene_arguments(generate)
    add_model_arguments(generate)
    generate.set_defaults(run=cmd_generate)

    demo = commands.add_parser("demo", help="the whole job on the example clip: takes, a .blend, FBX, Alembic, USD "
                                            "and a preview video with sound (needs bpy)")
    demo.add_argument("--out", default="thunder_demo", help="the folder to write into (default thunder_demo; "
                                                            "existing files are never overwritten)")
    demo.add_argument("--takes", type=int, default=2, help="takes (default 2)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the first take (default 0)")
    demo.add_argument("--preview-resolution", type=int, default=512,
                      help="width and height of the preview video in pixels (default 512)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_arguments(demo)
    demo.set_defaults(run=cmd_demo)

    arkit = commands.add_parser("arkit", help="a take as per-frame ARKit weights: a Live Link Face CSV (Unreal) "
                                              "and a JSON")
    arkit.add_argument("take", help="a take file (.npz) of the built-in head")
    arkit.add_argument("--csv", help="the CSV to write (default: <take>.arkit.csv beside the take)")
    arkit.add_argument("--json", help="the JSON to write (default: <take>.arkit.json beside the take)")
    arkit.add_argument("--overwrite", action="store_true", help="replace existing files")
    arkit.set_defaults(run=cmd_arkit)

    serve = commands.add_parser("serve", help="the service for the Blender add-on: JSON lines on stdin/stdout "
                                              "(docs/service_protocol.md)")
    add_model_arguments(serve)
    serve.set_defaults(run=cmd_serve)

    for plugin in sorted(entry_points(group="thunder.commands"), key=lambda e: e.name):
        plugin.load()(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ThunderError as exc:
        print(f"thunder: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("thunder: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
