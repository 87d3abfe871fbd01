"""Your own images via torchvision's ImageFolder, streamed through DataLoader workers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from dlrunner.data.core import DataBundle, check_knobs, class_filter, norm_stats, select, split_indices, val_rng
from dlrunner.errors import DlrunError


class Relabel:
    """Picklable target transform (workers pickle it): old class id -> new one."""

    def __init__(self, mapping: dict[int, int]):
        self.mapping = mapping

    def __call__(self, y: int) -> int:
        return self.mapping[y]


class Samples(Dataset):
    """A fixed list of (path, label) pairs read through one transform."""

    def __init__(self, samples: list[tuple[str, int]], transform):
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        from torchvision.datasets.folder import default_loader

        path, y = self.samples[i]
        return self.transform(default_loader(path)), y


def _transform(size: int, channels: int, mean=None, std=None):
    from torchvision import transforms as T

    steps = [T.Resize((size, size))]
    if channels == 1:
        steps.append(T.Grayscale(1))
    steps.append(T.ToTensor())
    if mean is not None:
        steps.append(T.Normalize(mean.tolist(), std.tolist()))
    return T.Compose(steps)


def _scan(path: Path) -> dict[str, list[tuple[str, int]]] | tuple[list, list[str]]:
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(path))
    except (FileNotFoundError, RuntimeError) as e:
        raise DlrunError(f"data.path: {path} is not an image folder (one sub-folder of images per class): {e}") from None


def build_folder(*, path: str, size: int = 64, channels: int = 3, flip: bool = True, test_fraction: float = 0.15,
                 fraction: float = 1.0, classes=None, val_fraction: float = 0.15, split_seed: int = 0,
                 val_seed: int | None = None, batch_size: int = 64, num_workers: int = 2, normalize: bool = True,
                 augment: bool = False) -> DataBundle:
    check_knobs(fraction=fraction, val_fraction=val_fraction, batch_size=batch_size, num_workers=num_workers,
                test_fraction=test_fraction)
    if int(channels) not in (1, 3):
        raise DlrunError(f"data.channels must be 1 or 3, got {channels}")
    root = Path(str(path)).expanduser()
    if not root.is_dir():
        raise DlrunError(f"data.path: no folder at {root}")
    rng = np.random.default_rng(split_seed)
    has_split = (root / "train").is_dir()
    main = _scan(root / "train" if has_split else root)
    samples, names = list(main.samples), list(main.classes)
    keep, kept_names = class_filter(classes, names)
    if has_split and (root / "test").is_dir():
        test = list(_scan(root / "test").samples)
        train_i, val_i = split_indices(len(samples), [val_fraction], val_rng(rng, split_seed, val_seed))
        parts = {"train": train_i, "val": val_i}
    else:
        test = None
        train_i, val_i, test_i = split_indices(len(samples), [val_fraction, test_fraction], rng)
        if val_seed is not None:  # the same test split; the rest dealt again into train and val
            rest = np.concatenate([train_i, val_i])
            share = len(val_i) / max(1, len(rest))  # the same val size
            train_i, val_i = (rest[i] for i in split_indices(len(rest), [share], val_rng(rng, split_seed, val_seed)))
        parts = {"train": train_i, "val": val_i, "test": test_i}
    lists = {k: [samples[i] for i in idx] for k, idx in parts.items()}
    if test is not None:
        lists["test"] = test
    for k, lst in lists.items():
        idx, labels = select(np.array([s[1] for s in lst]), keep, fraction, rng)
        lists[k] = [(lst[i][0], int(l)) for i, l in zip(idx, labels)]
    if not lists["train"] or not lists["val"]:
        raise DlrunError(f"data.path: {root} gives an empty train or val split; add images or raise data.fraction")
    # normalization from (up to 512 of) the training images, as loaded
    probe = Samples(lists["train"][:512], _transform(int(size), int(channels)))
    xs = torch.stack([probe[i][0] for i in range(len(probe))])
    mean, std = norm_stats(xs, "image") if normalize else (torch.zeros(int(channels)), torch.ones(int(channels)))
    tf = _transform(int(size), int(channels), mean, std)
    splits = {k: Samples(v, tf) for k, v in lists.items()}
    return DataBundle("folder", splits["train"], splits["val"], splits["test"], kept_names, "image",
                      (int(channels), int(size), int(size)), mean, std, int(batch_size), int(num_workers),
                      bool(augment), bool(flip), {"path": str(root)})
