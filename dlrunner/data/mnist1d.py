"""MNIST-1D (Greydanus 2020): 40-step sequences generated offline by the mnist1d package."""
from __future__ import annotations

import torch

from dlrunner.data.cache import cached, package_version
from dlrunner.data.core import DataBundle, check_knobs, from_tensors
from dlrunner.errors import DlrunError


def _generate(num_samples: int) -> dict:
    """The package's own recipe (the paper's defaults), with num_samples."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = int(num_samples)
    d = make_dataset(args)
    return {k: torch.as_tensor(d[k]) for k in ("x", "y", "x_test", "y_test")}


def build_mnist1d(*, num_samples: int = 5000, root: str = "data", **knobs) -> DataBundle:
    check_knobs(fraction=knobs.get("fraction", 1.0), val_fraction=knobs.get("val_fraction", 0.15),
                batch_size=knobs.get("batch_size", 64), num_workers=knobs.get("num_workers", 0))
    if int(num_samples) < 100:
        raise DlrunError(f"data.num_samples must be >= 100, got {num_samples}")
    key = {"source": "mnist1d.data.make_dataset", "mnist1d": package_version("mnist1d"),
           "num_samples": int(num_samples)}
    d = cached(root, "mnist1d", key, lambda: _generate(int(num_samples)))
    x = d["x"].float().unsqueeze(1)  # (N, 1, 40): one channel, 40 steps
    x_test = d["x_test"].float().unsqueeze(1)
    names = [str(i) for i in range(10)]
    return from_tensors("mnist1d", x, d["y"].numpy(), names, "sequence", x_test=x_test,
                        y_test=d["y_test"].numpy(), **knobs)
