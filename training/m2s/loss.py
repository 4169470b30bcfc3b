"""The mesh-to-speech objective: how well speech heard from the lips matches the speech that was said.

THUNDER's central idea (analysis by audio synthesis): the M2S model turns mouth motion into speech units
(50 Hz) and a log-mel spectrogram (100 Hz); the loss is the units' cross-entropy against the audio's units plus
an L1 distance between the mels. The same function trains the M2S model on the corpus's motion
(training/m2s/train.py) and, with the M2S model frozen, teaches the diffusion model to move its lips so that
they can be heard (training/thunder/train.py).

Unit steps past a clip's end hold IGNORE; their mel frames (MELS_PER_UNIT per unit step) are left out too.
`mel_weight` weighs each clip's mel error: the lips cannot tell a room, noise or codec, so a degraded clip's
mel is a target they cannot reach (the training configs' `degraded_mel_weight`, 0 by default: the mel is
learnt from the clean clips only, the units from all).
"""

from __future__ import annotations

import torch

from backend.audio import MELS_PER_UNIT

IGNORE = -100   # the unit label of steps past a clip's end (torch's default ignore_index)


def unit_and_mel_loss(unit_logits: torch.Tensor, mel: torch.Tensor, target_units: torch.Tensor,
                      target_mel: torch.Tensor, label_smoothing: float = 0.0, per_clip: bool = False,
                      mel_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(unit cross-entropy, mel L1) of M2S outputs against the audio's.

    unit_logits (B, T, U), target_units (B, T) with IGNORE past each clip's end; mel and target_mel
    (B, T * MELS_PER_UNIT, M). Averaged over the valid unit steps and mel values of the whole batch, or, with
    per_clip, of each clip on its own: (B,) each. `mel_weight` (B,) weighs each clip's mel error (a clip of
    weight 0 adds nothing to the batch's mel L1; alone, with per_clip, it scores 0)."""
    valid = target_units != IGNORE
    ce = torch.nn.functional.cross_entropy(unit_logits.transpose(1, 2), target_units, ignore_index=IGNORE,
                                           label_smoothing=label_smoothing, reduction="none")
    mel_mask = valid.repeat_interleave(MELS_PER_UNIT, dim=1)[..., None].to(mel.dtype)
    mel_error = (mel - target_mel).abs() * mel_mask
    if mel_weight is not None:
        weight = mel_weight.to(mel.dtype)[:, None, None]
        mel_error = mel_error * weight
        if not per_clip:   # the batch's mean is over the weighted values
            mel_mask = mel_mask * weight
    if per_clip:
        unit_mask = valid.to(ce.dtype)
        unit_ce = (ce * unit_mask).sum(1) / unit_mask.sum(1).clamp_min(1)
        mel_l1 = mel_error.sum((1, 2)) / (mel_mask.sum((1, 2)) * mel.shape[-1]).clamp_min(1)
        return unit_ce, mel_l1
    unit_ce = ce.sum() / valid.sum().clamp_min(1)
    mel_l1 = mel_error.sum() / (mel_mask.sum() * mel.shape[-1]).clamp_min(1)
    return unit_ce, mel_l1


def mel_weights(clean_audio: torch.Tensor, degraded_weight: float) -> torch.Tensor:
    """(B,) weight of each clip's mel error: 1 for clean audio, `degraded_weight` for degraded audio."""
    return torch.where(clean_audio, 1.0, float(degraded_weight))
