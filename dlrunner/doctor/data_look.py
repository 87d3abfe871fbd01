"""The data check: splits, dtype and range, normalization, constant inputs, labels, class
balance against the majority-class baseline, and inputs shared by train and val (leakage)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from dlrunner.reporting import plots
from dlrunner.doctor import signatures
from dlrunner.doctor.core import Exam, Finding


def _channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (per-feature) mean and raw std; unlike data.core.norm_stats, a constant channel keeps std 0."""
    x = x.float()
    dims = (0,) if x.dim() == 2 else tuple(d for d in range(x.dim()) if d != 1)
    return x.mean(dims), x.std(dims)


def _hashes(x: torch.Tensor) -> list[str]:
    x = x.detach().float().cpu().contiguous()
    return [hashlib.blake2b(row.numpy().tobytes(), digest_size=12).hexdigest() for row in x]


def data_look(ex: Exam, run_dir: Path) -> Finding:
    f = Finding("data", "Data look")
    d = ex.job.data
    sizes = d.sizes()
    f.details["sizes"] = sizes
    f.add("pass", f"splits train {sizes['train']} / val {sizes['val']} / test {sizes['test']}")
    if sizes["val"] < 20:
        f.add("warn", f"val has {sizes['val']} samples: accuracy moves in steps of {100 / max(sizes['val'], 1):.1f} "
                      "points and its noise hides real changes", "raise data.val_fraction or use more data")
    x, y = ex.x, ex.y
    f.details |= {"batch_shape": list(x.shape), "dtype": str(x.dtype), "in_shape": list(d.in_shape)}
    plots.samples(x, y, d.class_names, d.modality, run_dir / "samples.png")
    if not x.is_floating_point():
        f.add("fail", f"inputs reach the net as {x.dtype} (max {int(x.max())})",
              "convert to float and scale (e.g. /255) then normalize; see samples.png")
        return f
    xs, ys = ex.sample(ex.job.train)
    xv, yv = ex.sample(ex.job.val)
    xs = _inputs(f, ex, xs)
    if _labels(f, ex, ys, yv):
        _leakage(f, xs, xv)
    return f


def _inputs(f: Finding, ex: Exam, xs: torch.Tensor) -> torch.Tensor:
    """Non-finite values, constant inputs, the range and normalization; xs with NaN/Inf zeroed."""
    x = ex.x
    finite = torch.isfinite(xs)
    if not finite.all():
        f.add("fail", f"{int((~finite).sum())} NaN/Inf values in {len(xs)} training inputs",
              "clean or impute the data before training")
        xs = torch.nan_to_num(xs)
    same = signatures.constant_inputs(xs)
    if same:
        f.add("fail", same, "check the data loading: every index returns the same sample (or a constant fill)")
    mean, std = _channel_stats(xs)
    lo, hi = float(xs.min()), float(xs.max())
    f.details |= {"range": [lo, hi], "mean": [round(float(v), 4) for v in mean[:16]],
                  "std": [round(float(v), 4) for v in std[:16]]}
    unit = "feature" if xs.dim() == 2 else "channel"
    f.add("pass", f"inputs {tuple(x.shape[1:])} {str(x.dtype).replace('torch.', '')}, range [{lo:.2f}, {hi:.2f}], "
                  f"per-{unit} mean {float(mean.abs().max()):.2f} max |.|, std {float(std.min()):.2f}..{float(std.max()):.2f}")
    if hi > 20 and lo >= 0 and float((xs == xs.round()).float().mean()) > 0.9:
        f.add("fail", f"inputs look like raw 0-{hi:.0f} integers (range [{lo:.0f}, {hi:.0f}], mostly whole numbers)",
              "scale to [0, 1] (/255) and normalize (data.normalize=true)")
    elif float(mean.abs().max()) > 1 or float(std.max()) > 10 or float(std.min()) < 0.1:
        bad = int(((mean.abs() > 1) | (std > 10) | (std < 0.1)).sum())
        const = int((std < 1e-6).sum())
        f.add("warn" if const < len(std) else "fail",
              f"{bad}/{len(std)} {unit}s are not normalized (|mean| > 1 or std outside [0.1, 10])"
              + (f"; {const} constant" if const else ""),
              "normalize with the training split's per-channel mean/std (data.normalize=true); drop constant features")
    f.details["x_sample"] = len(xs)
    return xs


def _labels(f: Finding, ex: Exam, ys: torch.Tensor, yv: torch.Tensor) -> bool:
    """Label dtype and range, class balance, the majority-class baseline; False when the labels
    are unusable (the rest of the data check would mislead)."""
    d, k = ex.job.data, ex.num_classes
    if ys.is_floating_point() or ys.dim() != 1:
        f.add("fail", f"labels are {ys.dtype} of shape {tuple(ys.shape[1:]) or '()'} per sample",
              "cross-entropy wants int64 class ids 0..K-1 of shape (N,)")
        return False
    if int(ys.min()) < 0 or int(ys.max()) >= k:
        f.add("fail", f"labels span [{int(ys.min())}, {int(ys.max())}] but there are {k} classes",
              "relabel to 0..K-1 (data.classes relabels automatically)")
        return False
    hist = torch.bincount(ys.cpu(), minlength=k)
    f.details["class_histogram"] = hist.tolist()
    majority = int(hist.argmax())
    maj_acc = float((yv.cpu() == majority).float().mean())
    ex.majority_acc = maj_acc
    f.details["majority_val_acc"] = maj_acc
    missing = [d.class_names[i] for i in range(k) if hist[i] == 0]
    if missing:
        f.add("warn", f"classes never seen in training: {', '.join(missing[:5])}", "check data.classes and the split")
    ratio = float(hist.max()) / max(float(hist[hist > 0].min()), 1.0)
    f.add("warn" if ratio > 10 else "pass",
          f"{k} classes, {int(hist.min())}..{int(hist.max())} per class (imbalance {ratio:.1f}x); "
          f"majority-class accuracy {100 * maj_acc:.1f}%",
          "imbalance > 10x: weight the loss or resample; judge accuracy against the majority baseline"
          if ratio > 10 else "")
    return True


def _leakage(f: Finding, xs: torch.Tensor, xv: torch.Tensor) -> None:
    """Identical inputs in train and val."""
    train_h = set(_hashes(xs))
    dup = sum(h in train_h for h in _hashes(xv))
    f.details["val_in_train"] = dup
    frac = dup / max(len(xv), 1)
    f.add("warn" if frac > 0.01 else "pass",
          f"{dup}/{len(xv)} val inputs also appear in train ({100 * frac:.1f}%)",
          "deduplicate before splitting: val accuracy on memorized samples overstates generalization"
          if frac > 0.01 else "")
