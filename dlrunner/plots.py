"""Pictures of a run: learning curves and the inputs exactly as the net receives them."""
from __future__ import annotations

from pathlib import Path

import torch


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def curves(history: list[dict], path: str | Path) -> Path:
    """Train and val loss and accuracy per epoch; the LR on a second axis."""
    plt = _plt()
    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "acc")):
        for split, style in (("train", "-"), ("val", "--")):
            key = f"{split}/{metric}"
            if any(key in r for r in history):
                ax.plot(epochs, [r.get(key, float("nan")) for r in history], style, marker="o", ms=3, label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(loc="center left")
    lr_ax = axes[0].twinx()
    lr_ax.plot(epochs, [r["lr"] for r in history], color="grey", alpha=0.5, lw=1)
    lr_ax.set_ylabel("lr", color="grey")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def samples(x: torch.Tensor, y: torch.Tensor, class_names: list[str], modality: str, path: str | Path,
            limit: int = 32) -> Path:
    """A grid of one training batch with labels: the tensors the model receives (normalized,
    augmented), so a wrong crop, scale or label shows up here first."""
    plt = _plt()
    x, y = x[:limit].detach().float().cpu(), y[:limit].cpu()
    lo, hi = float(x.min()), float(x.max())
    if modality == "tabular":
        fig, ax = plt.subplots(figsize=(min(12, 2 + 0.3 * x.shape[1]), 2 + 0.25 * len(x)))
        im = ax.imshow(x.numpy(), aspect="auto", cmap="coolwarm")
        ax.set_yticks(range(len(y)), [class_names[int(c)] for c in y], fontsize=6)
        ax.set_xlabel("feature")
        fig.colorbar(im, ax=ax)
    else:
        cols = 8
        rows = (len(x) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2 * rows), squeeze=False)
        for i, ax in enumerate(axes.flat):
            ax.axis("off")
            if i >= len(x):
                continue
            if modality == "image":
                img = x[i].permute(1, 2, 0).numpy() if x.shape[1] == 3 else x[i, 0].numpy()
                ax.imshow((img - lo) / (hi - lo + 1e-12) if x.shape[1] == 3 else img,
                          cmap="gray", vmin=lo, vmax=hi)
            else:
                ax.axis("on")
                for c in range(x.shape[1]):
                    ax.plot(x[i, c].numpy(), lw=1)
                ax.set_ylim(lo, hi)
                ax.tick_params(labelsize=5)
            ax.set_title(class_names[int(y[i])], fontsize=8)
    fig.suptitle(f"inputs as the net sees them: shape {tuple(x.shape[1:])}, range [{lo:.2f}, {hi:.2f}]", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)
