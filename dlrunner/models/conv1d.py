"""Dilated residual 1-D CNN in the style of WaveNet (van den Oord et al. 2016)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dlrunner.errors import DlrunError

from dlrunner.models.init import init_weights
from dlrunner.models.layers import activation, expect_modality


class DilatedBlock(nn.Module):
    """x + dropout(act(BN(conv_dilated(x)))): the skip keeps deep stacks easy to train."""

    def __init__(
        self, width: int, kernel_size: int, dilation: int, act: str, bn: bool, dropout: float
    ) -> None:
        super().__init__()
        # 'same' padding keeps T fixed, so the residual sum lines up step by step.
        conv = nn.Conv1d(width, width, kernel_size, padding="same", dilation=dilation, bias=not bn)
        layers: list[nn.Module] = [conv, *([nn.BatchNorm1d(width)] if bn else []), activation(act)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, W, T)
        return x + self.body(x)


class DilatedConvNet(nn.Module):
    """1x1 projection -> dilated blocks -> [mean, max] over time -> linear."""

    def __init__(
        self, proj: nn.Conv1d, blocks: nn.Sequential, head: nn.Linear, dropout: float
    ) -> None:
        super().__init__()
        self.proj = proj
        self.blocks = blocks
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        h = self.blocks(self.proj(x))  # (B, W, T)
        # Mean and max pooling over time make the features shift-invariant.
        pooled = torch.cat([h.mean(dim=-1), h.amax(dim=-1)], dim=1)  # (B, 2W)
        return self.head(self.dropout(pooled))  # (B, num_classes)


def build_conv1d(
    in_shape: Sequence[int],
    num_classes: int,
    *,
    width: int = 64,
    depth: int = 4,
    kernel_size: int = 3,
    act: str = "relu",
    init: str = "he",
    dropout: float = 0.0,
    bn: bool = False,
) -> nn.Module:
    """Build ``depth`` residual conv blocks with dilations 1, 2, 4, ..., 2**(depth-1).

    The receptive field is 1 + (kernel_size - 1) * (2**depth - 1) steps (31 by default).
    """
    channels, _ = expect_modality(in_shape, "sequence", "conv1d")
    if kernel_size < 1:  # torch builds a 0-tap conv and fails only in the first forward pass
        raise DlrunError(f"model.kernel_size must be >= 1, got {kernel_size}")
    blocks = nn.Sequential(
        *(DilatedBlock(width, kernel_size, 2**i, act, bn, dropout) for i in range(depth))
    )
    proj = nn.Conv1d(channels, width, 1)  # (B, C, T) -> (B, W, T)
    model = DilatedConvNet(proj, blocks, nn.Linear(2 * width, num_classes), dropout)
    init_weights(model, init)
    if not bn and init != "default":
        # Without BatchNorm each residual sum adds the branch's variance: scale the branches by
        # depth**-0.5 (Fixup, Zhang et al. 2019) so activations, and the loss at init, stay put.
        with torch.no_grad():
            for block in blocks:
                block.body[0].weight.mul_(depth**-0.5)
    return model
