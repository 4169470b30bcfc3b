"""`thunder m2s train | eval | listen`: mesh-to-speech from the command line."""

from __future__ import annotations

import json


def cmd_train(args) -> int:
    from training.config_options import config_overrides
    from backend.m2s.model import M2SConfig
    from training.m2s.train import M2STrainConfig, train

    model = M2SConfig.paper(input=args.input) if args.paper else M2SConfig(input=args.input)
    cfg = M2STrainConfig(model=model, **config_overrides(args, M2STrainConfig))
    if args.eval_every is None:
        cfg.eval_every = min(cfg.eval_every, cfg.steps)
    out = train(cfg, resume=args.resume, progress=not args.quiet)
    print(f"wrote {out}")
    return 0


def cmd_eval(args) -> int:
    from training.m2s.evaluate import score_checkpoint

    scores = score_checkpoint(args.checkpoint, args.corpus, args.split, args.head, args.clean_only)
    if args.json:
        print(json.dumps(scores, indent=1))
        return 0
    clean = " with clean audio" if args.clean_only else ""
    print(f"M2S {args.checkpoint} on the {args.split} voices ({scores['clips']} clips{clean})")
    print(f"{'motion':<12} {'unit accuracy':>14} {'mel L1':>8}")
    for name in ("true", "other_clip", "shifted"):
        s = scores[name]
        print(f"{name:<12} {s['unit_accuracy']:>14.3f} {s['mel_l1']:>8.3f}")
    print(f"chance (most frequent unit): {scores['chance_unit_accuracy']:.3f}")
    return 0


def cmd_listen(args) -> int:
    from training.m2s.listen import listen

    for path in listen(args.checkpoint, args.corpus, args.clip, args.out, args.head):
        print(f"wrote {path}")
    return 0


def register(subcommands) -> None:
    from training.config_options import add_config_options
    from training.m2s.train import M2STrainConfig

    m2s = subcommands.add_parser("m2s", help="mesh-to-speech: train it, score it, listen to it")
    actions = m2s.add_subparsers(dest="m2s_command", required=True, metavar="ACTION")

    train = actions.add_parser("train", help="train M2S on a corpus")
    add_config_options(train, M2STrainConfig, {"max_clips": "use only this many training clips (0: all)",
                                               "eval_every": "validate every this many steps (default 500, or "
                                                             "the steps if fewer)"})
    train.add_argument("--input", choices=("mouth", "face", "expression"), default="mouth",
                       help="Mouth2Speech (default), Face2Speech or Exp2Speech")
    train.add_argument("--paper", action="store_true", help="the paper-scale conformer (12 x 512; for GPUs)")
    train.add_argument("--resume", action="store_true", help="continue a killed run in --out exactly")
    train.add_argument("--quiet", action="store_true")
    train.set_defaults(run=cmd_train)

    evaluate = actions.add_parser("eval", help="unit accuracy and mel L1, against other-clip and shifted motion")
    evaluate.add_argument("checkpoint")
    evaluate.add_argument("--corpus", default="data/corpus")
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--head", default="builtin")
    evaluate.add_argument("--clean-only", action="store_true", help="only the clips whose audio is clean")
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(run=cmd_eval)

    listen = actions.add_parser("listen", help="vocode M2S's mel for a clip (WAV) and plot it beside the truth")
    listen.add_argument("checkpoint")
    listen.add_argument("--corpus", default="data/corpus")
    listen.add_argument("--clip", default=None, help="clip id (default: the first test clip)")
    listen.add_argument("--out", default="runs/m2s_listen")
    listen.add_argument("--head", default="builtin")
    listen.set_defaults(run=cmd_listen)
