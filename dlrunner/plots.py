"""Pictures of a run: learning curves and the inputs exactly as the net receives them."""
from __future__ import annotations

from pathlib import Path

import torch


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def _draw(ax, sample: torch.Tensor, modality: str, lo: float, hi: float, labelsize: int) -> None:
    """One sample in one panel: an image (grey on the batch's range; RGB stretched to [0, 1] when it
    is not already there), or a sequence as one line per channel."""
    if modality == "image":
        if sample.shape[0] == 3:
            img = sample.permute(1, 2, 0)
            if float(img.min()) < 0 or float(img.max()) > 1:
                img = (img - img.min()) / (img.max() - img.min() + 1e-12)
            ax.imshow(img.numpy())
        else:
            ax.imshow(sample[0].numpy(), cmap="gray", vmin=lo, vmax=hi)
        return
    ax.axis("on")
    for c in range(sample.shape[0]):
        ax.plot(sample[c].numpy(), lw=1)
    ax.set_ylim(lo, hi)
    ax.tick_params(labelsize=labelsize)


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
            _draw(ax, x[i], modality, lo, hi, labelsize=5)
            ax.set_title(class_names[int(y[i])], fontsize=8)
    fig.suptitle(f"inputs as the net sees them: shape {tuple(x.shape[1:])}, range [{lo:.2f}, {hi:.2f}]", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)


def confusion(matrix, class_names: list[str], path: str | Path) -> Path:
    """Confusion matrix (rows: true class, columns: predicted): colour = share of the row, so a
    rare class's mistakes show as clearly as a common one's; the cells carry the counts."""
    plt = _plt()
    m = torch.as_tensor(matrix).long().cpu()
    k = len(class_names)
    rows = m.sum(1, keepdim=True).clamp(min=1)
    share = (m.double() / rows).numpy()
    side = min(20, 2.5 + 0.45 * k)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ticks = range(k) if k <= 50 else range(0, k, max(1, k // 25))
    fs = 8 if k <= 20 else 5
    ax.set_xticks(list(ticks), [class_names[i] for i in ticks], rotation=90 if k > 10 else 0, fontsize=fs)
    ax.set_yticks(list(ticks), [class_names[i] for i in ticks], fontsize=fs)
    if k <= 30:  # beyond that the numbers would not fit in the cells
        for t in range(k):
            for p in range(k):
                if m[t, p]:
                    ax.text(p, t, str(int(m[t, p])), ha="center", va="center", fontsize=fs,
                            color="white" if share[t, p] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = float(m.diag().sum()) / max(1, int(m.sum()))
    ax.set_title(f"confusion matrix: {int(m.sum())} samples, accuracy {acc:.3f} (colour: share of the true class)",
                 fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def _loss_title(row: dict, class_names: list[str]) -> str:
    return f"{class_names[row['true']]}/{class_names[row['pred']]}/{row['prob']:.2f}/{row['loss']:.2f}"


def top_losses(x: torch.Tensor, rows: list[dict], class_names: list[str], modality: str, path: str | Path,
               feature_names: list[str] | None = None) -> Path:
    """The samples with the highest loss, each titled true/pred/prob/loss (prob: of the predicted
    class). `x`: their inputs before normalization, in the order of `rows`; images are drawn as
    images, sequences as line plots, tabular samples as a table of feature values."""
    plt = _plt()
    x = x.detach().float().cpu()
    titles = [_loss_title(r, class_names) for r in rows]
    if modality == "tabular":
        feats = list(feature_names or [f"f{i}" for i in range(x.shape[1])])[:40]
        cells = [[f"{float(v):.3g}" for v in x[:, j]] for j in range(len(feats))]
        fig, ax = plt.subplots(figsize=(min(24, 2.5 + 1.3 * len(rows)), 1.2 + 0.25 * (len(feats) + 1)))
        ax.axis("off")
        table = ax.table(cellText=cells, rowLabels=[f[:24] for f in feats], colLabels=titles, loc="center")
        table.auto_set_font_size(False)
        table.set_fontsize(6)
    else:
        cols = 4
        nrows = (len(rows) + cols - 1) // cols
        fig, axes = plt.subplots(nrows, cols, figsize=(3 * cols, 3 * nrows), squeeze=False)
        lo, hi = float(x.min()), float(x.max())
        for i, ax in enumerate(axes.flat):
            ax.axis("off")
            if i >= len(rows):
                continue
            _draw(ax, x[i], modality, lo, hi, labelsize=6)
            ax.set_title(titles[i], fontsize=9)
    fig.suptitle("highest losses (title: true/pred/prob/loss; prob of the predicted class)", fontsize=10)
    if modality != "tabular":  # fixed margins: tight_layout over 16 panels costs more than the drawing
        fig.subplots_adjust(left=0.04, right=0.98, bottom=0.04, top=0.92, wspace=0.25, hspace=0.35)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)
