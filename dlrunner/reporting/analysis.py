"""Error analysis of a trained run on its validation split: which classes get confused with which,
per-class precision / recall / F1, and the samples the model gets most wrong (top losses)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn.functional as F

from dlrunner.reporting import plots
from dlrunner.data.core import Split, broadcast
from dlrunner.engine.evaluate import split_logits

if TYPE_CHECKING:
    from dlrunner.engine.job import Job

TOP_LOSSES = 16  # samples shown in top_losses.png


@dataclass
class Analysis:
    """Everything computed from one pass over a split."""

    split: str
    class_names: list[str]
    logits: torch.Tensor  # (N, K) float32, what the job's evaluation scores (tricks included)
    labels: torch.Tensor  # (N,) int64
    matrix: torch.Tensor  # (K, K) int64, rows = true class, columns = predicted class
    per_class: dict[str, dict[str, float]]
    top: list[dict[str, Any]]  # the highest per-sample losses, highest first

    @property
    def probs(self) -> torch.Tensor:
        return self.logits.softmax(dim=1)


def confusion_matrix(labels: torch.Tensor, preds: torch.Tensor, k: int) -> torch.Tensor:
    """(K, K) counts: entry [t, p] is the number of samples of true class t predicted as p."""
    return torch.bincount(labels.long() * k + preds.long(), minlength=k * k).view(k, k)


def per_class_scores(matrix: torch.Tensor, class_names: list[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined,
    as scikit-learn's zero_division=0)."""
    m = matrix.double()
    tp, predicted, support = m.diag(), m.sum(0), m.sum(1)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp(min=1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), torch.zeros_like(tp))
    return {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i])} for i, name in enumerate(class_names)}


def top_losses(logits: torch.Tensor, labels: torch.Tensor, n: int = TOP_LOSSES) -> list[dict[str, Any]]:
    """The n samples with the highest cross-entropy, highest first (index into the split)."""
    losses = F.cross_entropy(logits.float(), labels, reduction="none")
    probs = logits.float().softmax(dim=1)
    order = torch.argsort(losses, descending=True, stable=True)[:n]
    preds = probs.argmax(1)
    return [{"index": int(i), "true": int(labels[i]), "pred": int(preds[i]), "prob": float(probs[i, preds[i]]),
             "true_prob": float(probs[i, labels[i]]), "loss": float(losses[i])} for i in order]


Scored = tuple[torch.Tensor, torch.Tensor]  # (logits (N, K), labels (N,)) of a split, in its stored order


def analyze(job: Job, split: str = "val", n: int = TOP_LOSSES,
            scored: Scored | None = None) -> Analysis:
    """`scored`: the split's logits and labels from a pass already made (mode=final reads the
    test split once); otherwise they are computed here."""
    logits, labels = scored if scored is not None else split_logits(job, split)
    names = list(job.data.class_names)
    matrix = confusion_matrix(labels, logits.argmax(1), len(names))
    return Analysis(split, names, logits, labels, matrix, per_class_scores(matrix, names), top_losses(logits, labels, n))


def split_inputs(split, indices: list[int]) -> torch.Tensor:
    """Normalized inputs of a split at the given indices, as the full model takes them (for a
    streamed split, read through its own transform)."""
    if isinstance(split, Split):
        return split.x[torch.as_tensor(indices, dtype=torch.long)]
    return torch.stack([torch.as_tensor(split[i][0]) for i in indices])


def raw_inputs(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Undo the normalization: the values the data pipeline produced before it."""
    return x.float().cpu() * broadcast(std.float().cpu(), x.dim()) + broadcast(mean.float().cpu(), x.dim())


def summary_entries(a: Analysis) -> dict[str, Any]:
    """What goes into summary.json."""
    return {"confusion": {"split": a.split, "labels": a.class_names, "matrix": a.matrix.tolist()},
            "per_class": a.per_class}


Draw = Callable[..., None]  # draw(key, plot_function, *args): now, in the background (Painter.submit) or not at all


def _draw_now(key: str, fn: Callable[..., Any], *args: Any) -> None:
    fn(*args)


def report(job: Job, run_dir: Path, split: str = "val", n: int = TOP_LOSSES,
           scored: Scored | None = None, draw: Draw = _draw_now) -> tuple[Analysis, dict[str, Any]]:
    """Analyze a split and write confusion.png and top_losses.png into run_dir (through `draw`)."""
    a = analyze(job, split, n, scored)
    draw("confusion", plots.confusion, a.matrix, a.class_names, Path(run_dir) / "confusion.png")
    if a.top:
        idx = [r["index"] for r in a.top]
        data = job.data
        x = raw_inputs(split_inputs(data.val if split == "val" else data.test, idx), data.mean, data.std)
        draw("top_losses", plots.top_losses, x, a.top, a.class_names, data.modality,
             Path(run_dir) / "top_losses.png", data.extra.get("features") or None)
    return a, summary_entries(a)


def after_training(job: Job, run_dir: Path, warn: Callable[[str], None], split: str = "val",
                   scored: Scored | None = None, draw: Draw = _draw_now) -> dict[str, Any]:
    """modes/train_finish.py's hook: the report's summary entries, or {} with one warning line when the
    analysis fails (the run itself is already saved and must not be lost to a plotting error)."""
    try:
        return report(job, run_dir, split, scored=scored, draw=draw)[1]
    except Exception as e:  # noqa: BLE001 - any failure here is reported, never raised
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        warn(f"error analysis skipped ({type(e).__name__}: {first[:160]})")
        return {}
