"""A user's own model, data and loss, plugged in with `_target_` (used by the tests)."""
from __future__ import annotations

import numpy as np
from torch import nn


def blobs(n_per_class: int = 30, seed: int = 0):
    """Three Gaussian blobs in 5-D: returns (x, y) arrays; dlrun splits and normalizes them."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(3 * c, 1.0, size=(n_per_class, 5)) for c in range(3)]).astype(np.float32)
    y = np.repeat(np.arange(3), n_per_class)
    return x, y


class TinyNet(nn.Module):
    """Receives in_shape and num_classes from dlrun; everything else is its own."""

    def __init__(self, in_shape, num_classes, hidden: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(in_shape)), hidden), nn.ReLU(),
                                 nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.net(x)


class ScaledCE(nn.Module):
    """A custom loss: cross-entropy times a factor."""

    def __init__(self, factor: float = 2.0):
        super().__init__()
        self.factor = factor

    def forward(self, out, y):
        return self.factor * nn.functional.cross_entropy(out, y)
