"""torchvision ResNet-18/34/50 (He et al. 2016), optionally ImageNet-pretrained, adapted to
any channel count, small (CIFAR-sized) inputs and any number of classes."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from dlrunner.errors import DlrunError
from dlrunner.models.init import init_weights
from dlrunner.models.layers import expect_modality

ARCHS = ("resnet18", "resnet34", "resnet50")
_FLAGS = ("auto", True, False)


def build_torchvision_resnet(
    in_shape: Sequence[int],
    num_classes: int,
    *,
    arch: str = "resnet18",
    pretrained: bool | str = "auto",
    small_input: bool | str = "auto",
    init: str = "default",
    dropout: float = 0.0,
) -> nn.Module:
    """Build torchvision's ``arch`` for (C, H, W) inputs and ``num_classes`` outputs.

    pretrained: load ImageNet weights from torch.hub's cache (downloading if possible);
        "auto" falls back to random init with a warning, True makes missing weights an error.
    small_input: swap the 7x7/2 stem and its max-pool for a 3x3/1 stem, as for CIFAR in
        He et al. 2016; "auto" does so when min(H, W) < 64.
    init: scheme for randomly initialised layers ("default" keeps torchvision's).
    """
    if arch not in ARCHS:
        raise DlrunError(f"unknown model.arch={arch!r}; choose one of: {', '.join(ARCHS)}")
    channels, height, wide = expect_modality(in_shape, "image", arch)
    for key, value in (("pretrained", pretrained), ("small_input", small_input)):
        if value not in _FLAGS:
            raise DlrunError(f"unknown model.{key}={value!r}; choose one of: auto, true, false")
    constructor, weights = _arch(arch)
    model = constructor(weights=None)
    state = _pretrained_state(arch, weights, pretrained) if pretrained else None
    if state is not None:
        model.load_state_dict(state)
        model.dlrun_pretrained = f"torchvision {arch} ImageNet weights"  # read by gradual_unfreezing
    small = min(height, wide) < 64 if small_input == "auto" else bool(small_input)
    new_layers = _adapt(model, channels, num_classes, small=small, dropout=dropout)
    # Pretrained layers keep their weights; only those built from scratch get ``init``.
    for layer in new_layers if state is not None else [model]:
        init_weights(layer, init)
    return model


def _adapt(
    model: nn.Module, channels: int, num_classes: int, *, small: bool, dropout: float
) -> list[nn.Module]:
    """Swap the stem and the classifier in place; return the layers that start from scratch."""
    new_layers: list[nn.Module] = []
    if small or channels != 3:
        model.conv1 = _stem(model.conv1, channels, small)
    if small:
        new_layers.append(model.conv1)
        model.maxpool = nn.Identity()
    head = nn.Linear(model.fc.in_features, num_classes)
    model.fc = nn.Sequential(nn.Dropout(dropout), head) if dropout > 0 else head
    new_layers.append(model.fc)
    return new_layers


def _arch(arch: str) -> tuple[Callable[..., nn.Module], Any]:
    models = torchvision.models
    table = {
        "resnet18": (models.resnet18, models.ResNet18_Weights.DEFAULT),
        "resnet34": (models.resnet34, models.ResNet34_Weights.DEFAULT),
        "resnet50": (models.resnet50, models.ResNet50_Weights.DEFAULT),
    }
    return table[arch]


def _pretrained_state(arch: str, weights: Any, pretrained: bool | str) -> dict[str, Any] | None:
    """ImageNet weights from the hub cache, else a download; None if "auto" and neither works."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    try:
        if path.is_file():
            return torch.load(path, map_location="cpu", weights_only=True)
        return weights.get_state_dict(progress=False)
    # Offline, partial or corrupt downloads fail in many ways (URLError, RuntimeError, ...).
    except Exception as exc:  # noqa: BLE001
        if pretrained == "auto":
            warnings.warn(
                f"pretrained {arch} weights unavailable (offline?): starting from random init"
            )
            return None
        raise DlrunError(
            f"pretrained {arch} weights unavailable ({type(exc).__name__}); place {path.name} "
            f"(from {weights.url}) at {path}, or set model.pretrained=false"
        ) from exc


def _stem(old: nn.Conv2d, channels: int, small: bool) -> nn.Conv2d:
    """A first conv for ``channels`` inputs: 3x3/1 for small inputs, else torchvision's 7x7/2."""
    if small:
        return nn.Conv2d(channels, old.out_channels, 3, stride=1, padding=1, bias=False)
    conv = nn.Conv2d(channels, old.out_channels, 7, stride=2, padding=3, bias=False)
    # Start from the RGB filters' mean for every channel (pretrained or not); the 3/C factor
    # keeps the response to an image whose channels carry the same signal at the old scale.
    with torch.no_grad():
        mean = old.weight.mean(dim=1, keepdim=True)  # (64, 1, 7, 7)
        conv.weight.copy_(mean.repeat(1, channels, 1, 1) * (3 / channels))
    return conv
