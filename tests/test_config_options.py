"""The trainers' command-line options come from their dataclass configs (training/config_options.py)."""

import argparse
import dataclasses

import pytest

from backend.cli import build_parser
from training.config_options import add_config_options, config_overrides, plain_fields
from training.m2s.train import M2STrainConfig
from training.thunder.encoder import EncoderTrainConfig
from training.thunder.train import ThunderTrainConfig, add_train_options, named_config


def test_every_plain_field_of_the_thunder_config_is_an_option_of_both_entries():
    """thunder train and torchrun -m training.thunder.train accept every field: a multi-GPU run can name its
    corpus, its encoder and its batch size like a one-GPU run."""
    torchrun = argparse.ArgumentParser()
    add_train_options(torchrun)
    cli = build_parser()
    given = ["--config", "no-m2s", "--corpus", "elsewhere", "--batch-size", "4", "--m2s-trainable",
             "--acceleration-weight", "0.5", "--encoder", "whisper"]
    for args in (torchrun.parse_args(given), cli.parse_args(["train", *given])):
        cfg = named_config(args.config, **config_overrides(args, ThunderTrainConfig))
        assert (cfg.corpus, cfg.batch_size, cfg.m2s_trainable, cfg.acceleration_weight, cfg.encoder, cfg.w_m2s) \
            == ("elsewhere", 4, True, 0.5, "whisper", 0.0)   # w_m2s from the preset, the rest from the options
        assert cfg.denoiser == ThunderTrainConfig().denoiser
    fields = plain_fields(ThunderTrainConfig)
    assert len(fields) > 30 and "denoiser" not in fields
    for name in fields:
        assert getattr(torchrun.parse_args([]), name) is None   # an option, not given


def test_a_field_not_given_keeps_the_configs_value():
    parser = argparse.ArgumentParser()
    add_config_options(parser, M2STrainConfig)
    assert config_overrides(parser.parse_args([]), M2STrainConfig) == {}
    assert config_overrides(parser.parse_args(["--steps", "7", "--units", "kmeans"]), M2STrainConfig) == \
        {"steps": 7, "units": "kmeans"}
    with pytest.raises(SystemExit):
        parser.parse_args(["--steps", "many"])


@pytest.mark.parametrize("command, config", [(["m2s", "train"], M2STrainConfig),
                                             (["encoder", "train"], EncoderTrainConfig)])
def test_the_other_trainers_take_their_fields_too(command, config):
    args = build_parser().parse_args([*command, "--max-clips", "3", "--seed", "5", "--lr", "0.01"])
    cfg = dataclasses.replace(config(), **config_overrides(args, config))
    assert (cfg.max_clips, cfg.seed, cfg.lr) == (3, 5, 0.01)
