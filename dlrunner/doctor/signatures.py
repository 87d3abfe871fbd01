"""Signatures of specific bugs, each a cheap measurement that names one cause: a model that ignores
its input, inputs that are all the same, a loss summed over the batch, NLL fed raw logits, and
`.data` / `.detach()` cutting the gradient inside forward. The model, loss, data and gradient-flow
checks call them."""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from dlrunner.doctor.activations import Observer


@torch.no_grad()
def ignores_input(model: nn.Module, x: torch.Tensor, autocast: Callable) -> str | None:
    """Evidence when different inputs give one and the same output (eval mode, no dropout noise)."""
    if len(x) < 2 or bool((x == x[:1]).all()):
        return None  # identical inputs prove nothing (the data check reports them)
    was = model.training
    model.eval()
    with autocast():
        out = model(x).float()
    model.train(was)
    spread = float((out - out[:1]).abs().max())
    scale = max(float(out.abs().max()), 1e-12)
    if spread <= 1e-6 * scale:
        return (f"{len(x)} different inputs give the same output (largest difference {spread:.1e}): "
                "the model ignores its input")
    return None


def constant_inputs(xs: torch.Tensor) -> str | None:
    """Evidence when every training input is the same tensor (a loader that returns one sample)."""
    if len(xs) < 2:
        return None
    flat = xs.reshape(len(xs), -1).float()
    if bool((flat == flat[:1]).all()):
        return f"all {len(xs)} training inputs are identical: they carry no signal"
    return None


def summed_loss(uniform: float, batch: int, ln_c: float) -> str | None:
    """Evidence when the loss of a uniform prediction is batch x ln C: summed, not averaged."""
    if batch < 2 or not math.isfinite(uniform) or ln_c <= 0:
        return None
    per = uniform / ln_c
    if abs(per - batch) <= 0.05 * batch:
        return (f"for a uniform prediction the loss is {uniform:.3g} = {batch} x ln C: it is summed over the batch "
                "(reduction='sum'), so its size and the effective learning rate follow the batch size")
    return None


def nll_of_logits(loss_fn: Callable, out: torch.Tensor, y: torch.Tensor) -> str | None:
    """Evidence when the loss equals -mean(logit of the target): NLL on raw logits, no log_softmax."""
    if out.dim() != 2 or y.dim() != 1 or y.is_floating_point():
        return None
    with torch.no_grad():
        loss = float(loss_fn(out, y))
        raw = float(-out.gather(1, y[:, None]).mean())
        ce = float(nn.functional.cross_entropy(out, y))
    tol = 1e-5 * max(1.0, abs(raw))
    if abs(loss - raw) <= tol and abs(loss - ce) > tol:
        return (f"the loss ({loss:.4f}) equals minus the mean target logit: NLL applied to raw logits, with no "
                f"log_softmax in front (cross-entropy would be {ce:.4f}); it falls without bound")
    return None


def gradient_cuts(model: nn.Module, x: torch.Tensor, autocast: Callable) -> list[str]:
    """Where forward takes `.data` or `.detach()` of a tensor that needs a gradient."""
    was = model.training
    model.train()
    with torch.random.fork_rng(devices=[]), Observer(model) as obs, autocast():
        model(x[:8])
    model.train(was)
    return list(dict.fromkeys(obs.cuts))
