"""`thunder train`, `thunder eval` and `thunder encoder train`: the THUNDER model from the command line."""

from __future__ import annotations

import sys
from pathlib import Path


def cmd_encoder_train(args) -> int:
    from training.thunder.encoder import EncoderTrainConfig, train_encoder

    cfg = EncoderTrainConfig(corpus=args.corpus, out=args.out, steps=args.steps, max_clips=args.max_clips,
                             seed=args.seed)
    out = train_encoder(cfg, progress=not args.quiet)
    print(f"wrote {out}")
    return 0


def cmd_train(args) -> int:
    from training.thunder.train import named_config, train

    overrides = {"corpus": args.corpus, "out": args.out, "head": args.head, "seed": args.seed}
    for name in ("steps", "w_m2s", "m2s_max_t", "init", "encoder_init", "max_clips", "batch_size", "threads",
                 "lr", "warmup", "cache", "velocity_weight", "acceleration_weight",
                 "acceleration_max_t", "encoder", "encoder_layer"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    if args.m2s_trainable:
        overrides["m2s_trainable"] = True
    out = train(named_config(args.config, **overrides), resume=args.resume, progress=not args.quiet)
    print(f"wrote {out}")
    return 0


def cmd_eval(args) -> int:
    from backend.head import load_head
    from backend.progress import ProgressBar
    from backend.sampling import SamplingSettings
    from backend.thunder_model import load_model
    from training.thunder.evaluate import evaluate_corpus, evaluate_real_speech, format_table, write_result

    head = load_head(args.head)
    models = {}
    for spec in args.checkpoint:
        name, _, path = spec.rpartition("=") if "=" in spec else (Path(spec).name, "", spec)
        models[name] = load_model(path, head)
    step_counts = [int(k) for k in str(args.steps).split(",")]
    settings = SamplingSettings(steps=step_counts[0], sampler=args.sampler, guidance=args.guidance)
    if len(step_counts) > 1:  # quality against steps: one row per model and step count
        models = {f"{name} @{k}": (model, SamplingSettings(steps=k, sampler=args.sampler, guidance=args.guidance))
                  for name, model in models.items() for k in step_counts}
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
                 f"{args.takes} takes each, {args.steps} {args.sampler} steps; {result['bilabials']} /p b m/ and "
                 f"{result['open_vowels']} open vowels aligned by pocketsphinx")
        table = format_real_speech_table(result, per_clip=args.per_clip)
    else:
        from backend.models import SHIPPED_M2S
        from training.m2s.api import load_m2s

        m2s = load_m2s(SHIPPED_M2S if args.m2s is None else args.m2s, head) if args.m2s != "" else None
        bar = ProgressBar(1, label="eval") if not args.quiet else None

        def progress(done, total):
            if bar:
                bar.total = total
                bar.update(done)

        result = evaluate_corpus(models, args.corpus, head, args.split, args.takes, args.seed, settings, m2s,
                                 baseline=not args.no_baseline, max_clips=args.max_clips, progress=progress)
        if bar:
            bar.close()
        title = (f"{result['clips']} {args.split} clips ({result['audio_seconds']} s) of {args.corpus}, "
                 f"{args.takes} takes each, {args.steps} {args.sampler} steps")
        table = format_table(result)
    print(title)
    print(table)
    if args.json:
        write_result(result, args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def register_train(subcommands) -> None:
    from training.thunder.train import CONFIGS

    p = subcommands.add_parser("train", help="train the THUNDER diffusion model (with M2S supervision)")
    p.add_argument("--config", default="thunder-f", choices=sorted(CONFIGS))
    p.add_argument("--corpus", default="data/corpus")
    p.add_argument("--out", default="runs/thunder")
    p.add_argument("--head", default="builtin")
    p.add_argument("--steps", type=int)
    p.add_argument("--w-m2s", dest="w_m2s", type=float, help="weight of the M2S loss (0: none)")
    p.add_argument("--m2s-max-t", type=float, help="apply the M2S loss below this fraction of the timesteps")
    p.add_argument("--m2s-trainable", action="store_true", help="fine-tune M2S too (default: frozen)")
    p.add_argument("--velocity-weight", type=float, help="weight of the frame-to-frame velocity loss (default 1)")
    p.add_argument("--acceleration-weight", type=float,
                   help="weight of the second-difference loss, against single-frame spikes (default 0)")
    p.add_argument("--acceleration-max-t", type=float,
                   help="apply the second-difference loss below this fraction of the timesteps (default 1)")
    p.add_argument("--init", help="start from this THUNDER checkpoint's weights")
    p.add_argument("--encoder-init", help="the pretrained offline audio encoder (thunder encoder train)")
    p.add_argument("--encoder", help="mel, whisper (tiny.en, offline), whisper:HUB_ID_OR_FOLDER, or a wav2vec 2.0 / "
                                     "HuBERT hub id (default: the config's)")
    p.add_argument("--encoder-layer", type=int, help="Whisper: the layer whose states are the features (0: its default, 3)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--cache", help="keep the prepared training examples in this file and reuse them")
    p.add_argument("--lr", type=float, help="peak learning rate (cosine decay to a tenth of it)")
    p.add_argument("--warmup", type=int, help="warmup steps")
    p.add_argument("--threads", type=int)
    p.add_argument("--max-clips", type=int, help="use only this many training clips")
    p.add_argument("--seed", type=int, default=0)
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
    p.add_argument("--steps", default="10", help="sampler steps; a list (1,2,4,10) gives one row per count")
    p.add_argument("--sampler", default="dpmpp_2m")
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--m2s", default=None, help="M2S model for unit accuracy (default: the shipped one; '' to skip)")
    p.add_argument("--head", default="builtin")
    p.add_argument("--max-clips", type=int, default=0)
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--json", help="also write the figures here")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=cmd_eval)


def register_encoder(subcommands) -> None:
    p = subcommands.add_parser("encoder", help="the offline audio encoder: pretrain it on phones")
    actions = p.add_subparsers(dest="encoder_command", required=True, metavar="ACTION")
    t = actions.add_parser("train", help="pretrain the mel encoder on the corpus's phones")
    t.add_argument("--corpus", default="data/corpus")
    t.add_argument("--out", default="runs/audio_encoder")
    t.add_argument("--steps", type=int, default=2000)
    t.add_argument("--max-clips", type=int, default=0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(run=cmd_encoder_train)
