"""model=auto: start at the bottom of the modality's ladder, the simplest model that may fit."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from dlrunner.models.layers import ladder, modality
from dlrunner.models.lenet import build_lenet
from dlrunner.models.lstm import build_lstm
from dlrunner.models.mlp import build_mlp

__all__ = ["build_auto", "ladder"]


def build_auto(in_shape: Sequence[int], num_classes: int, **kw: Any) -> nn.Module:
    """Build the first rung of ``ladder(modality(in_shape))``: LeNet for images, LSTM for
    sequences, MLP for tabular data. Options the chosen builder does not take are ignored,
    so one config (e.g. ``act``) can serve every modality."""
    first_rung: dict[str, Callable[..., nn.Module]] = {
        "lenet": build_lenet,
        "lstm": build_lstm,
        "mlp": build_mlp,
    }
    builder = first_rung[ladder(modality(in_shape))[0]]
    accepted = inspect.signature(builder).parameters
    return builder(in_shape, num_classes, **{k: v for k, v in kw.items() if k in accepted})
