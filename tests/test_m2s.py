"""Mesh-to-speech: shapes, gradients to the vertices, save/load/resume, a tiny run whose loss drops, the
k-means unit path on a tiny random HuBERT, and clear errors for another head's motion or a bad checkpoint.

The tiny corpus (tests/corpus_fixtures.py) is written with the corpus format and the articulation model (no
speech engines): random phone strings drive the mouth, so units are learnable from motion; the audio is a tone
per phone.
"""

import dataclasses
import json

import numpy as np
import pytest
import torch

from backend.checkpoint import CheckpointError
from backend.m2s import load_m2s
from backend.m2s.inputs import MotionFeatures, MotionInputError
from backend.m2s.model import M2SConfig, MeshToSpeech
from training.m2s.train import M2STrainConfig, train

TINY = M2SConfig(width=32, layers=1, heads=2, ffn=64, conv_kernel=5, dropout=0.0)


def test_shapes_and_gradients_reach_the_vertices(head):
    features = MotionFeatures("mouth", head)
    net = MeshToSpeech(dataclasses.replace(TINY, n_units=40), features.dim)
    expression = torch.zeros(2, 7, head.n_expression, requires_grad=True)
    jaw = torch.full((2, 7, 3), 0.05, requires_grad=True)
    verts = head(expression=expression.reshape(14, -1), jaw=jaw.reshape(14, 3)).reshape(2, 7, -1, 3)
    units, mel = net(features.from_vertices(verts))
    assert units.shape == (2, 14, 40) and mel.shape == (2, 28, 80)
    (units.logsumexp(-1).sum() + mel.sum()).backward()
    assert expression.grad.abs().sum() > 0 and jaw.grad.abs().sum() > 0


def test_features_from_motion_equal_features_from_full_vertices(head):
    features = MotionFeatures("mouth", head)
    rng = np.random.default_rng(2)
    expression = torch.from_numpy(rng.uniform(0, 1, (2, 5, head.n_expression)).astype(np.float32))
    jaw = torch.from_numpy(rng.uniform(0, 0.3, (2, 5, 3)).astype(np.float32))
    full = head(expression=expression.reshape(10, -1), jaw=jaw.reshape(10, 3)).reshape(2, 5, -1, 3)
    torch.testing.assert_close(features.from_motion(expression, jaw), features.from_vertices(full),
                               atol=1e-4, rtol=1e-4)


def test_every_input_kind_has_its_dimension(head):
    assert MotionFeatures("mouth", head).dim == 3 * len(head.vertex_sets["mouth_region"])
    assert MotionFeatures("face", head).dim == 3 * len(head.vertex_sets["face"])
    assert MotionFeatures("expression", head).dim == head.n_expression + 3


def test_tiny_training_run_loss_drops_and_saves_a_loadable_checkpoint(head, tiny_corpus, tmp_path):
    cfg = M2STrainConfig(corpus=str(tiny_corpus), out=str(tmp_path / "run"), model=TINY, steps=250,
                         batch_size=8, window=32, lr=3e-3, warmup=10, eval_every=125, log_every=10)
    out = train(cfg, progress=False)
    log = json.loads((out / "log.json").read_text())
    first, last = log[0]["unit_ce"], log[-1]["unit_ce"]
    assert last < first - 0.5, (first, last)
    assert (out / "training_curves.png").stat().st_size > 1000
    m2s = load_m2s(out, head)
    assert not any(p.requires_grad for p in m2s.parameters())
    verts = head(expression=torch.zeros(5, head.n_expression)).reshape(1, 5, -1, 3).requires_grad_()
    units, mel = m2s(verts)
    assert units.shape == (1, 10, 40) and mel.shape == (1, 20, 80)
    units.sum().backward()
    assert verts.grad.abs().sum() > 0  # frozen M2S still passes gradients to the motion
    trainable = load_m2s(out, head, trainable=True)
    assert all(p.requires_grad for p in trainable.network.parameters())


def test_resume_after_a_kill_continues_exactly(tiny_corpus, tmp_path, monkeypatch):
    import training.m2s.train as train_module

    base = dict(corpus=str(tiny_corpus), model=TINY, batch_size=4, window=16, warmup=2, eval_every=10,
                log_every=5, seed=3, steps=20)
    straight = train(M2STrainConfig(out=str(tmp_path / "straight"), **base), progress=False)

    # The same run, killed right after its step-10 checkpoint, then resumed.
    save_state = train_module.save_training_state

    def save_then_die(folder, model, optimizer, step, log, rng):
        save_state(folder, model, optimizer, step, log, rng)
        if step == 10:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_training_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(M2STrainConfig(out=str(tmp_path / "resumed"), **base), progress=False)
    monkeypatch.setattr(train_module, "save_training_state", save_state)
    resumed = train(M2STrainConfig(out=str(tmp_path / "resumed"), **base), resume=True, progress=False)
    a = json.loads((straight / "log.json").read_text())
    b = json.loads((resumed / "log.json").read_text())
    assert [r["step"] for r in a] == [r["step"] for r in b] == [5, 10, 15, 20]
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], rel=1e-6)


def test_motion_from_another_head_is_refused(head):
    features = MotionFeatures("mouth", head)
    with pytest.raises(MotionInputError, match="from a different head"):
        features.from_vertices(torch.zeros(1, 4, 5023, 3))
    with pytest.raises(MotionInputError, match="from a different head"):
        features.from_motion(torch.zeros(1, 4, 100), torch.zeros(1, 4, 3))


def test_checkpoint_that_does_not_match_its_config_is_refused(head, tiny_corpus, tmp_path):
    cfg = M2STrainConfig(corpus=str(tiny_corpus), out=str(tmp_path / "run"), model=TINY, steps=2,
                         batch_size=2, window=8, eval_every=2)
    out = train(cfg, progress=False)
    config = json.loads((out / "config.json").read_text())
    config["model"]["width"] = 48
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="do not match the checkpoint's config"):
        load_m2s(out, head)
    config["model"]["width"] = TINY.width
    config["head"]["identity"] = "flame:generic_model.pkl:000000000000"
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="trained on the head"):
        load_m2s(out, head)


def test_kmeans_units_from_a_tiny_random_hubert(tiny_corpus, tmp_path):
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    HubertModel(HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
                             num_conv_pos_embedding_groups=2)).save_pretrained(tmp_path / "hubert")
    cfg = M2STrainConfig(corpus=str(tiny_corpus), out=str(tmp_path / "run"), model=TINY, steps=4, batch_size=2,
                         window=8, eval_every=4, units="kmeans", ssl_model=str(tmp_path / "hubert"),
                         ssl_layer=1, kmeans_units=6)
    out = train(cfg, progress=False)
    config = json.loads((out / "config.json").read_text())
    assert config["units"]["source"] == "kmeans" and len(config["units"]["inventory"]) == 6
    assert config["model"]["n_units"] == 6


def test_the_m2s_loss_leaves_out_steps_past_each_clips_end():
    """unit_and_mel_loss: padding (IGNORE) and its mel frames count for nothing, whatever they hold; per clip it
    averages each clip on its own, over the batch it averages every valid step."""
    from backend.audio import MELS_PER_UNIT
    from training.m2s.loss import IGNORE, unit_and_mel_loss

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 5, generator=gen)
    targets = torch.randint(0, 5, (2, 6), generator=gen)
    targets[1, 4:] = IGNORE
    mel, target_mel = torch.randn(2, 6 * MELS_PER_UNIT, 3, generator=gen), torch.randn(2, 12, 3, generator=gen)
    ce, l1 = unit_and_mel_loss(logits, mel, targets, target_mel, per_clip=True)
    changed = mel.clone()
    changed[1, 4 * MELS_PER_UNIT:] += 100.0                       # the padding's mel frames
    again = logits.clone()
    again[1, 4:] += 100.0
    assert torch.allclose(torch.stack(unit_and_mel_loss(again, changed, targets, target_mel, per_clip=True)),
                          torch.stack([ce, l1]))
    clip1 = torch.nn.functional.cross_entropy(logits[1, :4], targets[1, :4])
    assert torch.allclose(ce[1], clip1)
    assert torch.allclose(l1[1], (mel[1, :8] - target_mel[1, :8]).abs().mean())
    batch_ce, batch_l1 = unit_and_mel_loss(logits, mel, targets, target_mel)
    assert torch.allclose(batch_ce, torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten()))
    assert torch.allclose(batch_l1, (ce.new_tensor(0) + (mel[0] - target_mel[0]).abs().sum()
                                     + (mel[1, :8] - target_mel[1, :8]).abs().sum()) / (20 * 3))

    # mel_weight: a clip of weight 0 (degraded audio) adds nothing to the mel L1; units are kept
    weight = torch.tensor([0.0, 1.0])
    ce_w, l1_w = unit_and_mel_loss(logits, mel, targets, target_mel, per_clip=True, mel_weight=weight)
    assert torch.allclose(ce_w, ce) and l1_w[0] == 0 and torch.allclose(l1_w[1], l1[1])
    _, batch_l1_w = unit_and_mel_loss(logits, mel, targets, target_mel, mel_weight=weight)
    assert torch.allclose(batch_l1_w, l1[1])


def test_m2s_eval_can_score_the_clips_with_clean_audio_only(tiny_corpus, tmp_path, capsys):
    """`thunder m2s eval --clean-only` leaves out clips whose audio was degraded (its mel is the clean speech's)."""
    import shutil

    from backend.cli import main as thunder
    from training.corpus.format import open_corpus
    from training.m2s.evaluate import score_checkpoint

    corpus_dir = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, corpus_dir)
    tests = open_corpus(corpus_dir, full_check=False).split("test")
    meta_file = corpus_dir / "clips" / f"{tests[0].id}.json"
    meta = json.loads(meta_file.read_text())
    meta.setdefault("extra", {})["acoustics"] = {"clean": False, "seed": 1}
    meta_file.write_text(json.dumps(meta))
    assert not open_corpus(corpus_dir, full_check=False).split("test")[0].clean_audio
    cfg = M2STrainConfig(corpus=str(corpus_dir), out=str(tmp_path / "m2s"), model=TINY, steps=2, batch_size=2,
                         window=8, eval_every=2, threads=1)
    out = train(cfg, progress=False)
    assert score_checkpoint(out, corpus_dir)["clips"] == len(tests)
    assert score_checkpoint(out, corpus_dir, clean_only=True)["clips"] == len(tests) - 1
    assert thunder(["m2s", "eval", str(out), "--corpus", str(corpus_dir), "--clean-only"]) == 0
    assert f"({len(tests) - 1} clips with clean audio)" in capsys.readouterr().out


def test_m2s_listen_writes_what_inference_hears_in_a_clip(tiny_corpus, tmp_path):
    """`thunder m2s listen` vocodes and plots M2S's mel of a clip's motion, read as inference reads a take
    (backend/m2s/reading.py: the edge poses held), one second of sound per second of motion."""
    import soundfile

    from backend.audio import SAMPLES_PER_FRAME
    from backend.cli import main as thunder
    from backend.head import load_head
    from backend.m2s.reading import predict_mel
    from backend.m2s.vocoder import GriffinLim
    from backend.models import SHIPPED_M2S
    from training.corpus.format import open_corpus
    from training.m2s.data import make_examples, split_motion
    from training.m2s.units import unit_source_from_config

    out = tmp_path / "listen"
    assert thunder(["m2s", "listen", str(SHIPPED_M2S), "--corpus", str(tiny_corpus), "--out", str(out)]) == 0
    corpus = open_corpus(tiny_corpus, full_check=False)
    clip = corpus.clip(corpus.split("test")[0].id)
    names = {p.name for p in out.iterdir()}
    assert names == {f"{clip.id}_m2s.wav", f"{clip.id}_true_mel_griffinlim.wav", f"{clip.id}_mels.png"}
    m2s = load_m2s(SHIPPED_M2S, load_head("builtin"))
    motion = make_examples([clip], unit_source_from_config(m2s.config["units"]))[0].motion
    sound, _ = soundfile.read(out / f"{clip.id}_m2s.wav")
    assert len(sound) == len(motion) * SAMPLES_PER_FRAME
    expression, jaw = split_motion(torch.from_numpy(motion), m2s.features.n_expression)
    heard = GriffinLim()(torch.from_numpy(predict_mel(m2s, expression.numpy(), jaw.numpy()))).numpy()
    assert np.abs(sound - heard).max() < 2 / 32767   # the same sound, to the WAV's 16-bit rounding
