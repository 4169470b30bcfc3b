"""The `thunder` command.

Every subcommand is a function taking the parsed arguments. Packages that backend must not import (training)
add their subcommands through the entry-point group "thunder.commands": each entry point is a function
`register(subcommands)` that adds parsers to the argparse subparsers object. A ThunderError (a problem with the user's input)
is printed as one sentence with exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
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


def cmd_generate(args) -> int:
    """Sample takes for every audio file with one model load. A file that fails is reported in one line
    (`thunder: FILE: sentence`) and the others go on; the exit status is 1 if any failed. Problems with the
    arguments themselves (a frame rate of 0, an unknown emotion) stop everything, before any audio is read."""
    from pathlib import Path

    from backend.frame_rate import check_fps
    from backend.generate import Generator, take_seeds
    from backend.progress import ProgressBar
    from backend.takes import save_take, take_file_name

    # 1. The arguments, then the model (its emotions decide which settings are valid), then the settings.
    fps = check_fps(args.fps)
    seeds = take_seeds(args.takes, args.seed)
    if args.max_seconds < 0:
        raise ThunderError(f"--max-seconds must be 0 (no limit) or more, not {args.max_seconds:g}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    generator = Generator(args.checkpoint, args.head, args.device, args.max_seconds or None)
    changes = {name: getattr(args, name) for name in ("steps", "guidance", "emotion", "intensity")
               if getattr(args, name) is not None}
    settings = generator.settings(changes)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # 2. Each file on its own: its failure is its own.
    failed = 0
    for audio in args.audio:
        paths = [out / take_file_name(Path(audio).stem, k + 1, seed) for k, seed in enumerate(seeds)]
        bar = None

        def show_progress(step):
            nonlocal bar
            if args.quiet:
                return
            bar = bar or ProgressBar(step.total, Path(audio).name)
            bar.update(step.index + 1)

        written, failure = [], None
        try:
            existing = [p for p in paths if p.exists()]
            if existing:
                raise ThunderError(f"{existing[0]} already exists; Thunder does not overwrite take files")
            takes = generator.generate(audio, seeds=seeds, settings=settings, fps=fps, start=args.start,
                                       end=args.end, callback=show_progress)
            written = [save_take(path, take) for path, take in zip(paths, takes)]
        except ThunderError as exc:
            failure = str(exc)
        if bar:
            bar.close()
        if failure:
            print(f"thunder: {audio}: {failure}", file=sys.stderr, flush=True)
            failed += 1
        for path in written:
            print(path, flush=True)
    return 1 if failed else 0


def cmd_serve(args) -> int:
    from backend.service import serve_stdio

    return serve_stdio(checkpoint=args.checkpoint, head=args.head, device=args.device,
                       max_seconds=args.max_seconds or None, threads=args.threads)


def add_model_arguments(parser) -> None:
    """--head, --checkpoint, --device, --max-seconds, --threads: shared by generate and serve."""
    from backend.generate import DEFAULT_MAX_SECONDS

    parser.add_argument("--head", default="builtin", help="'builtin' (default) or a FLAME .pkl/.npz path")
    parser.add_argument("--checkpoint", help="a THUNDER model folder (default: the shipped models/thunder)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto (default) uses a CUDA GPU when there is one")
    parser.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS,
                        help=f"refuse audio longer than this (default {DEFAULT_MAX_SECONDS:g}; 0: no limit)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")


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
    generate.add_argument("--emotion", help="an emotion the model knows (default: the model's, neutral)")
    generate.add_argument("--intensity", type=float, help="emotion intensity 0..1 (default 1 with --emotion)")
    generate.add_argument("--guidance", type=float, help="classifier-free guidance on audio (1: none)")
    generate.add_argument("--steps", type=int, help="sampler steps (default: the model's, 10)")
    generate.add_argument("--fps", type=float, default=25.0, help="the scene's frame rate (default 25)")
    generate.add_argument("--start", type=float, default=0.0, help="use the audio from this second")
    generate.add_argument("--end", type=float, help="use the audio up to this second (default: its end)")
    generate.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_arguments(generate)
    generate.set_defaults(run=cmd_generate)

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
