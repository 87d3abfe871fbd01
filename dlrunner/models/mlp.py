"""Multi-layer perceptron (Rumelhart, Hinton & Williams 1986) on flattened inputs."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from dlrunner.models.init import init_weights
from dlrunner.models.layers import activation, as_shape


class MLP(nn.Sequential):
    """Flatten -> [Linear -> act -> Dropout] x depth -> Linear; accepts any input shape."""


def build_mlp(
    in_shape: Sequence[int],
    num_classes: int,
    *,
    width: int = 128,
    depth: int = 1,
    act: str = "relu",
    init: str = "he",
    dropout: float = 0.0,
) -> nn.Module:
    """Build an MLP with ``depth`` hidden layers of ``width`` units (0 = logistic regression)."""
    n_in = math.prod(as_shape(in_shape))
    layers: list[nn.Module] = [nn.Flatten()]  # (B, *in_shape) -> (B, n_in)
    for _ in range(depth):
        layers += [nn.Linear(n_in, width), activation(act)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        n_in = width
    layers.append(nn.Linear(n_in, num_classes))
    model = MLP(*layers)
    init_weights(model, init)
    return model
