"""A small configurable ResNet (He et al. 2016, "Deep residual learning for image recognition"),
with optional depthwise-separable convolutions (Chollet 2017, "Xception")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dlrunner.errors import DlrunError
from dlrunner.models.init import init_weights
from dlrunner.models.layers import activation, expect_modality


class SeparableConv2d(nn.Sequential):
    """Depthwise 3x3 (one filter per input channel) followed by a pointwise 1x1 mix."""

    def __init__(self, c_in: int, c_out: int, stride: int, bias: bool) -> None:
        # The depthwise bias is dropped: the pointwise conv right after it would absorb it.
        super().__init__(
            nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=bias),
        )


class BasicBlock(nn.Module):
    """Two 3x3 conv units plus a shortcut: out = post(body(x) + shortcut(x))."""

    def __init__(self, body: nn.Sequential, shortcut: nn.Module, post: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut
        self.post = post

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        return self.post(self.body(x) + self.shortcut(x))  # (B, C', H', W')


class ResNet(nn.Sequential):
    """stem -> stages -> head, kept as a Sequential so each part is inspectable by name."""


def build_resnet(
    in_shape: Sequence[int],
    num_classes: int,
    *,
    width: int = 64,
    depth: int = 2,
    blocks: int = 1,
    separable: bool = False,
    downsample: str = "stride2",
    head: str = "gap",
    bn: bool = True,
    act_position: str = "before_bn",
    bias: bool | str = "auto",
    act: str = "relu",
    init: str = "he",
    dropout: float = 0.0,
) -> nn.Module:
    """Build a ResNet: conv3x3 stem (C -> width), ``depth`` stages of ``blocks`` basic blocks
    with width * 2**i filters, halving the resolution between stages, then a linear head.

    act_position="before_bn" orders each unit conv -> act -> BN; "after_bn" conv -> BN -> act.
    bias="auto" drops the conv bias wherever a BatchNorm follows the conv in its unit.
    """
    channels, height, wide = expect_modality(in_shape, "image", "resnet")
    _check_options(downsample=downsample, head=head, act_position=act_position, bias=bias)
    if depth < 1 or blocks < 1 or min(height, wide) < 2 ** (depth - 1):
        raise DlrunError(
            f"model=resnet needs depth >= 1, blocks >= 1 and images of at least "
            f"{2 ** max(depth - 1, 0)}px per side; "
            f"got depth={depth}, blocks={blocks}, {height}x{wide}"
        )
    activation(act)  # fail fast on an unknown name
    unit = _UnitFactory(bn=bn, act_position=act_position, bias=bias, act=act)
    stem = nn.Sequential(*unit(nn.Conv2d(channels, width, 3, padding=1, bias=unit.bias), width))
    layers = [stem]
    c_in = width
    for i in range(depth):
        c_out = width * 2**i
        stride = 2 if i > 0 and downsample == "stride2" else 1
        if i > 0 and downsample == "maxpool":
            layers.append(nn.MaxPool2d(2))
        for b in range(blocks):
            layers.append(_block(c_in, c_out, stride if b == 0 else 1, separable, unit))
            c_in = c_out
    features = nn.Sequential(*layers)
    classifier = _head(features, head, (channels, height, wide), c_in, num_classes, dropout)
    model = ResNet(*layers, classifier)
    init_weights(model, init)
    return model


def _check_options(**given: object) -> None:
    choices = {
        "downsample": ("stride2", "maxpool"),
        "head": ("gap", "fc"),
        "act_position": ("before_bn", "after_bn"),
        "bias": ("auto", True, False),
    }
    for key, value in given.items():
        if value not in choices[key]:
            listed = ", ".join(str(c).lower() for c in choices[key])
            raise DlrunError(f"unknown model.{key}={value!r}; choose one of: {listed}")


class _UnitFactory:
    """Turns a conv into its unit (conv + act + optional BN) in the configured order."""

    def __init__(self, *, bn: bool, act_position: str, bias: bool | str, act: str) -> None:
        self.bn, self.act_position, self.act = bn, act_position, act
        self.bias = (not bn) if bias == "auto" else bool(bias)
        # Before-BN units end in a BN, so the residual sum needs no activation after it.
        self.post_act = not (bn and act_position == "before_bn")

    def __call__(self, conv: nn.Module, c_out: int, *, last: bool = False) -> list[nn.Module]:
        act = [] if last and self.post_act else [activation(self.act)]
        if not self.bn:
            return [conv, *act]
        norm = nn.BatchNorm2d(c_out)
        return [conv, *act, norm] if self.act_position == "before_bn" else [conv, norm, *act]


def _conv3x3(c_in: int, c_out: int, stride: int, separable: bool, bias: bool) -> nn.Module:
    if separable:
        return SeparableConv2d(c_in, c_out, stride, bias)
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias)


def _block(c_in: int, c_out: int, stride: int, separable: bool, unit: _UnitFactory) -> BasicBlock:
    body = nn.Sequential(
        *unit(_conv3x3(c_in, c_out, stride, separable, unit.bias), c_out),
        *unit(_conv3x3(c_out, c_out, 1, separable, unit.bias), c_out, last=True),
    )
    shortcut: nn.Module = nn.Identity()
    if stride != 1 or c_in != c_out:
        proj = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=unit.bias)
        shortcut = nn.Sequential(proj, nn.BatchNorm2d(c_out)) if unit.bn else proj
    post = activation(unit.act) if unit.post_act else nn.Identity()
    return BasicBlock(body, shortcut, post)


def _head(
    features: nn.Module,
    head: str,
    shape: tuple[int, int, int],
    c_out: int,
    num_classes: int,
    dropout: float,
) -> nn.Sequential:
    if head == "gap":
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        n_in = c_out
    else:
        with torch.no_grad():
            n_in = features.eval()(torch.zeros(1, *shape)).numel()  # eval: BN on a batch of 1
        features.train()
        layers = [nn.Flatten()]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers, nn.Linear(n_in, num_classes))
