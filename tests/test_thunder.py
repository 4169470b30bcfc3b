"""THUNDER: the diffusion model trained through mesh-to-speech, end to end on a tiny corpus and tiny models.

A tiny run whose loss drops and a short THUNDER-F run that saves a loadable, sampleable model; the M2S loss's
gradient reaching the denoiser (and not the frozen M2S); seeds that make takes reproducible; two DDP
processes computing exactly one process's gradient; windows over long audio that continue each other; the
wav2vec 2.0 encoder path on a tiny random model; clear errors for bad input; and `thunder eval`.

Everything is tiny (a 16-wide random mel encoder, a 32-wide one-layer denoiser, a 4-step M2S) and runs on one
CPU thread.
"""

import dataclasses
import json
import math
import os

import numpy as np
import pytest
import torch

from backend.audio import SAMPLES_PER_FRAME, write_wav
from backend.audio_encoders import MelEncoder, SpeechModelEncoder, build_encoder, encode_long
from backend.audio_io import AudioFileError
from backend.checkpoint import CheckpointError
from backend.cli import main as thunder
from backend.diffusion.network import DenoiserConfig, MotionDenoiser
from backend.errors import ThunderError
from backend.head import load_head
from backend.motion import pack_motion
from backend.directing import channel_groups
from backend.take_sampling import SamplingError, SamplingSettings, sample_takes, sampling_sigmas, window_starts
from backend.thunder_model import ThunderModel, load_model
from training.corpus.format import open_corpus
from backend.m2s import load_m2s
from backend.m2s.model import M2SConfig
from training.m2s.train import M2STrainConfig
from training.m2s.train import train as train_m2s
from training.m2s.units import PhoneUnits
from training.thunder.data import make_examples, slice_batch
from training.thunder.evaluate import evaluate_real_speech
from training.thunder.train import (ThunderLoss, _slice_draws, draw_batch, lip_closure_loss, load_teacher,
                                   named_config, train)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_M2S = M2SConfig(width=32, layers=1, heads=2, ffn=64, conv_kernel=5, dropout=0.0)
TINY_DENOISER = DenoiserConfig(width=32, layers=1, heads=2, ffn=64, dropout=0.0)
FEW_STEPS = SamplingSettings(steps=3, window=24, context=4)


def tiny_config(name, corpus, out, m2s, **overrides):
    base = dict(corpus=str(corpus), out=str(out), m2s=str(m2s), encoder_init="", encoder_width=16,
                denoiser=TINY_DENOISER, batch_size=4, window=24, context=4, diffusion_steps=50, steps=6,
                eval_every=6, eval_clips=2, log_every=2, warmup=2, threads=1)
    return named_config(name, **{**base, **overrides})


@pytest.fixture(scope="module")
def tiny_m2s(tiny_corpus, tmp_path_factory):
    cfg = M2STrainConfig(corpus=str(tiny_corpus), out=str(tmp_path_factory.mktemp("m2s") / "m2s"), model=TINY_M2S,
                         steps=4, batch_size=4, window=16, warmup=2, eval_every=4, log_every=2, threads=1)
    return train_m2s(cfg, progress=False)


@pytest.fixture(scope="module")
def thunder_f_cfg(tiny_corpus, tiny_m2s, tmp_path_factory):
    return tiny_config("thunder-f", tiny_corpus, tmp_path_factory.mktemp("thunder") / "thunder-f", tiny_m2s)


@pytest.fixture(scope="module")
def thunder_f(thunder_f_cfg):
    """A short THUNDER-F run (M2S loss on): the model folder."""
    return train(thunder_f_cfg, progress=False)


@pytest.fixture(scope="module")
def training_inputs(thunder_f, thunder_f_cfg, tiny_corpus, head):
    """One global training batch of the tiny corpus (frozen-encoder features) and its draws (t, noise, drops)."""
    model = load_model(thunder_f, head)
    corpus = open_corpus(tiny_corpus, full_check=False)
    clips = [corpus.clip(m.id) for m in corpus.split("train")]
    examples = make_examples(clips, model.stats, PhoneUnits(), list(model.emotions), model.encoder)
    batch, t, noise, drops = draw_batch(examples, thunder_f_cfg, np.random.default_rng(7),
                                        model.denoiser.config.motion_dim)
    return batch, t, noise, drops


def trainable_model(folder, head):
    model = load_model(folder, head)
    model.denoiser.requires_grad_(True).train()
    return model


def test_clips_have_emotions_and_moving_neck_and_eyes(tiny_corpus):
    corpus = open_corpus(tiny_corpus, full_check=False)
    assert {m.emotion["label"] for m in corpus.metas} == {"neutral", "happy", "sad"}
    assert len({m.emotion["intensity"] for m in corpus.metas}) > 3
    clip = corpus.clip(corpus.metas[0].id)
    assert clip.neck.std(0).min() > 1e-3 and clip.eyes.std(0).min() > 1e-3


# --------------------------------------------------------------------------------------------- 1. training
def test_tiny_no_m2s_run_loss_drops(tiny_corpus, tiny_m2s, tmp_path):
    cfg = tiny_config("no-m2s", tiny_corpus, tmp_path / "no-m2s", tiny_m2s, steps=150, eval_every=150,
                      log_every=5, lr=3e-3, warmup=10)
    out = train(cfg, progress=False)
    log = json.loads((out / "log.json").read_text())
    assert len(log) == 30 and not any("m2s_unit_ce" in r for r in log)
    first = np.mean([r["x0"] for r in log[:4]])
    last = np.mean([r["x0"] for r in log[-4:]])
    assert last < 0.7 * first, (first, last)


@pytest.mark.parametrize("option, part, weight", [("acceleration_weight", "acceleration", 2.5),
                                                  ("lip_gap_weight", "lip_gap", 0.05),
                                                  ("lip_closure_weight", "lip_closure", 0.05)])
def test_extra_loss_terms_are_logged_and_weighted_into_the_loss(tiny_corpus, tiny_m2s, tmp_path, option, part,
                                                                 weight):
    cfg = tiny_config("no-m2s", tiny_corpus, tmp_path / part, tiny_m2s, steps=4, eval_every=4, log_every=1,
                      **{option: weight})
    log = json.loads((train(cfg, progress=False) / "log.json").read_text())
    # a batch may hold no shut lips for the closure term; most hold some
    assert sum(r[part] > 0 for r in log) >= len(log) // 2, log
    for r in log:
        assert math.isfinite(r[part]) and r[part] >= 0
        total = r["x0"] + cfg.velocity_weight * r["velocity"] + weight * r[part]
        assert abs(r["loss"] - total) < 1e-4 * max(1.0, total), r


def test_the_closure_loss_counts_only_lips_opened_past_a_shut_reference():
    gap = torch.tensor([[0.2, 0.5, 6.0, 0.8, 0.0]])          # mm: shut, shut, open, shut, padding
    valid = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    assert lip_closure_loss(gap, gap, valid, 1.0).item() == 0.0
    tighter = torch.tensor([[0.0, 0.1, 2.0, 0.3, 9.0]])      # shut tighter, the open vowel less open, padding
    assert lip_closure_loss(tighter, gap, valid, 1.0).item() == 0.0
    opened = torch.tensor([[2.2, 0.5, 12.0, 1.8, 9.0]])      # 2 mm and 1 mm open past the reference
    assert torch.allclose(lip_closure_loss(opened, gap, valid, 1.0), torch.tensor([(4.0 + 0.0 + 1.0) / 3]))
    assert lip_closure_loss(opened, gap + 5.0, valid, 1.0).item() == 0.0   # no shut frame: nothing to judge


def test_the_m2s_mel_term_skips_clips_with_degraded_audio(thunder_f, thunder_f_cfg, tiny_m2s, training_inputs,
                                                           head):
    """With degraded_mel_weight 0 the M2S mel term is judged on clean clips only: a degraded clip's target mel
    changes nothing, a clean clip's does."""
    batch, t, noise, drops = training_inputs
    t = torch.zeros_like(t)                              # every item gets the M2S term
    model, m2s = trainable_model(thunder_f, head), load_m2s(tiny_m2s, head)
    objective = ThunderLoss(model, m2s, dataclasses.replace(thunder_f_cfg, w_m2s=1.0, degraded_mel_weight=0.0))
    clean = torch.zeros(len(t), dtype=torch.bool)
    clean[0] = True

    def loss(mel):
        return objective({**batch, "clean_audio": clean, "mel": mel}, t, noise, drops)[0].item()

    base = loss(batch["mel"])
    degraded_changed, clean_changed = batch["mel"].clone(), batch["mel"].clone()
    degraded_changed[1:] += 3.0
    clean_changed[0] += 3.0
    assert abs(loss(degraded_changed) - base) < 1e-6
    assert abs(loss(clean_changed) - base) > 0.1


def test_guidance_distillation_targets_the_teachers_guided_prediction(thunder_f, thunder_f_cfg, training_inputs,
                                                                     head, tmp_path):
    """A student that is its own teacher: with no guidance (scale 1) it already predicts the target, so the
    term is 0; with guidance 2 the term is the squared distance to the guided prediction, items whose audio
    was dropped add nothing, and its gradient reaches the denoiser."""
    batch, t, noise, drops = training_inputs
    model, teacher = trainable_model(thunder_f, head), load_model(thunder_f, head)
    model.denoiser.eval()   # no dropout: the student's prediction equals the teacher's

    def distill(guidance, dropped):
        cfg = dataclasses.replace(thunder_f_cfg, w_m2s=0.0, distill_weight=1.0, distill_guidance=guidance)
        loss, parts = ThunderLoss(model, None, cfg, head, teacher)(batch, t, noise, {**drops, "audio": dropped})
        return loss, parts["distill"]

    heard = torch.zeros_like(drops["audio"])
    assert distill(1.0, heard)[1].item() < 1e-10
    loss, term = distill(2.0, heard)
    assert term.item() > 1e-4
    assert distill(2.0, torch.ones_like(heard))[1].item() == 0.0
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.denoiser.parameters())
    assert not any(p.requires_grad for p in teacher.parameters())


def test_a_teacher_with_other_motion_statistics_is_refused(thunder_f, thunder_f_cfg, head, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(thunder_f, other)
    config = json.loads((other / "config.json").read_text())
    config["motion_stats"]["mean"] = [v + 1.0 for v in config["motion_stats"]["mean"]]
    (other / "config.json").write_text(json.dumps(config))
    student = load_model(thunder_f, head)
    cfg = dataclasses.replace(thunder_f_cfg, distill_weight=1.0)
    assert load_teacher(dataclasses.replace(cfg, distill_from=str(thunder_f)), student, head, "cpu") is not None
    with pytest.raises(ThunderError, match="other motion statistics"):
        load_teacher(dataclasses.replace(cfg, distill_from=str(other)), student, head, "cpu")


def test_the_lip_gap_loss_measures_the_metrics_lip_distance_with_a_gradient(tiny_corpus, head):
    from backend.lip_gap import lip_centres, lip_gap
    from training.metrics import lip_distance

    # the loss's gap is the metrics' lip distance, batched and differentiable
    corpus = open_corpus(tiny_corpus, full_check=False)
    clip = corpus.clip(corpus.split("test")[0].id)
    motion = torch.from_numpy(pack_motion(**clip.motion())).float().requires_grad_(True)
    gap = lip_gap(lip_centres(head), torch.stack([motion, motion]), head.n_expression)
    vertices = head(**{k: torch.from_numpy(v).float() for k, v in clip.motion().items() if k != "neck"})
    np.testing.assert_allclose(gap[1].detach().numpy(), lip_distance(vertices, head.landmarks), atol=1e-6)
    gap.sum().backward()
    assert motion.grad.abs().sum() > 0


def test_thunder_f_run_saves_a_model_that_loads_and_samples(thunder_f, tiny_corpus, head):
    for name in ("config.json", "model.safetensors", "log.json"):
        assert (thunder_f / name).is_file(), name
    log = json.loads((thunder_f / "log.json").read_text())
    assert [r["step"] for r in log] == [2, 4, 6]
    assert all(math.isfinite(r["m2s_unit_ce"]) and math.isfinite(r["m2s_mel_l1"]) for r in log)
    assert 0.0 <= log[-1]["val"]["unit_accuracy"] <= 1.0
    assert (thunder_f / "training_curves.png").stat().st_size > 1000

    model = load_model(thunder_f, head)
    assert isinstance(model, ThunderModel) and model.emotions == ("neutral", "happy", "sad")
    assert not any(p.requires_grad for p in model.parameters())
    corpus = open_corpus(tiny_corpus, full_check=False)
    clip = corpus.clip(corpus.split("test")[0].id)
    features = model.encode(clip.audio)
    assert features.shape == (clip.meta.n_frames, 16)
    takes = sample_takes(model, features, [0, 1], FEW_STEPS)
    assert takes.shape == (2, clip.meta.n_frames, head.n_expression + 12)
    assert torch.isfinite(takes).all()


# ----------------------------------------------------------------------------------- 2. M2S gradient path
def test_m2s_loss_gradient_reaches_the_denoiser_not_the_frozen_m2s(thunder_f, thunder_f_cfg, tiny_m2s,
                                                                   training_inputs, head):
    batch, t, noise, drops = training_inputs
    model = trainable_model(thunder_f, head)
    m2s = load_m2s(tiny_m2s, head)  # frozen, as THUNDER-F trains it
    assert not any(p.requires_grad for p in m2s.parameters())

    def gradients(loss):
        model.zero_grad(set_to_none=True)
        loss.backward()
        return {n: p.grad.clone() for n, p in model.denoiser.named_parameters()}

    without, _ = ThunderLoss(model, m2s, dataclasses.replace(thunder_f_cfg, w_m2s=0.0))(batch, t, noise, drops)
    g0 = gradients(without)
    with_m2s, parts = ThunderLoss(model, m2s, dataclasses.replace(thunder_f_cfg, w_m2s=1.0))(batch, t, noise, drops)
    g1 = gradients(with_m2s)
    assert "m2s_unit_ce" in parts and "m2s_mel_l1" in parts
    assert any(not torch.equal(g0[n], g1[n]) for n in g0)

    # The M2S term alone (every item's t is below m2s_max_t * T, so the batch mean of the M2S loss is
    # exactly ce.mean() + mel_l1.mean()): its gradient reaches the out layer and accounts for g1 - g0.
    _, parts = ThunderLoss(model, m2s, thunder_f_cfg)(batch, t, noise, drops)
    g_m2s = gradients(parts["m2s_unit_ce"] + parts["m2s_mel_l1"])
    assert g_m2s["out.weight"].abs().sum() > 0 and g_m2s["out.bias"].abs().sum() > 0
    assert g_m2s["blocks.0.attn.in_proj_weight"].abs().sum() > 0  # and further back, into the blocks
    for name in ("out.weight", "out.bias", "blocks.0.ffn.0.weight"):
        scale = g_m2s[name].abs().max()
        torch.testing.assert_close(g1[name] - g0[name], g_m2s[name], atol=1e-4 * scale, rtol=1e-3)
    assert all(p.grad is None for p in m2s.parameters())
    assert all(p.grad is None for p in model.encoder.parameters())  # THUNDER-F keeps the encoder frozen


# ------------------------------------------------------------------------------------------- 3. seeds
def test_seeds_make_takes_reproducible_and_independent_of_the_batch(thunder_f, tiny_corpus, head):
    model = load_model(thunder_f, head)
    corpus = open_corpus(tiny_corpus, full_check=False)
    features = model.encode(corpus.clip(corpus.split("test")[1].id).audio)
    a = sample_takes(model, features, [1, 2], FEW_STEPS)
    b = sample_takes(model, features, [1, 2], FEW_STEPS)
    assert torch.equal(a, b)
    swapped = sample_takes(model, features, [2, 1], FEW_STEPS)
    assert torch.equal(a[0], swapped[1]) and torch.equal(a[1], swapped[0])
    alone = sample_takes(model, features, [1], FEW_STEPS)
    torch.testing.assert_close(alone[0], a[0], atol=1e-5, rtol=1e-5)
    assert (a[0] - a[1]).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------- 4. DDP
def _ddp_worker(rank, world, init_file, model_dir, m2s_dir, cfg, batch_file, out_dir, train_cfg):
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world))
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        head = load_head("builtin")
        model = trainable_model(model_dir, head)
        m2s = load_m2s(m2s_dir, head)
        batch, t, noise, drops = torch.load(batch_file)
        batch, (t, noise, drops) = slice_batch(batch, rank, world), _slice_draws(t, noise, drops, rank, world)
        objective = torch.nn.parallel.DistributedDataParallel(ThunderLoss(model, m2s, cfg))
        loss, _ = objective(batch, t, noise, drops)
        loss.backward()
        torch.save({n: p.grad for n, p in model.denoiser.named_parameters()}, f"{out_dir}/grads{rank}.pt")
        train(train_cfg, progress=False)  # the whole training loop, as torchrun would run it
    finally:
        torch.distributed.destroy_process_group()


def test_two_ddp_processes_compute_the_gradient_of_one(thunder_f, thunder_f_cfg, tiny_m2s, training_inputs,
                                                       head, tmp_path):
    assert thunder_f_cfg.denoiser.dropout == 0.0 and thunder_f_cfg.w_m2s == 1.0
    torch.save(training_inputs, tmp_path / "batch.pt")
    run = dataclasses.replace(thunder_f_cfg, steps=3, eval_every=3, log_every=1)
    torch.multiprocessing.spawn(_ddp_worker, nprocs=2, join=True,
                                args=(2, str(tmp_path / "rendezvous"), str(thunder_f), str(tiny_m2s), thunder_f_cfg,
                                      str(tmp_path / "batch.pt"), str(tmp_path),
                                      dataclasses.replace(run, out=str(tmp_path / "ddp"))))
    ranks = [torch.load(tmp_path / f"grads{r}.pt") for r in range(2)]

    model = trainable_model(thunder_f, head)
    loss, parts = ThunderLoss(model, load_m2s(tiny_m2s, head), thunder_f_cfg)(*training_inputs)
    assert "m2s_unit_ce" in parts
    loss.backward()
    single = {n: p.grad for n, p in model.denoiser.named_parameters()}
    scale = max(g.abs().max() for g in single.values())
    assert scale > 0
    for name, grad in single.items():
        assert torch.equal(ranks[0][name], ranks[1][name]), name  # all-reduced: the same on every rank
        torch.testing.assert_close(ranks[0][name], grad, atol=1e-6 * scale, rtol=1e-4, msg=name)

    # The whole loop under two processes trains the same model as one process.
    alone = train(dataclasses.replace(run, out=str(tmp_path / "alone")), progress=False)
    a, b = load_model(tmp_path / "ddp", head), load_model(alone, head)
    ours, theirs = a.denoiser.state_dict(), b.denoiser.state_dict()
    # Both trained: the denoiser left its initial weights (remade from the seed; the frozen encoder, made
    # just before it, shows the remake is right).
    torch.manual_seed(run.seed)
    initial_encoder, initial = MelEncoder(run.encoder_width), MotionDenoiser(a.denoiser.config)
    assert all(torch.equal(v, a.encoder.state_dict()[k]) for k, v in initial_encoder.state_dict().items())
    assert all(not torch.equal(v, ours[k]) for k, v in initial.state_dict().items())
    assert [r["step"] for r in json.loads((tmp_path / "ddp" / "log.json").read_text())] == [1, 2, 3]
    width = thunder_f_cfg.denoiser.width
    for name, x in ours.items():
        y = theirs[name]
        if name.endswith("attn.in_proj_bias"):
            # The key bias cannot change attention (softmax ignores a shift per query), so its gradient is
            # zero up to rounding, and Adam turns rounding noise into steps of up to lr: compare the rest.
            key = slice(width, 2 * width)
            assert (x[key] - y[key]).abs().max() <= run.lr
            x, y = torch.cat([x[:width], x[2 * width:]]), torch.cat([y[:width], y[2 * width:]])
        torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-5, msg=name)


# ------------------------------------------------------------------------------------ 5. long audio
@pytest.mark.parametrize("n_frames,window,context", [(100, 24, 4), (24, 24, 4), (25, 24, 4), (7, 24, 4),
                                                     (1000, 100, 10), (301, 100, 0)])
def test_windows_cover_every_frame_with_the_overlap(n_frames, window, context):
    starts = window_starts(n_frames, window, context)
    assert starts[0] == 0 and starts[-1] + window >= n_frames
    assert all(b - a == window - context for a, b in zip(starts, starts[1:]))
    covered = np.zeros(n_frames, int)
    for s in starts:
        covered[s:s + window] += 1
    assert covered.min() == 1
    assert len(starts) == 1 or starts[-2] + window < n_frames  # no window is wasted


class RecordingDenoiser(torch.nn.Module):
    """The real denoiser, remembering the known motion and mask each call gets."""

    def __init__(self, denoiser):
        super().__init__()
        self.inner, self.calls = denoiser, []

    @property
    def config(self):
        return self.inner.config

    @property
    def no_emotion(self):
        return self.inner.no_emotion

    def forward(self, x_t, t, audio, **kw):
        self.calls.append((x_t.shape[1], kw["known"].clone(), kw["known_mask"].clone()))
        return self.inner(x_t, t, audio, **kw)


def test_long_audio_windows_continue_the_previous_window(thunder_f, head):
    model = load_model(thunder_f, head)
    recorder = RecordingDenoiser(model.denoiser)
    spy = ThunderModel(model.encoder, recorder, model.stats, model.config)
    features = torch.randn(100, 16, generator=torch.Generator().manual_seed(0))
    settings = SamplingSettings(steps=2, sampler="ddim", window=24, context=4)
    takes = sample_takes(spy, features, [3, 4], settings)
    assert takes.shape == (2, 100, head.n_expression + 12) and torch.isfinite(takes).all()
    out = model.stats.normalize(takes)
    starts = window_starts(100, 24, 4)
    assert starts == [0, 20, 40, 60, 80]
    assert len(recorder.calls) == len(starts) * settings.steps
    for k, (length, known, mask) in enumerate(recorder.calls):
        w = k // settings.steps
        start = starts[w]
        assert length == min(24, 100 - start)
        if w == 0:
            assert not mask.any()
            continue
        assert mask[:, :4].all() and not mask[:, 4:].any()
        # The known frames are the last `context` frames of the motion made so far: sampling only the audio
        # up to the previous window's end makes exactly that motion (same windows, same seeds).
        previous_end = starts[w - 1] + 24
        so_far = model.stats.normalize(sample_takes(model, features[:previous_end], [3, 4], settings))
        torch.testing.assert_close(known[:, :4], so_far[:, previous_end - 4:], atol=1e-5, rtol=1e-5)
        assert not known[:, 4:].any()
        # In the final take those frames fade from the old window's motion to the new one's: the first is
        # still close to the old, and the new window's own frames follow without a jump.
        first_step = (out[:, start] - known[:, 0]).abs().max()
        assert first_step <= (out[:, start + 4] - known[:, 0]).abs().max() + 1e-6


def test_long_audio_is_encoded_in_chunks_exactly():
    torch.manual_seed(0)
    encoder = MelEncoder(16).eval()
    wave = np.random.default_rng(0).uniform(-0.3, 0.3, 70 * 16000 + 123).astype(np.float32)
    chunked = encode_long(encoder, wave, chunk_frames=200)
    with torch.no_grad():
        whole = encoder(torch.from_numpy(wave)[None])[0]
    assert chunked.shape == whole.shape == (math.ceil(len(wave) / SAMPLES_PER_FRAME), 16)
    torch.testing.assert_close(chunked, whole, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------------- 6. wav2vec 2.0
def test_wav2vec2_encoder_features_reload_and_train(tiny_corpus, tiny_m2s, head, tmp_path):
    from safetensors.torch import load_file
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    folder = tmp_path / "wav2vec2"
    Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                 conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
                                 num_conv_pos_embedding_groups=2)).save_pretrained(folder)
    encoder = SpeechModelEncoder.pretrained(str(folder)).eval()
    wave = torch.from_numpy(np.random.default_rng(1).uniform(-0.5, 0.5, (2, 16000 + 123)).astype(np.float32))
    with torch.no_grad():
        features = encoder(wave)
    assert features.shape == (2, math.ceil(wave.shape[1] / 640), 32) and torch.isfinite(features).all()
    rebuilt = build_encoder(json.loads(json.dumps(encoder.config)))  # as a checkpoint's config.json stores it
    rebuilt.load_state_dict(encoder.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(wave), features)

    cfg = tiny_config("thunder-t", tiny_corpus, tmp_path / "thunder-t", tiny_m2s, encoder=str(folder), steps=2,
                      eval_every=2, log_every=1)
    out = train(cfg, progress=False)
    log = json.loads((out / "log.json").read_text())
    assert len(log) == 2 and all(math.isfinite(r["m2s_unit_ce"]) for r in log)
    model = load_model(out, head)
    assert isinstance(model.encoder, SpeechModelEncoder) and model.config["encoder"]["kind"] == "speech_model"
    # THUNDER-T fine-tuned the encoder: the saved weights moved away from the pretrained ones.
    pretrained = load_file(str(folder / "model.safetensors"))
    loaded = {k: v for k, v in model.encoder.model.state_dict().items() if k in pretrained}
    assert loaded and any(not torch.equal(loaded[k], pretrained[k]) for k in loaded)
    features = model.encode(wave[0].numpy())
    assert features.shape == (26, 32) and torch.isfinite(features).all()
    assert torch.isfinite(sample_takes(model, features, [0], FEW_STEPS)).all()


def test_whisper_encoder_trains_frozen_from_cached_features_and_fine_tuned(tiny_corpus, tiny_m2s, head, tmp_path,
                                                                          monkeypatch):
    from safetensors.torch import load_file

    import training.thunder.train as train_module
    from backend.whisper_encoder import WhisperSpeechEncoder
    from test_whisper_encoder import random_ct2_whisper, write_ct2

    write_ct2(tmp_path / "model.bin", random_ct2_whisper())
    source = f"whisper:{tmp_path / 'model.bin'}"
    wave = np.random.default_rng(1).uniform(-0.5, 0.5, 16000 + 123).astype(np.float32)
    # THUNDER-F: the features are computed once into the cache; a second run reads them instead.
    cfg = tiny_config("whisper-f", tiny_corpus, tmp_path / "whisper-f", tiny_m2s, encoder=source, steps=2,
                      eval_every=2, log_every=1, cache=str(tmp_path / "features.cache"))
    out = train(cfg, progress=False)
    assert (tmp_path / "features.cache").exists()
    monkeypatch.setattr(train_module, "make_examples", lambda *a, **k: pytest.fail("the cache was not used"))
    train(dataclasses.replace(cfg, out=str(tmp_path / "whisper-f-again")), progress=False)
    assert not any(k.startswith("encoder.") for k in load_file(str(out / "model.safetensors")))
    model = load_model(out, head)
    assert isinstance(model.encoder, WhisperSpeechEncoder) and not model.config["encoder"]["store_weights"]
    features = model.encode(wave)
    assert features.shape == (26, 32) and torch.isfinite(sample_takes(model, features, [0], FEW_STEPS)).all()
    monkeypatch.undo()
    # THUNDER-T, from the THUNDER-F model: the encoder trains and its weights go into the checkpoint.
    cfg = tiny_config("whisper-t", tiny_corpus, tmp_path / "whisper-t", tiny_m2s, encoder=source, steps=2,
                      eval_every=2, log_every=1, init=str(out))
    out = train(cfg, progress=False)
    pretrained = WhisperSpeechEncoder.pretrained(str(tmp_path / "model.bin")).whisper.state_dict()
    saved = {k.removeprefix("encoder.whisper."): v for k, v in load_file(str(out / "model.safetensors")).items()
             if k.startswith("encoder.whisper.")}
    assert set(saved) == set(pretrained)
    assert any(not torch.allclose(saved[k], pretrained[k]) for k in saved)
    # Whisper's sinusoidal position table stays fixed, as in Whisper's own training.
    torch.testing.assert_close(saved["embed_positions.weight"], pretrained["embed_positions.weight"])
    model = load_model(out, head)
    assert torch.isfinite(sample_takes(model, model.encode(wave), [0], FEW_STEPS)).all()


# ------------------------------------------------------------------------------------------ 7. errors
def test_a_model_for_another_head_is_refused(thunder_f, tmp_path):
    from flame_fixtures import make_synthetic_flame, write_flame_pickle

    other = load_head(str(write_flame_pickle(tmp_path / "generic_model.pkl", make_synthetic_flame())))
    with pytest.raises(CheckpointError, match="head"):
        load_model(thunder_f, other)


def test_guidance_in_a_noise_interval_guides_only_the_low_noise_steps(thunder_f, head):
    """guidance_max_noise: the steps above the limit make one network call on the takes alone, those at or
    below it the guided pair (twice the batch); no step below the limit gives the unguided takes, a limit
    above every step the takes guided everywhere, and one between them takes unlike either."""
    model = load_model(thunder_f, head)
    recorder = RecordingDenoiser(model.denoiser)
    spy = ThunderModel(model.encoder, recorder, model.stats, model.config)
    features = torch.randn(20, 16, generator=torch.Generator().manual_seed(0))
    settings = SamplingSettings(steps=4, sampler="ddim", window=24, guidance=3.0)
    sigmas = sampling_sigmas(model.train_sigmas, settings)
    between = float(sigmas[1:3].mean())   # steps 0 and 1 above it, steps 2 and 3 at or below
    takes = {limit: sample_takes(spy, features, [3, 4], dataclasses.replace(settings, guidance_max_noise=limit))
             for limit in (0.0, between, 1e9)}
    batches = [known.shape[0] for _, known, _ in recorder.calls]
    assert batches == [2, 2, 2, 2] + [2, 2, 4, 4] + [4, 4, 4, 4]
    unguided = sample_takes(model, features, [3, 4], dataclasses.replace(settings, guidance=1.0))
    guided = sample_takes(model, features, [3, 4], settings)
    assert torch.equal(takes[0.0], unguided) and torch.equal(takes[1e9], guided)
    assert not torch.allclose(takes[between], unguided) and not torch.allclose(takes[between], guided)
    with pytest.raises(SamplingError, match="guidance noise limit -1 must be 0 or more"):
        sample_takes(model, features, [0], dataclasses.replace(settings, guidance_max_noise=-1.0))


def test_the_lowest_noise_level_is_where_the_sampler_stops(thunder_f, head):
    """lowest_noise: the last step starts from that noise level and its x0 is the take. With Karras spacing,
    8 steps down to the 10-step schedule's eighth level are those first 8 levels exactly (the spacing is even
    in sigma^(1/7)); DDIM's timestep spacing keeps only training levels at or above it; a take sampled so is
    the plain sampler's x0 at that level; a level outside 0..10 is refused in one sentence."""
    model = load_model(thunder_f, head)
    ten = sampling_sigmas(model.train_sigmas, SamplingSettings(steps=10))
    eight = sampling_sigmas(model.train_sigmas, SamplingSettings(steps=8, lowest_noise=float(ten[7])))
    torch.testing.assert_close(eight[:-1], ten[:8])
    assert eight[-1] == 0 and len(eight) == 9
    spaced = sampling_sigmas(model.train_sigmas, SamplingSettings(steps=6, spacing="timesteps", lowest_noise=0.5))
    assert spaced[-1] == 0 and spaced[:-1].min() >= 0.5 and len(spaced) == 7
    assert float(sampling_sigmas(model.train_sigmas, SamplingSettings(steps=4))[-2]) == pytest.approx(
        float(model.train_sigmas[0]), rel=1e-5)   # None: the schedule's lowest, as before
    below = sampling_sigmas(model.train_sigmas, SamplingSettings(steps=4, lowest_noise=1e-6))
    torch.testing.assert_close(below, sampling_sigmas(model.train_sigmas, SamplingSettings(steps=4)))

    features = torch.randn(20, 16, generator=torch.Generator().manual_seed(0))
    settings = SamplingSettings(steps=8, sampler="ddim", window=24, lowest_noise=float(ten[7]))
    last_x0 = []
    take = sample_takes(model, features, [5], settings, callback=lambda step: last_x0.append(step.denoised))
    assert len(last_x0) == 8
    torch.testing.assert_close(take[0], model.stats.denormalize(last_x0[-1][0]))
    full = sample_takes(model, features, [5], dataclasses.replace(settings, steps=10, lowest_noise=None))
    assert not torch.allclose(take, full)
    for bad in (0.0, -1.0, 11.0, float("nan")):
        with pytest.raises(SamplingError, match="lowest noise level .* is outside 0..10"):
            sample_takes(model, features, [0], dataclasses.replace(settings, lowest_noise=bad))


def test_guidance_on_the_lips_only_leaves_the_other_channels_unguided(thunder_f, head):
    """guidance_channels="lips": at every step the mouth and jaw channels get the guided x0 and the others
    the plain conditional one, so with one step (x0 is the take) the take is the guided one on the lips and
    the unguided one elsewhere."""
    model = load_model(thunder_f, head)
    features = torch.randn(20, 16, generator=torch.Generator().manual_seed(1))
    settings = SamplingSettings(steps=1, sampler="ddim", window=24, guidance=3.0)
    lips = torch.from_numpy(channel_groups(head.expression_names)["lips"])
    assert 0 < lips.sum() < lips.numel()
    guided = sample_takes(model, features, [5], settings)
    unguided = sample_takes(model, features, [5], dataclasses.replace(settings, guidance=1.0))
    on_lips = sample_takes(model, features, [5], dataclasses.replace(settings, guidance_channels="lips"),
                           expression_names=head.expression_names)
    assert torch.allclose(on_lips[..., lips], guided[..., lips])
    assert torch.allclose(on_lips[..., ~lips], unguided[..., ~lips])
    assert not torch.allclose(guided[..., lips], unguided[..., lips])
    with pytest.raises(SamplingError, match="needs the head's expression names"):
        sample_takes(model, features, [5], dataclasses.replace(settings, guidance_channels="lips"))
    with pytest.raises(SamplingError, match="unknown guidance channels 'mouth'; choose all or lips"):
        sample_takes(model, features, [5], dataclasses.replace(settings, guidance_channels="mouth"))


def test_an_unknown_emotion_is_refused(thunder_f, head):
    model = load_model(thunder_f, head)
    with pytest.raises(SamplingError, match="unknown emotion 'furious'"):
        sample_takes(model, torch.zeros(10, 16), [0], dataclasses.replace(FEW_STEPS, emotion="furious"))


def test_eval_on_a_folder_with_bad_audio_exits_with_one_line(thunder_f, tmp_path, capsys):
    folder = tmp_path / "audio"
    folder.mkdir()
    (folder / "a_empty.wav").write_bytes(b"")
    (folder / "b_text.wav").write_text("not audio at all\n")
    for name in ("a_empty", "b_text"):
        (folder / f"{name}.txt").write_text("a transcript\n")
    for bad, why in (("a_empty.wav", "is empty"), ("b_text.wav", "not a readable audio file")):
        assert thunder(["eval", f"tiny={thunder_f}", "--audio", str(folder), "--takes", "1", "--steps", "1"]) == 2
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("thunder: error:"), captured.err
        assert bad in lines[0] and why in lines[0]
        (folder / bad).unlink()


def test_the_real_speech_eval_honours_the_length_limit(thunder_f, head, tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    write_wav(folder / "long.wav", np.zeros(int(1.5 * 16000)))
    (folder / "long.txt").write_text("a long silence\n")
    models = {"tiny": load_model(thunder_f, head)}
    with pytest.raises(AudioFileError, match="long.wav .*longer than the limit of 1 s"):
        evaluate_real_speech(models, folder, head, takes=1, settings=FEW_STEPS, max_seconds=1.0)


# ------------------------------------------------------------------------------------------ 8. eval
def test_thunder_eval_samples_with_each_models_own_settings_and_lists_give_rows(thunder_f, tiny_corpus, tmp_path,
                                                                                capsys):
    """What is measured is what `thunder generate` makes: a row takes its model's sampling defaults (its
    config's "sampling"), and a setting given as a list gives one row per value."""
    import shutil

    tuned = tmp_path / "tuned"
    shutil.copytree(thunder_f, tuned)
    config = json.loads((tuned / "config.json").read_text())
    config["sampling"] = {**config.get("sampling", {}), "steps": 3, "guidance": 1.5}
    (tuned / "config.json").write_text(json.dumps(config))
    out = tmp_path / "eval.json"
    base = ["eval", f"tuned={tuned}", f"plain={thunder_f}", "--corpus", str(tiny_corpus), "--takes", "1",
            "--max-clips", "1", "--m2s", "", "--no-baseline", "--json", str(out), "--quiet"]
    assert thunder(base) == 0
    assert "1 takes each, sampler steps and guidance as each row says" in capsys.readouterr().out
    rows = json.loads(out.read_text())["row_settings"]
    assert (rows["tuned"]["steps"], rows["tuned"]["guidance"]) == (3, 1.5)
    assert (rows["plain"]["steps"], rows["plain"]["guidance"]) == (SamplingSettings.steps, 1.0)
    assert thunder(base + ["--guidance", "1,2"]) == 0
    rows = json.loads(out.read_text())["row_settings"]
    assert list(rows) == ["tuned g1", "tuned g2", "plain g1", "plain g2"]
    assert [r["guidance"] for r in rows.values()] == [1.0, 2.0, 1.0, 2.0]
    assert rows["tuned g2"]["steps"] == 3
    assert thunder(base[:2] + base[3:]) == 0   # the tuned model alone: its settings head the table
    assert "1 takes each, 3 dpmpp_2m steps, guidance 1.5" in capsys.readouterr().out
    assert thunder(base + ["--guidance", "two"]) == 2
    assert capsys.readouterr().err.strip() == ("thunder: error: --guidance two: give a number or a comma-separated "
                                               "list of numbers")


def test_thunder_eval_on_the_corpus_prints_and_writes_the_table(thunder_f, tiny_corpus, tiny_m2s, tmp_path,
                                                                capsys):
    out = tmp_path / "eval.json"
    assert thunder(["eval", f"tiny={thunder_f}", "--corpus", str(tiny_corpus), "--split", "test", "--takes", "2",
                    "--steps", "2", "--m2s", str(tiny_m2s), "--json", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "2 test clips" in printed
    table_rows = {line.split("  ")[0] for line in printed.splitlines()[2:]}
    assert table_rows == {"tiny", "reference", "phoneme baseline"}, printed
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert list(rows) == ["tiny", "reference", "phoneme baseline"]
    for key in ("lve_mm", "lip_pcc", "closure_rate", "upper_face_diversity_mm", "m2s_unit_accuracy"):
        assert key in rows["tiny"], key
    assert rows["tiny"]["lve_mm"] > 0 and 0.0 <= rows["tiny"]["m2s_unit_accuracy"] <= 1.0
    assert rows["tiny"]["bilabials"] > 0 and 0.0 <= rows["tiny"]["closure_rate"] <= 1.0
    assert "lve_mm" not in rows["reference"] and "m2s_unit_accuracy" in rows["reference"]
    assert "lip_spread_mm" not in rows["phoneme baseline"] and "lve_mm" in rows["phoneme baseline"]
    assert "lip_spread_mm" in rows["tiny"]

