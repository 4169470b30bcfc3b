"""A take file as per-frame ARKit weights: the Live Link Face app's CSV (for Unreal's Live Link) and a JSON for
scripts, written by the add-on's own rule (thunder_blender/arkit.py, numpy only, one of the add-on modules the backend
shares: tests/test_import_rules.py).

    paths = write_arkit_files("voice.take1.seed0.npz")      # voice.take1.seed0.arkit.csv and .arkit.json beside it

`thunder arkit TAKE.npz [--csv OUT] [--json OUT]` runs it.
"""

from __future__ import annotations

import json
from pathlib import Path

from backend.errors import ThunderError
from backend.files import refuse_existing, write_atomically
from backend.take_file import Take, load_take
from thunder_blender import arkit



class ArkitExportError(ThunderError):
    """A take that cannot be written as ARKit weights; one sentence."""


def take_arkit_frames(take: Take, head=None):
    """(weights (T, 52), angles (T, 9)) of a take of `head` (default the built-in head, whose expression
    components are ARKit-named)."""
    if head is None:
        from backend.head import load_head

        head = load_head("builtin")
    if take.head.get("identity") != head.identity:
        raise ArkitExportError(f"the take was made for the head {take.head.get('identity')}, not {head.identity}: "
                               "ARKit weights come from the built-in head's ARKit-named components")
    try:
        return (arkit.arkit_weights(take.parts(), head.expression_names),
                arkit.head_eye_angles(take.parts()))
    except arkit.ArkitError as error:
        raise ArkitExportError(str(error)) from None


def arkit_paths(take_path: str | Path) -> tuple[Path, Path]:
    """The CSV and JSON written beside a take by default: `<take stem>.arkit.csv` and `.arkit.json`."""
    take_path = Path(take_path)
    stem = take_path.name[:-len(".npz")] if take_path.name.endswith(".npz") else take_path.name
    return take_path.with_name(f"{stem}.arkit.csv"), take_path.with_name(f"{stem}.arkit.json")


def write_arkit_files(take_path: str | Path, csv_path: str | Path | None = None, json_path: str | Path | None = None,
                      overwrite: bool = False, head=None) -> list[Path]:
    """Write the take's ARKit CSV and JSON (defaults: arkit_paths) atomically; existing files are refused
    unless `overwrite`. Returns the files written."""
    take = load_take(take_path)
    default_csv, default_json = arkit_paths(take_path)
    paths = [Path(csv_path or default_csv), Path(json_path or default_json)]
    if not overwrite:
        refuse_existing(paths, "ARKit files", " (pass --overwrite to replace them)", error=ArkitExportError)
    for path in paths:
        if not path.parent.is_dir():
            raise ArkitExportError(f"the folder {path.parent} of {path.name} does not exist")
    weights, angles = take_arkit_frames(take, head)
    start = float(take.audio.get("start", 0.0))
    csv_text = arkit.live_link_csv(weights, angles, take.fps, start)
    described = {"file": Path(take_path).name, "seed": take.seed, "head": take.head, "model": take.model,
                 "audio": take.audio, "settings": take.settings}
    json_text = json.dumps(arkit.arkit_json(weights, angles, take.fps, start, take=described)) + "\n"
    for path, text in zip(paths, (csv_text, json_text)):
        write_atomically(path, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8", newline=""))
    return paths
