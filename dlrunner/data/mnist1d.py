"""MNIST-1D (Greydanus 2020): 40-step sequences generated offline by the mnist1d package."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from dlrunner.data.core import DataBundle, check_knobs, from_tensors
from dlrunner.errors import DlrunError


def _generate(num_samples: int, root: str) -> dict:
    """Generate once with the package's own recipe, then reuse the cached tensors."""
    from mnist1d.data import get_dataset_args, make_dataset

    cache = Path(root).expanduser() / f"mnist1d_{num_samples}.pt"
    if cache.exists():
        try:
            return torch.load(cache, weights_only=True)
        except Exception:  # a broken cache is regenerated, never trusted
            pass
    args = get_dataset_args()
    args.num_samples = int(num_samples)
    d = make_dataset(args)
    out = {k: torch.as_tensor(d[k]) for k in ("x", "y", "x_test", "y_test")}
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp{os.getpid()}")
    torch.save(out, tmp)
    os.replace(tmp, cache)
    return out


def build_mnist1d(*, num_samples: int = 5000, root: str = "data", **knobs) -> DataBundle:
    check_knobs(fraction=knobs.get("fraction", 1.0), val_fraction=knobs.get("val_fraction", 0.15),
                batch_size=knobs.get("batch_size", 64), num_workers=knobs.get("num_workers", 0))
    if int(num_samples) < 100:
        raise DlrunError(f"data.num_samples must be >= 100, got {num_samples}")
    d = _generate(int(num_samples), root)
    x = d["x"].float().unsqueeze(1)  # (N, 1, 40): one channel, 40 steps
    x_test = d["x_test"].float().unsqueeze(1)
    names = [str(i) for i in range(10)]
    return from_tensors("mnist1d", x, d["y"].numpy(), names, "sequence", x_test=x_test,
                        y_test=d["y_test"].numpy(), **knobs)
