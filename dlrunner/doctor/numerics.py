"""The numerics check: where a NaN/Inf first appears on the first batch (dlrunner.doctor.nan),
activations near fp16's limit, and the dtypes under reduced precision."""
from __future__ import annotations

import torch

from dlrunner.doctor import nan
from dlrunner.doctor.core import Exam, Finding, leaf_modules


def numerics(ex: Exam) -> Finding:
    f = Finding("numerics", "Numerics")
    ex.reset()
    model, x, y = ex.model, ex.x, ex.y
    prec = ex.job.precision
    model.train()
    with torch.random.fork_rng(devices=[]):
        rep = nan.locate(model, x, y, ex.job.loss_fn, prec.autocast)
    f.details["nonfinite"] = rep.to_dict()
    if rep.origin is not None:
        f.add("fail", "non-finite value on the first batch: " + "; ".join(rep.lines()[:-1]), rep.fix)
    else:
        f.add("pass", f"every module output is finite on the first batch ({prec.name})")
    # dtype trouble under reduced precision: values near fp16's limit, fp16 weights with an optimizer
    big = []

    def hook(name):
        def fn(mod, inp, out):
            if isinstance(out, torch.Tensor) and out.is_floating_point() and out.numel():
                big.append((float(out.detach().abs().max()), name, out.dtype))
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in leaf_modules(model)]
    try:
        with torch.no_grad(), prec.autocast():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    ex.reset()
    peak = max(big) if big else (0.0, "", None)
    f.details["max_activation"] = {"value": peak[0], "module": peak[1]}
    fp16 = prec.dtype == "fp16" or any(p.dtype == torch.float16 for p in model.parameters())
    if fp16 and peak[0] > 1e4:
        f.add("warn", f"activations reach {peak[0]:.3g} in `{peak[1]}`, near fp16's limit 65504",
              "use precision=bf16-mixed, or normalize/scale down the activations")
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters()})
    f.details["param_dtypes"] = dtypes
    if prec.dtype:
        f.add("pass", f"autocast {prec.dtype}: output {str(out.dtype).replace('torch.', '')}, loss computed in "
                      f"float32, weights {'/'.join(dtypes)}"
              + (", fp16 with a GradScaler" if prec.scaler else ""))
    return f
