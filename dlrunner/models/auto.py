"""model=auto: start at the bottom of the modality's ladder, the simplest model that may fit."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence
from typing import Any

from torch import nn

from dlrunner.conf_lists import node
from dlrunner.models.layers import ladder, modality

__all__ = ["build_auto", "ladder"]


def build_auto(in_shape: Sequence[int], num_classes: int, **kw: Any) -> nn.Module:
    """Build the first rung of ``ladder(modality(in_shape))`` (conf/ladder.yaml): LeNet for
    images, LSTM for sequences, MLP for tabular data, with its builder's defaults. Options the
    chosen builder does not take are ignored, so one config (e.g. ``act``) can serve every modality."""
    target = str(node("model", ladder(modality(in_shape))[0])["_target_"])  # the rung's conf/model file names it
    module, _, attr = target.rpartition(".")
    builder = getattr(importlib.import_module(module), attr)
    accepted = inspect.signature(builder).parameters
    return builder(in_shape, num_classes, **{k: v for k, v in kw.items() if k in accepted})
