"""LSTM sequence classifier (Hochreiter & Schmidhuber 1997, "Long short-term memory")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dlrunner.models.init import init_weights
from dlrunner.models.layers import expect_modality


class LSTMClassifier(nn.Module):
    """Reads the sequence step by step and classifies from the final hidden state."""

    def __init__(self, lstm: nn.LSTM, head: nn.Module, dropout: float) -> None:
        super().__init__()
        self.lstm = lstm
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        _, (h_n, _) = self.lstm(x.transpose(1, 2))  # input (B, T, C); h_n (layers*dirs, B, H)
        # Top layer's final state per direction: forward after step T, backward after step 1.
        dirs = 2 if self.lstm.bidirectional else 1
        last = h_n[-dirs:].transpose(0, 1).reshape(x.shape[0], -1)  # (B, dirs*H)
        return self.head(self.dropout(last))  # (B, num_classes)


def build_lstm(
    in_shape: Sequence[int],
    num_classes: int,
    *,
    width: int = 128,
    depth: int = 1,
    init: str = "glorot",
    dropout: float = 0.0,
    bidirectional: bool = False,
) -> nn.Module:
    """Build an LSTM of ``depth`` layers with ``width`` hidden units (tanh, the LSTM's own)
    over (C, T) sequences, followed by a linear layer on the last hidden state."""
    channels, _ = expect_modality(in_shape, "sequence", "lstm")
    lstm = nn.LSTM(
        channels,
        width,
        num_layers=depth,
        batch_first=True,
        dropout=dropout if depth > 1 else 0.0,  # torch applies it between layers only
        bidirectional=bidirectional,
    )
    head = nn.Linear(width * (2 if bidirectional else 1), num_classes)
    model = LSTMClassifier(lstm, head, dropout)
    init_weights(model, init)
    return model
