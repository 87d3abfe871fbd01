"""The train/eval mode check: eval is deterministic and leaves the buffers alone; model.train()
reaches every dropout and BatchNorm layer."""
from __future__ import annotations

import torch
from torch import nn

from dlrunner.doctor.core import Exam, Finding


def train_eval_mode(ex: Exam) -> Finding:
    f = Finding("mode", "Train/eval mode")
    ex.reset()
    model, x = ex.model, ex.x
    dependent = [n for n, m in model.named_modules()  # dropout with p=0 behaves the same in both modes
                 if (isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0)
                 or isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.eval()
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    with torch.no_grad(), ex.job.precision.autocast():
        a, b = model(x).float(), model(x).float()
    moved = [n for n, t in model.named_buffers() if n in buffers and not torch.equal(t, buffers[n])]
    if not torch.allclose(a, b, atol=1e-5, rtol=1e-4):
        f.add("fail", f"two eval-mode forwards of the same batch differ (max |diff| {float((a - b).abs().max()):.3g})",
              "dropout or another random layer runs in eval mode: use nn.Dropout modules, or F.dropout(x, "
              "training=self.training)")
    else:
        f.add("pass", "eval mode is deterministic")
    if moved:
        f.add("fail", f"buffers changed during evaluation: {', '.join(moved[:4])}",
              "BatchNorm running statistics must not move in eval mode: call model.eval() before evaluating")
    # in training mode every mode-dependent layer must be training
    model.train()
    stuck = [n for n, m in model.named_modules() if n in dependent and not m.training]
    seen: list[str] = []
    hooks = [m.register_forward_pre_hook(lambda mod, inp, n=n: seen.append(n) if not mod.training else None)
             for n, m in model.named_modules() if n in dependent]
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]), ex.job.precision.autocast():
            t = model(x).float()
    finally:
        for h in hooks:
            h.remove()
    ex.reset()
    stuck = sorted(set(stuck) | set(seen))
    if stuck:
        f.add("fail", f"after model.train(), {len(stuck)} dropout/BatchNorm layers run in eval mode "
                      f"({', '.join(stuck[:4])}): the model is stuck in eval mode",
              "do not override train() or call .eval() inside forward; dropout and BatchNorm then never train")
    elif dependent and torch.allclose(t, a, atol=1e-6):
        f.add("warn", "training-mode and eval-mode outputs are identical although the model has "
                      f"{len(dependent)} dropout/BatchNorm layers", "check that model.train() reaches them")
    elif dependent:
        f.add("pass", f"{len(dependent)} dropout/BatchNorm layers switch with model.train()/eval()")
    f.details["mode_dependent_layers"] = dependent
    return f
