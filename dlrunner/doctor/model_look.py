"""The model check: one traced forward (layers, shapes, parameters), an output of the wrong
width, a probability layer in front of a logits loss, a bias before BatchNorm, a model that
ignores its input, nothing to train."""
from __future__ import annotations

import torch
from torch import nn

from dlrunner.doctor import signatures
from dlrunner.doctor.core import Exam, Finding, leaf_modules

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
PROB_LAYERS = (nn.Softmax, nn.Sigmoid, nn.Softmax2d)


def _trace(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
    """One eval forward with hooks on every leaf: execution order, output shapes, parameters."""
    rows = []

    def hook(name):
        def fn(mod, inp, out):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            rows.append({"name": name, "type": type(mod).__name__, "out": shape,
                         "params": sum(p.numel() for p in mod.parameters(recurse=False)), "module": mod})
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in leaf_modules(model)]
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    return out, rows


def model_look(ex: Exam) -> Finding:
    f = Finding("model", "Model look")
    model = ex.model
    was = model.training
    model.eval()
    with ex.job.precision.autocast():
        out, rows = _trace(model, ex.x[:8])
    model.train(was)
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    f.details["layers"] = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in r.items() if k != "module"}
                           for r in rows]
    f.details["params"], f.details["trainable"] = n_params, n_train
    f.add("pass", f"{type(ex.job.base_model).__name__}: {len(rows)} layers, {n_params:,} parameters "
                  f"({n_train:,} trainable), output {tuple(out.shape)}")
    k = ex.num_classes
    if out.dim() != 2 or out.shape[1] != k:
        f.add("fail", f"the model outputs {tuple(out.shape)} for a batch of 8, the data has {k} classes",
              f"end the model with a layer of {k} outputs, shape (B, {k})")
    if rows and isinstance(rows[-1]["module"], PROB_LAYERS):
        f.add("fail", f"the last layer is {rows[-1]['type']} (`{rows[-1]['name']}`) in front of a logits loss",
              "remove it: cross-entropy applies log-softmax itself; apply softmax only when predicting")
    for a, b in zip(rows, rows[1:]):
        m = a["module"]
        if isinstance(b["module"], NORMS) and isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) \
                and m.bias is not None:
            f.add("warn", f"`{a['name']}` has a bias right before BatchNorm `{b['name']}` (it is cancelled)",
                  "bias=False on layers followed by BatchNorm")
            break
    ignored = signatures.ignores_input(model, ex.x[:8], ex.job.precision.autocast)
    if ignored:
        f.add("fail", ignored, "check forward: its output must be computed from its argument x")
    if n_train == 0:
        f.add("fail", "no trainable parameter", "unfreeze the model (requires_grad=True)")
    return f
