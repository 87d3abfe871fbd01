"""LeNet-5 (LeCun et al. 1998, "Gradient-based learning applied to document recognition")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dlrunner.errors import DlrunError
from dlrunner.models.init import init_weights
from dlrunner.models.layers import activation, expect_modality

# LeNet-5 goes from 6 to 16 filters; later blocks keep growing by the same factor.
_GROWTH = 16 / 6


class LeNet(nn.Module):
    """Conv feature extractor followed by a three-layer fully connected classifier."""

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        return self.classifier(self.features(x))  # (B, num_classes)


def build_lenet(
    in_shape: Sequence[int],
    num_classes: int,
    *,
    width: int = 6,
    depth: int = 2,
    act: str = "relu",
    init: str = "he",
    dropout: float = 0.0,
    hidden: int = 120,
) -> nn.Module:
    """Build LeNet-5: ``depth`` blocks of conv5x5 (pad 2) -> act -> maxpool2, then
    FC ``hidden`` -> act -> FC ``0.7 * hidden`` -> act -> FC ``num_classes``.

    Works for any H, W >= 2**depth; the flatten size is measured with a dummy forward.
    """
    channels, height, wide = expect_modality(in_shape, "image", "lenet")
    if depth < 1 or min(height, wide) < 2**depth:
        raise DlrunError(
            f"model=lenet with depth={depth} needs images of at least {2 ** max(depth, 1)}px "
            f"per side, got {height}x{wide}; lower model.depth"
        )
    activation(act)  # fail fast on an unknown name before building anything
    features = _features(channels, width, depth, act)
    with torch.no_grad():
        flat = features(torch.zeros(1, channels, height, wide)).numel()
    classifier = _classifier(flat, hidden, num_classes, act, dropout)
    model = LeNet(features, classifier)
    init_weights(model, init)
    return model


def _features(channels: int, width: int, depth: int, act: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        filters = round(width * _GROWTH**i)  # 6, 16, 43, ...
        layers += [nn.Conv2d(channels, filters, 5, padding=2), activation(act), nn.MaxPool2d(2)]
        channels = filters
    return nn.Sequential(*layers)


def _classifier(
    flat: int, hidden: int, num_classes: int, act: str, dropout: float
) -> nn.Sequential:
    sizes = [flat, hidden, round(0.7 * hidden), num_classes]  # hidden 120 -> 84 in the original
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:  # no activation on the logits
            layers.append(activation(act))
    return nn.Sequential(*layers)
