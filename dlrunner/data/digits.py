"""scikit-learn's bundled 8x8 handwritten digits, upsampled: the offline default."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dlrunner.data.cache import cached, package_version
from dlrunner.data.core import DataBundle, check_knobs, from_tensors
from dlrunner.errors import DlrunError


def _prepare(size: int) -> dict:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)  # (N, 1, size, size)
    return {"x": x, "y": torch.as_tensor(d.target, dtype=torch.long)}


def build_digits(*, size: int = 28, test_fraction: float = 0.15, root: str = "data", **knobs) -> DataBundle:
    """1,797 digits (values 0..16) scaled to [0, 1] and resized to size x size; prepared once, then
    read from data.root."""
    check_knobs(fraction=knobs.get("fraction", 1.0), val_fraction=knobs.get("val_fraction", 0.15),
                batch_size=knobs.get("batch_size", 64), num_workers=knobs.get("num_workers", 0),
                test_fraction=test_fraction)
    if int(size) < 8:
        raise DlrunError(f"data.size must be >= 8, got {size}")
    key = {"source": "sklearn.datasets.load_digits", "scikit-learn": package_version("scikit-learn"),
           "scale": "1/16", "resize": "bilinear", "size": int(size)}
    d = cached(root, "digits", key, lambda: _prepare(int(size)))
    names = [str(i) for i in range(10)]
    return from_tensors("digits", d["x"], d["y"].numpy(), names, "image", test_fraction=test_fraction, **knobs)
