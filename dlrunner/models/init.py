"""Weight initialisation schemes: He et al. 2015 ("he") and Glorot & Bengio 2010 ("glorot")."""

from __future__ import annotations

import torch
from torch import nn

from dlrunner.errors import DlrunError

SCHEMES = ("he", "glorot", "default")
HEAD_GAIN = 0.1  # scale of the logits layer at init, relative to the scheme

_CONVS_AND_LINEARS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)


def init_weights(model: nn.Module, scheme: str) -> None:
    """Re-initialise ``model`` in place.

    he:      kaiming_normal_ (fan_in, ReLU gain) on conv/linear weights, He et al. 2015.
    glorot:  xavier_normal_ on conv/linear weights, Glorot & Bengio 2010.
    default: keep PyTorch's own initialisation.
    Both he and glorot zero the biases, set norm layers to identity (weight 1, bias 0) and
    give LSTMs xavier input weights and orthogonal recurrent weights (Saxe et al. 2014):
    their gates are sigmoid/tanh, so the ReLU gain of "he" would not fit them.
    The last linear layer (the logits) starts HEAD_GAIN times smaller: no ReLU follows it, and
    near-zero logits put the loss at init near ln C instead of an overconfident 1.5-10x that
    (Karpathy 2019, "init well"; `dlrun mode=doctor` checks it).
    """
    if scheme not in SCHEMES:
        raise DlrunError(f"unknown init={scheme!r}; choose one of: {', '.join(SCHEMES)}")
    if scheme == "default":
        return
    for module in model.modules():
        if isinstance(module, _CONVS_AND_LINEARS):
            _init_matrix(module.weight, scheme)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, _NORMS):
            if module.weight is not None:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LSTM):
            _init_lstm(module)
        elif isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
            # The fused q/k/v projection is a bare Parameter, not an nn.Linear.
            _init_matrix(module.in_proj_weight, scheme)
            if module.in_proj_bias is not None:
                nn.init.zeros_(module.in_proj_bias)
    head = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if head:
        with torch.no_grad():
            head[-1].weight.mul_(HEAD_GAIN)


def _init_matrix(weight: torch.Tensor, scheme: str) -> None:
    if scheme == "he":
        nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu")
    else:
        nn.init.xavier_normal_(weight)


def _init_lstm(lstm: nn.LSTM) -> None:
    hidden = lstm.hidden_size
    for name, param in lstm.named_parameters():
        if name.startswith("weight_ih"):
            nn.init.xavier_normal_(param)
        elif name.startswith("weight_hh"):
            # One orthogonal matrix per gate (input, forget, cell, output): (4H, H).
            for gate in param.data.split(hidden, dim=0):
                nn.init.orthogonal_(gate)
        elif name.startswith("bias_ih"):
            nn.init.zeros_(param)
            # Forget-gate bias 1 so memory is kept early in training (Jozefowicz et al. 2015).
            nn.init.ones_(param.data[hidden : 2 * hidden])
        elif name.startswith("bias_hh"):
            nn.init.zeros_(param)
