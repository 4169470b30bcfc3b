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
