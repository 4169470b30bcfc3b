"""Training curves to PNG, from the `log.json` every training script writes (a list of dicts with "step")."""

from __future__ import annotations

from pathlib import Path


def plot_training_log(log: list[dict], path, title: str, keys: tuple[str, ...]) -> Path:
    """One panel per key (e.g. "unit_ce", "mel_l1"); validation scores under "val" are drawn as points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2))
    for ax, key in zip(list(axes) if len(keys) > 1 else [axes], keys):
        ax.plot([r["step"] for r in log], [r[key] for r in log], lw=1, label="train")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    val = [r for r in log if "val" in r]
    if val:
        ax = list(axes)[-1] if len(keys) > 1 else axes
        twin = ax.twinx()
        twin.plot([r["step"] for r in val], [r["val"]["unit_accuracy"] for r in val], "o-", color="C3",
                  label="val unit accuracy")
        twin.set_ylim(0, 1)
        twin.legend(loc="center right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
