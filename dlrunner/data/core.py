"""What every data set shares: seeded splits, subsets, class filtering, normalization."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
import torch

from dlrunner.errors import DlrunError

MODALITIES = ("image", "sequence", "tabular")


@dataclass
class Split:
    """A split held as tensors: inputs exactly as the net receives them."""

    x: torch.Tensor  # (N, *in_shape) float32, normalized
    y: torch.Tensor  # (N,) int64 class ids 0..K-1

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class DataBundle:
    """Train/val/test splits plus what a model, a plot or a later prediction needs to know."""

    name: str
    train: Any  # Split, or a torch Dataset for streamed sources
    val: Any
    test: Any
    class_names: list[str]
    modality: str  # image | sequence | tabular
    in_shape: tuple[int, ...]  # one sample: (C, H, W) | (C, T) | (F,)
    mean: torch.Tensor  # per channel / feature, already applied to the inputs
    std: torch.Tensor
    batch_size: int = 64
    num_workers: int = 0
    augment: bool = False
    flip: bool = False
    extra: dict = field(default_factory=dict)
    val_in_train: bool = False  # mode=final: `train` holds the val samples too; nothing is held out for validation

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def sizes(self) -> dict[str, int]:
        """Samples per split as trained and held out: with val merged into train, val counts 0."""
        val = 0 if self.val_in_train else len(self.val)
        return {"train": len(self.train), "val": val, "test": len(self.test)}

    def with_val_in_train(self) -> DataBundle:
        """The same splits with the val samples added to train (mode=final). Inputs keep the
        normalization of the training split; `val` stays as it was (a subset of train now) for code
        that probes samples, and `test` is untouched."""
        return replace(self, train=concat(self.train, self.val), val_in_train=True)

    def meta(self) -> dict:
        """Plain description stored in checkpoints so a model can be reused later."""
        return {"name": self.name, "class_names": list(self.class_names), "modality": self.modality,
                "in_shape": list(self.in_shape), "mean": self.mean.clone(), "std": self.std.clone(),
                "features": [str(f) for f in self.extra.get("features") or []]}  # tabular columns, in order


def concat(a: Any, b: Any) -> Any:
    """Two splits as one: tensors concatenated (a's samples first), or a ConcatDataset when streamed."""
    if isinstance(a, Split) and isinstance(b, Split):
        return Split(torch.cat([a.x, b.x]), torch.cat([a.y, b.y]))
    from torch.utils.data import ConcatDataset

    return ConcatDataset([a, b])


def check_knobs(*, fraction: float, val_fraction: float, batch_size: int, num_workers: int,
                test_fraction: float | None = None) -> None:
    """Fail with one line on values that make no sense, before anything is loaded."""
    if not 0.0 < fraction <= 1.0:
        raise DlrunError(f"data.fraction must be in (0, 1], got {fraction}")
    if not 0.0 < val_fraction < 1.0:
        raise DlrunError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
    if test_fraction is not None and not 0.0 <= test_fraction < 1.0:
        raise DlrunError(f"data.test_fraction must be in [0, 1), got {test_fraction}")
    if test_fraction is not None and val_fraction + test_fraction >= 1.0:
        raise DlrunError("data.val_fraction + data.test_fraction must leave some training data")
    if int(batch_size) < 1:
        raise DlrunError(f"data.batch_size must be >= 1, got {batch_size}")
    if int(num_workers) < 0:
        raise DlrunError(f"data.num_workers must be >= 0, got {num_workers}")


def split_indices(n: int, fractions: Sequence[float], rng: np.random.Generator) -> list[np.ndarray]:
    """A seeded permutation of range(n) cut into len(fractions)+1 parts (the rest comes first)."""
    perm = rng.permutation(n)
    sizes = [int(round(f * n)) for f in fractions]
    rest = n - sum(sizes)
    parts, start = [perm[:rest]], rest
    for s in sizes:
        parts.append(perm[start:start + s])
        start += s
    return parts


def val_rng(rng: np.random.Generator, split_seed: int, val_seed: int | None) -> np.random.Generator:
    """The generator of the train/val split: the split's own (`val_seed` null) or one seeded by both seeds."""
    return rng if val_seed is None else np.random.default_rng([int(split_seed), int(val_seed)])


def class_filter(classes: Sequence[int] | None, class_names: list[str]) -> tuple[list[int], list[str]]:
    """Validate data.classes; return the kept ids and their names."""
    if classes is None:
        return list(range(len(class_names))), class_names
    keep = [int(c) for c in classes]
    bad = [c for c in keep if not 0 <= c < len(class_names)]
    if bad:
        raise DlrunError(f"data.classes: unknown class id {bad[0]}; this data set has ids 0..{len(class_names) - 1}")
    if len(set(keep)) < 2:
        raise DlrunError(f"data.classes needs at least two distinct classes, got {list(classes)}")
    keep = sorted(set(keep))
    return keep, [class_names[c] for c in keep]


def select(y: np.ndarray, keep: list[int], fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices of samples in the kept classes (a seeded fraction of them) and their new labels."""
    idx = np.flatnonzero(np.isin(y, keep))
    if fraction < 1.0:
        idx = np.sort(rng.choice(idx, size=max(1, int(round(fraction * len(idx)))), replace=False))
    remap = {c: i for i, c in enumerate(keep)}
    return idx, np.array([remap[int(c)] for c in y[idx]], dtype=np.int64)


def norm_stats(x: torch.Tensor, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (image, sequence) or per-feature (tabular) mean and std."""
    dims = (0,) if modality == "tabular" else tuple(d for d in range(x.dim()) if d != 1)
    mean, std = x.mean(dim=dims), x.std(dim=dims)
    std = torch.where(std < 1e-6, torch.ones_like(std), std)  # constant features stay put
    return mean.float(), std.float()


def broadcast(stat: torch.Tensor, ndim: int) -> torch.Tensor:
    """Shape a per-channel statistic to broadcast over (N, C, ...)."""
    return stat.view(1, -1, *([1] * (ndim - 2))) if ndim > 2 else stat.view(1, -1)


def from_tensors(name: str, x: torch.Tensor, y: np.ndarray, class_names: list[str], modality: str, *,
                 x_test: torch.Tensor | None = None, y_test: np.ndarray | None = None,
                 fraction: float = 1.0, classes: Sequence[int] | None = None, val_fraction: float = 0.15,
                 test_fraction: float = 0.15, split_seed: int = 0, val_seed: int | None = None,
                 normalize: bool = True, batch_size: int = 64, num_workers: int = 0, augment: bool = False,
                 flip: bool = False) -> DataBundle:
    """Split (test only when no official test set), filter, subset and normalize in-memory data.
    `val_seed` draws another train/val split of the same non-test samples (the test split stays put)."""
    rng = np.random.default_rng(split_seed)
    keep, names = class_filter(classes, class_names)
    if x_test is None:
        train_i, test_i = split_indices(len(y), [test_fraction], rng)
        x_test, y_test, x, y = x[test_i], y[test_i], x[train_i], y[train_i]
    train_i, val_i = split_indices(len(y), [val_fraction], val_rng(rng, split_seed, val_seed))
    parts = {"train": (x[train_i], y[train_i]), "val": (x[val_i], y[val_i]), "test": (x_test, y_test)}
    splits = {}
    for key, (xs, ys) in parts.items():
        idx, labels = select(np.asarray(ys), keep, fraction, rng)
        splits[key] = Split(xs[idx].float().contiguous(), torch.from_numpy(labels))
    if len(splits["train"]) == 0 or len(splits["val"]) == 0:
        raise DlrunError(f"data={name}: the train or val split is empty; raise data.fraction or data.val_fraction")
    mean, std = norm_stats(splits["train"].x, modality)
    if not normalize:
        mean, std = torch.zeros_like(mean), torch.ones_like(std)
    for s in splits.values():
        s.x = (s.x - broadcast(mean, s.x.dim())) / broadcast(std, s.x.dim())
    return DataBundle(name, splits["train"], splits["val"], splits["test"], names, modality,
                      tuple(splits["train"].x.shape[1:]), mean, std, int(batch_size), int(num_workers),
                      bool(augment), bool(flip))
