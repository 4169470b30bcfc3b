"""`thunder train`, `thunder eval` and `thunder encoder train`: the THUNDER model from the command line."""

from __future__ import annotations

import dataclasses
import itertools
import sys
from pathlib import Path


def cmd_encoder_train(args) -> int:
    from training.config_options import config_overrides
    from training.thunder.encoder import EncoderTrainConfig, train_encoder

    cfg = EncoderTrainConfig(**config_overrides(args, EncoderTrainConfig))
    out = train_encoder(cfg, progress=not args.quiet)
    print(f"wrote {out}")
    return 0


def cmd_train(args) -> int:
    from training.config_options import config_overrides
    from training.thunder.train import ThunderTrainConfig, named_config, train

    cfg = named_config(args.config, **config_overrides(args, ThunderTrainConfig))
    out = train(cfg, resume=args.resume, progress=not args.quiet)
    print(f"wrote {out}")
    return 0


def cmd_eval(args) -> int:
    from backend.head import load_head
    from backend.progress import ProgressBar
    from backend.errors import ThunderError
    from backend.take_sampling import model_settings
    from backend.thunder_model import load_model
    from training.thunder.evaluate import evaluate_corpus, evaluate_real_speech, format_table, write_result

    head = load_head(args.head)
    models = {}
    for spec in args.checkpoint:
        name, _, path = spec.rpartition("=") if "=" in spec else (Path(spec).name, "", spec)
        models[name] = load_model(path, head)
    def values(given, kind, flag):   # a setting given as a list gives one row per value; None: the model's own
        if given is None:
            return [None]
        try:
            return [kind(v) for v in str(given).split(",")]
        except ValueError:
            raise ThunderError(f"{flag} {given}: give a number or a comma-separated list of numbers") from None

    varied = {"steps": values(args.steps, int, "--steps"),
              "lowest_noise": values(args.lowest_noise, float, "--lowest-noise"),
              "guidance": values(args.guidance, float, "--guidance"),
              "guidance_max_noise": values(args.guidance_max_noise, float, "--guidance-max-noise"),
              "guidance_channels": values(args.guidance_channels, str, ""),
              "smoothing": values(args.smoothing, float, "--smoothing"), "blinks": values(args.blinks, str, "")}
    tags = {"steps": "@{:g}", "lowest_noise": "low{:g}", "guidance": "g{:g}", "guidance_max_noise": "n{:g}",
            "guidance_channels": "{}", "smoothing": "s{:g}", "blinks": "{}"}
    rows = {}   # one per model and setting given as a list
    for name, model in models.items():
        for combo in itertools.product(*varied.values()):
            chosen = dict(zip(varied, combo))
            label = " ".join([name] + [tags[k].format(v) for k, v in chosen.items() if len(varied[k]) > 1])
            changes = {k: v for k, v in chosen.items() if v is not None}
            if args.sampler:
                changes["sampler"] = args.sampler
            rows[label] = (model, dataclasses.replace(model_settings(model), **changes))
    settings = next(iter(rows.values()))[1]
    shared = {(s.steps, s.sampler, s.guidance) for _, s in rows.values()}
    sampling = (f"{settings.steps} {settings.sampler} steps" + (f", guidance {settings.guidance:g}"
                                                               if settings.guidance != 1 else "")
                if len(shared) == 1 else "sampler steps and guidance as each row says")
    for model, row_settings in rows.values():
        row_settings.check(model.emotions, model.denoiser.config.max_frames)   # a bad setting: one sentence
    models = rows
    if args.audio:
        from training.real_speech import default_cache_dir
        from training.thunder.evaluate import format_real_speech_table

        cache = None if args.align_cache == "" else Path(args.align_cache or default_cache_dir())
        bars = {}

        def progress(stage, done, total):
            if not args.quiet:
                bar = bars.setdefault(stage, ProgressBar(total, label=stage))
                bar.update(done)
                if done == total:
                    bar.close()

        result = evaluate_real_speech(models, args.audio, head, args.takes, args.seed, settings, args.max_seconds,
                                      cache, baseline=not args.no_baseline, progress=progress)
        title = (f"{result['clips']} clips ({result['audio_seconds'] / 60:.1f} min) of real speech in {args.audio}, "
                 f"{args.takes} takes each, {sampling}; {result['bilabials']} /p b m/ and "
                 f"{result['open_vowels']} open vowels aligned by pocketsphinx")
        table = format_real_speech_table(result, per_clip=args.per_clip)
    else:
        from backend.models import SHIPPED_M2S
        from backend.m2s import load_m2s

        m2s = load_m2s(SHIPPED_M2S if args.m2s is None else args.m2s, head) if args.m2s != "" else None
        bar = ProgressBar(1, label="eval") if not args.quiet else None

        def progress(done, total):
            if bar:
                bar.total = total
                bar.update(done)

        result = evaluate_corpus(models, args.corpus, head, args.split, args.takes, args.seed, settings, m2s,
                                 baseline=not args.no_baseline, max_clips=args.max_clips, progress=progress,
                                 clean_only=args.clean_only)
        if bar:
            bar.close()
        clean = " clean" if args.clean_only else ""
        title = (f"{result['clips']}{clean} {args.split} clips ({result['audio_seconds']} s) of {args.corpus}, "
                 f"{args.takes} takes each, {sampling}")
        table = format_table(result)
    print(title)
    print(table)
    if args.json:
        write_result(result, args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def register_train(subcommands) -> None:
    from training.thunder.train import add_train_options

    p = subcommands.add_parser("train", help="train the THUNDER diffusion model (with M2S supervision)")
    add_train_options(p)
    p.add_argument("--resume", action="store_true", help="continue a killed run in --out exactly")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=cmd_train)


def register_eval(subcommands) -> None:
    p = subcommands.add_parser("eval", help="score THUNDER models: LVE, lip sync, closure, diversity, FDD")
    p.add_argument("checkpoint", nargs="+", help="model folders, optionally named: NAME=FOLDER")
    p.add_argument("--corpus", default="data/corpus")
    p.add_argument("--split", default="test")
    p.add_argument("--audio", help="real-speech mode: a folder of audio files (any depth) with transcripts (NAME.txt "
                   "beside each, or transcripts.tsv), forced-aligned; closure, open vowels, flicker, envelope r, "
                   "upper-face spread and blinks against the phoneme baseline")
    p.add_argument("--max-seconds", type=float, default=600.0, help="--audio: refuse files longer than this")
    p.add_argument("--align-cache", help="--audio: keep alignments in this folder (default ~/.cache/thunder/"
                   "alignments; '' for none)")
    p.add_argument("--per-clip", action="store_true", help="--audio: also print every clip's figures")
    p.add_argument("--takes", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", help="sampler steps (default: each model's own); a list (1,2,4,10) gives one row "
                   "per count")
    p.add_argument("--lowest-noise", help="the noise level of the sampler's last step (default: each model's "
                   "own; one at or below the model's lowest trained level, 0.001, is its whole schedule); a list "
                   "(0.001,0.5) gives one row per level")
    p.add_argument("--smoothing", help="frames of the flicker filter "
                   "(backend/flicker_filter.py; default: each model's own, as generate; 0: the raw samples); a list "
                   "(0,1.5) gives one row per amount")
    p.add_argument("--blinks", help="natural (as `thunder generate`) or model (the model's "
                   "blinks only, backend/blinks.py); natural,model gives one row per mode")
    p.add_argument("--sampler", help="ddim, heun or dpmpp_2m (default: each model's own)")
    p.add_argument("--guidance", help="classifier-free guidance on audio (default: each model's own; 1: none); a "
                   "list (1,2) gives one row per scale")
    p.add_argument("--guidance-max-noise", help="audio guidance only at noise levels (sigma) at or below this "
                   "(default: the model's own; every step); a list (1,6) gives one row per limit")
    p.add_argument("--guidance-channels", help="all or lips: what the audio guidance acts on (default: the "
                   "model's own); all,lips gives one row per choice")
    p.add_argument("--m2s", default=None, help="M2S model for unit accuracy (default: the shipped one; '' to skip)")
    p.add_argument("--head", default="builtin")
    p.add_argument("--max-clips", type=int, default=0)
    p.add_argument("--clean-only", action="store_true", help="--corpus: only the clips left as synthesized (no "
                   "room, noise or codec): the clean synthetic test voices")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--json", help="also write the figures here")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=cmd_eval)


def register_encoder(subcommands) -> None:
    from training.config_options import add_config_options
    from training.thunder.encoder import EncoderTrainConfig

    p = subcommands.add_parser("encoder", help="the offline audio encoder: pretrain it on phones")
    actions = p.add_subparsers(dest="encoder_command", required=True, metavar="ACTION")
    t = actions.add_parser("train", help="pretrain the mel encoder on the corpus's phones")
    add_config_options(t, EncoderTrainConfig)
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(run=cmd_encoder_train)
