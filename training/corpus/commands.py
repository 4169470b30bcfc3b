"""`thunder corpus make|stats|validate|convert|render`: the corpus from the command line (added to `thunder`
through the entry-point group "thunder.commands", see backend/cli.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def cmd_corpus_make(args) -> int:
    from training.corpus.make import MakeSettings, make_corpus
    from training.corpus.text import DEFAULT_SENTENCES, default_sentences_file
    from training.corpus.voices import ENGINES

    engines = tuple(e.strip() for e in args.engines.split(",") if e.strip()) if args.engines else ENGINES
    sentences = args.sentences
    if sentences is None:
        sentences = default_sentences_file()
        if sentences is None:
            print(f"thunder: there is no sentences file at {DEFAULT_SENTENCES}, so the corpus speaks generated "
                  "GRID-style and dictionary sentences; give --sentences FILE for natural ones")
    settings = MakeSettings(clips=args.clips, voices=args.voices, seed=args.seed, engines=engines,
                            voice_specs=tuple(args.voice or ()), head=args.head,
                            sentences=str(Path(sentences).resolve()) if sentences else None,
                            augment=not args.clean, clean_fraction=args.clean_fraction)
    summary = make_corpus(args.out, settings, workers=args.workers, progress=not args.quiet)
    return 0 if summary["failed"] == 0 else 1


def cmd_corpus_stats(args) -> int:
    from backend.head import load_head
    from training.corpus.format import open_corpus
    from training.corpus.stats import corpus_stats, format_stats

    corpus = open_corpus(args.corpus, full_check=False)
    head = None if args.no_lips else load_head(corpus.header.get("head", {}).get("spec", "builtin")
                                                if args.head is None else args.head)
    stats = corpus_stats(corpus, head, max_clips=args.max_clips)
    if args.json:
        stats["voice_groups_shared_between_splits"] = {f"{a}/{b}": n for (a, b), n in
                                                       stats["voice_groups_shared_between_splits"].items()}
        print(json.dumps(stats, indent=1))
    else:
        print(format_stats(stats))
    return 0


def cmd_corpus_validate(args) -> int:
    from training.corpus.format import open_corpus

    corpus = open_corpus(args.corpus, full_check=True)
    seconds = sum(m.seconds for m in corpus.metas)
    print(f"{args.corpus}: {len(corpus.metas)} clips valid ({seconds / 3600:.3f} h), "
          f"{len(corpus.skipped)} bad clips reported and skipped")
    return 0 if not corpus.skipped else 1


def cmd_corpus_convert(args) -> int:
    from training.corpus.convert import convert_folder

    summary = convert_folder(args.source, args.out, fps=args.fps, head=args.head, speaker=args.speaker,
                             align_text=not args.no_align, seed=args.seed)
    print(f"converted {summary['converted']} clips ({summary['hours']:.3f} h) into {args.out}; "
          f"{summary['failed']} reported and skipped")
    return 0 if summary["failed"] == 0 else 1


def cmd_corpus_render(args) -> int:
    from backend.blender.video import render_clip_video
    from backend.head import load_head
    from training.corpus.format import open_corpus

    corpus = open_corpus(args.corpus, full_check=False, report=lambda err: None)
    clip = corpus.clip(args.clip)
    head = load_head(args.head or corpus.header.get("head", {}).get("spec", "builtin"))
    result = render_clip_video(head, clip.motion(), clip.audio, args.out, fps=clip.meta.fps,
                               resolution=args.resolution, phones=clip.meta.phones,
                               captions=not args.no_captions, keep_frames=args.keep_frames)
    print(f"wrote {result}")
    return 0


def register_corpus(subcommands) -> None:
    """Add `thunder corpus ...` to the thunder command's subparsers."""
    corpus = subcommands.add_parser("corpus", help="make, check, convert and look at speech-and-motion corpora")
    actions = corpus.add_subparsers(dest="corpus_command", required=True, metavar="ACTION")

    make = actions.add_parser("make", help="make (or resume) the synthetic corpus: voices, alignment, motion")
    make.add_argument("out", help="the corpus folder (created; clips already in it are kept and skipped)")
    make.add_argument("--clips", type=int, default=100, help="how many clips to plan (default 100)")
    make.add_argument("--voices", type=int, default=40, help="how many voice configurations to draw (default 40)")
    make.add_argument("--voice", action="append", metavar="SPEC",
                      help="use this voice configuration instead, engine:voice[+variant][@rate,pitch] "
                           "(repeatable), e.g. espeak-ng:en-us+f3@1.1,+2")
    make.add_argument("--engines", help="comma-separated engines to draw voices from (default: all installed "
                                        "of espeak-ng, flite, festival)")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    make.add_argument("--head", default="builtin", help="the head the motion is made for (default builtin)")
    make.add_argument("--sentences", metavar="FILE",
                      help="sentences to speak, id<TAB>text a line (default: ../shared/text/ljspeech_sentences.tsv "
                           "beside the repository where it exists, else generated sentences)")
    make.add_argument("--clean", action="store_true",
                      help="no recording degradation (room, noise, microphone, codec): clean synthetic audio only")
    make.add_argument("--clean-fraction", type=float, default=0.18,
                      help="share of clips left clean when degrading (default 0.18)")
    make.add_argument("--quiet", action="store_true", help="no progress bar")
    make.set_defaults(run=cmd_corpus_make)

    stats = actions.add_parser("stats", help="print a corpus's hours, voices, phone coverage and lip statistics")
    stats.add_argument("corpus")
    stats.add_argument("--head", help="head to measure the lips on (default: the corpus's own)")
    stats.add_argument("--max-clips", type=int, help="measure the lips on a random subset of this many clips")
    stats.add_argument("--no-lips", action="store_true", help="skip the lip measurements")
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(run=cmd_corpus_stats)

    validate = actions.add_parser("validate", help="check every clip; report the bad ones (exit 1 if any)")
    validate.add_argument("corpus")
    validate.set_defaults(run=cmd_corpus_validate)

    convert = actions.add_parser("convert", help="convert per-clip FLAME .npz files plus audio into a corpus")
    convert.add_argument("source", help="a folder of <clip>.npz with <clip>.wav (and optional <clip>.txt)")
    convert.add_argument("out", help="the corpus folder to write")
    convert.add_argument("--fps", type=float, help="the motion's frame rate, if the .npz files do not say")
    convert.add_argument("--head", default="builtin", help="the FLAME head (.pkl/.npz) the parameters belong to")
    convert.add_argument("--speaker", help="the speaker of all clips (default: an npz 'speaker' entry, or the "
                                           "clip name up to its first '_')")
    convert.add_argument("--no-align", action="store_true", help="do not align transcripts with pocketsphinx")
    convert.add_argument("--seed", type=int, default=0, help="seed of the split by speaker")
    convert.set_defaults(run=cmd_corpus_convert)

    render = actions.add_parser("render", help="render a clip's ground-truth motion with its audio to a video")
    render.add_argument("corpus")
    render.add_argument("clip", help="the clip id, e.g. c00012")
    render.add_argument("out", help="the .mp4 to write (or a folder of PNG frames when ffmpeg is missing)")
    render.add_argument("--head", help="default: the corpus's own head")
    render.add_argument("--resolution", type=int, default=384)
    render.add_argument("--no-captions", action="store_true")
    render.add_argument("--keep-frames", action="store_true", help="keep the PNG frames beside the video")
    render.set_defaults(run=cmd_corpus_render)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: thunder corpus ...")
