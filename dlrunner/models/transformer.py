"""Transformer encoder classifier (Vaswani et al. 2017) with pre-norm layers (Xiong et al. 2020)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dlrunner.errors import DlrunError
from dlrunner.models.init import init_weights
from dlrunner.models.layers import activation, expect_modality


class TransformerClassifier(nn.Module):
    """Embed each time step, add a learned position, encode, average over time, classify."""

    def __init__(
        self, embed: nn.Linear, steps: int, encoder: nn.TransformerEncoder, num_classes: int
    ) -> None:
        super().__init__()
        width = embed.out_features
        self.embed = embed
        self.position = nn.Parameter(torch.randn(1, steps, width) * 0.02)  # (1, T, D)
        self.encoder = encoder
        self.norm = nn.LayerNorm(width)  # pre-norm layers leave the output un-normalised
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        h = self.embed(x.transpose(1, 2)) + self.position  # (B, T, D)
        h = self.encoder(h).mean(dim=1)  # (B, D)
        return self.head(self.norm(h))  # (B, num_classes)


def build_transformer(
    in_shape: Sequence[int],
    num_classes: int,
    *,
    width: int = 64,
    depth: int = 2,
    heads: int = 4,
    ff_mult: int = 2,
    act: str = "gelu",
    init: str = "glorot",
    dropout: float = 0.0,
) -> nn.Module:
    """Build a ``depth``-layer encoder of model size ``width`` over (C, T) sequences."""
    channels, steps = expect_modality(in_shape, "sequence", "transformer")
    if width % heads:
        raise DlrunError(f"model.width={width} must be divisible by model.heads={heads}")
    layer = nn.TransformerEncoderLayer(
        width,
        heads,
        dim_feedforward=ff_mult * width,
        dropout=dropout,
        activation=activation(act),
        batch_first=True,
        norm_first=True,
    )
    # Nested tensors only speed up padded batches, and torch disables them for norm_first.
    encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
    model = TransformerClassifier(nn.Linear(channels, width), steps, encoder, num_classes)
    init_weights(model, init)
    return model
